"""keras-hub ViTs into tl_keras (`load_vit_weights` with a `keras_hub.models.ViTBackbone`
or `ViTImageClassifier`): the same features and logits, to 1e-5."""

import numpy as np
import pytest

from test_case import to_numpy
from tl_keras.convert import load_vit_weights
from tl_keras.models import ViT

keras_hub = pytest.importorskip("keras_hub")

HUB = dict(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
           mlp_dim=64)
TINY = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
            mlp_dim=64)
RNG = np.random.default_rng(11)


def randomize(model):
    for w in model.weights:
        w.assign(RNG.normal(0, 0.3, w.shape).astype("float32") + (
            1.0 if w.path.endswith("gamma") else 0.0))


def images():
    return RNG.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("use_class_token", [True, False])
def test_backbone_features(use_class_token):
    backbone = keras_hub.models.ViTBackbone(**HUB, use_class_token=use_class_token)
    randomize(backbone)
    pooling = "token" if use_class_token else "gap"
    model = ViT(**TINY, include_top=False, pooling=pooling, gelu="exact")
    report = load_vit_weights(model, backbone)
    assert report["format"] == "keras_hub" and report["notes"] == []
    assert report["skipped"] == {} and report["initialised"] == []
    assert len(report["loaded"]) == len(model.trainable_weights)
    x = images()
    tokens = to_numpy(backbone(x))  # [B, (1+)N, C] after the final LayerNorm
    expected = tokens[:, 0] if use_class_token else tokens.mean(axis=1)
    features = to_numpy(model(x))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    # tl_keras' default (tanh) GELU is another function: measurably off, and noted.
    tanh = ViT(**TINY, include_top=False, pooling=pooling)
    assert any("exact (erf) GELU" in n for n in load_vit_weights(tanh, backbone)["notes"])
    assert np.max(np.abs(to_numpy(tanh(x)) - expected)) > 1e-5


def test_classifier_logits_and_a_misfit():
    backbone = keras_hub.models.ViTBackbone(**HUB)
    classifier = keras_hub.models.ViTImageClassifier(backbone, num_classes=7,
                                                     intermediate_dim=16)
    randomize(classifier)
    model = ViT(**TINY, num_classes=7, representation_size=16, gelu="exact")
    report = load_vit_weights(model, classifier)
    assert report["skipped"] == {} and report["initialised"] == []
    x = images()
    np.testing.assert_allclose(to_numpy(model(x)), to_numpy(classifier(x)), rtol=1e-5,
                               atol=1e-5)
    # Another width: one error naming the keras-hub variables, nothing assigned.
    other = ViT(**dict(TINY, mlp_dim=32), num_classes=7, representation_size=16)
    before = [to_numpy(w).copy() for w in other.weights]
    with pytest.raises(ValueError, match=r"keras_hub layout[\s\S]*Dense_0/kernel \(keras-hub "
                       r"[^)]*dense_1/kernel\): got \(32, 64\), expected \(32, 32\)"):
        load_vit_weights(other, classifier)
    for w, b in zip(other.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
