"""keras-hub ViTs into tl_keras (`load_vit_weights` with a `keras_hub.models.ViTBackbone`
or `ViTImageClassifier`, the object or saved): the same features and logits, to 1e-5."""

import numpy as np
import pytest

from test_case import to_numpy
from tl_keras.convert import load_pretrained, load_vit_weights
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


@pytest.mark.parametrize("saved_as", ["preset_directory", "preset_weights_file", "keras_file"])
def test_saved_backbone_features(saved_as, tmp_path):
    """A saved keras-hub ViTBackbone (`save_to_preset(dir)`: the directory, or its
    `model.weights.h5` beside the `config.json`; `save(".keras")`) loads through
    `load_vit_weights` and `weights=` with the model object's features, to 1e-5."""
    backbone = keras_hub.models.ViTBackbone(**HUB)
    randomize(backbone)
    if saved_as == "keras_file":
        path = str(tmp_path / "vit.keras")
        backbone.save(path)
    else:
        backbone.save_to_preset(str(tmp_path / "preset"))
        path = str(tmp_path / "preset")
        if saved_as == "preset_weights_file":
            path = str(tmp_path / "preset" / "model.weights.h5")
    x = images()
    expected = to_numpy(backbone(x))[:, 0]  # the class token after the final LayerNorm
    model = ViT(**TINY, include_top=False, pooling="token", gelu="exact")
    report = load_vit_weights(model, path)
    assert report["format"] == "keras_hub" and report["notes"] == []
    assert report["skipped"] == {} and report["initialised"] == []
    assert len(report["loaded"]) == len(model.trainable_weights)
    np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-5, atol=1e-5)
    built = ViT(**TINY, include_top=False, pooling="token", gelu="exact", weights=path)
    assert built.weights_report["format"] == "keras_hub"
    assert built.weights_report["source"] == path
    np.testing.assert_allclose(to_numpy(built(x)), expected, rtol=1e-5, atol=1e-5)


def test_saved_classifier_logits_and_errors_that_name_the_file(tmp_path):
    backbone = keras_hub.models.ViTBackbone(**HUB)
    classifier = keras_hub.models.ViTImageClassifier(backbone, num_classes=7)
    randomize(classifier)
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    model = ViT(**TINY, num_classes=7, gelu="exact", weights=path)
    x = images()
    np.testing.assert_allclose(to_numpy(model(x)), to_numpy(classifier(x)), rtol=1e-5,
                               atol=1e-5)
    # A preset directory without its weights file: the file and what is missing.
    backbone.save_to_preset(str(tmp_path / "preset"))
    (tmp_path / "preset" / "model.weights.h5").unlink()
    with pytest.raises(ValueError, match=r"preset'.* has no weights file 'model.weights.h5'"):
        load_vit_weights(ViT(**TINY, include_top=False), str(tmp_path / "preset"))
    # Another width: one error naming the file and the misfit, nothing assigned.
    classifier.backbone.save_to_preset(str(tmp_path / "other"))
    other = ViT(**dict(TINY, mlp_dim=32), include_top=False, pooling="token")
    before = [to_numpy(w).copy() for w in other.weights]
    with pytest.raises(ValueError, match=r"other'[\s\S]*Dense_0/kernel \(keras-hub "):
        load_pretrained(other, str(tmp_path / "other"))
    for w, b in zip(other.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
