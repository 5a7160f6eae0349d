"""Runs an exported model in its own runtime, in a process that imports only numpy and that
runtime (never tl_keras, Keras or TensorFlow): the other side of the parity tests of
`test_export_runtimes.py`.

    python tests/export/runtime_runner.py RUNTIME MODEL INPUTS.npz OUTPUTS.npz

RUNTIME is `litert` (`ai_edge_litert`), `onnx` (`onnxruntime`) or `openvino`; every array
of INPUTS.npz (each its own batch size, and its own height and width for an OpenVINO model
with the pre-processing inside) is fed to the model's one input and the first output
is saved under the same key in OUTPUTS.npz. Printed on stdout, one JSON line: the input
as the runtime reports it, and the modules of tl_keras / Keras / TensorFlow that were
imported (none, or the test fails).
"""

import json
import sys

import numpy as np


def run_litert(path, arrays):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    (inp,) = interpreter.get_input_details()
    out = interpreter.get_output_details()[0]
    results = {}
    for key, x in arrays.items():
        # Dynamic batch: the input is resized to this batch, then the tensors allocated.
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        results[key] = np.array(interpreter.get_tensor(out["index"]))
    return results, {"shape_signature": [int(d) for d in inp["shape_signature"]]}


def run_onnx(path, arrays):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    results = {key: session.run(None, {inp.name: x})[0] for key, x in arrays.items()}
    shape = [d if isinstance(d, int) else -1 for d in inp.shape]
    return results, {"name": inp.name, "shape": shape}


def run_openvino(path, arrays):
    import openvino

    # The CPU plugin would run in bfloat16 on CPUs that have it: ask for float32.
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = {key: np.array(compiled(x)[0]) for key, x in arrays.items()}
    shape = [d.get_length() if d.is_static else -1 for d in compiled.inputs[0].get_partial_shape()]
    return results, {"shape": shape}


RUNNERS = {"litert": run_litert, "onnx": run_onnx, "openvino": run_openvino}


def main(argv):
    if len(argv) != 4 or argv[0] not in RUNNERS:
        print(__doc__, file=sys.stderr)
        return 2
    runtime, path, inputs, outputs = argv
    with np.load(inputs) as data:
        arrays = {k: data[k] for k in data.files}  # float32, or uint8 pixels
    results, info = RUNNERS[runtime](path, arrays)
    np.savez(outputs, **results)
    info["imported"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("tl_keras", "keras", "tensorflow")
    )
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
