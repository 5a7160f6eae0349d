"""Throughput of ViT / ViViT with and without TokenLearner, and of the timm peer.

    python benchmarks/throughput.py                    # full run, the tables in BENCHMARKS.md
    python benchmarks/throughput.py --groups vit_b16   # one group
    python benchmarks/throughput.py --quick            # tiny models, < 2 minutes, for CI

What is measured. For every model group (ViT-S/16 and ViT-B/16 at 224 px, each plain and
with 8-TL at 6, 16-TL at 6 and 8-TL at 6 + fuser; a small ViViT with and without
TokenLearner) and every mode:

* `inference`: `model(x, training=False)` inside one `tf.function`;
* `train`: one SGD (momentum 0.9) step: forward with `training=True`, softmax
  cross-entropy, gradients of every trainable weight, the update;

each with XLA off (`tf.function` graph, TensorFlow's oneDNN kernels) and on
(`jit_compile=True`). Random weights and one fixed random batch per group. Every timed
call is synchronised by fetching its result (`.numpy()`).

How. All models of a group are built in this one process, every (variant, mode, XLA)
function is compiled and warmed up, and its number of calls per repetition is set so that
a repetition lasts about `--min_seconds`. Then `--repeats` rounds run; in each round every
function runs one repetition, one after the other (the order rotates from round to
round), so slow phases of a shared machine hit all variants alike. Reported: images (or
videos) per second of every repetition, their median, the measured speed-up of each
TokenLearner variant over its base (same mode, same XLA setting, ratio of the medians)
and the GFLOPs ratio from `tl_keras.flops.gflops` (forward MACs, the paper's "GFLOPs"),
and speed-up / GFLOPs ratio (the issue's target: >= 0.9).

The timm peer (ViT-B/16 group only): `benchmarks/peer_timm.py` in its own environment
(`.venv-peer`, see `benchmarks/requirements-peer.txt`; `--peer_python` or
`$TL_KERAS_PEER_PYTHON` to use another) is started as a subprocess and its repetitions
take their turn in the same rounds: the same ViT-B/16 (random weights, inference mode,
same batch and image size). Without that environment the peer is skipped, with a message.

Results: Markdown tables on stdout, and a JSON file (`--json`; by default
`benchmarks/results/throughput.json` for a full run) that `benchmarks/plot.py` draws.
"""

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import variants as V  # noqa: E402
from tl_keras.flops import count_params, gflops  # noqa: E402
from tl_keras.models import create_model  # noqa: E402

MODES = ("inference", "train")
DEFAULT_PEER_PYTHON = os.path.join(V.REPO, ".venv-peer", "bin", "python")
PEER_SCRIPT = os.path.join(V.REPO, "benchmarks", "peer_timm.py")
TARGET = 0.9


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models, < 2 minutes (CI)")
    p.add_argument("--groups", default="", help="comma-separated group keys (default: all)")
    p.add_argument("--modes", default="inference,train", help="inference,train")
    p.add_argument("--xla", default="off,on", help="off,on")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls after the first")
    p.add_argument(
        "--min_seconds", type=float, default=None,
        help="target length of one repetition of one function (default 2.0; quick 0.05)",
    )
    p.add_argument("--json", default=None, help="where to write the results (JSON)")
    p.add_argument("--peer_python", default=None, help="python of the timm environment")
    p.add_argument("--no_peer", action="store_true", help="skip the timm peer")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.min_seconds = args.min_seconds or (0.05 if args.quick else 2.0)
    args.modes = [m for m in args.modes.split(",") if m]
    bad = set(args.modes) - set(MODES)
    if bad:
        p.error(f"unknown modes {sorted(bad)}")
    flags = {"off": False, "on": True}
    args.xla = [flags[v] for v in args.xla.split(",") if v]
    if args.json is None and not args.quick:
        args.json = os.path.join(V.RESULTS, "throughput.json")
    return args


# ----------------------------------------------------------------------------------------
# What runs.


def inference_fn(model, xla):
    @tf.function(jit_compile=xla, autograph=False)
    def forward(x):
        return model(x, training=False)

    return forward


def train_fn(model, optimizer, xla):
    variables = model.trainable_variables

    @tf.function(jit_compile=xla, autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    return step


class Timed:
    """One (variant, mode, XLA) function and its measurements."""

    def __init__(self, group, label, mode, xla, batch, call, gflops_, params, peer=None):
        self.group, self.label, self.mode, self.xla = group, label, mode, xla
        self.batch, self.call, self.gflops, self.params = batch, call, gflops_, params
        self.peer = peer
        self.compile_s = None
        self.warm_s = None
        self.iters = 1
        self.rates = []

    @property
    def name(self):
        if self.peer is not None:
            return f"timm {self.label}"
        return f"{self.label} / {self.mode} / XLA {'on' if self.xla else 'off'}"

    def run(self, iters):
        if self.peer is not None:
            return self.peer.run(iters)
        start = time.perf_counter()
        for _ in range(iters):
            self.call()
        return time.perf_counter() - start

    def warm(self, warmup, min_seconds):
        if self.peer is not None:
            times = self.peer.warmup(1 + warmup)
        else:
            times = [self.run(1) for _ in range(1 + warmup)]
        self.compile_s = times[0]
        self.warm_s = min(times[1:]) if len(times) > 1 else times[0]
        self.iters = max(1, math.ceil(min_seconds / max(self.warm_s, 1e-6)))

    def record(self):
        seconds = self.run(self.iters)
        self.rates.append(self.iters * self.batch / seconds)

    @property
    def median(self):
        return statistics.median(self.rates)

    def to_json(self):
        return dict(
            group=self.group, variant=self.label, mode=self.mode,
            xla=None if self.peer is not None else self.xla,
            framework="timm" if self.peer is not None else "tl_keras",
            batch=self.batch, gflops=self.gflops, params=self.params,
            iters_per_repetition=self.iters, first_call_s=self.compile_s,
            rates=self.rates, median=self.median,
        )


class Peer:
    """`benchmarks/peer_timm.py --serve` in the timm environment."""

    def __init__(self, python, spec, batch, image_size):
        cmd = [
            python, PEER_SCRIPT, "--serve", "--model", spec["model"],
            "--model_args", json.dumps(spec["model_args"]),
            "--batch_size", str(batch), "--image_size", str(image_size),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.info = self._ask("info")

    def _ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"timm peer exited (code {self.proc.poll()}) on {command!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"timm peer: {reply['error']}")
        return reply

    def warmup(self, calls):
        return self._ask(f"warmup {calls}")["seconds"]

    def run(self, iters):
        return self._ask(f"run {iters}")["seconds"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def peer_python(args):
    if args.no_peer:
        return None, "skipped (--no_peer)"
    python = args.peer_python or os.environ.get("TL_KERAS_PEER_PYTHON") or DEFAULT_PEER_PYTHON
    if not os.path.exists(python):
        return None, (
            f"skipped: no timm environment at {python} (create it with `python3.11 -m venv "
            ".venv-peer && .venv-peer/bin/python -m pip install -r "
            "benchmarks/requirements-peer.txt`, or pass --peer_python)"
        )
    return python, None


# ----------------------------------------------------------------------------------------
# One group.


def run_group(group, args, python):
    rng = np.random.default_rng(0)
    timed, peer, models = [], None, []
    for label, tl in group.variants:
        kwargs = V.variant_kwargs(group, tl)
        keras.utils.set_random_seed(0)
        model = create_model(group.model, **kwargs)
        models.append(model)
        g = gflops(group.model, **kwargs)
        params = count_params(group.model, **kwargs)
        optimizer = None
        for mode in args.modes:
            batch = group.infer_batch if mode == "inference" else group.train_batch
            x = tf.constant(rng.normal(size=(batch,) + group.input_shape).astype("float32"))
            if mode == "train":
                if optimizer is None:
                    optimizer = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)
                    optimizer.build(model.trainable_variables)
                classes = model.output_shape[-1]
                y = tf.constant(rng.integers(0, classes, size=(batch,)).astype("int32"))
            for xla in args.xla:
                if mode == "inference":
                    fn = inference_fn(model, xla)
                    call = (lambda f, a: lambda: f(a).numpy())(fn, x)
                else:
                    fn = train_fn(model, optimizer, xla)
                    call = (lambda f, a, b: lambda: f(a, b).numpy())(fn, x, y)
                timed.append(Timed(group.key, label, mode, xla, batch, call, g, params))
    peer_note = None
    if group.peer is not None and "inference" in args.modes:
        if python is None:
            peer_note = "timm peer " + args.peer_note
        else:
            peer = Peer(python, group.peer, group.infer_batch, group.input_shape[0])
            base_flops = timed[0].gflops
            timed.append(Timed(group.key, group.peer["model"], "inference", None,
                               group.infer_batch, None, base_flops, peer.info["params"],
                               peer=peer))
    try:
        for t in timed:
            t.warm(args.warmup, args.min_seconds)
            print(f"  warm: {t.name}: first call {t.compile_s:.1f} s, then {t.warm_s:.3f} s "
                  f"per call, {t.iters} call(s) per repetition", flush=True)
        load_before = V.loadavg()
        other = V.OtherLoad([peer.proc.pid] if peer is not None else []).start()
        for r in range(args.repeats):
            shift = r % len(timed)
            for t in timed[shift:] + timed[:shift]:
                t.record()
            print(f"  round {r + 1}/{args.repeats} done, load {V.loadavg()[0]}", flush=True)
        load_after = V.loadavg()
        other_cores = other.stop()
    finally:
        if peer is not None:
            peer.close()
    result = dict(
        key=group.key, title=group.title, unit=group.unit, model=group.model,
        kwargs={k: v for k, v in group.kwargs.items()},
        variants=[(label, str(tl) if tl else None) for label, tl in group.variants],
        load_before=load_before, load_after=load_after, other_cores=other_cores,
        peer=(dict(peer.info) if peer is not None else None), peer_note=peer_note,
        timed=[t.to_json() for t in timed],
    )
    del timed, models
    keras.backend.clear_session()
    gc.collect()
    return result


# ----------------------------------------------------------------------------------------
# Tables.


def rates_text(rates):
    return ", ".join(f"{r:.2f}" if r < 100 else f"{r:.0f}" for r in rates)


def group_table(result):
    unit = result["unit"]
    rows = [r for r in result["timed"] if r["framework"] == "tl_keras"]
    base = {}
    for r in rows:
        if r["variant"] == result["variants"][0][0]:
            base[(r["mode"], r["xla"])] = r
    lines = [
        f"| variant | GFLOPs | params | mode | XLA | batch | {unit}/s per repetition "
        f"| median {unit}/s | speed-up | GFLOPs ratio | speed-up / GFLOPs ratio |",
        "|---|---:|---:|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        for xla in (False, True):
            for r in rows:
                if r["mode"] != mode or r["xla"] != xla:
                    continue
                b = base[(mode, xla)]
                speedup = r["median"] / b["median"]
                ratio = b["gflops"] / r["gflops"]
                is_base = r is b
                lines.append(
                    f"| {r['variant']} | {r['gflops']:.4g} | {r['params'] / 1e6:.1f}M | {mode} "
                    f"| {'on' if xla else 'off'} | {r['batch']} | {rates_text(r['rates'])} "
                    f"| **{r['median']:.2f}** | {'–' if is_base else f'{speedup:.2f}x'} "
                    f"| {'–' if is_base else f'{ratio:.2f}x'} "
                    f"| {'–' if is_base else f'{speedup / ratio:.2f}'} |"
                )
    return "\n".join(lines)


def target_rows(result):
    """(variant, mode, xla, speed-up, GFLOPs ratio, efficiency) of every TL variant."""
    rows = [r for r in result["timed"] if r["framework"] == "tl_keras"]
    base_label = result["variants"][0][0]
    base = {(r["mode"], r["xla"]): r for r in rows if r["variant"] == base_label}
    out = []
    for r in rows:
        if r["variant"] == base_label:
            continue
        b = base[(r["mode"], r["xla"])]
        speedup, ratio = r["median"] / b["median"], b["gflops"] / r["gflops"]
        out.append((r["variant"], r["mode"], r["xla"], speedup, ratio, speedup / ratio))
    return out


def peer_table(result):
    """tl_keras base model vs timm, inference, with per-round ratios (side by side)."""
    rows = result["timed"]
    timm = [r for r in rows if r["framework"] == "timm"]
    if not timm:
        return None
    timm = timm[0]
    base_label = result["variants"][0][0]
    ours = [r for r in rows if r["framework"] == "tl_keras" and r["variant"] == base_label
            and r["mode"] == "inference"]
    info = result["peer"]
    lines = [
        "| model | framework | batch | images/s per repetition | median images/s "
        "| tl_keras / timm (ratio of medians) | median of per-round ratios |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in ours:
        per_round = [a / b for a, b in zip(r["rates"], timm["rates"])]
        lines.append(
            f"| {result['key']} | tl_keras, XLA {'on' if r['xla'] else 'off'} "
            f"| {r['batch']} | {rates_text(r['rates'])} | **{r['median']:.2f}** "
            f"| **{r['median'] / timm['median']:.2f}** | {statistics.median(per_round):.2f} |"
        )
    name = info["model"] + (" " + json.dumps(info["model_args"]) if info["model_args"] else "")
    lines.append(
        f"| {name} | timm {info['timm']}, torch {info['torch']} "
        f"({info['threads']} threads) | {timm['batch']} | {rates_text(timm['rates'])} "
        f"| **{timm['median']:.2f}** | – | – |"
    )
    return "\n".join(lines)


def report(results, info):
    print()
    print(f"- {V.machine_line(info)}")
    print(f"- command: `{info['command']}`")
    for res in results:
        print(f"\n### {res['title']}\n")
        print(f"load average (1 min) {res['load_before'][0]} before the timed rounds, "
              f"{res['load_after'][0]} after (this benchmark's own threads included); other "
              f"processes used {res['other_cores']:.2f} cores on average during the rounds\n")
        print(group_table(res))
        table = peer_table(res)
        if table:
            print(f"\nPeer (same run, interleaved):\n\n{table}")
        elif res.get("peer_note"):
            print(f"\n{res['peer_note']}")
    print("\n### Target: speed-up / GFLOPs ratio >= 0.9\n")
    print("| group | variant | mode | XLA | speed-up | GFLOPs ratio | speed-up / GFLOPs ratio "
          "| met |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for res in results:
        for variant, mode, xla, speedup, ratio, eff in target_rows(res):
            print(f"| {res['key']} | {variant} | {mode} | {'on' if xla else 'off'} "
                  f"| {speedup:.2f}x | {ratio:.2f}x | {eff:.2f} "
                  f"| {'yes' if eff >= TARGET else 'no'} |")


def main(argv=None):
    args = parse_args(argv)
    python, note = peer_python(args)
    args.peer_note = note
    info = V.machine()
    print(V.machine_line(info), flush=True)
    print(f"load average at the start: {V.loadavg()}", flush=True)
    results = []
    for group in V.select_groups(args.quick, args.groups):
        print(f"\n== {group.title}", flush=True)
        results.append(run_group(group, args, python))
    info["load_end"] = V.loadavg()
    report(results, info)
    print(f"\nload average at the end: {info['load_end']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, quick=args.quick, repeats=args.repeats,
                           min_seconds=args.min_seconds, groups=results), f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
