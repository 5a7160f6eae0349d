"""GFLOPs (multiply-accumulates, as the paper reports them) and parameters of a model.

    python tools/count_flops.py vit_l16 --image_size=512 --tokenlearner=16@12
    python tools/count_flops.py vit_b16 --image_size=384 --tokenlearner=8@6 --fuser
    python tools/count_flops.py vivit_l16 --num_frames=32 --tokenlearner=8@18 --extra_layers=6
    python tools/count_flops.py --paper        # every row of the paper, side by side
    python tools/count_flops.py --paper --markdown   # the same, as the README's table

Nothing is built: the count comes from the validated model arguments
(`tl_keras.flops.gflops`).
"""

import argparse
import sys

from tl_keras import flops
from tl_keras.models import list_models
from tl_keras.models.specs import TL


def _size(text):
    if "x" in text:
        h, w = text.split("x")
        return (int(h), int(w))
    return int(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help=f"one of {', '.join(list_models())}")
    parser.add_argument("--image_size", type=_size, help="e.g. 384 or 384x512")
    parser.add_argument("--patch_size", type=_size)
    parser.add_argument("--num_frames", type=int, help="video models")
    parser.add_argument("--tokenlearner", help="S@AT, e.g. 16@12, 8@6+fuser, 8@6+v1")
    parser.add_argument("--fuser", action="store_true", help="add TokenFuser (model 'b')")
    parser.add_argument("--extra_layers", type=int, help="blocks added after the TokenLearner")
    parser.add_argument("--num_classes", type=int)
    parser.add_argument("--paper", action="store_true", help="print the paper's table")
    parser.add_argument("--markdown", action="store_true", help="with --paper: Markdown")
    args = parser.parse_args(argv)
    if not args.paper and not args.model:
        parser.error("give a model name or --paper")
    if args.fuser and not args.tokenlearner:
        parser.error("--fuser needs --tokenlearner")
    return args


def model_kwargs(args):
    kwargs = {}
    for key in ("image_size", "patch_size", "num_frames", "extra_layers", "num_classes"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    if args.tokenlearner:
        tl = TL.parse(args.tokenlearner)
        if args.fuser:
            tl = TL(tl.num_tokens, tl.at, fuser=True, version=tl.version)
        kwargs["tokenlearner"] = tl
    return kwargs


def main(argv=None):
    args = parse_args(argv)
    if args.paper and args.markdown:
        print(flops.paper_table_markdown())
        return 0
    if args.paper:
        print(f"{'model':48s} {'ours':>9s} {'paper':>9s} {'diff':>7s}")
        for description, ours, paper, rel in flops.paper_table():
            print(f"{description:48s} {ours:9.2f} {paper:9.2f} {100 * rel:+6.2f}%")
        return 0
    kwargs = model_kwargs(args)
    try:
        value = flops.gflops(args.model, **kwargs)
        params = flops.count_params(args.model, **kwargs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = " ".join(f"{k}={v}" for k, v in kwargs.items())
    print(f"{args.model} {settings}".strip())
    print(f"GFLOPs (MACs): {value:.2f}")
    print(f"parameters: {params / 1e6:.1f}M ({params:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
