"""Latency and peak memory of each deployment runtime, with and without TokenLearner.

    python benchmarks/runtimes.py            # ViT-S/16 and ViT-S/16 + 8-TL at 6, 224 px
    python benchmarks/runtimes.py --quick    # a tiny ViT + TL, 1 repetition (CI: the script runs)

For each model (random weights, the same for every runtime) the parent process writes
every format with `tl_keras.export` into a temporary folder:

| runtime | file | run with |
| --- | --- | --- |
| `saved_model` | Keras `model.export(format="tf_saved_model")` (the forward pass) | `tf.saved_model.load(...).serve` |
| `litert` | `export_runtime(..., "litert")` | `ai_edge_litert` interpreter |
| `litert_dynamic_range` | `quantization="dynamic_range"` | the same |
| `litert_full_integer` | `quantization="full_integer"`, calibrated on random inputs in [-1, 1] | the same |
| `onnx` | `export_runtime(..., "onnx")` | `onnxruntime`, CPU provider |
| `openvino` | `export_runtime(..., "openvino")` | OpenVINO CPU, `INFERENCE_PRECISION_HINT=f32` |

Then one child process per runtime (this file with `--child`; it imports numpy and its
runtime only, never tl_keras; TensorFlow imports Keras itself) loads its file and waits for
requests. All children of a model are alive together and measured interleaved: for each
batch size (1, then 8), for each of `--repeats` repetitions, each child in turn runs one warm-up call and `--calls`
timed calls on the same random input and reports the mean latency of those calls; a
runtime's figure is the median over the repetitions. So a change of machine load hits all
runtimes alike. Memory: the child's resident set after loading (`RSS load`) and its
high-water mark (`VmHWM`, reset with `/proc/self/clear_refs` when the batch size changes)
over the calls of each batch size. `max err` compares each runtime's logits at batch 8
with the SavedModel's, relative to their largest magnitude (the quantized variants differ
by design; random weights make their agreement meaningless, see BENCHMARKS.md's int8
section for a trained model). The threads are each runtime's defaults (all cores).

Prints a markdown table and writes JSON (`--json`, default
`benchmarks/results/runtimes.json`; none with `--quick` unless given).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import variants as V  # noqa: E402
from procstat import reset_peak, status_kb  # noqa: E402

RUNTIMES = ("saved_model", "litert", "litert_dynamic_range", "litert_full_integer", "onnx",
            "openvino")
BATCHES = (1, 8)
FILES = {"saved_model": "saved_model", "litert": "litert/model.tflite",
         "litert_dynamic_range": "litert_dynamic_range/model.tflite",
         "litert_full_integer": "litert_full_integer/model.tflite",
         "onnx": "onnx/model.onnx", "openvino": "openvino/model.xml"}


def models(quick):
    """`[(key, title, registered name, kwargs, input shape)]`."""
    from tl_keras import TL

    if quick:
        tiny = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
                    mlp_dim=64, num_classes=10)
        # One model: --quick checks that the script runs every runtime end to end (CI).
        return [("vit_tiny_tl", "tiny ViT (32 px, /8, 4 blocks) + 4-TL at 2", "vit_ti16",
                 dict(tiny, tokenlearner=TL(4, at=2)), (32, 32, 3))]
    return [("vit_s16", "ViT-S/16, 224 px", "vit_s16", {}, (224, 224, 3)),
            ("vit_s16_tl8at6", "ViT-S/16 + 8-TL at 6, 224 px", "vit_s16",
             dict(tokenlearner=TL(8, at=6)), (224, 224, 3))]


# ------------------------------------------------------------------------------------------
# The child: one runtime, requests on stdin, one JSON line per answer on stdout.
# ------------------------------------------------------------------------------------------


def _load(runtime, path):
    """A function `x -> logits` (numpy in and out) for `runtime`."""
    import numpy as np

    if runtime == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # kept: its variables die with it
        return lambda x: loaded.serve(tf.constant(x)).numpy()
    if runtime.startswith("litert"):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]
        state = {"shape": None}

        def run(x):
            if state["shape"] != x.shape:  # resize and allocate once per batch size
                interpreter.resize_tensor_input(inp, list(x.shape))
                interpreter.allocate_tensors()
                state["shape"] = x.shape
            interpreter.set_tensor(inp, x)
            interpreter.invoke()
            return np.array(interpreter.get_tensor(out))

        return run
    if runtime == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(
            path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: np.array(compiled(x)[0])
    raise ValueError(runtime)


def child(runtime, path, input_shape):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    start = time.perf_counter()
    fn = _load(runtime, path)
    inputs = {b: np.random.default_rng(b).uniform(-1, 1, (b,) + tuple(input_shape))
              .astype(np.float32) for b in BATCHES}
    reply = dict(load_s=time.perf_counter() - start, rss_load_mb=status_kb("VmRSS") / 1024,
                 imported=sorted(m for m in sys.modules if m.split(".")[0] == "tl_keras"))
    print(json.dumps(reply), flush=True)
    batch = None
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("stop"):
            return
        b, calls = request["batch"], request["calls"]
        if b != batch:
            batch = b
            reset_peak()
        x = inputs[b]
        logits = fn(x)  # warm-up (the first call of a batch size also allocates / compiles)
        start = time.perf_counter()
        for _ in range(calls):
            fn(x)
        ms = (time.perf_counter() - start) / calls * 1000
        answer = dict(ms=ms, peak_mb=status_kb("VmHWM") / 1024)
        if request.get("logits"):
            answer["logits"] = np.asarray(logits, np.float64).tolist()
        print(json.dumps(answer), flush=True)


class Child:
    def __init__(self, runtime, path, input_shape):
        cmd = [sys.executable, os.path.abspath(__file__), "--child",
               json.dumps([runtime, path, list(input_shape)])]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.runtime = runtime
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.loaded = self._read()
        if self.loaded["imported"]:
            raise RuntimeError(f"{runtime} child imported {self.loaded['imported']}")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.runtime} child failed:\n{self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self):
        try:
            self.proc.stdin.write(json.dumps({"stop": True}) + "\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------------------------------
# The parent: exports, then the interleaved measurements.
# ------------------------------------------------------------------------------------------


def export_all(name, kwargs, input_shape, root, runtimes, calibration):
    """Every runtime's file of one model (random weights) under `root`; their sizes."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tl_keras import export
    from tl_keras.models import create_model

    keras.utils.set_random_seed(0)
    model = create_model(name, **kwargs)
    rng = np.random.default_rng(0)
    head = model.get_layer("head")  # zero-initialised: every input would give zero logits
    head.kernel.assign(rng.normal(0, 0.02, head.kernel.shape).astype("float32"))
    sizes, seconds = {}, {}
    for runtime in runtimes:
        path = os.path.join(root, FILES[runtime])
        start = time.perf_counter()
        if runtime == "saved_model":
            signature = [tf.TensorSpec([None] + list(input_shape), tf.float32)]
            model.export(path, format="tf_saved_model", input_signature=signature,
                         verbose=False)
            size = sum(os.path.getsize(os.path.join(d, f))
                       for d, _, files in os.walk(path) for f in files)
        else:
            fmt, _, mode = runtime.partition("_")
            options = {}
            if mode:
                options["quantization"] = mode
            if mode == "full_integer":
                options["representative_data"] = [
                    rng.uniform(-1, 1, (calibration,) + tuple(input_shape)).astype("float32")]
            export.export_runtime(model, path, fmt, **options)
            size = os.path.getsize(path)
            if fmt == "openvino":
                size += os.path.getsize(path[:-4] + ".bin")
        sizes[runtime] = size
        seconds[runtime] = time.perf_counter() - start
    return sizes, seconds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models, 1 repetition (CI)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repetitions (7)")
    p.add_argument("--calls", type=int, default=None,
                   help="timed calls per repetition (default 10 at batch 1, 3 at batch 8)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset")
    p.add_argument("--calibration", type=int, default=None,
                   help="full integer: calibration examples (default 32; quick 4)")
    p.add_argument("--json", default=None, help="where to write the results (JSON)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 7)
    args.calibration = args.calibration or (4 if args.quick else 32)
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = set(args.runtimes) - set(RUNTIMES)
    if unknown:
        p.error(f"--runtimes: unknown {sorted(unknown)}; known {', '.join(RUNTIMES)}")
    if args.json is None and not args.quick:
        args.json = os.path.join(V.RESULTS, "runtimes.json")
    return args


def calls_for(args, batch):
    if args.quick:
        return 1
    return args.calls or (10 if batch == 1 else 3)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(*json.loads(args.child))
        return 0
    import numpy as np

    info = V.machine()
    info["load_start"] = V.loadavg()
    print(V.machine_line(info), flush=True)
    results = []
    for key, title, name, kwargs, input_shape in models(args.quick):
        with tempfile.TemporaryDirectory(prefix="tl_runtimes_") as root:
            sizes, export_s = export_all(name, kwargs, input_shape, root, args.runtimes,
                                         args.calibration)
            print(f"\n== {title}: exported "
                  + ", ".join(f"{r} {sizes[r] / 1e6:.1f} MB" for r in args.runtimes), flush=True)
            children = [Child(r, os.path.join(root, FILES[r]), input_shape)
                        for r in args.runtimes]
            try:
                rows = {c.runtime: dict(model=key, title=title, runtime=c.runtime,
                                        file_bytes=sizes[c.runtime],
                                        export_s=export_s[c.runtime], load_s=c.loaded["load_s"],
                                        rss_load_mb=c.loaded["rss_load_mb"])
                        for c in children}
                logits = {}
                for batch in BATCHES:
                    times = {c.runtime: [] for c in children}
                    peaks = {c.runtime: 0.0 for c in children}
                    for rep in range(args.repeats):
                        for c in children:  # interleaved: one repetition of each in turn
                            answer = c.ask(batch=batch, calls=calls_for(args, batch),
                                           logits=batch == BATCHES[-1] and rep == 0)
                            times[c.runtime].append(answer["ms"])
                            peaks[c.runtime] = max(peaks[c.runtime], answer["peak_mb"])
                            if "logits" in answer:
                                logits[c.runtime] = np.asarray(answer["logits"])
                            time.sleep(0.05)  # let the last runtime's threads go idle
                    for r in times:
                        rows[r][f"ms_b{batch}"] = statistics.median(times[r])
                        rows[r][f"ms_b{batch}_all"] = times[r]
                        rows[r][f"peak_b{batch}_mb"] = peaks[r]
                ref = logits.get("saved_model", logits[args.runtimes[0]])
                scale = max(np.max(np.abs(ref)), 1e-12)
                for r, out in logits.items():
                    rows[r]["max_err"] = float(np.max(np.abs(out - ref)) / scale)
            finally:
                for c in children:
                    c.stop()
            for r in args.runtimes:
                results.append(rows[r])
                row = rows[r]
                print(f"  {r}: batch 1 {row['ms_b1']:.2f} ms, batch 8 {row['ms_b8']:.2f} ms, "
                      f"peak {row['peak_b8_mb']:.0f} MB", flush=True)
    info["load_end"] = V.loadavg()
    print()
    print(f"- {V.machine_line(info)}")
    print(f"- command: `{info['command']}`; {args.repeats} interleaved repetitions, median; "
          f"load average (1 min) {info['load_start'][0]} at the start, "
          f"{info['load_end'][0]} at the end")
    print()
    print("| model | runtime | file (MB) | batch 1 (ms) | batch 8 (ms) | batch 8 (img/s) "
          "| RSS load (MB) | peak b1 (MB) | peak b8 (MB) | max err vs SavedModel |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['title']} | {r['runtime']} | {r['file_bytes'] / 1e6:.1f} "
              f"| {r['ms_b1']:.2f} | {r['ms_b8']:.2f} | {8000 / r['ms_b8']:.1f} "
              f"| {r['rss_load_mb']:.0f} | {r['peak_b1_mb']:.0f} | {r['peak_b8_mb']:.0f} "
              f"| {r['max_err']:.1e} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, quick=args.quick, repeats=args.repeats,
                           results=results), f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
