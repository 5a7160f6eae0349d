"""GFLOPs (multiply-accumulates, as the paper reports them) and parameters of a model.

    python tools/count_flops.py vit_l16 --image_size=512 --tokenlearner=16@12
    python tools/count_flops.py vit_b16 --image_size=384 --tokenlearner=8@6 --fuser
    python tools/count_flops.py vit_b16 --image_size=384 --tokenlearner=8@6+unpool   # Fig. 7
    python tools/count_flops.py vit_b16 --image_size=384 --tokenlearner=8@6 --fuser=reprojection
    python tools/count_flops.py vivit_l16 --num_frames=32 --tokenlearner=8@18 --extra_layers=6
    python tools/count_flops.py --paper        # every row of the paper, side by side
    python tools/count_flops.py --paper --markdown   # the same, as the README's table
    python tools/count_flops.py --list_models  # the registered model names

Nothing is built: the count comes from the validated model arguments
(`tl_keras.flops.gflops`). A bad argument is one line on stderr and exit code 2.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/_common.py
import _common  # noqa: E402  (no TensorFlow: --help answers at once)


#: `tl_keras.layers.tokenizers.FUSERS` (no TensorFlow before the flags are read; a test
#: pins the two together).
FUSER_CHOICES = ("tokenfuser", "unpool", "reprojection")


def _size(text):
    try:
        if "x" in text:
            h, w = text.split("x")
            return (int(h), int(w))
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 384 or 384x512") from None


def parse_args(argv=None):
    parser = _common.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("model", nargs="?",
                        help="a registered model, e.g. vit_b16, vivit_l16, x2plus1d_m "
                             "(--list_models prints them all)")
    parser.add_argument("--image_size", type=_size, help="e.g. 384 or 384x512")
    parser.add_argument("--patch_size", type=_size)
    parser.add_argument("--num_frames", type=int, help="video models")
    parser.add_argument("--tokenlearner",
                        help="S@AT, e.g. 16@12, 8@6+fuser, 8@6+unpool, 8@6+reprojection, 8@6+v1")
    parser.add_argument("--fuser", nargs="?", const="tokenfuser", choices=FUSER_CHOICES,
                        help="add a fuser after every block from AT on (model 'b'): "
                             "TokenFuser (bare --fuser) or a Fig. 7 alternative")
    parser.add_argument("--extra_layers", type=int, help="blocks added after the TokenLearner")
    parser.add_argument("--num_classes", type=int)
    parser.add_argument("--paper", action="store_true", help="print the paper's table")
    parser.add_argument("--markdown", action="store_true", help="with --paper: Markdown")
    parser.add_argument("--list_models", action="store_true", help="print the model names")
    args = parser.parse_args(argv)
    if not (args.paper or args.list_models) and not args.model:
        parser.error("give a model name, --paper or --list_models")
    if args.fuser and not args.tokenlearner:
        parser.error("--fuser needs --tokenlearner")
    return args


def model_kwargs(args):
    from tl_keras.models.specs import TL

    kwargs = {}
    for key in ("image_size", "patch_size", "num_frames", "extra_layers", "num_classes"):
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    if args.tokenlearner:
        try:
            tl = TL.parse(args.tokenlearner)
        except ValueError as e:
            raise _common.ToolError(f"--tokenlearner={args.tokenlearner}: {e}") from None
        if args.fuser:
            try:
                tl = TL(tl.num_tokens, tl.at, fuser=args.fuser, version=tl.version)
            except ValueError as e:
                raise _common.ToolError(f"--fuser={args.fuser}: {e}") from None
        kwargs["tokenlearner"] = tl
    return kwargs


def run(args):
    """The tool once its arguments are parsed (imports TensorFlow, through the models)."""
    _common.import_tensorflow()
    from tl_keras import flops
    from tl_keras.models import list_models

    if args.list_models:
        print("\n".join(list_models()))
        return 0
    if args.paper and args.markdown:
        print(flops.paper_table_markdown())
        return 0
    if args.paper:
        print(f"{'model':48s} {'ours':>9s} {'paper':>9s} {'diff':>7s}")
        for description, ours, paper, rel in flops.paper_table():
            print(f"{description:48s} {ours:9.2f} {paper:9.2f} {100 * rel:+6.2f}%")
        return 0
    kwargs = model_kwargs(args)
    value = flops.gflops(args.model, **kwargs)
    params = flops.count_params(args.model, **kwargs)
    settings = " ".join(f"{k}={v}" for k, v in kwargs.items())
    print(f"{args.model} {settings}".strip())
    print(f"GFLOPs (MACs): {value:.2f}")
    print(f"parameters: {params / 1e6:.1f}M ({params:,})")
    return 0


def main(argv=None):
    args = parse_args(argv)
    return _common.run_or_report("count_flops", run, args)


if __name__ == "__main__":
    sys.exit(main())
