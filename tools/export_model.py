"""Export a trained model for TF Serving (SavedModel), LiteRT, ONNX, OpenVINO and/or as a
`.keras` archive.

    python tools/export_model.py --workdir=RUN --format=saved_model
    python tools/export_model.py --workdir=RUN --format=saved_model,keras --class_names=classes.txt
    python tools/export_model.py --model=model.keras --output=out --min_resize=256 --multilabel
    python tools/export_model.py --workdir=RUN --format=litert,onnx,openvino
    python tools/export_model.py --workdir=RUN --format=litert --quantize=dynamic_range,full_integer

`--workdir` takes the newest checkpoint of a training run (or `--checkpoint=PATH`) and the
run's resolved config (`config.json`: pre-processing, multi-label, and the class names of
the built-in datasets); the output goes to `RUN/export/<step>/{saved_model,model.keras}`
(and `litert/model.tflite`, `onnx/model.onnx`, `openvino/model.{xml,bin}`) unless `--output`
is given. `--model` takes a `.keras` file; give the pre-processing as
flags. `--class_names` (a file, one name per line, or a,b,c) replaces the config's names.

An existing `saved_model/` or `model.keras` in the output is kept: the tool refuses unless
`--overwrite`, and even then replaces only a SavedModel directory (one with
`saved_model.pb`) or an empty one, after the new export was written beside it (the same
for `litert/`, `onnx/`, `openvino/`, each with its model file).

`litert`, `onnx` and `openvino` hold the model's forward pass only (`tl_keras.export.
export_runtime`, through Keras' `model.export`): float32 input of the model's size, batch
dynamic, already pre-processed (the pre-processing is the caller's; it is written to the
JSON beside each file), logits out; `--openvino_pixels` puts the pre-processing inside the
OpenVINO model (uint8 pixels of any size in). Their converters come with `pip install
'tl_keras[deploy]'`.

`--quantize=dynamic_range` / `full_integer` (comma-separated for both) writes quantized
LiteRT files instead of the float32 one (`none` in the list: the float32 one too), to
`litert_dynamic_range/model.tflite` and `litert_full_integer/model.tflite`:
dynamic range = int8 weights, float32 activations; full integer = int8 weights and
activations, float32 in and out, the activation ranges calibrated on
`--representative_examples` examples (default 256) of the run's training split, read
through the run's own input pipeline (its config: dataset, frames, crop, normalisation), or
on `--representative_data=FILE.npy` (model inputs, already pre-processed; needed with
`--model`). Ops without an int8 kernel stay float32 (listed in `model.tflite.json`).

The SavedModel's signatures (`serving_default`, `serve_uint8`, `serve_encoded`) are
described in `tl_keras/export.py` and listed by `saved_model_cli show --dir OUT/saved_model
--all`.
"""

import argparse
import os
import shutil
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/_common.py
import _common  # noqa: E402  (no TensorFlow: --help answers at once)

RUNTIME_FORMATS = ("litert", "onnx", "openvino")  # tl_keras.export.RUNTIME_FORMATS
FORMATS = ("saved_model", "keras") + RUNTIME_FORMATS
# tl_keras.export.RUNTIME_FILES, and the packages each conversion needs (no TF import here).
RUNTIME_FILES = {"litert": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
QUANTIZATIONS = ("dynamic_range", "full_integer")  # tl_keras.export.QUANTIZATIONS
CONVERTERS = {"litert": (), "onnx": ("tf2onnx", "onnx"), "openvino": ("openvino",)}
PROG = "export_model"


def parse_args(argv=None):
    parser = _common.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training run directory (config.json, checkpoints/)")
    source.add_argument("--model", help="a .keras file")
    parser.add_argument("--checkpoint", help="with --workdir: this checkpoint, not the newest")
    parser.add_argument("--format", default="saved_model",
                        help="saved_model, keras, litert, onnx, openvino, comma-separated "
                             "(default saved_model)")
    parser.add_argument("--output", help="output directory (default RUN/export/<step>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing export in the output directory")
    parser.add_argument("--class_names",
                        help="file with one class name per line, or a,b,c (replaces the "
                             "run's names)")
    parser.add_argument("--multilabel", action="store_true", default=None,
                        help="sigmoid probabilities (default: from the run's config)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--openvino_pixels", action="store_true",
                        help="openvino: the pre-processing inside the model (uint8 pixels of "
                             "any size in); LiteRT and ONNX Runtime cannot run it")
    parser.add_argument("--quantize", default=None,
                        help="litert: dynamic_range and/or full_integer (comma-separated; "
                             "none = also the float32 file), written to "
                             "litert_<mode>/model.tflite")
    parser.add_argument("--representative_examples", type=int, default=256,
                        help="full_integer: calibration examples from the run's training "
                             "split (default 256)")
    parser.add_argument("--representative_data",
                        help="full_integer: a .npy / .npz of model inputs (pre-processed) to "
                             "calibrate on instead of the run's training split")
    parser.add_argument("--max_request_pixels", type=int, default=None,
                        help="most pixels of one serving request, all frames together "
                             "(default 2**27; tl_keras/export.py)")
    _common.add_preprocessing_flags(parser)
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        parser.error(f"--format={args.format}: expected {', '.join(FORMATS)} "
                     "(comma-separated for several).")
    args.formats = formats
    if args.openvino_pixels and "openvino" not in formats:
        parser.error("--openvino_pixels is an option of --format=openvino.")
    if args.model and not args.output:
        parser.error("--model needs --output=DIR.")
    args.quantize = _parse_quantize(parser, args)
    if args.max_request_pixels is not None and args.max_request_pixels < 1:
        parser.error(f"--max_request_pixels={args.max_request_pixels}: must be positive.")
    return args


def _parse_quantize(parser, args):
    """`--quantize` as a list of LiteRT variants (None = the float32 file)."""
    if args.quantize is None:
        if args.representative_data:
            parser.error("--representative_data is an option of --quantize=full_integer.")
        return [None]
    modes = [m.strip() for m in args.quantize.split(",") if m.strip()]
    unknown = [m for m in modes if m not in QUANTIZATIONS + ("none",)]
    if unknown or not modes:
        parser.error(f"--quantize={args.quantize}: expected {', '.join(QUANTIZATIONS)} or none "
                     "(comma-separated for several).")
    if "litert" not in args.formats:
        parser.error("--quantize is an option of --format=litert.")
    if args.representative_data and "full_integer" not in modes:
        parser.error("--representative_data is an option of --quantize=full_integer.")
    if args.representative_examples < 1:
        parser.error(f"--representative_examples={args.representative_examples}: must be >= 1.")
    if args.model and "full_integer" in modes and not args.representative_data:
        parser.error("--quantize=full_integer with --model needs --representative_data=FILE.npy "
                     "(model inputs to calibrate on); a --workdir run uses its training split.")
    return [None if m == "none" else m for m in dict.fromkeys(modes)]


def litert_target(mode):
    """The output folder of a LiteRT variant: `litert` (float32), `litert_<mode>`."""
    return "litert" if mode is None else f"litert_{mode}"


def representative_data(args, config, prep):
    """The calibration inputs of `--quantize=full_integer`: `--representative_data`, or
    batches of the run's training split through its own input pipeline (the trainer's
    `Task`: the same dataset, frames, crop and normalisation)."""
    import numpy as np

    if args.representative_data:
        _common.check_exists(args.representative_data, "--representative_data")
        with open(args.representative_data, "rb") as f:
            loaded = np.load(f)
            if hasattr(loaded, "files"):  # .npz: its first array
                loaded = loaded[loaded.files[0]]
            return [np.asarray(loaded)]
    from tl_keras import configs
    from tl_keras.train import tasks

    cfg = configs.from_dict(configs.Config, config)
    if cfg.data.dataset in tasks.IN_MEMORY:
        raise _common.ToolError(
            f"the run's dataset {cfg.data.dataset!r} is generated in memory by its experiment; "
            "pass --representative_data=FILE.npy (model inputs) to calibrate on."
        )
    try:
        task = tasks.make_task(tasks.resolve_data(cfg))
    except configs.ConfigError as e:
        raise _common.ToolError(f"the run's training data: {e}") from None
    dataset = task.train_dataset_fn(None, min(args.representative_examples, 16))

    def batches():
        for x, *_ in dataset:  # the training split, augmented as in training; repeats
            yield task.model_inputs(x)

    return batches


def _is_remote(path):
    return "://" in path


def _exists(path):
    if _is_remote(path):
        return _common.import_tensorflow().io.gfile.exists(path)
    return os.path.lexists(path)


def _replaceable_saved_model(path, marker="saved_model.pb"):
    """Whether `path` may be replaced with --overwrite: a directory holding `marker` (a
    SavedModel; `model.onnx` etc. for the runtime formats) or an empty one (nothing else is
    ever deleted)."""
    if _is_remote(path):
        gfile = _common.import_tensorflow().io.gfile
        return gfile.isdir(path) and (
            gfile.exists(os.path.join(path, marker)) or not gfile.listdir(path)
        )
    return (os.path.isdir(path) and not os.path.islink(path)) and (
        os.path.isfile(os.path.join(path, marker)) or not os.listdir(path)
    )


def check_converters(formats):
    """ToolError naming the missing packages of the runtime formats' converters."""
    import importlib.util

    for kind in formats:
        missing = [m for m in CONVERTERS.get(kind, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise _common.ToolError(
                f"--format={kind} needs {', '.join(missing)} (not installed): "
                "pip install 'tl_keras[deploy]'."
            )


def output_kinds(args):
    """What is written: the formats, `litert` replaced by its variants (`--quantize`)."""
    kinds = []
    for kind in args.formats:
        kinds += [litert_target(m) for m in args.quantize] if kind == "litert" else [kind]
    return kinds


def check_output(output, formats, overwrite):
    """ToolError unless every target of `formats` under `output` is free, or may be
    replaced (`--overwrite`: a SavedModel or empty directory, a `.keras` file)."""
    targets = {"saved_model": os.path.join(output, "saved_model"),
               "keras": os.path.join(output, "model.keras")}
    targets.update({kind: os.path.join(output, kind) for kind in RUNTIME_FORMATS})
    targets.update({litert_target(m): os.path.join(output, litert_target(m))
                    for m in QUANTIZATIONS})
    for kind in formats:
        path = targets[kind]
        if not _exists(path):
            continue
        if kind == "saved_model" and not _replaceable_saved_model(path):
            raise _common.ToolError(
                f"{path} exists and is not a SavedModel directory (no saved_model.pb); "
                "not touched, even with --overwrite: remove it or pick another --output."
            )
        runtime = "litert" if kind.startswith("litert") else kind
        if runtime in RUNTIME_FORMATS and not _replaceable_saved_model(
                path, RUNTIME_FILES[runtime]):
            raise _common.ToolError(
                f"{path} exists and is not a {runtime} export (no {RUNTIME_FILES[runtime]}); "
                "not touched, even with --overwrite: remove it or pick another --output."
            )
        if kind == "keras" and os.path.isdir(path):
            raise _common.ToolError(f"{path} exists and is a directory; not touched.")
        if not overwrite:
            raise _common.ToolError(
                f"{path} exists; pass --overwrite to replace it, or another --output."
            )
    return targets


def _write_replacing(path, write):
    """`write(tmp)` to a new path beside `path`, then moves it to `path` (replacing what was
    there only once the new export is complete: a failed export loses nothing)."""
    if _is_remote(path):  # no directory rename on object stores: replace in place
        gfile = _common.import_tensorflow().io.gfile
        if gfile.isdir(path):
            gfile.rmtree(path)
        elif gfile.exists(path):
            gfile.remove(path)
        return write(path)
    parent, name = os.path.split(path)
    tag = uuid.uuid4().hex[:8]
    tmp = os.path.join(parent, f".{name}.new-{tag}")
    if name.endswith(".keras"):
        tmp += ".keras"  # save_keras wants the suffix
    try:
        write(tmp)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise
    if os.path.isdir(path):
        old = os.path.join(parent, f".{name}.old-{tag}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def class_names_from_flag(value, num_classes):
    """`--class_names` as a list (None when not given), checked against the model."""
    if value is None:
        return None
    looks_like_file = os.sep in value or value.lower().endswith((".txt", ".csv", ".names"))
    if looks_like_file and not os.path.exists(value):
        raise _common.ToolError(f"--class_names={value}: no such file.")
    names = _common.read_class_names(value)
    if not names:
        raise _common.ToolError(f"--class_names={value}: no class names in it.")
    if num_classes is not None and len(names) != num_classes:
        raise _common.ToolError(
            f"--class_names={value}: {len(names)} names for a model with {num_classes} classes."
        )
    return names


def _quantization_line(path):
    import json

    with open(path + ".json") as f:
        q = json.load(f)["quantization"]
    line = (f"{q['mode']}: {q['weights']} weights, {q['activations']} activations, "
            f"{q['input_output']} in and out, {os.path.getsize(path)} bytes")
    if q["mode"] == "full_integer":
        fallback = ", ".join(f"{k} x{v}" for k, v in q["float_ops"].items()) or "none"
        line += (f"; calibrated on {q['representative_examples']} examples; ops left in "
                 f"float32: {fallback}")
    return line


def run(args):
    """The export once the arguments are parsed (imports TensorFlow)."""
    check_converters(args.formats)
    kinds = output_kinds(args)
    if args.model:  # the output is known: refuse before loading anything
        check_output(args.output, kinds, args.overwrite)
    _common.import_tensorflow()
    from tl_keras import export

    if args.workdir:
        model, config, path, step = _common.model_from_workdir(args.workdir, args.checkpoint)
        source = f"{path} (step {step})"
        output = args.output or os.path.join(args.workdir, "export", str(step))
    else:
        model, config, source = _common.load_model(args.model)
        output = args.output
    targets = check_output(output, kinds, args.overwrite)
    options = export.serving_options_from_config(config, model) if config else {}
    prep = _common.preprocessing(model, config, args)
    outputs = getattr(model, "outputs", None) or [None]
    num_classes = outputs[0].shape[-1] if outputs[0] is not None else None
    class_names = class_names_from_flag(args.class_names, num_classes)
    names_from = f"--class_names ({len(class_names)})" if class_names else None
    if class_names is None and options.get("class_names"):
        class_names = options["class_names"]
        names_from = f"the run's config ({len(class_names)}, dataset {config['data']['dataset']})"
    multilabel = args.multilabel
    if multilabel is None:
        multilabel = options.get("multilabel", False)
    extra = {}
    if args.max_request_pixels is not None:
        extra["max_request_pixels"] = args.max_request_pixels
    paths = {}
    if "saved_model" in args.formats:
        _write_replacing(
            targets["saved_model"],
            lambda p: export.export_saved_model(
                model, p, preprocessing=prep, class_names=class_names, multilabel=multilabel,
                top_k=args.top_k, **extra,
            ),
        )
        paths["saved_model"] = targets["saved_model"]
    if "keras" in args.formats:
        _write_replacing(targets["keras"], lambda p: export.save_keras(model, p))
        paths["keras"] = targets["keras"]
    for kind in RUNTIME_FORMATS:
        if kind not in args.formats:
            continue
        for mode in args.quantize if kind == "litert" else [None]:
            target = litert_target(mode) if kind == "litert" else kind
            quantization = {}
            if mode is not None:
                quantization["quantization"] = mode
            if mode == "full_integer":
                quantization["representative_data"] = representative_data(args, config, prep)
                quantization["representative_examples"] = args.representative_examples
            _write_replacing(
                targets[target],
                lambda p, kind=kind, q=quantization: export.export_runtime(
                    model, os.path.join(p, RUNTIME_FILES[kind]), kind, class_names=class_names,
                    preprocessing=prep, pixels=kind == "openvino" and args.openvino_pixels, **q,
                ),
            )
            paths[target] = os.path.join(targets[target], RUNTIME_FILES[kind])
    print(f"export_model: {type(model).__name__} {model.name!r} from {source}")
    frames = (f", {prep.num_frames} frames ({prep.eval_split} evaluation)"
              if prep.kind == "video" else "")
    print(f"  pre-processing: {prep.kind}, shorter side {prep.min_resize} -> centre crop "
          f"{prep.crop_size}, normalization {prep.normalization}{frames}")
    shown = ""
    if class_names:
        shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
        shown = f"from {names_from}: {shown}"
    print(f"  probabilities: {'sigmoid (multi-label)' if multilabel else 'softmax'}; class names "
          f"{shown or 'none (top_k_labels are the indices)'}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
        if kind.startswith("litert_"):
            print(f"    {_quantization_line(path)}")
    if "saved_model" in paths:
        print(f"  signatures: serving_default, serve_uint8, serve_encoded "
              f"(saved_model_cli show --dir {paths['saved_model']} --all)")
    caller = [k for k in paths if k.split("_")[0] in RUNTIME_FORMATS
              and not (k == "openvino" and args.openvino_pixels)]
    if caller:
        print(f"  {' / '.join(caller)}: float32 model input, batch dynamic -> logits; the "
              "pre-processing is the caller's (written to <file>.json)")
    if "openvino" in paths and args.openvino_pixels:
        print("  openvino: uint8 pixels of any size, batch dynamic -> logits; pre-processing "
              "inside")
    return 0


def main(argv=None):
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse: usage and message already printed
        return e.code
    return _common.run_or_report(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
