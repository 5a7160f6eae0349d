"""Where graph-mode time goes: the measurements behind BENCHMARKS.md's "limits" section.

    python benchmarks/limits.py              # full run (~1 minute here)
    python benchmarks/limits.py --quick      # tiny shapes, < 1 minute, for CI

Three measurements, all in TensorFlow graph mode (`tf.function`, XLA off, this process's
default threads), each timed function called `--calls` times per repetition, `--repeats`
rounds with the functions of a table interleaved, median reported:

1. `matmul`: `x @ kernel + bias` (one fused oneDNN `MatMul + BiasAdd`) at the shapes the
   models run: ViT-B/16's projections (M = 8 x 197 rows), the TokenLearner / TokenFuser
   bottleneck at ViT-S width (M = 8 x 196, 384 -> 64) and an MLP layer of a block on 8
   tokens (M = 8 x 8). `--chain` products on distinct inputs per call; the time of the
   same function without the products is subtracted. Reported: ms per product, GMAC/s.
2. `fuser block`: the full-resolution work of one fuser block at ViT-S width (input
   `[8, 196, 384]`, 8 tokens), with the library's layers as the encoder wires them:
   the shared standardisation, `TokenLearner`, `TokenFuser`, the residual add (the
   transformer block on the 8 tokens is left out). Also: the same without the
   standardisation and the residual add (the layers get `normalized=x`; timing only),
   each of those two alone, and an empty function (the call overhead, in every row).
3. `profile`: op types' share of a graph-mode forward of a model (ViT-B/16, batch 8),
   from a TF profiler trace (`ExecutorState::Process` wrappers left out).

Results: Markdown tables on stdout; `--json` writes them (default for a full run:
`benchmarks/results/limits.json`). Nothing is asserted about speed.
"""

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import variants as V  # noqa: E402
from tl_keras.layers import TokenFuser, TokenLearner  # noqa: E402
from tl_keras.layers._utils import LAYER_NORM_EPSILON  # noqa: E402
from tl_keras.models import create_model  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, < 1 minute (CI)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7; quick 2)")
    p.add_argument("--calls", type=int, default=None, help="calls per repetition (default 20)")
    p.add_argument("--chain", type=int, default=4, help="products per matmul call")
    p.add_argument("--model", default=None, help="model to profile (default vit_b16)")
    p.add_argument("--json", default=None, help="where to write the results (JSON)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.calls is None:
        args.calls = 3 if args.quick else 20
    if args.model is None:
        args.model = "vit_ti16" if args.quick else "vit_b16"
    for name in ("repeats", "calls", "chain"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.json is None and not args.quick:
        args.json = os.path.join(V.RESULTS, "limits.json")
    return args


def _sig(value, digits=4):
    """`value` to `digits` significant figures (JSON stays short, small values stay > 0)."""
    return float(f"{value:.{digits}g}")


def time_interleaved(fns, calls, repeats):
    """{name: median ms per call}: every function warmed up, then `repeats` rounds of one
    repetition (`calls` calls, synchronised at the end) of each, in rotating order."""
    for fn in fns.values():
        for _ in range(2):
            tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls):
                out = fns[name]()
            tf.nest.map_structure(lambda t: t.numpy(), out)
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_rates(shapes, chain, calls, repeats):
    rng = np.random.default_rng(0)
    rows = []
    for label, m, k, n in shapes:
        xs = [tf.constant(rng.standard_normal((m, k), np.float32)) for _ in range(chain)]
        kernel = tf.Variable(rng.standard_normal((k, n), np.float32) * 0.02)
        bias = tf.Variable(np.zeros(n, np.float32))

        # Each product is computed in full; only one element of it is fetched, so no
        # pass over the output is timed with it.
        def products(xs=xs, kernel=kernel, bias=bias):
            return tf.add_n([(tf.matmul(x, kernel) + bias)[0, 0] for x in xs])

        def inputs_only(xs=xs):
            return tf.add_n([x[0, 0] for x in xs])

        t = time_interleaved(
            {"products": tf.function(products), "empty": tf.function(inputs_only)},
            calls, repeats,
        )
        ms = max(t["products"] - t["empty"], 1e-6) / chain
        gmac = m * k * n / 1e9
        # Significant figures, not decimals: a tiny product on a busy machine must not
        # round to 0 GMAC/s.
        rows.append(dict(shape=label, m=m, k=k, n=n, ms=_sig(ms),
                         gmac_per_s=_sig(gmac / ms * 1e3)))
    return rows


def fuser_block(batch, positions, channels, tokens, calls, repeats):
    """The encoder's full-resolution work around one fuser block (transformer block
    omitted), and the same without its element-wise passes."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, positions, channels), np.float32))
    y = tf.constant(rng.standard_normal((batch, positions, channels), np.float32))
    learner = TokenLearner(tokens)
    fuser = TokenFuser()
    standardize = keras.layers.LayerNormalization(
        epsilon=LAYER_NORM_EPSILON, center=False, scale=False
    )
    normalized = standardize(x)
    fuser(learner(x, normalized=normalized), x, normalized=normalized)  # builds both

    def full():
        n = standardize(x)  # [B, N, C]
        z = learner(x, normalized=n)  # [B, S, C]
        return fuser(z, x, normalized=n) + x  # [B, N, C]

    def without_elementwise():
        z = learner(x, normalized=x)
        return fuser(z, x, normalized=x)

    fns = {
        "standardise + TokenLearner + TokenFuser + residual add": full,
        "the same without standardisation and residual add": without_elementwise,
        "standardisation alone": lambda: standardize(x),
        "residual add alone": lambda: x + y,
        "empty function (call overhead)": lambda: x[:1, :1],
    }
    t = time_interleaved({k: tf.function(f) for k, f in fns.items()}, calls, repeats)
    return [dict(part=k, ms=_sig(v)) for k, v in t.items()]


def _read_op_times(logdir):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        raise RuntimeError(f"the TF profiler wrote no trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/op:OpType"
                if ":" not in name or "::" in name:
                    continue  # executor bookkeeping (ExecutorState::Process, ...)
                op = name.rsplit(":", 1)[1]
                totals[op] += event.duration_ps / 1e9  # ms
                counts[op] += 1
    return totals, counts


def profile_ops(model_name, batch, calls, quick):
    kwargs = dict(image_size=32) if quick else {}
    model = create_model(model_name, **kwargs)
    size = model.input_shape[1]
    x = tf.constant(np.random.default_rng(0).random((batch, size, size, 3), np.float32))
    forward = tf.function(lambda: model(x, training=False))
    for _ in range(3):
        forward().numpy()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            forward().numpy()
        tf.profiler.experimental.stop()
        totals, counts = _read_op_times(logdir)
    total = sum(totals.values())
    rows = [
        dict(op=op, ms_per_call=round(ms / calls, 2), share=round(ms / total, 4),
             ops_per_call=counts[op] // calls)
        for op, ms in totals.most_common()
    ]
    return dict(model=model_name, batch=batch, image_size=size,
                op_ms_per_call=round(total / calls, 1), ops=rows)


def main(argv=None):
    args = parse_args(argv)
    info = V.machine()
    load_before = V.loadavg()
    if args.quick:
        shapes = [("[64, 32] x [32, 64]", 64, 32, 64), ("[16, 32] x [32, 8]", 16, 32, 8)]
        block = dict(batch=2, positions=16, channels=32, tokens=4)
        batch = 2
    else:
        shapes = [
            ("ViT-B/16 QKV / out: [1576, 768] x [768, 768]", 1576, 768, 768),
            ("ViT-B/16 MLP 1: [1576, 768] x [768, 3072]", 1576, 768, 3072),
            ("ViT-B/16 MLP 2: [1576, 3072] x [3072, 768]", 1576, 3072, 768),
            ("TL / TF bottleneck, ViT-S: [1568, 384] x [384, 64]", 1568, 384, 64),
            ("ViT-S MLP 1 on 8 tokens: [64, 384] x [384, 1536]", 64, 384, 1536),
        ]
        block = dict(batch=8, positions=196, channels=384, tokens=8)
        batch = 8
    results = dict(machine=info, load_before=load_before)

    results["matmul"] = matmul_rates(shapes, args.chain, args.calls, args.repeats)
    print(f"## limits ({V.machine_line(info)})\n")
    print(f"1-minute load average {load_before[0]} at the start\n")
    print("### `x @ kernel + bias`, graph mode\n")
    print("| product | ms | GMAC/s |\n|---|---:|---:|")
    for r in results["matmul"]:
        print(f"| {r['shape']} | {r['ms']:.3f} | {r['gmac_per_s']:.1f} |")

    results["fuser_block"] = dict(shape=block, parts=fuser_block(
        **block, calls=args.calls * 5, repeats=args.repeats))
    b = block
    print(f"\n### Full-resolution work of one fuser block, input [{b['batch']}, "
          f"{b['positions']}, {b['channels']}], {b['tokens']} tokens, graph mode\n")
    print("| part | ms per call |\n|---|---:|")
    for r in results["fuser_block"]["parts"]:
        print(f"| {r['part']} | {r['ms']:.3f} |")

    prof = profile_ops(args.model, batch, max(2, args.calls // 7), args.quick)
    results["profile"] = prof
    print(f"\n### Op types in a graph-mode forward of {prof['model']} (batch {prof['batch']}, "
          f"{prof['image_size']} px), TF profiler: {prof['op_ms_per_call']} ms of op time "
          f"per call\n")
    print("| op type | ms per call | share | ops per call |\n|---|---:|---:|---:|")
    for r in prof["ops"][:12]:
        print(f"| {r['op']} | {r['ms_per_call']:.2f} | {100 * r['share']:.1f}% | "
              f"{r['ops_per_call']} |")

    results["load_after"] = V.loadavg()
    print(f"\n1-minute load average {results['load_after'][0]} at the end")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
