"""Export a trained model for TF Serving (SavedModel) and/or as a `.keras` archive.

    python tools/export_model.py --workdir=RUN --format=saved_model
    python tools/export_model.py --workdir=RUN --format=saved_model,keras --class_names=classes.txt
    python tools/export_model.py --model=model.keras --output=out --min_resize=256 --multilabel

`--workdir` takes the newest checkpoint of a training run (or `--checkpoint=PATH`) and the
run's resolved config (`config.json`: pre-processing, multi-label, and the class names of
the built-in datasets); the output goes to `RUN/export/<step>/{saved_model,model.keras}`
unless `--output` is given. `--model` takes a `.keras` file; give the pre-processing as
flags.

The SavedModel's signatures (`serving_default`, `serve_uint8`, `serve_encoded`) are
described in `tl_keras/export.py` and listed by `saved_model_cli show --dir OUT/saved_model
--all`.
"""

import argparse
import os
import sys

import _common  # tools/_common.py: the script's own directory is on sys.path

from tl_keras import export

FORMATS = ("saved_model", "keras")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training run directory (config.json, checkpoints/)")
    source.add_argument("--model", help="a .keras file")
    parser.add_argument("--checkpoint", help="with --workdir: this checkpoint, not the newest")
    parser.add_argument("--format", default="saved_model",
                        help="saved_model, keras, or both comma-separated (default saved_model)")
    parser.add_argument("--output", help="output directory (default RUN/export/<step>)")
    parser.add_argument("--class_names", help="file with one class name per line, or a,b,c")
    parser.add_argument("--multilabel", action="store_true", default=None,
                        help="sigmoid probabilities (default: from the run's config)")
    parser.add_argument("--top_k", type=int, default=5)
    _common.add_preprocessing_flags(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        print(f"export_model: --format={args.format}: expected {' or '.join(FORMATS)} "
              "(comma-separated for both).", file=sys.stderr)
        return 2
    try:
        if args.workdir:
            model, config, path, step = _common.model_from_workdir(args.workdir, args.checkpoint)
            source = f"{path} (step {step})"
            output = args.output or os.path.join(args.workdir, "export", str(step))
        else:
            if not args.output:
                raise _common.ToolError("--model needs --output=DIR.")
            model, config, source = _common.load_model(args.model)
            output = args.output
        options = export.serving_options_from_config(config, model) if config else {}
        prep = _common.preprocessing(model, config, args)
        class_names = _common.read_class_names(args.class_names) or options.get("class_names")
        multilabel = args.multilabel
        if multilabel is None:
            multilabel = options.get("multilabel", False)
        paths = {}
        if "saved_model" in formats:
            paths["saved_model"] = export.export_saved_model(
                model, os.path.join(output, "saved_model"), preprocessing=prep,
                class_names=class_names, multilabel=multilabel, top_k=args.top_k,
            )
        if "keras" in formats:
            paths["keras"] = export.save_keras(model, os.path.join(output, "model.keras"))
    except (_common.ToolError, ValueError, FileNotFoundError) as e:
        print(f"export_model: {e}", file=sys.stderr)
        return 2
    print(f"export_model: {type(model).__name__} {model.name!r} from {source}")
    frames = f", {prep.num_frames} frames ({prep.eval_split} evaluation)" if prep.kind == "video" else ""
    print(f"  pre-processing: {prep.kind}, shorter side {prep.min_resize} -> centre crop "
          f"{prep.crop_size}, normalization {prep.normalization}{frames}")
    print(f"  probabilities: {'sigmoid (multi-label)' if multilabel else 'softmax'}; class names: "
          f"{'embedded' if class_names else 'none (top_k_labels are the indices)'}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    if "saved_model" in paths:
        print(f"  signatures: serving_default, serve_uint8, serve_encoded "
              f"(saved_model_cli show --dir {paths['saved_model']} --all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
