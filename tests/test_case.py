"""One shared TestCase for tl_keras layers and models (in the spirit of keras-hub's
`run_layer_test` / `run_backbone_test`)."""

import inspect
import os
import tempfile

import keras
import numpy as np
from keras import ops

BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}
MODEL_CONFIG_KEYS = {"name", "trainable"}

#: Tolerance of `run_model_test`'s mixed-precision check per policy, relative to the
#: largest float32 output. bfloat16 keeps 8 bits of mantissa (4e-3 per rounding),
#: float16 11 bits (5e-4); through the tiny test models (logits partly cancel in the
#: head) the roundings add up to ~5e-2 (bfloat16) and ~1.2e-2 (float16) in the worst of
#: many seeds, while a wrong cast, an overflow or a skipped layer is off by the outputs'
#: whole scale.
MIXED_PRECISION_TOLERANCE = {"mixed_bfloat16": 0.1, "mixed_float16": 0.03}

#: Weights whose gradient is zero by construction (matched as substrings of the weight
#: path): the TokenFuser's token-mixing bias adds one value per token to all channels,
#: which the LayerNorm over channels after it removes (as in the reference).
GRADIENT_FREE = ("token_mixing/bias",)


def backend():
    return keras.backend.backend()


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def perturb_weights(model, scale=0.1, seed=0):
    """Adds N(0, scale) noise to every trainable weight, so that zero-initialised heads,
    fusers and batch-norm scales take part (and a re-initialising load would differ)."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(to_numpy(w) + rng.normal(0, scale, w.shape).astype(w.dtype))
    return model


def layers_of(model, cls):
    """The layers of a functional model that are instances of `cls`, in order."""
    return [layer for layer in model.layers if isinstance(layer, cls)]


def gradients(model, inputs, weights=None, training=True):
    """Gradients of `sum(model(inputs) * weights)` (fixed random `weights` by default)
    with respect to the trainable variables, as NumPy arrays, on any backend (TF:
    eagerly; JAX: one jitted `jax.grad`, much faster than op by op)."""
    inputs = _as_tuple(inputs)
    if weights is None:
        shape = tuple(model(*inputs).shape)
        weights = np.random.default_rng(3).normal(size=shape).astype("float32")
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = model(*inputs, training=training)
            loss = tf.reduce_sum(tf.cast(out, "float32") * weights)
        return [to_numpy(g) for g in tape.gradient(loss, model.trainable_variables)]
    if name == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(values):
            out, _ = model.stateless_call(values, non_trainable, *inputs, training=training)
            return (out.astype("float32") * weights).sum()

        return [np.asarray(g) for g in jax.jit(jax.grad(loss))(trainable)]
    raise NotImplementedError(f"gradients: backend {name!r}")


def predict(model, inputs):
    """`model(*inputs)` in inference mode as NumPy; under JAX one jitted call (a fresh
    model's first eager call compiles every op on its own)."""
    inputs = _as_tuple(inputs)
    if backend() != "jax":
        return to_numpy(model(*inputs))
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    call = jax.jit(lambda t, n, *xs: model.stateless_call(t, n, *xs, training=False)[0])
    return np.asarray(call(trainable, non_trainable, *inputs))


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
    ):
        """Checks a layer end to end.

        * config round trip: `get_config()` holds exactly the constructor arguments
          (plus the base `name`/`trainable`/`dtype`) with the values given;
        * symbolic call with a `None` batch gives `expected_output_shape` (batch None)
          and agrees with `compute_output_shape`;
        * eager call gives `expected_output_shape`;
        * `.keras` save/load (no custom objects) gives identical outputs;
        * mixed precision: outputs in the compute dtype, variables in float32;
        * every trainable weight gets a non-zero gradient (`_check_training`).
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
            self._check_training(cls, init_kwargs, inputs)

    @staticmethod
    def _feed(inputs):
        """What `_functional`'s model takes: the tensor, or the list of them."""
        return list(inputs) if len(inputs) > 1 else inputs[0]

    def _functional(self, cls, init_kwargs, inputs):
        sym = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in inputs]
        out = cls(**init_kwargs)(*sym)
        return keras.Model(sym if len(sym) > 1 else sym[0], out)

    def _check_saving(self, cls, init_kwargs, inputs):
        model = self._functional(cls, init_kwargs, inputs)
        # Perturb every weight so that a load that silently re-initialises would differ.
        rng = np.random.default_rng(1)
        for w in model.weights:
            w.assign(to_numpy(w) + rng.normal(0, 0.1, w.shape).astype(w.dtype))
        expected = to_numpy(model(self._feed(inputs)))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(to_numpy(loaded(self._feed(inputs))), expected)

    def _check_mixed_precision(self, cls, init_kwargs, inputs, policy):
        layer = cls(**init_kwargs, dtype=policy)
        out = layer(*inputs)
        compute = policy.split("_", 1)[1]
        assert keras.backend.standardize_dtype(out.dtype) == compute, (policy, out.dtype)
        for w in layer.weights:
            assert keras.backend.standardize_dtype(w.dtype) == "float32", (w.path, w.dtype)
        assert np.all(np.isfinite(to_numpy(ops.cast(out, "float32"))))

    def _check_training(self, cls, init_kwargs, inputs):
        """Every trainable weight gets a finite, non-zero gradient (off the initialisation,
        so that zero-initialised weights do not hide the ones before them); the weights
        of `GRADIENT_FREE` may get none. Checked with a direct gradient (`gradients`, in
        inference mode so that no random drop-path removes a branch) instead of `fit`,
        which spent ~0.5 s (TF) to 2 s (JAX) per layer compiling a train step; the models'
        `run_model_test` and the trainer tests cover compiled training."""
        model = perturb_weights(self._functional(cls, init_kwargs, inputs))
        assert model.trainable_weights, "layer has no trainable weights"
        # Inference mode: deterministic (a random drop-path could drop a whole branch).
        grads = gradients(model, (self._feed(inputs),), training=False)
        names = [w.path for w in model.trainable_weights]
        bad = [n for n, g in zip(names, grads) if not np.all(np.isfinite(g))]
        assert not bad, f"non-finite gradients: {bad}"
        zero = [n for n, g in zip(names, grads)
                if not np.any(g) and not any(f in n for f in GRADIENT_FREE)]
        assert not zero, f"weights without a gradient: {zero}"

    def run_model_test(
        self,
        cls,
        init_kwargs,
        input_data,
        expected_output_shape,
        model=None,
        run_saving_check=True,
        run_gradient_check=True,
        mixed_precision=("mixed_bfloat16",),
        float32_outputs=True,
        gradient_free=GRADIENT_FREE,
    ):
        """Checks a model family class end to end (the model counterpart of
        `run_layer_test`, used by every family's tests).

        * config: `get_config()` holds exactly the constructor arguments (plus `name`,
          `trainable`) with the values given;
        * the symbolic output has `expected_output_shape` with a `None` batch;
        * eager forward (weights perturbed first, see `perturb_weights`): the shape,
          finite values;
        * `.keras` save/load (no custom objects): same class and config, identical
          outputs;
        * mixed precision, per policy of `mixed_precision`: the same architecture built
          under the policy with the float32 weights copied in computes in the policy's
          dtype, keeps float32 variables and gives outputs within
          `MIXED_PRECISION_TOLERANCE[policy] * max|float32 outputs|` of the float32
          model's (and, with
          `float32_outputs`, in float32: the families' logits); the global policy is
          restored even on failure;
        * (last, as training mode updates batch-norm statistics) every trainable weight
          gets a finite, non-zero gradient of a scalar of the outputs, except those of
          `gradient_free`, whose gradient must be negligible.

        Args:
            cls: the model class (`ViT`, `ViViT`, `X2Plus1D`).
            init_kwargs: constructor arguments (a tiny configuration).
            input_data: one input batch (NumPy).
            expected_output_shape: the eager output shape.
            model: an already built `cls(**init_kwargs)` (e.g. a shared fixture) to
                check instead of building one; its weights get perturbed.
            run_saving_check, run_gradient_check: run those parts.
            mixed_precision: the policies to check (`"mixed_bfloat16"`,
                `"mixed_float16"`); empty to skip.
            float32_outputs: the outputs stay float32 under mixed precision.
            gradient_free: substrings of the paths of weights without a gradient by
                construction (default `GRADIENT_FREE`).

        Returns the (perturbed) float32 model.
        """
        inputs = _as_tuple(input_data)
        model = cls(**init_kwargs) if model is None else model
        assert isinstance(model, cls), type(model)

        # Config: exactly the constructor arguments.
        config = model.get_config()
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "name", "kwargs"}
        assert set(config) - MODEL_CONFIG_KEYS == params, (
            f"get_config() keys {sorted(set(config) - MODEL_CONFIG_KEYS)} != "
            f"constructor arguments {sorted(params)}"
        )
        for key, value in init_kwargs.items():
            if hasattr(value, "to_config"):
                value = value.to_config()
            got = config[key]
            if isinstance(value, (list, tuple)):
                got, value = tuple(got), tuple(value)
            assert got == value, f"get_config()[{key!r}] = {got!r}, expected {value!r}"

        # Symbolic and eager output.
        assert tuple(model.output.shape) == (None,) + tuple(expected_output_shape[1:]), (
            model.output.shape
        )
        perturb_weights(model)
        expected = to_numpy(model(*inputs))
        assert expected.shape == tuple(expected_output_shape), expected.shape
        assert np.all(np.isfinite(expected))

        if run_saving_check:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                model.save(path)
                loaded = keras.saving.load_model(path)
            assert type(loaded) is cls, type(loaded)
            assert loaded.get_config() == config
            np.testing.assert_array_equal(to_numpy(loaded(*inputs)), expected)

        for policy in mixed_precision:
            self._check_model_mixed_precision(
                cls, init_kwargs, model, inputs, expected, policy, float32_outputs
            )

        if run_gradient_check:
            weights = np.random.default_rng(3).normal(size=expected.shape).astype("float32")
            grads = gradients(model, inputs, weights)
            names = [w.path for w in model.trainable_variables]
            bad = [n for n, g in zip(names, grads) if not np.all(np.isfinite(g))]
            assert not bad, f"non-finite gradients: {bad}"
            free = [any(f in n for f in gradient_free) for n in names]
            zero = [n for n, g, f in zip(names, grads, free) if not f and not np.any(g)]
            assert not zero, f"weights without a gradient: {zero}"
            largest = max(float(np.abs(g).max()) for g in grads)
            leaking = [n for n, g, f in zip(names, grads, free)
                       if f and np.abs(g).max() > 1e-4 * largest]
            assert not leaking, f"gradients of gradient-free weights: {leaking}"
        return model

    def _check_model_mixed_precision(
        self, cls, init_kwargs, model, inputs, expected, policy, float32_outputs
    ):
        tolerance = MIXED_PRECISION_TOLERANCE[policy]
        previous = keras.config.dtype_policy()
        try:
            keras.config.set_dtype_policy(policy)
            mixed = cls(**init_kwargs)
        finally:
            keras.config.set_dtype_policy(previous)
        compute = policy.split("_", 1)[1]
        assert any(layer.compute_dtype == compute for layer in mixed.layers), policy
        for w in mixed.weights:
            assert keras.backend.standardize_dtype(w.dtype) == "float32", (w.path, w.dtype)
        mixed.set_weights(model.get_weights())
        out = predict(mixed, inputs)
        if float32_outputs:
            assert keras.backend.standardize_dtype(out.dtype) == "float32", (policy, out.dtype)
        out = out.astype("float32")
        scale = float(np.max(np.abs(expected)))
        error = float(np.max(np.abs(out - expected)))
        assert error <= tolerance * scale, (
            f"{policy}: max |output - float32 output| = {error:.3g} > {tolerance} x "
            f"{scale:.3g} (the largest float32 output)"
        )
