"""The serving SavedModel: outputs identical to the Keras model on the evaluation
pre-processing (`tl_keras.data.preprocessing`, itself checked against the evaluation pipeline
in tests/data/test_data_preprocessing.py) in a fresh process without tl_keras, every signature
through `saved_model_cli` (the session-based loader TF Serving uses), REST bodies, and bad
input."""

import base64
import json
import os
import struct
import subprocess
import sys
import types
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data, export
import jpeg_images

# One worker runs the tests of the session fixture `exported` (conftest.py) and of this
# module's fixtures: each is built once.
pytestmark = [pytest.mark.tf_only, pytest.mark.xdist_group("exported")]

SIGNATURES = ("serving_default", "serve_uint8", "serve_encoded")


def _reference(case, pixels):
    """What the serving graph must return: the Keras model on the evaluation pre-processing."""
    x = data.preprocess(np.asarray(pixels), case.prep)
    logits = np.asarray(case.model(x, training=False), np.float64)
    if case.multilabel:
        probabilities = 1 / (1 + np.exp(-logits))
    else:
        e = np.exp(logits - logits.max(1, keepdims=True))
        probabilities = e / e.sum(1, keepdims=True)
    indices = np.argsort(-probabilities, axis=1, kind="stable")[:, : case.k]
    names = np.array(case.classes) if case.classes else None
    labels = names[indices] if names is not None else indices.astype(str)
    return {
        "logits": logits,
        "probabilities": probabilities,
        "top_k_indices": indices,
        "top_k_labels": labels,
    }


def _assert_outputs(outputs, expected, what):
    assert set(outputs) == {"logits", "probabilities", "top_k_indices", "top_k_labels"}, what
    np.testing.assert_allclose(outputs["logits"], expected["logits"], atol=1e-5, err_msg=what)
    np.testing.assert_allclose(
        outputs["probabilities"], expected["probabilities"], atol=1e-5, err_msg=what
    )
    np.testing.assert_array_equal(outputs["top_k_indices"], expected["top_k_indices"], err_msg=what)
    labels = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v))(
        np.asarray(outputs["top_k_labels"], dtype=object)
    )
    np.testing.assert_array_equal(labels, expected["top_k_labels"], err_msg=what)


@pytest.fixture(scope="module")
def inputs(exported):
    """Per model: the inputs of each signature and the pixels they stand for."""
    image_pixels = jpeg_images.pixels((2, 45, 38, 3), seed=3)
    image_png = np.array([tf.io.encode_png(p).numpy() for p in image_pixels], dtype=object)
    video_pixels = jpeg_images.pixels((2, 4, 36, 48, 3), seed=4)
    video_jpeg = np.array([[jpeg_images.jpeg(f) for f in clip] for clip in video_pixels], dtype=object)
    video_decoded = np.stack([[jpeg_images.decode(j) for j in clip] for clip in video_jpeg])
    return {
        "image": {
            "serving_default": image_pixels.astype(np.float32),
            "serve_uint8": image_pixels,
            "serve_encoded": image_png,  # lossless: decodes to image_pixels
            "pixels": {"serving_default": image_pixels, "serve_uint8": image_pixels,
                       "serve_encoded": image_pixels},
        },
        "video": {
            "serving_default": video_pixels.astype(np.float32),
            "serve_uint8": video_pixels,
            "serve_encoded": video_jpeg,
            "pixels": {"serving_default": video_pixels, "serve_uint8": video_pixels,
                       "serve_encoded": video_decoded},
        },
    }


def _input_name(kind, signature):
    name = "images" if kind == "image" else "videos"
    return f"encoded_{name}" if signature == "serve_encoded" else name


# --------------------------------------------------------------------------------------
# Outside this process: a fresh Python without tl_keras, and saved_model_cli.
# --------------------------------------------------------------------------------------

# Runs in a fresh Python process that never imports tl_keras. Part 1: the TF2 object loader
# (`tf.saved_model.load`). Part 2: `saved_model_cli`'s own functions (`show --all`,
# `run --inputs NAME=FILE.npy --outdir`), i.e. the TF1 session-based loader TF Serving uses,
# for every signature of both models in one process (one TensorFlow import instead of one
# per signature).
EXTERNAL_SCRIPT = r"""
import contextlib, io, json, sys
import numpy as np
import tensorflow as tf
from tensorflow.python.tools import saved_model_cli as cli

root = sys.argv[1]
SIGNATURES = ("serving_default", "serve_uint8", "serve_encoded")
loaded, load_errors, cli_errors, shown = {}, {}, {}, {}
for kind in ("image", "video"):
    path = f"{root}/{kind}"
    feeds = np.load(f"{root}/{kind}_feeds.npz", allow_pickle=True)
    bad = np.load(f"{root}/{kind}_bad.npz", allow_pickle=True)
    # 1. tf.saved_model.load
    model = tf.saved_model.load(path)
    names = {}
    for signature in SIGNATURES:
        fn = model.signatures[signature]
        (names[signature],) = fn.structured_input_signature[1]
        for key, value in fn(**{names[signature]: tf.constant(feeds[signature])}).items():
            loaded[f"{kind}/{signature}/{key}"] = value.numpy()
    for case in bad.files:
        signature = case.split("+")[0]
        try:
            model.signatures[signature](**{names[signature]: tf.constant(bad[case])})
            load_errors[f"{kind}/{case}"] = "NO ERROR"
        except tf.errors.InvalidArgumentError as e:
            load_errors[f"{kind}/{case}"] = str(e)
    again = model.signatures["serving_default"](
        **{names["serving_default"]: tf.constant(feeds["serving_default"])})
    loaded[f"{kind}/again/logits"] = again["logits"].numpy()
    # 2. saved_model_cli show --all, and run --inputs NAME=FILE.npy --outdir DIR: the
    # session-based loader.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli._show_all(path)
    shown[kind] = out.getvalue()
    for signature in SIGNATURES:
        feed = cli.load_inputs_from_input_arg_string(
            f"{names[signature]}={root}/{kind}_{signature}.npy", "", "")
        with contextlib.redirect_stdout(io.StringIO()):
            cli.run_saved_model_with_feed_dict(
                path, "serve", signature, feed, f"{root}/cli/{kind}/{signature}", True)
    # Bad requests to one session, as a TF Serving process receives them.
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        for case in bad.files:
            signature = case.split("+")[0]
            sig = meta.signature_def[signature]
            fetches = {k: v.name for k, v in sig.outputs.items()}
            feed = {sig.inputs[names[signature]].name: bad[case]}
            try:
                sess.run(fetches, feed)
                cli_errors[f"{kind}/{case}"] = "NO ERROR"
            except tf.errors.InvalidArgumentError as e:
                cli_errors[f"{kind}/{case}"] = str(e)
        feed = {meta.signature_def["serving_default"].inputs[names["serving_default"]].name:
                feeds["serving_default"]}
        logits = meta.signature_def["serving_default"].outputs["logits"].name
        loaded[f"{kind}/session_again/logits"] = sess.run(logits, feed)
np.savez(f"{root}/loaded.npz", **loaded)
with open(f"{root}/report.json", "w") as f:
    json.dump({"load_errors": load_errors, "cli_errors": cli_errors, "shown": shown,
               "tl_keras_imported": any(m.startswith("tl_keras") for m in sys.modules)}, f)
"""


def _claiming(jpeg, height, width):
    """`jpeg` (baseline) with a header that claims `height x width` pixels: a decode would
    allocate that much and then fail on the missing data; the checks must refuse it first."""
    at = jpeg.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    out = bytearray(jpeg)
    out[at + 5: at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(out)


def _bad_inputs(kind, inputs):
    """`{signature+case: (input, text the error must contain, shape it must report)}`."""
    feeds = inputs[kind]
    if kind == "image":
        good = feeds["serve_encoded"]
        jpeg = jpeg_images.jpeg(jpeg_images.pixels((40, 40, 3), 1))
        truncated = jpeg[:300]  # inside the header
        png_cut = good[1][: len(good[1]) - 12]  # without its IEND chunk
        huge = _claiming(jpeg, 8192, 8192)  # within the per-image bound; 3 exceed the request's
        return {
            "serving_default+empty": (np.zeros((0, 8, 8, 3), np.float32), "serving_default: the batch of images is empty", "0 8 8 3"),
            "serve_encoded+empty": (good[:0], "serve_encoded: the batch of encoded_images is empty", "0"),
            "serve_encoded+truncated_png": (np.array([good[0], png_cut], dtype=object), "truncated image(s): no end-of-image marker (JPEG) or IEND chunk (PNG) at element(s)] [1]", None),
            "serve_encoded+too_many_pixels": (np.array([huge] * 3, dtype=object), "the request holds more than max_request_pixels=134217728 pixels (all frames of all examples; set at export); send fewer or smaller frames per request. Pixels in this request:] [201326592]", None),
            "serving_default+rank": (feeds["serving_default"][0], "expected images of shape [batch, height, width, 3]", "45 38 3"),
            "serving_default+channels": (np.zeros((1, 8, 8, 4), np.float32), "expected images of shape [batch, height, width, 3]", "1 8 8 4"),
            "serve_uint8+rank": (np.zeros((2, 8, 8, 3, 1), np.uint8), "expected images of shape", "2 8 8 3 1"),
            "serve_encoded+undecodable": (np.array([good[0], b"this is not an image"], dtype=object), "Not a JPEG or PNG: element(s)] [1]", None),
            "serve_encoded+rank": (good.reshape(2, 1), "expected encoded_images of shape [batch]", "2 1"),
            "serve_encoded+truncated": (np.array([good[0], truncated], dtype=object), "serve_encoded: truncated image(s): no end-of-image marker (JPEG) or IEND chunk (PNG) at element(s)] [1]", None),
        }
    good = feeds["serve_encoded"]
    with_png = good.copy()
    with_png[1, 2] = tf.io.encode_png(jpeg_images.pixels((36, 48, 3), 2)).numpy()
    cut = good.copy()
    cut[1, 1] = cut[1, 1][: len(cut[1, 1]) - 2]  # only the end-of-image marker missing
    cut[0, 3] = cut[0, 3][: len(cut[0, 3]) // 2]
    huge = np.array([[_claiming(f, 8192, 8192) for f in clip] for clip in good], dtype=object)
    return {
        "serving_default+empty": (np.zeros((0, 4, 8, 8, 3), np.float32), "serving_default: the batch of videos is empty", "0 4 8 8 3"),
        "serve_uint8+empty": (np.zeros((0, 4, 8, 8, 3), np.uint8), "serve_uint8: the batch of videos is empty", "0 4 8 8 3"),
        "serve_encoded+empty": (good[:0], "serve_encoded: the batch of encoded_videos is empty", "0 4"),
        "serve_encoded+truncated": (cut, "serve_encoded: truncated JPEG frame(s): no end-of-image marker at element(s) (flat index b * T + t)] [3 5]", None),
        # 2 clips x 4 frames claiming 8192 x 8192 (the 8-frame request): 5.4e8 pixels.
        "serve_encoded+too_many_pixels": (huge, "serve_encoded: the request holds more than max_request_pixels=134217728 pixels (all frames of all examples; set at export); send fewer or smaller frames per request. Pixels in this request:] [536870912]", None),
        "serving_default+frames": (feeds["serving_default"][:, :3], "expected videos of shape [batch, 4, height, width, 3]", "2 3 36 48 3"),
        "serving_default+rank": (feeds["serving_default"][0], "expected videos of shape [batch, 4, height, width, 3]", "4 36 48 3"),
        "serve_uint8+frames": (np.zeros((1, 6, 8, 8, 3), np.uint8), "expected videos of shape [batch, 4,", "1 6 8 8 3"),
        "serve_encoded+frames": (good[:, :2], "expected encoded_videos of shape [batch, 4]", "2 2"),
        "serve_encoded+undecodable": (with_png, "Not a JPEG: element(s) (flat index b * T + t)] [6]", None),
    }


def _cli(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return [exe if os.path.exists(exe) else "saved_model_cli", *args]


@pytest.fixture(scope="module")
def external(tmp_path_factory, exported, inputs, subprocess_env):
    """Runs the external checks once: the script above, plus the `saved_model_cli` binary
    itself (`show --all`, and `run` with bad input)."""
    root = tmp_path_factory.mktemp("external")
    bad = {}
    for kind in ("image", "video"):
        os.symlink(getattr(exported, kind).path, root / kind)
        np.savez(root / f"{kind}_feeds.npz", **{s: inputs[kind][s] for s in SIGNATURES})
        bad[kind] = _bad_inputs(kind, inputs)
        np.savez(root / f"{kind}_bad.npz", **{k: v[0] for k, v in bad[kind].items()})
    (root / "external.py").write_text(EXTERNAL_SCRIPT)
    for kind in ("image", "video"):
        for signature in SIGNATURES:
            np.save(root / f"{kind}_{signature}.npy", inputs[kind][signature], allow_pickle=True)
    np.save(root / "bad_frames.npy", inputs["video"]["serving_default"][:, :3])
    commands = {
        "script": [sys.executable, str(root / "external.py"), str(root)],
        "show": _cli("show", "--dir", str(root / "video"), "--all"),
        "bad": _cli("run", "--dir", str(root / "video"), "--tag_set", "serve", "--signature_def",
                    "serving_default", "--inputs", f"videos={root / 'bad_frames.npy'}"),
    }

    def run(command):
        return subprocess.run(command, env=subprocess_env, cwd=str(root), capture_output=True,
                              text=True, timeout=300)

    procs = {name: run(command) for name, command in commands.items()}
    assert procs["script"].returncode == 0, procs["script"].stderr[-3000:]
    with open(root / "report.json") as f:
        report = json.load(f)
    return types.SimpleNamespace(
        root=root, procs=procs, report=report, bad=bad,
        loaded=np.load(root / "loaded.npz", allow_pickle=True),
    )


def test_fresh_process_without_tl_keras_matches_keras(external, exported, inputs):
    """`tf.saved_model.load` in a process that never imports tl_keras: every signature gives
    the Keras model's outputs on the same pre-processed input (to 1e-5)."""
    assert external.report["tl_keras_imported"] is False
    results = external.loaded
    for kind in ("image", "video"):
        case = getattr(exported, kind)
        for signature in SIGNATURES:
            expected = _reference(case, inputs[kind]["pixels"][signature])
            got = {k: results[f"{kind}/{signature}/{k}"] for k in expected}
            _assert_outputs(got, expected, f"{kind} {signature}")
    # The outputs differ between examples (a constant model would pass the checks above).
    assert np.abs(np.diff(results["image/serving_default/logits"], axis=0)).max() > 1e-3
    assert np.abs(np.diff(results["video/serving_default/logits"], axis=0)).max() > 1e-3
    # Single-label: a softmax; multi-label: independent sigmoids.
    np.testing.assert_allclose(results["image/serving_default/probabilities"].sum(1), 1, atol=1e-5)
    assert np.abs(results["video/serving_default/probabilities"].sum(1) - 1).min() > 1e-2


def test_saved_model_cli_show_and_run_every_signature(external, exported, inputs):
    """`saved_model_cli show --all` lists the signatures; `saved_model_cli run` (the session
    loader of TF Serving) runs every signature of both models with the Keras outputs."""
    show = external.procs["show"]
    assert show.returncode == 0, show.stderr[-2000:]
    for kind, text in (("video", show.stdout), ("image", external.report["shown"]["image"]),
                       ("video", external.report["shown"]["video"])):
        for signature in SIGNATURES:
            assert f"signature_def['{signature}']" in text
            assert f"inputs['{_input_name(kind, signature)}']" in text
        for output in ("logits", "probabilities", "top_k_indices", "top_k_labels"):
            assert f"outputs['{output}']" in text
        assert "DT_UINT8" in text and "DT_STRING" in text and "tensorflow/serving/predict" in text

    def outputs(directory):
        return {
            k: np.load(directory / f"{k}.npy", allow_pickle=True)
            for k in ("logits", "probabilities", "top_k_indices", "top_k_labels")
        }

    for kind in ("image", "video"):
        case = getattr(exported, kind)
        for signature in SIGNATURES:
            expected = _reference(case, inputs[kind]["pixels"][signature])
            _assert_outputs(outputs(external.root / "cli" / kind / signature), expected,
                            f"saved_model_cli {kind} {signature}")


def test_bad_input_says_what_was_expected(external):
    """Wrong rank, channels, frame count, an empty batch, undecodable, truncated JPEG / PNG
    bytes, or more pixels than the request bound: an error naming the expected input and
    the shape received, or the bad elements, in both loaders; the model keeps serving. The
    over-sized requests claim their size in headers without the data: a decode would fail
    with libjpeg's own error, so getting the bound's message shows it is checked first."""
    for kind in ("image", "video"):
        for name, (_, message, shape) in external.bad[kind].items():
            for loader in ("load_errors", "cli_errors"):
                error = external.report[loader][f"{kind}/{name}"]
                assert error != "NO ERROR", f"{loader}: {kind} {name} was accepted"
                assert message in error, f"{loader}: {kind} {name}: {error[:600]}"
                if shape is not None:
                    assert f"got shape] [{shape}]" in error, f"{loader} {kind} {name}: {error[:600]}"
        for again in ("again", "session_again"):
            np.testing.assert_allclose(
                external.loaded[f"{kind}/{again}/logits"],
                external.loaded[f"{kind}/serving_default/logits"], atol=1e-6,
            )
    bad = external.procs["bad"]
    assert bad.returncode != 0
    assert "expected videos of shape [batch, 4, height, width, 3]" in bad.stderr
    assert "got shape] [2 3 36 48 3]" in bad.stderr
    assert "Segmentation fault" not in bad.stderr and "core dumped" not in bad.stderr


# --------------------------------------------------------------------------------------
# REST.
# --------------------------------------------------------------------------------------


def test_rest_instances_body_gives_the_same_answer(exported, inputs):
    image = tf.saved_model.load(exported.image.path)
    video = tf.saved_model.load(exported.video.path)
    pixels = inputs["image"]["pixels"]["serving_default"]
    expected = _reference(exported.image, pixels)

    def check_rows(response, expected, what):
        json.dumps(response)  # what TF Serving sends is JSON
        rows = response["predictions"]
        assert len(rows) == len(expected["logits"])
        got = {k: np.array([r[k] for r in rows]) for k in expected}
        _assert_outputs(got, expected, what)

    # Row format, a bare tensor per instance (the signature has one input).
    body = json.dumps({"instances": pixels.tolist()})
    check_rows(export.rest_predict(image.signatures["serving_default"], body), expected, "rows")
    # Row format, named input; uint8 signature.
    body = json.dumps({"instances": [{"images": p.tolist()} for p in pixels]})
    check_rows(export.rest_predict(image.signatures["serve_uint8"], body), expected, "named rows")
    # Encoded bytes as {"b64": ...}.
    b64 = [{"b64": base64.b64encode(p).decode()} for p in inputs["image"]["serve_encoded"]]
    body = json.dumps({"signature_name": "serve_encoded", "instances": b64})
    check_rows(export.rest_predict(image.signatures["serve_encoded"], body), expected, "b64")
    assert export.rest_predict(image.signatures["serve_encoded"], body)["predictions"][0][
        "top_k_labels"
    ] == list(expected["top_k_labels"][0])

    # Video: columnar format, and b64 frames in rows.
    vpixels = inputs["video"]["pixels"]["serving_default"]
    vexpected = _reference(exported.video, vpixels)
    body = json.dumps({"inputs": {"videos": vpixels.tolist()}})
    response = export.rest_predict(video.signatures["serving_default"], body)
    json.dumps(response)
    _assert_outputs({k: np.array(v) for k, v in response["outputs"].items()}, vexpected, "columnar")
    frames = inputs["video"]["serve_encoded"]
    body = json.dumps({"instances": [[{"b64": base64.b64encode(f).decode()} for f in clip]
                                     for clip in frames]})
    check_rows(
        export.rest_predict(video.signatures["serve_encoded"], body),
        _reference(exported.video, inputs["video"]["pixels"]["serve_encoded"]), "video b64",
    )
    with pytest.raises(ValueError, match="exactly one of"):
        export.rest_predict(image.signatures["serving_default"], {"instances": [], "inputs": []})


def _png_header(width, height):
    """A PNG that claims `width x height` pixels: its IHDR and IEND chunks, no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:])) + iend


def test_bad_input_in_process_and_still_serving(exported, inputs):
    """The same checks through `tf.saved_model.load` in this process; a header that claims a
    huge image is refused before decoding; a bad request does not break the next good one."""
    image = tf.saved_model.load(exported.image.path).signatures["serve_encoded"]
    good = tf.constant(inputs["image"]["serve_encoded"])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"claim more than 67108864 pixels at flat index\] \[1\]"):
        image(encoded_images=tf.constant([good[0].numpy(), _png_header(70000, 70000)]))
    assert image(encoded_images=good)["logits"].shape == (2, 5)
    video = tf.saved_model.load(exported.video.path).signatures["serving_default"]
    good = tf.constant(inputs["video"]["serving_default"])
    first = video(videos=good)["logits"].numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected videos of shape \[batch, 4"):
        video(videos=good[:, :2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="got shape"):
        video(videos=tf.zeros([5]))
    np.testing.assert_array_equal(video(videos=good)["logits"].numpy(), first)


def test_max_request_pixels_bounds_all_frames_of_a_request(exported, inputs, tmp_path):
    """`max_request_pixels` (an export argument) counts every image of a request, read from
    the headers for encoded input: a request of exactly the bound is served, one image more
    is refused in every signature; the bound is recorded in the serving info file."""
    pixels = inputs["image"]["serve_uint8"]  # 2 images of 45 x 38
    bound = 2 * 45 * 38
    path = export.export_saved_model(
        exported.image.model, str(tmp_path / "bounded"), max_request_pixels=bound
    )
    signatures = tf.saved_model.load(path).signatures
    encoded = inputs["image"]["serve_encoded"]
    feeds = {
        "serving_default": (pixels.astype(np.float32), "images"),
        "serve_uint8": (pixels, "images"),
        "serve_encoded": (encoded, "encoded_images"),
    }
    expected = _reference(exported.image, pixels)["logits"]
    for signature, (x, name) in feeds.items():
        fn = signatures[signature]
        np.testing.assert_allclose(fn(**{name: tf.constant(x)})["logits"], expected, atol=1e-5)
        three = np.concatenate([x, x[:1]])
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{signature}: the request holds more than max_request_pixels"
                                 rf"={bound} .*\] \[{3 * 45 * 38}\]"):
            fn(**{name: tf.constant(three)})
    with open(os.path.join(path, export.SERVING_INFO_FILE)) as f:
        assert json.load(f)["max_request_pixels"] == bound
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_request_pixels"):
            export.export_saved_model(
                exported.image.model, str(tmp_path / "never"), max_request_pixels=bad
            )
    assert not os.path.exists(tmp_path / "never")


def test_serving_info_file(exported):
    with open(os.path.join(exported.video.path, export.SERVING_INFO_FILE)) as f:
        info = json.load(f)
    assert info["input_kind"] == "video"
    assert info["preprocessing"] == {
        "kind": "video", "crop_size": 32, "min_resize": 40, "num_frames": 4,
        "normalization": "[-1,1]", "eval_split": "validation",
    }
    assert info["multilabel"] is True and info["class_names"] is None
    assert info["signatures"]["serve_encoded"]["inputs"]["encoded_videos"]["shape"] == "[-1, 4]"
    with open(os.path.join(exported.image.path, export.SERVING_INFO_FILE)) as f:
        info = json.load(f)
    assert info["class_names"] == exported.image.classes and info["top_k"] == 3
    # The default pre-processing of a 32 x 32 model: shorter side round(32 / 0.875) = 37.
    assert (info["preprocessing"]["min_resize"], info["preprocessing"]["crop_size"]) == (37, 32)
    assert exported.image.prep == data.Preprocessing(**info["preprocessing"])


def test_export_model_writes_both_formats_with_the_run_options(exported):
    """The trainer's `export_model` (the `video` fixture): the SavedModel took its options
    from the config (see `test_serving_info_file`), the `.keras` archive has the weights."""
    assert exported.video.path == os.path.join(os.path.dirname(exported.video.keras_path),
                                               "saved_model")
    restored = keras.saving.load_model(exported.video.keras_path)
    for a, b in zip(restored.get_weights(), exported.video.model.get_weights()):
        np.testing.assert_array_equal(a, b)
