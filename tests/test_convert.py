"""`tl_keras.convert`: reference (Scenic/Flax) names of single layers (`load_flax_params`:
names, errors, nothing assigned on failure) and of whole models (JAX ViT `.npz`
checkpoints, Scenic parameter trees)."""

import os
import tempfile

import numpy as np
import pytest

import numpy_reference as ref
from test_case import to_numpy
from tl_keras import TL
from tl_keras.convert import (
    export_flax_params,
    flatten_params,
    load_flax_params,
    load_vit_npz,
    load_vit_weights,
    model_variable_map,
    save_vit_npz,
    transfer_vit_to_vivit,
    vit_npz_params,
)
from tl_keras.layers import TokenFuser, TokenLearner, TokenLearnerV1, VectorAttention
from tl_keras.layers.embeddings import resize_position_embedding
from tl_keras.models import vit_b16, vivit_b16
from tl_keras.models.vivit import transfer_vit_to_vivit as family_transfer

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
            mlp_dim=64, num_classes=5)
RNG = np.random.default_rng(17)
LAYER_RNG = np.random.default_rng(3)


# ---------------------------------------------------------------------------------------
# Single layers.


def built_v11():
    layer = TokenLearner(4, bottleneck_dim=6)
    layer(np.zeros((1, 9, 8), "float32"))
    return layer


def test_reference_names_cover_every_weight():
    cases = [
        (built_v11(), ref.random_v11_params(LAYER_RNG, 8, 4, 6)),
        (TokenLearnerV1(3), ref.random_v1_params(LAYER_RNG, 8, 3)),
        (TokenFuser(bottleneck_dim=5), ref.random_fuser_params(LAYER_RNG, 8, 3, 3, 5)),
        (VectorAttention(key_dim=4), ref.random_vector_attention_params(LAYER_RNG, 8, 4, gamma=True)),
    ]
    for layer, params in cases:
        if not layer.built:
            if isinstance(layer, TokenFuser):
                layer(np.zeros((1, 3, 8), "float32"), np.zeros((1, 9, 8), "float32"))
            elif isinstance(layer, TokenLearnerV1):
                layer(np.zeros((1, 3, 3, 8), "float32"))
            else:
                layer(np.zeros((1, 9, 8), "float32"))
        load_flax_params(layer, params)
        flat = flatten_params(params)
        assert len(flat) == len(layer.weights), type(layer).__name__
        loaded = sorted(float(np.sum(to_numpy(w))) for w in layer.weights)
        expected = sorted(float(np.sum(v)) for v in flat.values())
        np.testing.assert_allclose(loaded, expected, rtol=1e-5, atol=1e-5)


def test_flat_keys_accepted():
    layer = built_v11()
    params = ref.random_v11_params(LAYER_RNG, 8, 4, 6)
    load_flax_params(layer, flatten_params(params))
    np.testing.assert_allclose(to_numpy(layer.layer_norm.gamma), params["LayerNorm_0"]["scale"], rtol=1e-6)


def test_errors_name_every_misfit_and_assign_nothing():
    layer = built_v11()
    before = [to_numpy(w).copy() for w in layer.weights]
    params = ref.random_v11_params(LAYER_RNG, 8, 4, 6)
    del params["token_masking"]["Dense_1"]["bias"]
    params["LayerNorm_0"]["scale"] = np.ones(7)
    params["extra"] = {"kernel": np.ones(3)}
    with pytest.raises(ValueError) as err:
        load_flax_params(layer, params)
    msg = str(err.value)
    assert "missing: token_masking/Dense_1/bias" in msg
    assert "LayerNorm_0/scale: got (7,), expected (8,)" in msg
    assert "unexpected: extra/kernel" in msg
    for w, b in zip(layer.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
    # Non-strict loading ignores the extra entry but still needs everything else.
    params = ref.random_v11_params(LAYER_RNG, 8, 4, 6)
    params["extra"] = {"kernel": np.ones(3)}
    load_flax_params(layer, params, strict=False)


def test_unbuilt_layer():
    with pytest.raises(ValueError, match="not built"):
        load_flax_params(TokenLearner(2), {})


def test_transfer_is_the_vivit_family_s():
    """`tl_keras.convert` re-exports the ViViT family's ViT -> ViViT transfer."""
    assert transfer_vit_to_vivit is family_transfer


# ---------------------------------------------------------------------------------------
# Whole models.


def randomize(model, scale=0.2):
    for w in model.weights:
        if w.trainable:
            w.assign(to_numpy(w) + RNG.normal(0, scale, w.shape).astype("float32"))


def images(batch=2, size=32):
    return RNG.uniform(-1, 1, (batch, size, size, 3)).astype("float32")


def snapshot(model):
    return [to_numpy(w).copy() for w in model.weights]


# The names of the public JAX ViT checkpoints (e.g. `imagenet21k_ViT-B_16.npz`).
JAX_VIT_NAMES = {
    "cls", "embedding/bias", "embedding/kernel", "head/bias", "head/kernel",
    "pre_logits/bias", "pre_logits/kernel", "Transformer/posembed_input/pos_embedding",
    "Transformer/encoder_norm/bias", "Transformer/encoder_norm/scale",
} | {
    f"Transformer/encoderblock_0/{name}"
    for name in [
        "LayerNorm_0/bias", "LayerNorm_0/scale", "LayerNorm_2/bias", "LayerNorm_2/scale",
        "MlpBlock_3/Dense_0/bias", "MlpBlock_3/Dense_0/kernel",
        "MlpBlock_3/Dense_1/bias", "MlpBlock_3/Dense_1/kernel",
    ] + [f"MultiHeadDotProductAttention_1/{p}/{v}"
         for p in ("query", "key", "value", "out") for v in ("kernel", "bias")]
}


class TestVitNpz:
    def test_names_and_shapes_are_those_of_the_jax_release(self):
        model = vit_b16(**dict(TINY, num_layers=1), representation_size=16)
        names = model_variable_map(model)
        assert set(names) == JAX_VIT_NAMES
        attention = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1"
        assert tuple(names[f"{attention}/query/kernel"].shape) == (32, 2, 16)
        assert tuple(names[f"{attention}/query/bias"].shape) == (2, 16)
        assert tuple(names[f"{attention}/out/kernel"].shape) == (2, 16, 32)
        assert tuple(names["embedding/kernel"].shape) == (8, 8, 3, 32)
        assert tuple(names["cls"].shape) == (1, 1, 32)
        assert len(names) == len(model.trainable_weights)

    @pytest.mark.parametrize("tl", [None, TL(3, at=1, fuser=True)])
    def test_round_trip_through_a_file(self, tl):
        source = vit_b16(**TINY, tokenlearner=tl, representation_size=16)
        randomize(source)
        target = vit_b16(**TINY, tokenlearner=tl, representation_size=16)
        x = images()
        with tempfile.TemporaryDirectory() as tmp:
            path = save_vit_npz(source, os.path.join(tmp, "vit.npz"))
            report = load_vit_npz(target, path)
        assert report["skipped"] == {} and report["initialised"] == []
        np.testing.assert_array_equal(to_numpy(target(x)), to_numpy(source(x)))

    def test_tokenlearner_not_in_checkpoint_stays_initialised(self):
        source = vit_b16(**TINY, pooling="gap")
        randomize(source)
        target = vit_b16(**TINY, tokenlearner=TL(3, at=1, fuser=True))
        fresh = {w.path: to_numpy(w).copy() for w in target.weights}
        report = load_vit_npz(target, vit_npz_params(source))
        assert any("TokenLearnerModuleV11_0" in n for n in report["initialised"])
        assert any("TokenFuser_0" in n for n in report["initialised"])
        for layer in target.layers:
            if layer.name.startswith(("tokenlearner", "tokenfuser")):
                for w in layer.weights:
                    np.testing.assert_array_equal(to_numpy(w), fresh[w.path])
        np.testing.assert_array_equal(
            to_numpy(target.get_layer("encoderblock_1").attention.query_kernel),
            to_numpy(source.get_layer("encoderblock_1").attention.query_kernel))

    def test_resize_drop_class_token_skip_head(self):
        source = vit_b16(**TINY, representation_size=16)  # class token, 5 classes
        randomize(source)
        target = vit_b16(**dict(TINY, image_size=48, num_classes=7), pooling="gap")
        report = load_vit_npz(target, vit_npz_params(source))
        assert set(report["skipped"]) == {"cls", "head/kernel", "head/bias",
                                          "pre_logits/kernel", "pre_logits/bias"}
        assert set(report["initialised"]) == {"head/kernel", "head/bias"}
        posemb = to_numpy(source.get_layer("posembed_input").pos_embedding)
        expected = resize_position_embedding(posemb[:, 1:], (6, 6))
        np.testing.assert_allclose(
            to_numpy(target.get_layer("posembed_input").pos_embedding), expected, atol=1e-6)
        assert not np.any(to_numpy(target.get_layer("head").kernel))
        # The head is loaded when it fits.
        same = vit_b16(**dict(TINY, image_size=48), representation_size=16)
        load_vit_npz(same, vit_npz_params(source))
        np.testing.assert_array_equal(to_numpy(same.get_layer("head").kernel),
                                      to_numpy(source.get_layer("head").kernel))

    def test_into_vivit_inflates_and_tiles(self):
        source = vit_b16(**TINY, pooling="gap")
        randomize(source)
        target = vivit_b16(**TINY, num_frames=4, pooling="gap")
        load_vit_npz(target, vit_npz_params(source))
        x = images()
        clip = np.repeat(x[:, None], 4, axis=1)
        np.testing.assert_allclose(to_numpy(target(clip)), to_numpy(source(x)), atol=2e-5)

    def test_misfit_lists_every_name_and_changes_nothing(self):
        source = vit_b16(**dict(TINY, num_layers=3))
        target = vit_b16(**dict(TINY, hidden_dim=16))
        before = snapshot(target)
        params = vit_npz_params(source)
        del params["Transformer/encoderblock_0/LayerNorm_0/scale"]
        with pytest.raises(ValueError) as err:
            load_vit_npz(target, params)
        message = str(err.value)
        assert "missing: Transformer/encoderblock_0/LayerNorm_0/scale" in message
        assert "wrong shape" in message and "embedding/kernel: got (8, 8, 3, 32)" in message
        assert "unexpected" in message and "Transformer/encoderblock_2/" in message
        for w, b in zip(target.weights, before):
            np.testing.assert_array_equal(to_numpy(w), b)

    def test_missing_class_token(self):
        source = vit_b16(**TINY, pooling="gap")
        target = vit_b16(**TINY)
        with pytest.raises(ValueError, match="missing: cls"):
            load_vit_npz(target, vit_npz_params(source))


class TestScenicTree:
    @pytest.mark.parametrize(
        "factory, kwargs, shape",
        [
            (vit_b16, dict(TINY, tokenlearner=TL(3, at=1)), (2, 32, 32, 3)),
            (vit_b16, dict(TINY, tokenlearner=TL(3, at=0, fuser=True, version="1"),
                           representation_size=8), (2, 32, 32, 3)),
            (vivit_b16, dict(TINY, num_frames=4, tokenlearner=TL(3, at=1, fuser=True),
                             fuser_mix_tokens_over_time=False), (2, 4, 32, 32, 3)),
        ],
    )
    def test_round_trip(self, factory, kwargs, shape):
        source = factory(**kwargs)
        randomize(source)
        tree = export_flax_params(source)
        target = factory(**kwargs)
        load_flax_params(target, tree)
        x = RNG.uniform(-1, 1, shape).astype("float32")
        np.testing.assert_array_equal(to_numpy(target(x)), to_numpy(source(x)))
        load_flax_params(target, flatten_params(tree))  # flat `/` names work too

    def test_reference_names(self):
        model = vit_b16(**TINY, tokenlearner=TL(3, at=1, fuser=True))
        flat = flatten_params(export_flax_params(model))
        transformer = {k.split("/")[1] for k in flat if k.startswith("Transformer/")}
        assert transformer == {"posembed_input", "encoderblock_0", "encoderblock_1",
                               "TokenLearnerModuleV11_0", "TokenFuser_0", "encoder_norm"}
        assert {k.split("/")[0] for k in flat} == {"embedding", "Transformer",
                                                   "output_projection"}
        block = {k.split("/", 2)[2] for k in flat if "encoderblock_0/" in k}
        assert "MultiHeadDotProductAttention_0/query/kernel" in block
        assert "LayerNorm_1/scale" in block and "MlpBlock_0/Dense_1/bias" in block

    def test_mismatch_lists_names(self):
        source = vivit_b16(**TINY, num_frames=4, tokenlearner=TL(3, at=1, fuser=True),
                           fuser_mix_tokens_over_time=False)
        target = vivit_b16(**TINY, num_frames=4, tokenlearner=TL(3, at=1, fuser=True))
        tree = flatten_params(export_flax_params(source))
        tree["Transformer/extra/kernel"] = np.zeros(3)
        before = snapshot(target)
        with pytest.raises(ValueError) as err:
            load_flax_params(target, tree)
        message = str(err.value)
        assert "Transformer/TokenFuser_0/Dense_0/kernel: got (3, 3), expected (6, 6)" in message
        assert "unexpected: Transformer/extra/kernel" in message
        for w, b in zip(target.weights, before):
            np.testing.assert_array_equal(to_numpy(w), b)


class TestOneEntryPoint:
    def test_layout_detected_and_reported(self):
        source = vit_b16(**TINY, tokenlearner=TL(3, at=1))
        randomize(source)
        x = images()
        for params, layout in ((vit_npz_params(source), "jax_vit"),
                               (export_flax_params(source), "scenic")):
            target = vit_b16(**TINY, tokenlearner=TL(3, at=1))
            report = load_vit_weights(target, params)
            assert report["format"] == layout and report["notes"] == []
            assert report["adapted"] == {} and report["initialised"] == []
            np.testing.assert_array_equal(to_numpy(target(x)), to_numpy(source(x)))

    def test_unreadable_sources_are_named(self):
        model = vit_b16(**TINY)
        with tempfile.TemporaryDirectory() as tmp:
            with pytest.raises(FileNotFoundError, match="no such file"):
                load_vit_weights(model, os.path.join(tmp, "missing.npz"))
            path = os.path.join(tmp, "vit.ckpt")
            open(path, "wb").close()
            with pytest.raises(ValueError, match=r"unknown checkpoint type '\.ckpt'"):
                load_vit_weights(model, path)
        with pytest.raises(ValueError, match="expected a tl_keras ViT or ViViT"):
            load_vit_weights(object(), {})
        with pytest.raises(ValueError, match="expected a path, a file object or a dict"):
            load_vit_weights(model, 3)

    def test_non_strict_reports_what_it_left(self):
        source = vit_b16(**TINY)
        params = vit_npz_params(source)
        params["Transformer/extra/kernel"] = np.zeros(3, "float32")
        report = load_vit_weights(vit_b16(**TINY), params, strict=False)
        assert report["skipped"] == {
            "Transformer/extra/kernel": "not used by the model (strict=False)"}
