"""`load_flax_params` on single layers: names, errors, nothing assigned on failure."""

import numpy as np
import pytest

import numpy_reference as ref
from test_case import to_numpy
from tl_keras.convert import flatten_params, load_flax_params
from tl_keras.layers import TokenFuser, TokenLearner, TokenLearnerV1, VectorAttention

RNG = np.random.default_rng(3)


def built_v11():
    layer = TokenLearner(4, bottleneck_dim=6)
    layer(np.zeros((1, 9, 8), "float32"))
    return layer


def test_reference_names_cover_every_weight():
    cases = [
        (built_v11(), ref.random_v11_params(RNG, 8, 4, 6)),
        (TokenLearnerV1(3), ref.random_v1_params(RNG, 8, 3)),
        (TokenFuser(bottleneck_dim=5), ref.random_fuser_params(RNG, 8, 3, 3, 5)),
        (VectorAttention(key_dim=4), ref.random_vector_attention_params(RNG, 8, 4, gamma=True)),
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
    params = ref.random_v11_params(RNG, 8, 4, 6)
    load_flax_params(layer, flatten_params(params))
    np.testing.assert_allclose(to_numpy(layer.layer_norm.gamma), params["LayerNorm_0"]["scale"], rtol=1e-6)


def test_errors_name_every_misfit_and_assign_nothing():
    layer = built_v11()
    before = [to_numpy(w).copy() for w in layer.weights]
    params = ref.random_v11_params(RNG, 8, 4, 6)
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
    params = ref.random_v11_params(RNG, 8, 4, 6)
    params["extra"] = {"kernel": np.ones(3)}
    load_flax_params(layer, params, strict=False)


def test_unbuilt_layer():
    with pytest.raises(ValueError, match="not built"):
        load_flax_params(TokenLearner(2), {})
