"""big_vision ViT checkpoints (`load_vit_weights`): files written here with big_vision's
naming (its `models/vit.py`), scanned and unscanned, with and without `params/`, give
the logits of the original JAX ViT layout file of the same weights.

big_vision's differences from the JAX ViT release, which the writer below follows:
the position embedding is a root `pos_embedding` of the patches only (the class token is
concatenated after it is added, so it gets none), the blocks use `LayerNorm_0/1`,
`MultiHeadDotProductAttention_0`, `MlpBlock_0/Dense_{0,1}`, and a scanned encoder
(`scan=True`) stores one `Transformer/encoderblock` whose arrays have a leading layer
axis.
"""

import os
import tempfile

import numpy as np
import pytest

from test_case import to_numpy
from tl_keras.convert import (
    detect_vit_layout,
    load_vit_weights,
    save_vit_npz,
    vit_npz_params,
)
from tl_keras.models import vit_b16

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=3, num_heads=2,
            mlp_dim=64, num_classes=5)
RNG = np.random.default_rng(23)
BLOCK_NAMES = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
               "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
POS = "Transformer/posembed_input/pos_embedding"


def random_model(pooling):
    model = vit_b16(**TINY, pooling=pooling)
    for w in model.weights:
        w.assign(to_numpy(w) + RNG.normal(0, 0.2, w.shape).astype("float32"))
    return model


def big_vision_params(jax_params, scanned, prefix=""):
    """The JAX ViT names of one model -> big_vision's, for the same function."""
    out = {}
    blocks = {}
    for name, value in jax_params.items():
        parts = name.split("/")
        if name == POS:
            if "cls" in jax_params:
                # big_vision's class token gets no position embedding: fold its row in.
                out["cls"] = jax_params["cls"] + value[:, :1]
                value = value[:, 1:]
            out["pos_embedding"] = value
        elif name == "cls":
            continue
        elif parts[0] == "Transformer" and parts[1].startswith("encoderblock_"):
            index = int(parts[1].split("_")[1])
            inner = "/".join([BLOCK_NAMES.get(parts[2], parts[2])] + parts[3:])
            blocks.setdefault(inner, {})[index] = value
        else:
            out[name] = value
    for inner, per_layer in blocks.items():
        if scanned:  # one array per name, the layers stacked on a leading axis
            out[f"Transformer/encoderblock/{inner}"] = np.stack(
                [per_layer[i] for i in range(len(per_layer))])
        else:
            for i, value in per_layer.items():
                out[f"Transformer/encoderblock_{i}/{inner}"] = value
    return {f"{prefix}{k}": v for k, v in out.items()}


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_scanned_and_unscanned_give_the_original_layout_logits(pooling):
    source = random_model(pooling)
    x = RNG.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    jax_params = vit_npz_params(source)
    with tempfile.TemporaryDirectory() as tmp:
        original = save_vit_npz(source, os.path.join(tmp, "jax_vit.npz"))
        reference = vit_b16(**TINY, pooling=pooling)
        assert load_vit_weights(reference, original)["format"] == "jax_vit"
        expected = to_numpy(reference(x))
        for scanned in (False, True):
            for prefix in ("", "params/"):
                path = os.path.join(tmp, f"bv_{scanned}_{bool(prefix)}.npz")
                params = big_vision_params(jax_params, scanned, prefix)
                if prefix:  # a training checkpoint: optimizer state beside the params
                    params["opt/0/mu/head/kernel"] = np.zeros((32, 5), "float32")
                np.savez(path, **params)
                model = vit_b16(**TINY, pooling=pooling)
                report = load_vit_weights(model, path)
                assert report["format"] == "big_vision"
                assert report["skipped"] == {} and report["initialised"] == []
                assert len(report["loaded"]) == len(model.trainable_weights)
                assert any("unstacked into 3 blocks" in n for n in report["notes"]) == scanned
                assert any("outside `params/`" in n for n in report["notes"]) == bool(prefix)
                np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-6,
                                           atol=1e-6, err_msg=f"scanned={scanned} {prefix}")
    assert np.max(np.abs(expected)) > 0.1  # a head that does something


def test_detection_and_old_position_embeddings():
    source = random_model("token")
    jax_params = vit_npz_params(source)
    unscanned = big_vision_params(jax_params, scanned=False)
    assert detect_vit_layout(unscanned) == "big_vision"
    assert detect_vit_layout(big_vision_params(jax_params, scanned=True)) == "big_vision"
    assert detect_vit_layout(jax_params) == "jax_vit"
    # Before 2022 big_vision kept `Transformer/pos_embedding`, class row included.
    old = dict(unscanned)
    del old["pos_embedding"]
    old["cls"] = jax_params["cls"]
    old["Transformer/pos_embedding"] = jax_params[POS]
    model = vit_b16(**TINY)
    report = load_vit_weights(model, old)
    assert report["format"] == "big_vision"
    np.testing.assert_array_equal(to_numpy(model.get_layer("posembed_input").pos_embedding),
                                  jax_params[POS])


def test_map_head_is_refused_and_nothing_changes():
    source = random_model("gap")
    params = big_vision_params(vit_npz_params(source), scanned=True, prefix="params/")
    params["params/MAPHead_0/probe"] = np.zeros((1, 1, 32), "float32")
    params["params/MAPHead_0/MlpBlock_0/Dense_0/kernel"] = np.zeros((32, 64), "float32")
    del params["params/Transformer/encoder_norm/scale"]
    model = vit_b16(**TINY, pooling="gap")
    before = [to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError) as err:
        load_vit_weights(model, params)
    message = str(err.value)
    assert "big_vision layout" in message
    assert "MAPHead_0 (a multi-head attention-pooling head" in message
    assert "missing: Transformer/encoder_norm/scale" in message  # one error lists all
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)


def test_scanned_misfit_names_the_stacked_array():
    source = random_model("gap")
    params = big_vision_params(vit_npz_params(source), scanned=True)
    model = vit_b16(**dict(TINY, mlp_dim=32), pooling="gap")
    with pytest.raises(ValueError) as err:
        load_vit_weights(model, params)
    assert ("Transformer/encoderblock_2/MlpBlock_3/Dense_0/kernel "
            "(Transformer/encoderblock/MlpBlock_0/Dense_0/kernel[2]): got (32, 64), "
            "expected (32, 32)") in str(err.value)
