"""Token maps: shapes, that they are the layer's own maps (computed independently from the
layer's input), any nesting depth, the drawing, and `tools/visualize_tokens.py`."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from tl_keras import visualize
from tl_keras.models import TL, create_model

TOOLS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "tools"))


def _vit(version="1.1", fuser=False, num_layers=2):
    return create_model(
        "vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=num_layers,
        num_heads=2, mlp_dim=64, num_classes=5, tokenlearner=TL(4, at=1, fuser=fuser, version=version),
    )


def _vivit(fuser=False, num_layers=2):
    return create_model(
        "vivit_b16", num_frames=4, image_size=32, patch_size=8, tubelet_size=2, hidden_dim=32,
        num_layers=num_layers, num_heads=2, mlp_dim=64, num_classes=6,
        tokenlearner=TL(3, at=1, fuser=fuser),
    )


def _independent_maps(model, layer_name, x):
    """The layer's `attention_maps` of its input, the input computed by a sub-model."""
    layer = model.get_layer(layer_name)
    inputs = layer.input
    if isinstance(inputs, (list, tuple)):  # a fuser block's TokenLearner also gets `normalized=`
        inputs = inputs[0]
    layer_input = keras.Model(model.input, inputs)(x, training=False)
    return keras.ops.convert_to_numpy(layer.attention_maps(layer_input))  # [B*T, S, N]


def test_image_maps_are_the_layers_softmax_maps():
    model = _vit()
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    maps = visualize.token_maps(model, x)
    assert list(maps) == ["tokenlearner_0"]
    m = maps["tokenlearner_0"]
    assert m.shape == (3, 1, 4, 4, 4)  # [B, T=1, S, h, w] on the 4x4 patch grid
    np.testing.assert_allclose(m.sum(axis=(-2, -1)), 1.0, atol=1e-5)  # softmax over positions
    ref = _independent_maps(model, "tokenlearner_0", x)
    np.testing.assert_allclose(m.reshape(3, 4, 16), ref, atol=1e-6)
    # The maps depend on the example (not a constant).
    assert np.abs(m[0] - m[1]).max() > 1e-4


def test_maps_are_laid_out_on_the_patch_grid():
    """Non-square 4 x 6 grid, TokenLearner right on the patch embeddings: changing the
    pixels of patch (row 1, column 4) changes the map logits there only, so the log-maps
    move by a constant (the softmax normaliser) everywhere else."""
    model = create_model(
        "vit_b16", image_size=(32, 48), patch_size=8, hidden_dim=32, num_layers=1, num_heads=2,
        mlp_dim=64, num_classes=2, tokenlearner=TL(3, at=0),
    )
    x = np.random.default_rng(6).normal(size=(1, 32, 48, 3)).astype("float32")
    changed = x.copy()
    changed[0, 8:16, 32:40] += 3.0  # patch row 1, column 4
    before = visualize.token_maps(model, x)["tokenlearner_0"][0, 0]  # [S, h, w]
    after = visualize.token_maps(model, changed)["tokenlearner_0"][0, 0]
    assert before.shape == (3, 4, 6)
    shift = np.log(after) - np.log(before)  # [S, 4, 6]
    for s in range(3):
        others = np.delete(shift[s].ravel(), 1 * 6 + 4)
        np.testing.assert_allclose(others, others[0], atol=1e-4)
        assert abs(shift[s, 1, 4] - others[0]) > 1e-3


def test_video_maps_per_frame_for_every_layer():
    model = _vivit(fuser=True, num_layers=3)  # model "b": a TokenLearner before blocks 1 and 2
    x = np.random.default_rng(1).normal(size=(2, 4, 32, 32, 3)).astype("float32")
    maps = visualize.token_maps(model, x)
    assert list(maps) == ["tokenlearner_0", "tokenlearner_1"]
    for name, m in maps.items():
        assert m.shape == (2, 2, 3, 4, 4)  # [B, T'=4/2 tubelet frames, S=3, 4, 4]
        np.testing.assert_allclose(m.sum(axis=(-2, -1)), 1.0, atol=1e-5)
        ref = _independent_maps(model, name, x)  # [B*T', S, N], frame-major per example
        np.testing.assert_allclose(m.reshape(4, 3, 16), ref, atol=1e-6)
    assert np.abs(maps["tokenlearner_0"][:, 0] - maps["tokenlearner_0"][:, 1]).max() > 1e-4
    only = visualize.token_maps(model, x, layers=["tokenlearner_1"])
    assert list(only) == ["tokenlearner_1"]
    with pytest.raises(ValueError, match="no TokenLearner layer"):
        visualize.token_maps(model, x, layers=["tokenlearner_7"])


def test_v1_sigmoid_maps():
    model = _vit(version="1")
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    m = visualize.token_maps(model, x)["tokenlearner_0"]
    assert m.shape == (2, 1, 4, 4, 4)
    assert m.min() > 0 and m.max() < 1
    np.testing.assert_allclose(m.reshape(2, 4, 16), _independent_maps(model, "tokenlearner_0", x), atol=1e-6)


def test_nested_tokenlearner_and_model_unchanged():
    """X(2+1)D keeps its TokenLearner inside a residual unit: found by path; recording does
    not change the model's output and leaves no trace on the layer."""
    model = create_model(
        "x2plus1d_m", num_frames=4, image_size=32, stem_width=8, widths=(8, 16), depths=(1, 1),
        head_width=16, fc_width=16, expansion=2, num_classes=3, tokenlearner=4,
    )
    x = np.random.default_rng(3).normal(size=(2, 4, 32, 32, 3)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x, training=False))
    maps = visualize.token_maps(model, x)
    (path,) = maps
    assert path.endswith("token_learner") and path.startswith("res3_unit0/")
    assert maps[path].shape == (2, 4, 4, 4, 4)  # [B, T=4 (no temporal stride), S=4, 4x4 res3 grid]
    assert maps[path].min() > 0 and maps[path].max() < 1  # sigmoid maps (version "1")
    (_, layer), = visualize.tokenlearner_layers(model)
    assert "call" not in layer.__dict__
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), before)


def test_model_without_tokenlearner():
    model = create_model("vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=1,
                         num_heads=2, mlp_dim=64, num_classes=2)
    x = np.zeros((1, 32, 32, 3), "float32")
    with pytest.raises(ValueError, match="has no TokenLearner"):
        visualize.token_maps(model, x)
    assert visualize.write_token_maps(model, x, "unused.png") is None


def _read_png(path):
    import tensorflow as tf

    with open(path, "rb") as f:
        return tf.io.decode_png(f.read(), channels=3).numpy()


@pytest.mark.tf_only
def test_png_writer_round_trip(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (7, 11, 3)).astype(np.uint8)
    path = visualize.write_png(str(tmp_path / "x.png"), image)
    np.testing.assert_array_equal(_read_png(path), image)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_draw_heat_map_over_the_right_cell():
    frames = np.full((2, 16, 16, 3), 7.0)  # constant: drawn black, so a cell is pure heat
    maps = np.zeros((2, 3, 4, 4), np.float32)
    maps[1, 2, 1, 3] = 0.5  # frame 1, token 2, grid row 1, column 3
    draw = visualize.draw_token_maps(frames, maps, cell=32, alpha=1.0)
    hot = np.array([252, 255, 164])  # top of the colour map (per-map normalised peak)
    ys, xs = np.nonzero(np.all(draw == hot, axis=-1))
    assert len(ys) == 8 * 8  # one of 4 x 4 grid cells of a 32-pixel frame
    assert ys.max() - ys.min() == 7 and xs.max() - xs.min() == 7
    # It sits in the last row (token 2) and last column (frame 1), grid position (1, 3).
    cold = np.all(draw == np.array([0, 0, 4]), axis=-1)
    cold_ys, cold_xs = np.nonzero(cold)
    assert ys.min() > cold_ys.min() and xs.min() > cold_xs.min()
    row_top = cold_ys.max() - 31  # the last token row's cell spans 32 pixels
    col_left = cold_xs.max() - 31
    assert (ys.min() - row_top, xs.min() - col_left) == (8, 24)
    with pytest.raises(ValueError, match="normalize"):
        visualize.draw_token_maps(frames, maps, normalize="log")


def _painted(image, text):
    """Whether `text` (a layout entry) is painted in `image` where the layout says."""
    blank = np.full(image.shape, 255, np.uint8)
    visualize._draw_text(blank, text["text"], text["y"], text["x"], text["scale"])
    mask = np.any(blank != 255, axis=-1)
    return mask.any() and bool(np.all(image[mask] == blank[mask]))


def test_figure_labels_its_frames_and_has_a_colour_scale():
    """Column labels name the clip frames of each token frame (a ViViT tubelet of 2, the
    source video's frame numbers), rows the tokens; a colour bar runs through the colour map
    with its value range and caption; every text of the layout is painted where it says."""
    rng = np.random.default_rng(7)
    frames = rng.normal(size=(4, 16, 16, 3))
    maps = rng.uniform(0.01, 0.3, size=(2, 3, 4, 4)).astype(np.float32)
    image, layout = visualize.draw_token_maps(
        frames, maps, cell=48, frame_indices=[10, 12, 14, 16], title="tokenlearner_0",
        return_layout=True,
    )
    assert [c["label"] for c in layout["columns"]] == ["F10-12", "F14-16"]
    assert [c["frames"] for c in layout["columns"]] == [[10, 12], [14, 16]]
    assert [r["label"] for r in layout["rows"]] == ["TOKEN 0", "TOKEN 1", "TOKEN 2"]
    texts = {t["text"]: t for t in layout["texts"]}
    for column in layout["columns"]:  # each label above its own column
        label = texts[column["label"]]
        assert label["x"] == column["box"][1] and label["y"] < column["box"][0]
    for t in layout["texts"]:
        assert _painted(image, t), t
    # The colour bar: the colour map from its lowest to its highest colour, left to right.
    bar = layout["colorbar"]
    y0, x0, y1, x1 = bar["box"]
    strip = image[y0:y1, x0:x1].astype(int)
    assert np.all(strip == strip[:1])  # every row of the bar alike
    np.testing.assert_allclose(strip[0, 0], [0, 0, 4], atol=3)
    np.testing.assert_allclose(strip[0, -1], [252, 255, 164], atol=3)
    assert np.all(np.diff(strip[0].sum(-1)) >= 0)  # brighter to the right
    assert bar["range"] == [0.0, 1.0] and bar["labels"] == ["0", "1"]
    low, high = texts["0"], texts["1"]  # the ends' values under the bar's two ends
    assert low["x"] == x0 and low["y"] > y1
    assert high["x"] + visualize._text_size("1", high["scale"])[1] == x1 and high["y"] > y1
    peaks = maps.reshape(6, -1).max(-1)
    np.testing.assert_allclose(bar["peaks"], [peaks.min(), peaks.max()], rtol=1e-6)
    assert bar["caption"] == (f"COLOUR = VALUE / PEAK OF ITS MAP, PEAKS {peaks.min():.3g} TO "
                              f"{peaks.max():.3g}")
    assert texts[bar["caption"]]["y"] > y1
    # Drawn as they are: the caption says so.
    _, raw = visualize.draw_token_maps(frames, maps, normalize="none", return_layout=True)
    assert "CLIPPED TO 0 TO 1" in raw["colorbar"]["caption"]
    assert [c["label"] for c in raw["columns"]] == ["F0-1", "F2-3"]  # default: 0 .. T-1
    # An image is one column, labelled as such.
    _, one = visualize.draw_token_maps(frames[0], maps[:1], return_layout=True)
    assert [c["label"] for c in one["columns"]] == ["IMAGE"]
    with pytest.raises(ValueError, match="frame_indices has 3 entries for 4 input frames"):
        visualize.draw_token_maps(frames, maps, frame_indices=[0, 1, 2])


def _png_text(path):
    """`{keyword: text}` of the tEXt chunks of a PNG file."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    out, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at: at + 4])
        kind, body = data[at + 4: at + 8], data[at + 8: at + 8 + length]
        if kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            out[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return out


@pytest.mark.tf_only
def test_written_figure_holds_the_labels_and_scale(tmp_path):
    """The PNG is the drawn figure, and says in a tEXt chunk which clip frames its columns
    are and what its colours mean."""
    import json

    model = _vivit()
    x = np.random.default_rng(8).normal(size=(1, 4, 32, 32, 3)).astype("float32")
    path = visualize.write_token_maps(model, x, str(tmp_path / "maps.png"),
                                      frame_indices=[3, 4, 5, 6])
    (info,) = json.loads(_png_text(path)["tl_keras:token_maps"])
    assert info["layer"] == "tokenlearner_0"
    assert info["columns"] == [{"label": "F3-4", "frames": [3, 4]},
                               {"label": "F5-6", "frames": [5, 6]}]
    assert info["rows"] == ["TOKEN 0", "TOKEN 1", "TOKEN 2"]
    maps = visualize.token_maps(model, x)["tokenlearner_0"][0]
    expected, layout = visualize.draw_token_maps(
        x[0], maps, title="tokenlearner_0", frame_indices=[3, 4, 5, 6], return_layout=True
    )
    assert info["colorbar"] == {k: v for k, v in layout["colorbar"].items() if k != "box"}
    image = _read_png(path)
    np.testing.assert_array_equal(image[: expected.shape[0], : expected.shape[1]], expected)


@pytest.mark.tf_only
def test_write_token_maps_from_a_dataset(tmp_path):
    import tensorflow as tf

    model = _vivit()
    x = np.random.default_rng(5).normal(size=(3, 4, 32, 32, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.eye(3, 6, dtype="float32"))).batch(3)
    path = visualize.write_token_maps(model, ds, str(tmp_path / "run" / "maps.png"), example=1)
    image = _read_png(path)
    # 2 token frames x (input row + 3 tokens), 32-pixel frames drawn at 96 pixels.
    assert image.shape[0] > 4 * 96 and image.shape[1] > 2 * 96
    assert image.shape[1] < 3 * 96 + 100
    with pytest.raises(ValueError, match="example=5"):
        visualize.write_token_maps(model, x, str(tmp_path / "no.png"), example=5)
    # A multi-view evaluation batch [B, V, T, H, W, 3] is drawn from its middle view.
    views = np.random.default_rng(6).normal(size=(3, 5, 4, 32, 32, 3)).astype("float32")
    multi = visualize.write_token_maps(model, views, str(tmp_path / "multi.png"), example=1)
    single = visualize.write_token_maps(model, views[:, 2], str(tmp_path / "single.png"), example=1)
    other = visualize.write_token_maps(model, views[:, 0], str(tmp_path / "other.png"), example=1)
    np.testing.assert_array_equal(_read_png(multi), _read_png(single))
    assert np.any(_read_png(multi) != _read_png(other))


# --------------------------------------------------------------------------------------
# tools/visualize_tokens.py
# --------------------------------------------------------------------------------------


def _tool(monkeypatch):
    """`tools/visualize_tokens.py` as a module, its folder on `sys.path` as when it runs as a
    script (it imports `tools/_common.py` as `_common`)."""
    monkeypatch.syspath_prepend(TOOLS)
    path = os.path.join(TOOLS, "visualize_tokens.py")
    spec = importlib.util.spec_from_file_location("visualize_tokens_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frames(num, height, width, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (num, height // 4, width // 4, 3)).astype(np.uint8)
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)


def _write_mp4(path, frames):
    av = pytest.importorskip("av")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.tf_only
def test_visualize_tool_on_image_video_and_record(tmp_path, capsys, monkeypatch):
    from tl_keras import data
    from tl_keras.data import writer

    tool = _tool(monkeypatch)
    vit_path, vivit_path = str(tmp_path / "vit.keras"), str(tmp_path / "vivit.keras")
    _vit().save(vit_path)
    _vivit().save(vivit_path)

    image = str(tmp_path / "image.jpg")
    with open(image, "wb") as f:
        f.write(writer.encode_jpeg(_frames(1, 48, 40, 0)[0]))
    out = str(tmp_path / "image_maps.png")
    assert tool.main([f"--model={vit_path}", f"--input={image}", f"--output={out}"]) == 0
    assert "image_maps.png" in capsys.readouterr().out
    assert _read_png(out).shape[1] > 96  # one frame column of 96 pixels plus labels

    video = str(tmp_path / "video.mp4")
    _write_mp4(video, _frames(12, 40, 48, 1))
    out = str(tmp_path / "video_maps.png")
    assert tool.main([f"--model={vivit_path}", f"--input={video}", f"--output={out}",
                      "--stride=2"]) == 0
    assert _read_png(out).shape[1] > 2 * 96  # two token frames

    # A DMVR record: the clip is the evaluation pipeline's (middle clip, stride 2, test crop).
    frames = _frames(10, 40, 48, 2)
    record = str(tmp_path / "clips.tfrecord")
    writer.write_tfrecord(record, [
        writer.make_sequence_example([writer.encode_jpeg(f) for f in frames], [1]).SerializeToString(),
        writer.make_sequence_example([writer.encode_jpeg(f) for f in frames[::-1]], [0]).SerializeToString(),
    ])
    prep = data.preprocessing_for(keras.saving.load_model(vivit_path))
    x, indices = tool.load_input(record, prep, example=1, stride=2)
    assert indices == [1, 3, 5, 7]  # the middle clip of 4 frames at stride 2 of 10
    ds = data.video_dataset(record, split="test", num_frames=4, stride=2, crop_size=32,
                            min_resize=prep.min_resize, num_classes=2, batch_size=2,
                            num_clips=1, num_crops=1, on_error="raise")
    (videos, _), = list(ds)
    np.testing.assert_allclose(x[0], videos[1].numpy(), atol=1e-5)
    out = str(tmp_path / "record_maps.png")
    assert tool.main([f"--model={vivit_path}", f"--input={record}", f"--output={out}",
                      "--example=1", "--max_tokens=2", "--stride=2"]) == 0
    # The columns name the source video's frames (tubelets of 2 input frames).
    columns = json.loads(_png_text(out)["tl_keras:token_maps"])[0]["columns"]
    assert [c["frames"] for c in columns] == [[1, 3], [5, 7]]

    # Input that does not fit the model: an error that says so, exit code 2.
    assert tool.main([f"--model={vivit_path}", f"--input={image}", f"--output={out}"]) == 2
    assert "the model takes videos of 4 frames" in capsys.readouterr().err
    assert tool.main([f"--model={vivit_path}", f"--input={record}", f"--output={out}",
                      "--example=9"]) == 2
    assert "2 record(s)" in capsys.readouterr().err
