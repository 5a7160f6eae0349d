"""tl_keras.train.optim: schedules, learning-rate scaling, weight decay, clipping."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import configs
from tl_keras.train import optim


def test_warmup_cosine_values():
    s = optim.WarmupDecay(peak_lr=1.0, total_steps=110, warmup_steps=10, decay="cosine", end_lr=0.1)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(60)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)), rel=1e-6)
    assert float(s(110)) == pytest.approx(0.1)
    assert float(s(500)) == pytest.approx(0.1)


def test_warmup_linear_and_constant():
    s = optim.WarmupDecay(peak_lr=2.0, total_steps=100, warmup_steps=0, decay="linear")
    assert float(s(0)) == pytest.approx(2.0)
    assert float(s(25)) == pytest.approx(1.5)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
    c = optim.WarmupDecay(peak_lr=0.3, total_steps=100, warmup_steps=20, decay="constant")
    assert float(c(10)) == pytest.approx(0.15)
    assert float(c(90)) == pytest.approx(0.3)
    # warmup longer than the run is clipped to it (e.g. CI's short step counts)
    short = optim.WarmupDecay(peak_lr=1.0, total_steps=30, warmup_steps=1000)
    assert short.warmup_steps == 30
    assert optim.WarmupDecay.from_config(short.get_config()).get_config() == short.get_config()


def test_peak_learning_rate_per_core_scaling():
    # Charades: 0.8 per core batch of 4 -> 64 cores x 4 = 256.
    assert optim.peak_learning_rate(0.8, 256, 4) == pytest.approx(51.2)
    assert optim.peak_learning_rate(0.025, 512, 8) == pytest.approx(1.6)
    assert optim.peak_learning_rate(0.05, 64, None) == 0.05


def _tiny_vars():
    kernel = keras.Variable(np.ones((3, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones((2,), "float32"), name="bias")
    return [kernel, bias]


@pytest.mark.parametrize("name", ["momentum", "adamw"])
def test_weight_decay_only_on_matrices(name):
    variables = _tiny_vars()
    cfg = configs.OptimConfig(name=name, weight_decay=0.5)
    opt = optim.build_optimizer(cfg, 0.1, variables)
    zeros = [tf.zeros_like(v) for v in variables]
    opt.apply(zeros, variables)
    kernel, bias = (np.asarray(v) for v in variables)
    assert np.all(kernel < 1.0)  # decayed
    np.testing.assert_array_equal(bias, np.ones(2))  # not decayed


def test_build_optimizer_kinds_and_loss_scale():
    variables = _tiny_vars()
    sgd = optim.build_optimizer(configs.OptimConfig(name="sgd", momentum=0.9), 0.1, variables)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.0
    mom = optim.build_optimizer(configs.OptimConfig(name="momentum", nesterov=True), 0.1, _tiny_vars())
    assert mom.momentum == 0.9 and mom.nesterov
    scaled = optim.build_optimizer(configs.OptimConfig(name="adamw"), 0.1, _tiny_vars(), loss_scale=True)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(optim.inner_optimizer(scaled), keras.optimizers.AdamW)
    assert scaled.built


def test_clip_by_global_norm():
    grads = [tf.constant([3.0, 0.0]), tf.constant([[4.0]])]
    clipped, norm = optim.clip_by_global_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(clipped[0], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1], [[0.8]], rtol=1e-6)
    same, norm = optim.clip_by_global_norm(grads, None)
    assert same is grads and float(norm) == pytest.approx(5.0)
