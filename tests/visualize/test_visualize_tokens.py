"""Token maps: shapes, that they are the layer's own maps (computed independently from the
layer's input), any nesting depth, the figures (matplotlib; their panels counted as axes of
the Figure), and `tools/visualize_tokens.py`."""

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


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def _colorbar(fig):
    """The colour bar's axes: the figure's last, the only one with a y label."""
    bar = fig.axes[-1]
    assert bar.get_ylabel() and not any(ax.get_ylabel() for ax in fig.axes[:-1])
    return bar


def test_video_figure_has_the_frames_then_a_panel_per_token_and_frame():
    """Paper Fig. 10: the frames on top, then each token's map over each frame, titled with
    the token and the clip frames (a ViViT tubelet of 2 frames, the source video's frame
    numbers), one colour bar; the heat map drawn is the map divided by its peak."""
    rng = np.random.default_rng(7)
    frames = rng.normal(size=(4, 16, 16, 3))
    maps = rng.uniform(0.01, 0.3, size=(2, 3, 4, 4)).astype(np.float32)
    fig = visualize.plot_token_maps(frames, maps, frame_indices=[10, 12, 14, 16],
                                    title="tokenlearner_0")
    assert len(fig.axes) == (1 + 3) * 2 + 1  # (frames row + 3 tokens) x 2 frames, colour bar
    assert _titles(fig)[:-1] == [
        "input, frames 10-12", "input, frames 14-16",
        "token 0, frames 10-12", "token 0, frames 14-16",
        "token 1, frames 10-12", "token 1, frames 14-16",
        "token 2, frames 10-12", "token 2, frames 14-16",
    ]
    assert fig.get_suptitle() == "tokenlearner_0"
    peaks = maps.reshape(6, -1).max(-1)
    bar = _colorbar(fig)
    assert bar.get_ylabel() == (f"value / peak of its map\n(peaks {peaks.min():.3g} to "
                                f"{peaks.max():.3g})")
    assert bar.get_ylim() == (0.0, 1.0)
    # Token 2 over the second (token) frame: its map / its peak, over the grey frame 2.
    panel = fig.axes[7]
    grey, heat = panel.images
    np.testing.assert_allclose(np.asarray(heat.get_array()), maps[1, 2] / maps[1, 2].max(),
                               rtol=1e-6)
    assert grey.get_array().shape == (16, 16)
    info = visualize.describe_token_maps(frames, maps, frame_indices=[10, 12, 14, 16])
    assert [c["frames"] for c in info["columns"]] == [[10, 12], [14, 16]]
    assert info["rows"] == ["token 0", "token 1", "token 2"]
    np.testing.assert_allclose(info["colorbar"]["peaks"], [peaks.min(), peaks.max()], rtol=1e-6)
    # Fewer shown: evenly spaced tokens; values drawn as they are (the bar says so).
    fig = visualize.plot_token_maps(frames, maps, max_tokens=2, normalize="none")
    assert len(fig.axes) == (1 + 2) * 2 + 1
    assert "token 2, frames 2-3" in _titles(fig) and "token 1, frames 0-1" not in _titles(fig)
    assert "clipped to [0, 1]" in _colorbar(fig).get_ylabel()
    with pytest.raises(ValueError, match="normalize"):
        visualize.plot_token_maps(frames, maps, normalize="log")
    with pytest.raises(ValueError, match="frame_indices has 3 entries for 4 input frames"):
        visualize.plot_token_maps(frames, maps, frame_indices=[0, 1, 2])


def test_image_figure_has_the_image_then_a_panel_per_token():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(16, 16, 3))
    maps = rng.uniform(0.0, 1.0, size=(1, 8, 4, 4)).astype(np.float32)
    fig = visualize.plot_token_maps(image, maps)
    assert len(fig.axes) == 1 + 8 + 1  # image, 8 tokens, colour bar (the empty slot removed)
    assert _titles(fig)[:-1] == ["image"] + [f"token {s}" for s in range(8)]
    _colorbar(fig)
    assert visualize.describe_token_maps(image, maps)["columns"][0]["label"] == "image"


def test_model_figure_for_image_and_video_models():
    """One block per TokenLearner layer, titled with its path."""
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    fig = visualize.token_maps_figure(_vit(), x, example=1)
    assert len(fig.axes) == 1 + 4 + 1
    assert fig.get_suptitle() == "tokenlearner_0"
    model = _vivit(fuser=True, num_layers=3)  # two TokenLearner layers
    v = np.random.default_rng(1).normal(size=(1, 4, 32, 32, 3)).astype("float32")
    fig = visualize.token_maps_figure(model, v)
    assert len(fig.axes) == 2 * ((1 + 3) * 2 + 1)
    assert [sub.get_suptitle() for sub in fig.subfigs] == ["tokenlearner_0", "tokenlearner_1"]
    image = visualize.token_maps_image(model, v, layers=["tokenlearner_1"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3


def test_without_matplotlib_the_error_names_the_extra(monkeypatch):
    import sys

    from tl_keras import plotting

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    with pytest.raises(ImportError, match=r"pip install 'tl_keras\[plot\]'"):
        visualize.plot_token_maps(np.zeros((8, 8, 3)), np.zeros((1, 2, 2, 2)))
    with pytest.raises(ImportError, match=r"tl_keras\[plot\]"):
        plotting.new_figure()
    # The maps themselves need no plotting library.
    x = np.zeros((1, 32, 32, 3), "float32")
    assert visualize.token_maps(_vit(), x)["tokenlearner_0"].shape == (1, 1, 4, 4, 4)


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
    """The PNG is written, and says in a text chunk which clip frames its columns are and
    what its colours mean."""
    model = _vivit()
    x = np.random.default_rng(8).normal(size=(1, 4, 32, 32, 3)).astype("float32")
    path = visualize.write_token_maps(model, x, str(tmp_path / "maps.png"),
                                      frame_indices=[3, 4, 5, 6])
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    (info,) = json.loads(_png_text(path)["tl_keras:token_maps"])
    assert info["layer"] == "tokenlearner_0"
    assert info["columns"] == [{"label": "frames 3-4", "frames": [3, 4], "token_frame": 0},
                               {"label": "frames 5-6", "frames": [5, 6], "token_frame": 1}]
    assert info["rows"] == ["token 0", "token 1", "token 2"]
    maps = visualize.token_maps(model, x)["tokenlearner_0"][0]
    expected = visualize.describe_token_maps(x[0], maps, frame_indices=[3, 4, 5, 6])
    assert info["colorbar"] == expected["colorbar"]
    height, width, _ = _read_png(path).shape
    assert width > 2 * 100 and height > 4 * 100  # 2 frame columns, 4 rows of panels


@pytest.mark.tf_only
def test_write_token_maps_from_a_dataset(tmp_path):
    import tensorflow as tf

    model = _vivit()
    x = np.random.default_rng(5).normal(size=(3, 4, 32, 32, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.eye(3, 6, dtype="float32"))).batch(3)
    path = visualize.write_token_maps(model, ds, str(tmp_path / "run" / "maps.png"), example=1)
    assert os.path.exists(path)
    with pytest.raises(ValueError, match="example=5"):
        visualize.write_token_maps(model, x, str(tmp_path / "no.png"), example=5)
    # A multi-view evaluation batch [B, V, T, H, W, 3] is drawn from its middle view.
    views = np.random.default_rng(6).normal(size=(3, 5, 4, 32, 32, 3)).astype("float32")
    multi = visualize.token_maps_image(model, views, example=1)
    single = visualize.token_maps_image(model, views[:, 2], example=1)
    other = visualize.token_maps_image(model, views[:, 0], example=1)
    np.testing.assert_array_equal(multi, single)
    assert np.any(multi != other)


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
    figures = []  # every figure the tool saves (the file is written as well)
    save = visualize.plotting.save_figure
    monkeypatch.setattr(visualize.plotting, "save_figure",
                        lambda fig, path, **kw: figures.append(fig) or save(fig, path, **kw))
    vit_path, vivit_path = str(tmp_path / "vit.keras"), str(tmp_path / "vivit.keras")
    _vit().save(vit_path)
    _vivit().save(vivit_path)

    image = str(tmp_path / "image.jpg")
    with open(image, "wb") as f:
        f.write(writer.encode_jpeg(_frames(1, 48, 40, 0)[0]))
    out = str(tmp_path / "image_maps.png")
    assert tool.main([f"--model={vit_path}", f"--input={image}", f"--output={out}"]) == 0
    assert "image_maps.png" in capsys.readouterr().out
    assert os.path.exists(out) and len(figures[-1].axes) == 1 + 4 + 1  # image, 4 tokens, bar

    video = str(tmp_path / "video.mp4")
    _write_mp4(video, _frames(12, 40, 48, 1))
    out = str(tmp_path / "video_maps.png")
    assert tool.main([f"--model={vivit_path}", f"--input={video}", f"--output={out}",
                      "--stride=2"]) == 0
    assert os.path.exists(out)
    assert len(figures[-1].axes) == (1 + 3) * 2 + 1  # frames + 3 tokens, 2 token frames, bar

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
    assert len(figures[-1].axes) == (1 + 2) * 2 + 1  # --max_tokens=2

    # Input that does not fit the model: an error that says so, exit code 2.
    assert tool.main([f"--model={vivit_path}", f"--input={image}", f"--output={out}"]) == 2
    assert "the model takes videos of 4 frames" in capsys.readouterr().err
    assert tool.main([f"--model={vivit_path}", f"--input={record}", f"--output={out}",
                      "--example=9"]) == 2
    assert "2 record(s)" in capsys.readouterr().err
