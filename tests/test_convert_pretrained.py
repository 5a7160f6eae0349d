"""`tl_keras.convert.load_pretrained` (behind `weights=` and `model.init_checkpoint`) for
tl_keras sources: a ViT `.keras` file / model into a ViViT, `extra_layers`, `.weights.h5`
of the same architecture, X(2+1)D, and the errors naming the file and every misfit."""

import numpy as np
import pytest

from test_case import to_numpy
from tl_keras import TL, models
from tl_keras.convert import (
    load_pretrained,
    model_variable_map,
    save_vit_npz,
    transfer_vit_to_vivit,
)

SIZE = dict(image_size=16, patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
            num_classes=3)
RNG = np.random.default_rng(5)


def randomize(model):
    for w in model.weights:
        w.assign(RNG.normal(0, 0.2, w.shape).astype("float32"))
    return model


def _module(name):
    parts = name.split("/")
    return parts[1] if parts[0] == "Transformer" else parts[0]


def weights_of(model):
    return {w.path: to_numpy(w) for w in model.weights}


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    """A tiny ViT with TokenLearner + TokenFuser, random weights, and its `.keras` file."""
    model = randomize(models.ViT(**SIZE, tokenlearner=TL(2, at=1, fuser=True)))
    path = str(tmp_path_factory.mktemp("image") / "vit.keras")
    model.save(path)
    return model, path


def test_image_keras_file_into_a_vivit_is_the_family_transfer(image_model):
    """A `.keras` ViT into a ViViT whose fuser mixes over time: the weights
    `transfer_vit_to_vivit` gives (kernel inflated, position embedding tiled, fuser
    mixing block-diagonal), and on a clip of one repeated frame the image logits."""
    vit, path = image_model
    kwargs = dict(SIZE, num_frames=4, tokenlearner=TL(2, at=1, fuser=True))
    vivit = models.vivit_b16(**kwargs, weights=path)
    report = vivit.weights_report
    assert report["format"] == "keras" and report["source"] == path
    assert report["initialised"] == [] and report["skipped"] == {}
    assert {"embedding/kernel", "Transformer/posembed_input/pos_embedding",
            "Transformer/TokenFuser_0/Dense_0/kernel"} <= set(report["adapted"])
    reference = models.ViViT(**kwargs)
    transfer_vit_to_vivit(vit, reference)
    want = weights_of(reference)
    for p, v in weights_of(vivit).items():
        np.testing.assert_array_equal(v, want[p], err_msg=p)
    x = RNG.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    clip = np.repeat(x[:, None], 4, axis=1)  # [B, T, H, W, 3]
    np.testing.assert_allclose(to_numpy(vivit(clip)), to_numpy(vit(x)), rtol=1e-4, atol=1e-5)


def test_extra_layers_and_a_new_head_start_as_initialised(image_model):
    vit, _ = image_model
    fresh = models.ViT(**dict(SIZE, num_classes=7), tokenlearner=TL(2, at=1, fuser=True),
                       extra_layers=1)
    before = weights_of(fresh)
    report = load_pretrained(fresh, vit)
    assert report["format"] == "tl_keras"
    # Exactly the weights the source has no module for (the extra block, and with it the
    # TokenLearner / TokenFuser after it), and the 7-class head.
    theirs = {_module(n) for n in model_variable_map(vit)}
    absent = sorted(n for n in model_variable_map(fresh) if _module(n) not in theirs)
    assert "Transformer/encoderblock_2/LayerNorm_0/scale" in absent
    assert report["initialised"] == sorted(absent + ["head/bias", "head/kernel"])
    after = weights_of(fresh)
    np.testing.assert_array_equal(after["head/kernel"], before["head/kernel"])
    np.testing.assert_array_equal(after["encoderblock_0/attention/query_kernel"],
                                  weights_of(vit)["encoderblock_0/attention/query_kernel"])


def test_weights_h5_of_the_same_architecture_only(image_model, tmp_path):
    vit, _ = image_model
    path = str(tmp_path / "vit.weights.h5")
    vit.save_weights(path)
    same = models.ViT(**SIZE, tokenlearner=TL(2, at=1, fuser=True), weights=path)
    assert same.weights_report["format"] == "keras_weights"
    for p, v in weights_of(same).items():
        np.testing.assert_array_equal(v, weights_of(vit)[p])
    other = models.ViViT(**SIZE, num_frames=4, tokenlearner=TL(2, at=1, fuser=True))
    before = weights_of(other)
    with pytest.raises(ValueError) as err:
        load_pretrained(other, path)
    message = str(err.value)
    assert path in message and "does not fit" in message and ".keras" in message
    for p, v in weights_of(other).items():
        np.testing.assert_array_equal(v, before[p])


def test_misfits_are_named_with_the_file(image_model, tmp_path):
    vit, path = image_model
    with pytest.raises(ValueError, match=r"is a ViViT; a ViT starts from an image model"):
        load_pretrained(models.ViT(**SIZE), randomize(models.ViViT(**SIZE, num_frames=2)))
    wider = models.ViT(**dict(SIZE, hidden_dim=32), tokenlearner=TL(2, at=1, fuser=True))
    with pytest.raises(ValueError) as err:
        load_pretrained(wider, path)
    message = str(err.value)
    assert path in message and "width, depth" in message
    assert "embedding/kernel: got (8, 8, 3, 16), expected (8, 8, 3, 32)" in message
    npz = save_vit_npz(vit, str(tmp_path / "vit.npz"))
    x3d = models.x2plus1d_tiny(num_classes=3)
    with pytest.raises(ValueError, match=r"is a ViT checkpoint; a X2Plus1D starts from"):
        load_pretrained(x3d, npz)
    with pytest.raises(ValueError, match=r"a X2Plus1D starts from the same architecture"):
        load_pretrained(x3d, vit)


def test_x2plus1d_from_its_own_keras_and_weights_files(tmp_path):
    source = randomize(models.x2plus1d_tiny(num_classes=3))
    keras_path, h5_path = str(tmp_path / "x.keras"), str(tmp_path / "x.weights.h5")
    source.save(keras_path)
    source.save_weights(h5_path)
    for path, kind in ((keras_path, "tl_keras"), (h5_path, "keras_weights")):
        model = models.x2plus1d_tiny(num_classes=3, weights=path)
        assert model.weights_report["format"] in (kind, "keras")
        for p, v in weights_of(model).items():
            np.testing.assert_array_equal(v, weights_of(source)[p], err_msg=p)
    other = models.x2plus1d_tiny(num_classes=5)
    with pytest.raises(ValueError) as err:
        load_pretrained(other, keras_path)
    assert keras_path in str(err.value) and "head" in str(err.value)


@pytest.mark.tf_only
def test_a_remote_path_is_read_through_tf_io_gfile(image_model, tmp_path):
    """`gs://...` (here TensorFlow's in-memory `ram://` file system) is copied locally
    first; the report names the remote path."""
    import tensorflow as tf

    vit, _ = image_model
    local = save_vit_npz(vit, str(tmp_path / "vit.npz"))
    remote = "ram://weights_test/vit.npz"
    tf.io.gfile.makedirs("ram://weights_test")
    tf.io.gfile.copy(local, remote, overwrite=True)
    model = models.ViT(**SIZE, tokenlearner=TL(2, at=1, fuser=True), weights=remote)
    assert model.weights_report["source"] == remote
    for p, v in weights_of(model).items():
        np.testing.assert_array_equal(v, weights_of(vit)[p])
    with pytest.raises(FileNotFoundError, match="ram://weights_test/none.npz"):
        models.ViT(**SIZE, weights="ram://weights_test/none.npz")
