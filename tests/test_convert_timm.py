"""timm `VisionTransformer` checkpoints in and out of tl_keras (`load_vit_weights`,
`save_vit_safetensors`), checked against timm's own logits.

The fixtures under `tests/fixtures/timm/` were written by timm itself
(`tests/fixtures/timm/make_fixtures.py`, versions in `VERSIONS.txt`); these tests read
only those files, so timm is not needed here, and torch only by the `.pth` / `.bin` test
(skipped without it).
"""

import json
import os
import tempfile

import numpy as np
import pytest

from test_case import to_numpy
from tl_keras import TL
from tl_keras.convert import (
    detect_vit_layout,
    load_vit_weights,
    read_checkpoint,
    save_vit_safetensors,
    timm_state_dict,
)
from tl_keras.layers.transformer import TransformerBlock
from tl_keras.models import ViT, vit_b16, vivit_b16

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "timm")
# The fixtures' timm models: make_fixtures.py `COMMON` and `MODELS`.
TIMM_TINY = dict(image_size=32, patch_size=8, hidden_dim=64, num_layers=2, num_heads=4,
                 mlp_dim=128, num_classes=10)
POOLING = {"vit_cls": "token", "vit_gap": "gap"}
RNG = np.random.default_rng(5)


def fixture(name):
    with np.load(os.path.join(FIXTURES, f"{name}_logits.npz")) as data:
        recorded = {k: np.asarray(data[k], np.float32) for k in data.files}
    return os.path.join(FIXTURES, f"{name}.safetensors"), recorded


def relative_error(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------------------
# The GELU form.


def test_gelu_argument_is_checked_configured_and_changes_the_function():
    with pytest.raises(ValueError, match="`gelu` must be 'tanh'.*got 'erf'"):
        ViT(**TIMM_TINY, gelu="erf")
    with pytest.raises(ValueError, match="`gelu`"):
        TransformerBlock(2, 8, gelu=None)
    model = ViT(**TIMM_TINY, gelu="exact")
    assert model.get_config()["gelu"] == "exact"
    assert ViT.from_config(model.get_config()).get_layer("encoderblock_1").gelu == "exact"
    assert ViT.defaults()["gelu"] == "tanh"
    assert vivit_b16(**TIMM_TINY, num_frames=2).resolved.gelu == "tanh"
    assert TransformerBlock(2, 8, gelu="exact").get_config()["gelu"] == "exact"
    # Same weights, the two forms: the block outputs differ (by ~1e-4 of their scale).
    x = RNG.normal(0, 2, (2, 5, 8)).astype("float32")
    tanh, exact = TransformerBlock(2, 16), TransformerBlock(2, 16, gelu="exact")
    tanh(x), exact(x)
    exact.set_weights(tanh.get_weights())
    difference = np.max(np.abs(to_numpy(tanh(x)) - to_numpy(exact(x))))
    assert 1e-6 < difference < 1e-2


# ---------------------------------------------------------------------------------------
# timm -> tl_keras: timm's logits.


@pytest.mark.parametrize("name", ["vit_cls", "vit_gap"])
def test_timm_checkpoint_gives_timm_logits(name):
    path, recorded = fixture(name)
    errors = {}
    for gelu in ("exact", "tanh"):
        model = ViT(**TIMM_TINY, pooling=POOLING[name], gelu=gelu)
        report = load_vit_weights(model, path)
        assert report["format"] == "timm"
        assert report["skipped"] == {} and report["initialised"] == []
        assert len(report["loaded"]) == len(model.trainable_weights)
        logits = to_numpy(model(recorded["images"]))
        # Each GELU form gives the logits of timm with that form, to 1e-4 relative
        # (seen: 2e-7 to 4e-7)...
        errors[gelu] = relative_error(logits, recorded[f"logits_{gelu}"])
        assert errors[gelu] < 1e-4, (gelu, errors[gelu])
        # ... and is much farther from the other form's: the two forms differ by only
        # 1.4e-4 (vit_cls) and 5e-5 (vit_gap) of the logits' scale, so 1e-4 alone does
        # not tell them apart; the distance to the other form does (seen: >100x).
        other = recorded["logits_tanh" if gelu == "exact" else "logits_exact"]
        assert relative_error(logits, other) > 10 * errors[gelu]
    assert any("exact (erf) GELU" in n for n in report["notes"])  # the tanh model's note


def test_timm_into_a_bigger_grid_and_other_classes():
    path, _ = fixture("vit_cls")
    model = ViT(**dict(TIMM_TINY, image_size=48, num_classes=3), gelu="exact")
    report = load_vit_weights(model, path)
    assert set(report["skipped"]) == {"head/kernel", "head/bias"}
    assert report["adapted"] == {
        "Transformer/posembed_input/pos_embedding": "(1, 17, 64) -> (1, 37, 64)"}
    source = read_checkpoint(path)
    np.testing.assert_allclose(
        to_numpy(model.get_layer("cls").cls), source["cls_token"].astype("float32"))


def test_timm_into_vivit_inflates_and_gives_timm_logits_on_a_still_clip():
    path, recorded = fixture("vit_gap")
    model = vivit_b16(**TIMM_TINY, num_frames=4, tubelet_size=2, pooling="gap", gelu="exact")
    report = load_vit_weights(model, path)  # central-frame inflation, embedding tiled
    assert set(report["adapted"]) == {"embedding/kernel",
                                      "Transformer/posembed_input/pos_embedding"}
    clip = np.repeat(recorded["images"][:, None], 4, axis=1)  # [B, T, H, W, 3]
    assert relative_error(to_numpy(model(clip)), recorded["logits_exact"]) < 1e-4


def test_timm_into_a_tokenlearner_model_with_extra_layers():
    """The fine-tuning start of the paper's models: the ViT's blocks loaded, the
    TokenLearner, the extra blocks and the head (another class count) left fresh."""
    path, _ = fixture("vit_gap")
    model = vit_b16(**dict(TIMM_TINY, num_classes=4), gelu="exact",
                    tokenlearner=TL(3, at=1, fuser=True), extra_layers=1)
    fresh = {w.path: to_numpy(w).copy() for w in model.weights}
    report = load_vit_weights(model, path)
    initialised = {n.split("/")[1] for n in report["initialised"] if n.startswith("Transformer/")}
    assert initialised == {"TokenLearnerModuleV11_0", "TokenFuser_0", "TokenLearnerModuleV11_1",
                           "TokenFuser_1", "encoderblock_2"}  # a TL + fuser around blocks 1, 2
    assert {"head/kernel", "head/bias"} <= set(report["initialised"])
    assert set(report["skipped"]) == {"head/kernel", "head/bias"}
    for layer in model.layers:
        changed = any(not np.array_equal(to_numpy(w), fresh[w.path]) for w in layer.weights)
        kept = layer.name.startswith(("tokenlearner", "tokenfuser", "head", "encoderblock_2"))
        assert changed != kept or not layer.weights, layer.name


def test_timm_misfits_are_listed_with_timm_names_and_nothing_changes():
    path, _ = fixture("vit_cls")
    params = read_checkpoint(path)
    del params["blocks.1.norm2.bias"]
    params["fc_norm.weight"] = np.ones(64, "float16")
    params["blocks.0.extra.weight"] = np.ones(3, "float16")
    model = ViT(**dict(TIMM_TINY, mlp_dim=64), gelu="exact")
    before = [to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError) as err:
        load_vit_weights(model, params)
    message = str(err.value)
    assert "timm layout" in message
    assert "fc_norm.weight: a LayerNorm after the pooling" in message
    assert ("missing: Transformer/encoderblock_1/LayerNorm_2/bias" in message)
    assert ("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel (blocks.0.mlp.fc1.weight): "
            "got (64, 128), expected (64, 64)") in message
    assert "unexpected: blocks.0.extra.weight" in message
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)


def test_bfloat16_safetensors_are_read_as_float32():
    """A bfloat16 file (as many hub checkpoints) is read as float32 values. The file is
    written here by hand in the safetensors format (8-byte little-endian header size,
    JSON header, raw little-endian data)."""
    path, recorded = fixture("vit_cls")
    source = {k: v.astype("float32") for k, v in read_checkpoint(path).items()}
    header, chunks, offset = {}, [], 0
    for name, value in source.items():
        raw = (value.view(np.uint32) >> 16).astype("<u2").tobytes()  # bfloat16 bits
        header[name] = {"dtype": "BF16", "shape": list(value.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as tmp:
        bf16 = os.path.join(tmp, "vit_bf16.safetensors")
        with open(bf16, "wb") as f:
            f.write(len(encoded).to_bytes(8, "little") + encoded + b"".join(chunks))
        params = read_checkpoint(bf16)
        model = ViT(**TIMM_TINY, gelu="exact")
        load_vit_weights(model, bf16)
    for name, value in source.items():
        truncated = (value.view(np.uint32) & 0xFFFF0000).view(np.float32)
        assert params[name].dtype == np.float32
        np.testing.assert_array_equal(params[name], truncated, err_msg=name)
    # bfloat16-rounded weights: near timm's logits, not equal.
    assert relative_error(to_numpy(model(recorded["images"])), recorded["logits_exact"]) < 0.1


def test_torch_files_need_torch_only_when_read():
    try:
        import torch  # noqa: F401
    except ImportError:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.pth")
            open(path, "wb").close()
            with pytest.raises(ImportError, match="needs torch"):
                read_checkpoint(path)
    else:  # pragma: no cover - CI has no torch
        pytest.skip("torch is installed")


@pytest.mark.parametrize("suffix, wrapped, dtype", [(".pth", False, "float32"),
                                                    (".bin", True, "float32"),
                                                    (".pt", False, "bfloat16")])
def test_torch_state_dict_loads_as_the_safetensors(suffix, wrapped, dtype, tmp_path):
    """The timm fixture's state dict saved with `torch.save` (plain, or wrapped in
    `{"state_dict": ...}` as a training checkpoint; float32 or bfloat16 tensors) reads as
    the `.safetensors` file: the same arrays (bfloat16: its values as float32), and in
    float32 the same logits, timm's. Skipped without torch (CI installs none)."""
    torch = pytest.importorskip("torch")
    path, recorded = fixture("vit_cls")
    source = {k: np.array(v, np.float32) for k, v in read_checkpoint(path).items()}
    state = {k: torch.from_numpy(v).to(getattr(torch, dtype)) for k, v in source.items()}
    torch_path = str(tmp_path / f"vit_cls{suffix}")
    torch.save({"state_dict": state} if wrapped else state, torch_path)
    params = read_checkpoint(torch_path)
    assert sorted(params) == sorted(source)
    for name, value in source.items():
        if dtype == "bfloat16":  # the bfloat16 values, exactly (torch rounds to them)
            value = state[name].float().numpy()
        assert params[name].dtype == np.float32
        np.testing.assert_array_equal(params[name], value, err_msg=name)
    assert (dtype == "bfloat16") == any(
        not np.array_equal(params[k], source[k]) for k in source)
    if dtype != "float32":
        return
    via_torch, via_safetensors = ViT(**TIMM_TINY, gelu="exact"), ViT(**TIMM_TINY, gelu="exact")
    report = load_vit_weights(via_torch, torch_path)
    assert report["format"] == "timm" and report["skipped"] == {}
    assert report["initialised"] == []
    load_vit_weights(via_safetensors, path)
    logits = to_numpy(via_torch(recorded["images"]))
    np.testing.assert_array_equal(logits, to_numpy(via_safetensors(recorded["images"])))
    assert relative_error(logits, recorded["logits_exact"]) < 1e-4


# ---------------------------------------------------------------------------------------
# tl_keras -> timm layout.


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_safetensors_writer_is_timm_layout_and_round_trips(pooling):
    path, recorded = fixture("vit_cls" if pooling == "token" else "vit_gap")
    timm_names = set(read_checkpoint(path))
    source = ViT(**TIMM_TINY, pooling=pooling, gelu="exact")
    load_vit_weights(source, path)
    with tempfile.TemporaryDirectory() as tmp:
        written = save_vit_safetensors(source, os.path.join(tmp, "vit.safetensors"))
        params = read_checkpoint(written)
        assert detect_vit_layout(params) == "timm"
        # The same names and shapes as timm's own file; values back from float16 exactly.
        assert set(params) == timm_names
        for key, value in read_checkpoint(path).items():
            assert params[key].shape == value.shape, key
            np.testing.assert_array_equal(params[key], value.astype("float32"), err_msg=key)
        target = ViT(**TIMM_TINY, pooling=pooling, gelu="exact")
        load_vit_weights(target, written)
    x = recorded["images"]
    np.testing.assert_array_equal(to_numpy(target(x)), to_numpy(source(x)))


def test_writer_refuses_what_timm_has_not():
    for model in (vit_b16(**TIMM_TINY, tokenlearner=TL(2, at=1)),
                  vit_b16(**TIMM_TINY, representation_size=8),
                  vivit_b16(**TIMM_TINY, num_frames=2)):
        with pytest.raises(ValueError, match="timm's VisionTransformer has no"):
            timm_state_dict(model)
