"""One shared TestCase for tl_keras layers (in the spirit of keras-hub's `run_layer_test`)."""

import inspect
import os
import tempfile

import keras
import numpy as np
from keras import ops

BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}


def backend():
    return keras.backend.backend()


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class TestCase:
    """Mixin for pytest test classes: `run_layer_test` checks the layer contract."""

    def assertAllClose(self, actual, expected, atol=1e-6, rtol=1e-6, msg=None):
        np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), atol=atol, rtol=rtol,
                                   err_msg=msg or "")

    def run_layer_test(
        self,
        cls,
        init_kwargs,
        input_data,
        expected_output_shape,
        run_training_check=True,
        run_mixed_precision_check=True,
        run_saving_check=True,
        fit_steps=3,
    ):
        """Checks a layer end to end.

        * config round trip: `get_config()` holds exactly the constructor arguments
          (plus the base `name`/`trainable`/`dtype`) with the values given;
        * symbolic call with a `None` batch gives `expected_output_shape` (batch None)
          and agrees with `compute_output_shape`;
        * eager call gives `expected_output_shape`;
        * `.keras` save/load (no custom objects) gives identical outputs;
        * mixed precision: outputs in the compute dtype, variables in float32;
        * `fit_steps` optimizer steps change every trainable weight.
        """
        inputs = _as_tuple(input_data)

        # Config round trip.
        layer = cls(**init_kwargs)
        config = layer.get_config()
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert set(config) - BASE_CONFIG_KEYS == params, (
            f"get_config() keys {sorted(set(config) - BASE_CONFIG_KEYS)} != "
            f"constructor arguments {sorted(params)}"
        )
        for key, value in init_kwargs.items():
            got = config[key]
            if isinstance(value, (list, tuple)):
                got, value = tuple(got), tuple(value)
            assert got == value, f"get_config()[{key!r}] = {got!r}, expected {value!r}"
        revived = cls.from_config(config)
        assert revived.get_config() == config

        # Symbolic call with unknown batch size.
        sym_inputs = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
        sym_out = cls(**init_kwargs)(*sym_inputs)
        assert tuple(sym_out.shape) == (None,) + tuple(expected_output_shape[1:]), sym_out.shape
        shapes = [tuple(x.shape) for x in sym_inputs]
        fresh = cls(**init_kwargs)
        assert tuple(fresh.compute_output_shape(*shapes)) == tuple(sym_out.shape)

        # Eager call.
        layer = cls(**init_kwargs)
        out = layer(*inputs)
        assert tuple(out.shape) == tuple(expected_output_shape)
        assert np.all(np.isfinite(to_numpy(out)))

        if run_saving_check:
            self._check_saving(cls, init_kwargs, inputs)
        if run_mixed_precision_check:
            for policy in ("mixed_bfloat16", "mixed_float16"):
                self._check_mixed_precision(cls, init_kwargs, inputs, policy)
        if run_training_check:
            self._check_training(cls, init_kwargs, inputs, fit_steps)

    def _functional(self, cls, init_kwargs, inputs):
        sym = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
        out = cls(**init_kwargs)(*sym)
        return keras.Model(sym, out)

    def _check_saving(self, cls, init_kwargs, inputs):
        model = self._functional(cls, init_kwargs, inputs)
        # Perturb every weight so that a load that silently re-initialises would differ.
        rng = np.random.default_rng(1)
        for w in model.weights:
            w.assign(to_numpy(w) + rng.normal(0, 0.1, w.shape).astype(w.dtype))
        expected = to_numpy(model(list(inputs)))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(to_numpy(loaded(list(inputs))), expected)

    def _check_mixed_precision(self, cls, init_kwargs, inputs, policy):
        layer = cls(**init_kwargs, dtype=policy)
        out = layer(*inputs)
        compute = policy.split("_", 1)[1]
        assert keras.backend.standardize_dtype(out.dtype) == compute, (policy, out.dtype)
        for w in layer.weights:
            assert keras.backend.standardize_dtype(w.dtype) == "float32", (w.path, w.dtype)
        assert np.all(np.isfinite(to_numpy(ops.cast(out, "float32"))))

    def _check_training(self, cls, init_kwargs, inputs, fit_steps):
        model = self._functional(cls, init_kwargs, inputs)
        before = [to_numpy(w).copy() for w in model.trainable_weights]
        assert before, "layer has no trainable weights"
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        out = to_numpy(model(list(inputs)))
        target = np.random.default_rng(2).normal(size=out.shape).astype("float32")
        x = list(inputs) if len(inputs) > 1 else inputs[0]
        model.fit(x, target, batch_size=len(target), epochs=fit_steps, verbose=0)
        unchanged = [
            w.path
            for w, b in zip(model.trainable_weights, before)
            if np.array_equal(to_numpy(w), b)
        ]
        assert not unchanged, f"weights not updated by training: {unchanged}"
