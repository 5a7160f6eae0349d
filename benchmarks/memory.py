"""Peak resident memory of a training step, with and without TokenLearner.

    python benchmarks/memory.py              # full run, the table in BENCHMARKS.md
    python benchmarks/memory.py --quick      # tiny models, < 2 minutes, for CI

Every (variant, XLA) is measured in a fresh Python process (so nothing one model
allocated is counted for another), which:

1. imports TensorFlow and tl_keras, builds the model and an SGD (momentum) optimizer,
   makes one random batch: `RSS after build`;
2. runs the first train step (forward with `training=True`, cross-entropy, gradients,
   update; tracing and, with XLA, compilation happen here): `peak, first step` is the
   process's high-water mark (`VmHWM` in /proc/self/status) after it;
3. resets the high-water mark (`echo 5 > /proc/self/clear_refs`), runs `--steps` more
   steps: `peak, steady step` is the high-water mark over those steps alone.

`step - build` = max(both peaks) - `RSS after build`: what training adds on top of the
built model (activations kept for the backward pass, gradients, workspace, and what
tracing / XLA compilation leaves resident). `vs base` divides it by the base model's.
The models are those of `benchmarks/throughput.py` (same groups and batch sizes).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import variants as V  # noqa: E402
from procstat import reset_peak, status_kb  # noqa: E402


def child(spec):
    """Runs in the fresh process; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import keras

    from tl_keras.models import TL, create_model

    rss_import = status_kb("VmRSS")
    kwargs = dict(spec["kwargs"])
    kwargs["tokenlearner"] = TL.parse(spec["tl"]) if spec["tl"] else None
    keras.utils.set_random_seed(0)
    model = create_model(spec["model"], **kwargs)
    optimizer = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(0)
    batch = spec["batch"]
    x = tf.constant(rng.normal(size=[batch] + spec["input_shape"]).astype("float32"))
    y = tf.constant(rng.integers(0, model.output_shape[-1], size=(batch,)).astype("int32"))

    @tf.function(jit_compile=spec["xla"], autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    rss_build = status_kb("VmRSS")
    step(x, y).numpy()
    peak_first = status_kb("VmHWM")
    rss_first = status_kb("VmRSS")
    can_reset = reset_peak()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step(x, y).numpy()
    seconds = (time.perf_counter() - start) / spec["steps"]
    print(json.dumps(dict(
        rss_import_mb=rss_import / 1024, rss_build_mb=rss_build / 1024,
        peak_first_mb=peak_first / 1024, rss_after_first_mb=rss_first / 1024,
        peak_steady_mb=status_kb("VmHWM") / 1024 if can_reset else None,
        params=model.count_params(), seconds_per_step=seconds,
    )))


def measure(spec):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"memory child failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models, < 2 minutes (CI)")
    p.add_argument("--groups", default="", help="comma-separated group keys (default: all)")
    p.add_argument("--xla", default="off,on", help="off,on")
    p.add_argument("--steps", type=int, default=None, help="steady steps (default 3; quick 2)")
    p.add_argument("--json", default=None, help="where to write the results (JSON)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 3)
    flags = {"off": False, "on": True}
    args.xla = [flags[v] for v in args.xla.split(",") if v]
    if args.json is None and not args.quick:
        args.json = os.path.join(V.RESULTS, "memory.json")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    import keras
    import tensorflow as tf

    info = dict(
        date=time.strftime("%Y-%m-%d"), cores=os.cpu_count(), cpu=V.cpu_model(),
        system=" ".join(os.uname()[i] for i in (0, 2)),
        python=sys.version.split()[0], tensorflow=tf.__version__, keras=keras.__version__,
        command="python " + " ".join(sys.argv), load_start=V.loadavg(),
    )
    print(V.machine_line(info), flush=True)
    results = []
    for group in V.select_groups(args.quick, args.groups):
        print(f"\n== {group.title}, train batch {group.train_batch}", flush=True)
        # --quick: the base and one TokenLearner variant of each tiny group.
        chosen = group.variants[:2] if args.quick else group.variants
        for label, tl in chosen:
            for xla in args.xla:
                spec = dict(model=group.model, kwargs=group.kwargs,
                            tl=str(tl) if tl else None, xla=xla, batch=group.train_batch,
                            input_shape=list(group.input_shape), steps=args.steps)
                r = measure(spec)
                r.update(group=group.key, title=group.title, variant=label, xla=xla,
                         batch=group.train_batch, is_base=label == group.variants[0][0])
                results.append(r)
                print(f"  {label} / XLA {'on' if xla else 'off'}: build {r['rss_build_mb']:.0f} "
                      f"MB, first step {r['peak_first_mb']:.0f} MB, steady step "
                      f"{r['peak_steady_mb']:.0f} MB", flush=True)
    info["load_end"] = V.loadavg()
    print()
    print(f"- {V.machine_line(info)}")
    print(f"- command: `{info['command']}`; load average (1 min) {info['load_start'][0]} at "
          f"the start, {info['load_end'][0]} at the end")
    print()
    print("| model | variant | XLA | batch | RSS after build (MB) | peak, first step (MB) "
          "| RSS after first step (MB) | peak, steady steps (MB) | step - build (MB) "
          "| step - build vs base |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    base = {}
    for r in results:
        added = max(r["peak_steady_mb"] or 0, r["peak_first_mb"]) - r["rss_build_mb"]
        key = (r["group"], r["xla"])
        if r["is_base"]:
            base[key] = added
        rel = "–" if r["is_base"] else f"{added / base[key]:.2f}x"
        print(f"| {r['title']} | {r['variant']} | {'on' if r['xla'] else 'off'} | {r['batch']} "
              f"| {r['rss_build_mb']:.0f} | {r['peak_first_mb']:.0f} "
              f"| {r['rss_after_first_mb']:.0f} "
              f"| {r['peak_steady_mb']:.0f} | {added:.0f} | {rel} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, quick=args.quick, results=results), f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
