"""`tl_keras.models.vivit.inflate`: a ViViT initialised from a 2-D ViT (paper §5.1)."""

import functools

import keras
import numpy as np
import pytest

from test_case import to_numpy
from tl_keras import TL
from tl_keras.layers import TokenFuser
from tl_keras.models import ViViT, vit_b16, vivit_from_vit
from tl_keras.models.vivit import inflate_kernel, transfer_vit_to_vivit

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
            mlp_dim=64, num_classes=5)
RNG = np.random.default_rng(11)


def randomize(model, scale=0.2):
    for w in model.weights:
        if w.trainable:
            w.assign(to_numpy(w) + RNG.normal(0, scale, w.shape).astype("float32"))


def images(batch=2, size=32):
    return RNG.uniform(-1, 1, (batch, size, size, 3)).astype("float32")


@functools.lru_cache(maxsize=None)
def gap_vit(tl):
    """A randomised `vit_b16(**TINY, pooling="gap", tokenlearner=tl)`, built once per `tl`
    (the tests only read it)."""
    vit = vit_b16(**TINY, pooling="gap", tokenlearner=tl)
    randomize(vit)
    return vit


@pytest.mark.parametrize("kernel_init", ["central_frame", "average"])
@pytest.mark.parametrize(
    "tl, mix_over_time",
    [(None, True), (TL(3, at=2), True), (TL(3, at=1, fuser=True), True),
     (TL(3, at=1, fuser=True), False)],
)
def test_identical_frames_give_the_image_output(tl, mix_over_time, kernel_init):
    """With gap pooling every token appears once per frame, attention over the duplicates
    equals attention over one copy, so a clip of identical frames gives the ViT output."""
    vit = gap_vit(tl)
    vivit = vivit_from_vit(vit, num_frames=4, tubelet_size=2, kernel_init=kernel_init,
                           fuser_mix_tokens_over_time=mix_over_time)
    assert isinstance(vivit, ViViT)
    x = images()
    clip = np.repeat(x[:, None], 4, axis=1)
    np.testing.assert_allclose(to_numpy(vivit(clip)), to_numpy(vit(x)), atol=2e-5, rtol=1e-4)


def test_kernel_inflation_and_position_embedding():
    vit = vit_b16(**TINY)
    randomize(vit)
    vivit = vivit_from_vit(vit, num_frames=6, tubelet_size=3)
    kernel2d = to_numpy(vit.get_layer("embedding").conv.kernel)
    kernel3d = to_numpy(vivit.get_layer("embedding").conv.kernel)
    assert kernel3d.shape == (3,) + kernel2d.shape
    np.testing.assert_array_equal(kernel3d[1], kernel2d)
    assert not np.any(kernel3d[[0, 2]])
    avg = to_numpy(vivit_from_vit(vit, num_frames=6, tubelet_size=3, kernel_init="average")
                   .get_layer("embedding").conv.kernel)
    np.testing.assert_allclose(avg.sum(0), kernel2d, rtol=1e-5, atol=1e-6)
    pos2d = to_numpy(vit.get_layer("posembed_input").pos_embedding)  # [1, 1 + 16, C]
    pos3d = to_numpy(vivit.get_layer("posembed_input").pos_embedding)  # [1, 1 + 2*16, C]
    np.testing.assert_array_equal(pos3d[:, 0], pos2d[:, 0])
    np.testing.assert_array_equal(pos3d[:, 1:17], pos2d[:, 1:])
    np.testing.assert_array_equal(pos3d[:, 17:], pos2d[:, 1:])
    for i in range(4):
        a, b = vit.get_layer(f"encoderblock_{i}"), vivit.get_layer(f"encoderblock_{i}")
        for wa, wb in zip(a.weights, b.weights):
            np.testing.assert_array_equal(to_numpy(wa), to_numpy(wb))


def test_new_grid_and_head():
    vit = vit_b16(**TINY, tokenlearner=TL(2, at=2, fuser=True))
    randomize(vit)
    vivit = vivit_from_vit(vit, num_frames=2, image_size=48, num_classes=7)
    assert vivit.get_layer("posembed_input").pos_embedding.shape == (1, 36, 32)
    assert not np.any(to_numpy(vivit.get_layer("head").kernel))  # fresh (class count differs)
    (fuser,) = [l for l in vivit.layers if isinstance(l, TokenFuser)][:1]
    image_kernel = to_numpy(vit.get_layer(fuser.name).token_mixing.kernel)
    video_kernel = to_numpy(fuser.token_mixing.kernel)
    np.testing.assert_array_equal(video_kernel, np.kron(np.eye(1), image_kernel))
    out = vivit(RNG.normal(size=(1, 2, 48, 48, 3)).astype("float32"))
    assert out.shape == (1, 7)


def test_errors():
    with pytest.raises(ValueError, match="ViT"):
        vivit_from_vit(keras.Sequential([keras.layers.Dense(2)]))
    vit = vit_b16(**TINY)
    with pytest.raises(ValueError, match="kernel_init"):
        vivit_from_vit(vit, kernel_init="zeros")
    with pytest.raises(ValueError, match="num_frames"):
        vivit_from_vit(vit, num_frames=3, tubelet_size=2)


def test_inflate_kernel():
    kernel = RNG.normal(size=(2, 2, 3, 4)).astype("float32")
    central = inflate_kernel(kernel, 3, "central_frame")
    assert central.shape == (3, 2, 2, 3, 4) and not np.any(central[[0, 2]])
    np.testing.assert_array_equal(central[1], kernel)
    np.testing.assert_allclose(inflate_kernel(kernel, 2, "average"), np.stack([kernel / 2] * 2))
    with pytest.raises(ValueError, match="kernel_init"):
        inflate_kernel(kernel, 2, "zeros")


def test_transfer_report():
    vit = vit_b16(**TINY, tokenlearner=TL(2, at=2, fuser=True), representation_size=8)
    vivit = ViViT(**dict(TINY, num_classes=7), num_frames=2, tokenlearner=TL(2, at=2, fuser=True))
    report = transfer_vit_to_vivit(vit, vivit)
    assert set(report["initialised"]) == {w.path for w in vivit.get_layer("head").weights}
    assert vivit.get_layer("embedding").conv.kernel.path in report["copied"]
    copied = len(report["copied"]) + len(report["initialised"])
    assert copied == len(vivit.trainable_weights)


def test_transfer_misfit_lists_every_layer_and_changes_nothing():
    vit = vit_b16(**dict(TINY, num_layers=5))  # one block more, class token
    vivit = ViViT(**dict(TINY, hidden_dim=16), num_frames=2)
    before = [to_numpy(w).copy() for w in vivit.weights]
    with pytest.raises(ValueError) as err:
        transfer_vit_to_vivit(vit, vivit)
    message = str(err.value)
    assert "encoderblock_0:" in message and "ViT (32,), ViViT (16,)" in message
    assert "ViT layers the ViViT does not have: encoderblock_4" in message
    for w, b in zip(vivit.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
    gap = vit_b16(**TINY, pooling="gap")
    with pytest.raises(ValueError, match="class-token row"):
        transfer_vit_to_vivit(gap, ViViT(**TINY, num_frames=2, pooling="token"))
