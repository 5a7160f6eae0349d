"""Few-shot linear evaluation of a model's frozen pre-logit features (ViT protocol, paper §3.4).

    python tools/fewshot_eval.py --model=RUN_DIR --dataset=cifar100 --data_dir=~/tfds --shots=1,5,10
    python tools/fewshot_eval.py --model=model.keras --dataset=oxford_flowers102 \\
        --data_dir=gs://bucket/tfds --shots=5 --test_split=test --max_test_examples=2000
    python tools/fewshot_eval.py --model=RUN_DIR --dataset=synthetic_single --shots=1,5

For each shot count and seed: n examples per class from the training split, a closed-form
L2-regularised least-squares fit of their features to {-1, 1}^K targets, the L2 chosen on
`--holdout_per_class` other training examples per class, top-1 accuracy on the test split;
averaged over `--seeds`. Prints a table and writes JSON (`--output`, default
`fewshot_<dataset>.json` beside the model).

Datasets: any TFDS image classification dataset (`image` / `label` features) prepared in
`--data_dir`, or the built-in `synthetic_single` videos (`tl_keras.data.synthetic`, for
video models). Images and clips are pre-processed as in evaluation (see
`tl_keras/data/preprocessing.py`). Reading the training split stops once every class has
`--pool_per_class` examples (default: held-out + 2 x the largest shot count).
"""

import argparse
import json
import os
import sys
import time

import _common  # tools/_common.py: the script's own directory is on sys.path (no TensorFlow)


def _shots(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots={text}: expected e.g. 1,5,10") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--shots={text}: expected positive ints, e.g. 1,5,10")
    return values


def parse_args(argv=None):
    parser = _common.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--model", required=True, help="a .keras file or a training run directory")
    parser.add_argument("--checkpoint", help="with a run directory: this checkpoint")
    parser.add_argument("--dataset", required=True, help="TFDS name, or synthetic_single")
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data_dir (or the built-in dataset's root)")
    parser.add_argument("--shots", type=_shots, default=[1, 5, 10], help="e.g. 1,5,10")
    parser.add_argument("--seeds", type=int, default=3, help="seeds averaged (default 3)")
    parser.add_argument("--holdout_per_class", type=int, default=5,
                        help="training examples per class held out to choose the L2")
    parser.add_argument("--pool_per_class", type=int, default=None,
                        help="training examples read per class (default holdout + 2 x max shots)")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--max_test_examples", type=int, default=None)
    parser.add_argument("--image_key", default="image", help="TFDS image feature")
    parser.add_argument("--label_key", default="label", help="TFDS label feature")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output", default=None, help="JSON file to write")
    _common.add_preprocessing_flags(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return _common.run_or_report("fewshot_eval", run, args)


def run(args):
    """The evaluation once the arguments are parsed (imports TensorFlow)."""
    start = time.time()
    if args.seeds < 1 or args.holdout_per_class < 1:
        raise _common.ToolError("--seeds and --holdout_per_class must be >= 1.")
    model, config, source = _common.load_model(args.model, args.checkpoint)  # TensorFlow, quietly
    from tl_keras import fewshot

    prep = _common.preprocessing(model, config, args)
    pool = args.pool_per_class or (args.holdout_per_class + 2 * max(args.shots))
    if pool < args.holdout_per_class + max(args.shots):
        raise _common.ToolError(
            f"--pool_per_class={pool} is smaller than --holdout_per_class + max(--shots) = "
            f"{args.holdout_per_class + max(args.shots)}."
        )
    data = fewshot.dataset_features(
        model, args.dataset, data_dir=args.data_dir, preprocessing=prep,
        train_split=args.train_split, test_split=args.test_split, pool_per_class=pool,
        max_test_examples=args.max_test_examples, batch_size=args.batch_size,
        image_key=args.image_key, label_key=args.label_key,
    )
    results = fewshot.evaluate(
        data.train_x, data.train_y, data.test_x, data.test_y, shots=args.shots,
        num_seeds=args.seeds, holdout_per_class=args.holdout_per_class,
        num_classes=data.num_classes,
    )
    title = (
        f"{args.dataset}: {data.num_classes} classes, {data.train_x.shape[1]}-d features of "
        f"{model.name}, {len(data.test_y)} test examples"
    )
    print(fewshot.format_table(results, title=title))
    output = args.output
    if output is None:
        base = args.model if os.path.isdir(args.model) else (os.path.dirname(args.model) or ".")
        output = os.path.join(base, f"fewshot_{args.dataset}.json")
    record = {
        "model": source,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "num_classes": data.num_classes,
        "feature_dim": int(data.train_x.shape[1]),
        "num_train_pool": int(len(data.train_y)),
        "num_test": int(len(data.test_y)),
        "holdout_per_class": args.holdout_per_class,
        "pool_per_class": pool,
        "l2_grid": list(fewshot.DEFAULT_L2_GRID),
        "preprocessing": prep.to_dict(),
        "results": {str(n): r for n, r in results.items()},
        "wall_time_s": time.time() - start,
    }
    parent = os.path.dirname(output)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(output, "w") as f:
        json.dump(record, f, indent=2)
    print(f"fewshot_eval: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
