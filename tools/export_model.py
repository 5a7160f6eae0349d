"""Export a trained model for TF Serving (SavedModel), LiteRT, ONNX, OpenVINO and/or as a
`.keras` archive.

    python tools/export_model.py --workdir=RUN --format=saved_model
    python tools/export_model.py --workdir=RUN --format=saved_model,keras --class_names=classes.txt
    python tools/export_model.py --model=model.keras --output=out --min_resize=256 --multilabel
    python tools/export_model.py --workdir=RUN --format=litert,onnx,openvino

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
    if args.max_request_pixels is not None and args.max_request_pixels < 1:
        parser.error(f"--max_request_pixels={args.max_request_pixels}: must be positive.")
    return args


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


def check_output(output, formats, overwrite):
    """ToolError unless every target of `formats` under `output` is free, or may be
    replaced (`--overwrite`: a SavedModel or empty directory, a `.keras` file)."""
    targets = {"saved_model": os.path.join(output, "saved_model"),
               "keras": os.path.join(output, "model.keras")}
    targets.update({kind: os.path.join(output, kind) for kind in RUNTIME_FORMATS})
    for kind in formats:
        path = targets[kind]
        if not _exists(path):
            continue
        if kind == "saved_model" and not _replaceable_saved_model(path):
            raise _common.ToolError(
                f"{path} exists and is not a SavedModel directory (no saved_model.pb); "
                "not touched, even with --overwrite: remove it or pick another --output."
            )
        if kind in RUNTIME_FORMATS and not _replaceable_saved_model(path, RUNTIME_FILES[kind]):
            raise _common.ToolError(
                f"{path} exists and is not a {kind} export (no {RUNTIME_FILES[kind]}); "
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


def run(args):
    """The export once the arguments are parsed (imports TensorFlow)."""
    check_converters(args.formats)
    if args.model:  # the output is known: refuse before loading anything
        check_output(args.output, args.formats, args.overwrite)
    _common.import_tensorflow()
    from tl_keras import export

    if args.workdir:
        model, config, path, step = _common.model_from_workdir(args.workdir, args.checkpoint)
        source = f"{path} (step {step})"
        output = args.output or os.path.join(args.workdir, "export", str(step))
    else:
        model, config, source = _common.load_model(args.model)
        output = args.output
    targets = check_output(output, args.formats, args.overwrite)
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
        _write_replacing(
            targets[kind],
            lambda p, kind=kind: export.export_runtime(
                model, os.path.join(p, RUNTIME_FILES[kind]), kind, class_names=class_names,
                preprocessing=prep, pixels=kind == "openvino" and args.openvino_pixels,
            ),
        )
        paths[kind] = os.path.join(targets[kind], RUNTIME_FILES[kind])
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
    if "saved_model" in paths:
        print(f"  signatures: serving_default, serve_uint8, serve_encoded "
              f"(saved_model_cli show --dir {paths['saved_model']} --all)")
    caller = [k for k in RUNTIME_FORMATS if k in paths
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
