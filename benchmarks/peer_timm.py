"""The timm (PyTorch) peer of `benchmarks/throughput.py`: ViT inference images/s.

Runs in its own benchmark-only environment (PyTorch and timm never go into tl_keras'):

    python3.11 -m venv .venv-peer
    .venv-peer/bin/python -m pip install -r benchmarks/requirements-peer.txt

Two ways to run it:

* `.venv-peer/bin/python benchmarks/peer_timm.py [--quick]`: on its own, prints
  the median images/s of a few timed repetitions (a smoke check of the environment).
* `--serve`: the way `benchmarks/throughput.py` runs it, as a subprocess in the same
  run, so that tl_keras and timm repetitions alternate (while one runs, the other
  waits on a pipe and uses no CPU). It reads one command per line on stdin and answers
  one JSON object per line on stdout:
    `info`          -> versions, threads, parameter count
    `warmup K`      -> `{"seconds": [...]}`, the K untimed-for-the-result calls
    `run ITERS`     -> `{"seconds": s}`, wall time of ITERS forward passes
    `quit`          -> exits

The model is `timm.create_model("vit_base_patch16_224", pretrained=False)` (random
weights, `eval()`, `torch.inference_mode()`), or the same class with the sizes given by
`--model_args` (JSON) for the tiny `--quick` model: the same ViT as `tl_keras`' (class
token, 12 pre-LN blocks, fused QKV, head of 1000 classes), run the way a PyTorch user
runs it. Input: one fixed random float32 batch `[B, 3, H, W]`.
"""

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_base_patch16_224", help="timm model name")
    p.add_argument(
        "--model_args", default="{}", help="JSON kwargs for timm.create_model (override sizes)"
    )
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--serve", action="store_true", help="line protocol on stdin/stdout")
    p.add_argument("--quick", action="store_true", help="tiny model, a few seconds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=3)
    return p.parse_args(argv)


QUICK_ARGS = dict(
    img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0
)


def build(args):
    import torch
    import timm

    if args.threads:
        torch.set_num_threads(args.threads)
    model_args = json.loads(args.model_args)
    if args.quick and not model_args:
        model_args = dict(QUICK_ARGS)
        args.image_size = QUICK_ARGS["img_size"]
        args.batch_size = 2
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, **model_args).eval()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)

    def forward(iters):
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(iters):
                model(x)
        return time.perf_counter() - start

    info = dict(
        torch=torch.__version__,
        timm=timm.__version__,
        threads=torch.get_num_threads(),
        params=sum(p.numel() for p in model.parameters()),
        model=args.model,
        model_args=model_args,
        batch_size=args.batch_size,
        image_size=args.image_size,
    )
    return forward, info


def serve(forward, info):
    out = sys.stdout
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "info":
            reply = info
        elif cmd[0] == "warmup":
            reply = {"seconds": [forward(1) for _ in range(int(cmd[1]))]}
        elif cmd[0] == "run":
            reply = {"seconds": forward(int(cmd[1]))}
        else:
            reply = {"error": f"unknown command {line.strip()!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main(argv=None):
    args = parse_args(argv)
    # Only JSON on stdout in --serve mode; anything else a library prints goes to stderr.
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        forward, info = build(args)
    finally:
        sys.stdout = real_stdout
    if args.serve:
        serve(forward, info)
        return 0
    forward(1)
    forward(1)
    rates = [args.iters * info["batch_size"] / forward(args.iters) for _ in range(args.repeats)]
    print(json.dumps(info))
    print(
        "timm {model} batch {batch_size} @{image_size}: images/s per repetition ".format(**info)
        + ", ".join(f"{r:.2f}" for r in rates)
        + f"; median {statistics.median(rates):.2f}"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
