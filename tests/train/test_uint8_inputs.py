"""`data.output_dtype=uint8`: the datasets yield pixels, the loop normalises them on the
device (`Task.model_inputs`), so the model sees what the float32 pipeline gives it."""

import numpy as np
import pytest

from experiments import kinetics
from tl_keras import configs
from tl_keras.train import Task, tasks

pytestmark = pytest.mark.tf_only


def test_task_normalises_uint8_inputs_only():
    task = Task(model_fn=lambda: None, input_normalization="[-1,1]")
    pixels = np.array([[0, 255, 128]], np.uint8)
    np.testing.assert_allclose(np.asarray(task.model_inputs(pixels)),
                               [[-1.0, 1.0, 128 / 127.5 - 1]], atol=1e-6)
    floats = np.array([[0.25]], np.float32)
    assert task.model_inputs(floats) is floats  # already normalised
    assert Task(model_fn=lambda: None).model_inputs(pixels) is pixels


def test_device_normalisation_compiles_with_xla():
    """`train.jit_compile=true` (and every TPU step) compiles the normalisation of uint8
    batches: the same values as without XLA."""
    import tensorflow as tf

    task = Task(model_fn=lambda: None, input_normalization="imagenet")
    pixels = np.arange(2 * 4 * 4 * 3 * 4, dtype=np.int64).reshape(2, 4, 4, 4, 3) % 256
    pixels = pixels.astype(np.uint8)
    compiled = tf.function(task.model_inputs, jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(pixels)), np.asarray(task.model_inputs(pixels)),
                               atol=1e-6)


def _task(output_dtype):
    cfg = kinetics.get_config(runlocal=True)
    configs.apply_overrides(cfg, [f"data.output_dtype={output_dtype}"])
    tasks.resolve_data(cfg)
    return tasks.make_task(cfg)


def test_runlocal_task_with_uint8_feeds_the_model_the_float32_inputs():
    float_task, uint8_task = _task("float32"), _task("uint8")
    assert float_task.input_normalization is None
    assert uint8_task.input_normalization == "[-1,1]"
    import tensorflow as tf

    ctx = tf.distribute.InputContext()
    for name in ("train_dataset_fn", "eval_dataset_fn"):
        (xf, yf), (xu, yu) = (next(iter(getattr(t, name)(ctx, 4))) for t in (float_task, uint8_task))
        assert xf.dtype == tf.float32 and xu.dtype == tf.uint8, name
        np.testing.assert_allclose(np.asarray(uint8_task.model_inputs(xu)), np.asarray(xf),
                                   rtol=0, atol=0.5 / 127.5 + 1e-6, err_msg=name)
        np.testing.assert_array_equal(np.asarray(yu), np.asarray(yf))
