"""Draw what the learned tokens attend to (paper Fig. 10): a PNG of the input frames, then
each token's map over its frame as a heat map (one row per token, one column per frame),
every panel titled with its token and frames, and a colour bar.

    python tools/visualize_tokens.py --model=model.keras --input=image.jpg --output=maps.png
    python tools/visualize_tokens.py --model=RUN_DIR --input=video.mp4 --output=maps.png
    python tools/visualize_tokens.py --model=RUN_DIR --input=val-00000-of-00004 --example=3 \\
        --output=maps.png

`--model`: a `.keras` file or a training run directory (newest checkpoint). `--input`: an
image (JPEG/PNG), a video file (decoded with PyAV: `pip install av`), or a TFRecord file of
DMVR video records (`tf.train.SequenceExample`) or ImageNet-style image records
(`tf.train.Example` with `image/encoded`); `--example` picks the record. The input is
pre-processed exactly as in evaluation (`tl_keras.data.preprocessing`): a video's middle clip of the
model's frame count every `--stride` frames, shorter side resized, centre crop, normalised.
Every TokenLearner layer of the model gets one block of the figure (`--layer` picks one).
Needs matplotlib: `pip install 'tl_keras[plot]'`.
"""

import argparse
import sys

import _common  # tools/_common.py: the script's own directory is on sys.path (no TensorFlow)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def parse_args(argv=None):
    parser = _common.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--model", required=True, help="a .keras file or a training run directory")
    parser.add_argument("--checkpoint", help="with a run directory: this checkpoint")
    parser.add_argument("--input", required=True, help="image, video file or TFRecord file")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--example", type=int, default=0, help="record index in a TFRecord file")
    parser.add_argument("--stride", type=int, default=None,
                        help="video: frame step of the clip (default: the run's, else 1)")
    parser.add_argument("--layer", action="append", default=None,
                        help="TokenLearner layer path to draw (repeatable; default all)")
    parser.add_argument("--max_tokens", type=int, default=8)
    parser.add_argument("--max_frames", type=int, default=8)
    parser.add_argument("--normalize", choices=["per_map", "none"], default="per_map",
                        help="per_map: each map divided by its peak (default); none: values "
                             "as they are, clipped to [0, 1]")
    _common.add_preprocessing_flags(parser)
    return parser.parse_args(argv)


def _read_record(path, index):
    tf = _common.import_tensorflow()
    count = 0
    for record in tf.data.TFRecordDataset(path):
        if count == index:
            return record
        count += 1
    raise _common.ToolError(f"{path} has {count} record(s); there is no record {index}.")


def _clip(num_total, prep, stride):
    """The middle clip's frame indices, as `VideoParser(split="validation"/"test")` samples
    one clip: int32 `[T]`."""
    from tl_keras.data import video_ops

    return video_ops.middle_clip_indices(num_total, prep.num_frames, stride)


def load_input(path, prep, *, example=0, stride=1):
    """`(x, frame_indices)`: the model input `[1, ...]` for `path`, pre-processed as in
    evaluation, and the source video's number of each of its frames (None for an image)."""
    _common.check_exists(path, "--input")
    tf = _common.import_tensorflow()
    from tl_keras import data as data_lib
    from tl_keras.data import decoders, writer

    lower = path.lower()
    if lower.endswith(IMAGE_EXTENSIONS):
        if prep.kind != "image":
            raise _common.ToolError(
                f"--input={path} is an image; the model takes videos of {prep.num_frames} "
                "frames (give a video file or a TFRecord of video records)."
            )
        with open(path, "rb") as f:
            return data_lib.preprocess_encoded(tf.constant([f.read()]), prep).numpy(), None
    if lower.endswith(VIDEO_EXTENSIONS):
        if prep.kind != "video":
            raise _common.ToolError(f"--input={path} is a video; the model takes images.")
        frames = writer.decode_video(path)  # uint8 [N, H, W, 3]
        idx = _clip(len(frames), prep, stride).numpy()
        return data_lib.preprocess(frames[idx][None], prep).numpy(), idx.tolist()
    # A TFRecord file: a DMVR video record or an image record.
    record = _read_record(path, example)
    try:
        video = decoders.VideoDecoder().decode(record)
        frames = video["frames"]
    except tf.errors.InvalidArgumentError:
        frames = tf.zeros([0], tf.string)
    if int(tf.size(frames)) > 0:
        if prep.kind != "video":
            raise _common.ToolError(
                f"record {example} of {path} is a video; the model takes images."
            )
        idx = _clip(tf.size(frames), prep, stride)
        encoded = tf.gather(frames, idx)
        return data_lib.preprocess_encoded(encoded[None], prep).numpy(), idx.numpy().tolist()
    try:
        image = decoders.ImageDecoder().decode(record)["image"]
    except tf.errors.InvalidArgumentError:
        image = tf.constant(b"")
    if int(tf.strings.length(image)) == 0:
        raise _common.ToolError(
            f"record {example} of {path} is neither a DMVR video record (image/encoded frames "
            "in a SequenceExample) nor an image record (image/encoded in an Example)."
        )
    if prep.kind != "image":
        raise _common.ToolError(f"record {example} of {path} is an image; the model takes videos.")
    return data_lib.preprocess_encoded(image[None], prep).numpy(), None


def main(argv=None):
    args = parse_args(argv)
    return _common.run_or_report("visualize_tokens", run, args)


def run(args):
    """The drawing once the arguments are parsed (imports TensorFlow)."""
    _common.check_exists(args.input, "--input")
    _common.require_matplotlib()
    model, config, source = _common.load_model(args.model, args.checkpoint)  # TensorFlow, quietly
    from tl_keras import visualize

    prep = _common.preprocessing(model, config, args)
    stride = args.stride or ((config or {}).get("data", {}).get("stride") or 1)
    x, frame_indices = load_input(args.input, prep, example=args.example, stride=stride)
    if not visualize.tokenlearner_layers(model):
        raise _common.ToolError(f"the model {model.name!r} has no TokenLearner layer.")
    path = visualize.write_token_maps(
        model, x, args.output, layers=args.layer, max_tokens=args.max_tokens,
        max_frames=args.max_frames, normalize=args.normalize, frame_indices=frame_indices,
    )
    print(f"visualize_tokens: token maps of {source} on {args.input} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
