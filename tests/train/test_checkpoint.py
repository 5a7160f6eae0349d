"""`tl_keras/train/checkpoint.py`: what a training checkpoint gives back to evaluation,
export and the tools (`restore_model` / `restore_latest_model`), for every variable of a
TokenLearner + TokenFuser model, whose MLPs TensorFlow's object graph does not reach."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras.models import TL, create_model
from tl_keras.train import checkpoint as ckpt_lib

pytestmark = pytest.mark.tf_only

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64)


def _model(seed, **kwargs):
    keras.utils.set_random_seed(seed)
    args = dict(TINY, num_classes=5, tokenlearner=TL(4, at=1, fuser=True), **kwargs)
    return create_model("vit_b16", **args)


def _save(model, workdir, step=7):
    """A training checkpoint of `model` at `step`, written as the trainer writes it."""
    rng = np.random.default_rng(step)
    for w in model.weights:  # every weight away from its initial value
        w.assign(rng.normal(size=w.shape).astype(w.dtype))
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    state = ckpt_lib.CheckpointState(str(workdir), model, optimizer, tf.Variable(step, dtype=tf.int64))
    assert state.restore() == step  # nothing there yet: the step stays
    return state.save()


def test_restore_gives_back_every_weight_of_a_tokenlearner_fuser_model(tmp_path):
    source = _model(0)
    path = _save(source, tmp_path)
    target = _model(1)  # other initial values
    names = [w.path for w in target.weights]
    assert any("tokenlearner" in n and "token_masking" in n for n in names)
    assert any("tokenfuser" in n and "token_masking" in n for n in names)
    assert ckpt_lib.restore_model(target, path) == 7
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=a.path)
    other = _model(2)
    got_path, step, skipped = ckpt_lib.restore_latest_model(other, str(tmp_path))
    assert (got_path, step, skipped) == (path, 7, [])
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(other(x)), np.asarray(source(x)))


def test_a_checkpoint_of_another_model_names_the_variable_that_does_not_fit(tmp_path):
    path = _save(_model(0), tmp_path)
    wider_mlp = _model(1, mlp_dim=48)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"model variable \d+ .*mlp_dense_0/kernel"):
        ckpt_lib.restore_model(wider_mlp, path)
    with pytest.raises(ckpt_lib.CheckpointError, match="reads but does not restore"):
        ckpt_lib.restore_latest_model(wider_mlp, str(tmp_path))
    deeper = _model(1, num_layers=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="holds .* model variables; this model has"):
        ckpt_lib.restore_model(deeper, path)
