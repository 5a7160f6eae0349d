"""X(2+1)D-M (`tl_keras.models.x2plus1d.model`): builds tiny, the model contract
(`run_model_test`), trains a step, registry, arguments."""

import keras
import numpy as np
import pytest

import tl_keras
from test_case import TestCase, to_numpy
from tl_keras.models import MODEL_SPECS, TL, create_model, list_models
from tl_keras.models.registry import resolve_model
from tl_keras.models.x2plus1d import MODULES, X2Plus1D, X2Plus1DUnit, x2plus1d_m

RNG = np.random.default_rng(3)

# X3D-M's structure at toy widths: 4 frames of 64x64 -> res5 is 2x2 per frame.
TINY = dict(
    num_frames=4,
    image_size=64,
    stem_width=4,
    widths=(4, 8, 8, 16),
    depths=(1, 1, 1, 2),
    expansion=2,
    head_width=16,
    fc_width=12,
    num_heads=2,
    tokenlearner=4,
)


def clip(batch=2, frames=4, size=64):
    return RNG.uniform(-1, 1, (batch, frames, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def tiny():
    """`x2plus1d_m(5, **TINY)`, built once for the tests of this module (some perturb or
    train it; none depends on its initial values)."""
    return x2plus1d_m(5, **TINY)


class TestBuild:
    def test_tiny_default_model(self, tiny):
        model = tiny
        assert model.name == "x2plus1d_m"
        assert tuple(model.input.shape) == (None, 4, 64, 64, 3)
        assert tuple(model.output.shape) == (None, 5)
        units = [layer for layer in model.layers if isinstance(layer, X2Plus1DUnit)]
        assert [u.name for u in units] == [
            "res2_unit0", "res3_unit0", "res4_unit0", "res5_unit0", "res5_unit1",
        ]
        # The module goes into the last stage only; the others are plain (2+1)D.
        assert [u.module for u in units] == ["conv2d_conv1d"] * 3 + ["conv2d_tokenlearner"] * 2
        assert [u.strides for u in units] == [2, 2, 2, 2, 1]
        assert units[-1].tokenizer == "1" and units[-1].num_tokens == 4
        assert tuple(model.get_layer("res5_unit1").output.shape) == (None, 4, 2, 2, 16)
        out = model(clip())
        assert tuple(out.shape) == (2, 5) and np.isfinite(to_numpy(out)).all()

    def test_full_size_arguments(self):
        """X3D-M widths, depths and inner widths, resolved without building; the
        constructor's defaults are the size table's."""
        r = resolve_model("x2plus1d_m")
        assert r == X2Plus1D.resolve(**X2Plus1D.defaults())
        spec = MODEL_SPECS["x2plus1d_m"]
        assert {k: X2Plus1D.defaults()[k] for k in spec if k != "family"} == {
            k: v for k, v in spec.items() if k != "family"}
        assert r.widths == (24, 48, 96, 192) and r.depths == (3, 5, 11, 7)
        assert r.inner_widths == (54, 108, 216, 432)
        assert r.grid(3) == (7, 7) and r.num_frames == 64
        assert [r.stage_module(i) for i in range(4)] == ["conv2d_conv1d"] * 3 + [
            "conv2d_tokenlearner"
        ]

    def test_runlocal_size(self):
        """`x2plus1d_tiny` (charades.py / avid.py --runlocal): the last of its two stages
        holds the TokenLearner module at 4x4 per frame of a 32 px, 8-frame clip."""
        r = resolve_model("x2plus1d_tiny", num_classes=12, tokenlearner=4)
        assert r.widths == (24, 48) and r.depths == (2, 2) and r.inner_widths == (48, 96)
        assert r.num_frames == 8 and r.image_size == (32, 32) and r.grid(1) == (4, 4)
        assert [r.stage_module(i) for i in range(2)] == ["conv2d_conv1d", "conv2d_tokenlearner"]
        assert r.num_tokens == 4

    @pytest.mark.slow
    def test_full_size_structure(self):
        """X3D-M widths and depths; res5 is 7x7 per frame at 224 px (built, not run)."""
        model = X2Plus1D(num_frames=8, image_size=224, tokenlearner=8)
        units = [layer for layer in model.layers if isinstance(layer, X2Plus1DUnit)]
        assert len(units) == 3 + 5 + 11 + 7
        assert [(u.filters, u.inner_filters) for u in units[::-1][:1]] == [(192, 432)]
        assert {(u.filters, u.inner_filters) for u in units[:3]} == {(24, 54)}
        assert tuple(model.get_layer("res5_unit6").output.shape) == (None, 8, 7, 7, 192)
        assert tuple(model.output.shape) == (None, 157)

    def test_every_module_builds(self):
        for module in sorted(MODULES):
            model = x2plus1d_m(5, module=module, **{**TINY, "depths": (1, 1, 1, 1)})
            assert model.get_layer("res5_unit0").module == module
            assert tuple(model.output.shape) == (None, 5)

    @pytest.mark.parametrize(
        "version",
        ["grid", "pool_mlp"] + [pytest.param(v, marks=pytest.mark.slow) for v in ("1.1", "pool", "fc")],
    )
    def test_tokenizer_from_tl_spec(self, version):
        model = x2plus1d_m(5, **{**TINY, "tokenlearner": TL(4, version=version)})
        assert model.get_layer("res5_unit0").tokenizer == version
        assert tuple(model(clip()).shape) == (2, 5)

    def test_tokenlearner_forms(self):
        for value, expected in (
            (4, (4, "1")),
            (TL(4), (4, "1.1")),
            ({"num_tokens": 4, "version": "fc"}, (4, "fc")),
            ("4+grid", (4, "grid")),
        ):
            model = x2plus1d_m(5, **{**TINY, "depths": (1, 1, 1, 1), "tokenlearner": value})
            unit = model.get_layer("res5_unit0")
            assert (unit.num_tokens, unit.tokenizer) == expected, value

    @pytest.mark.parametrize("value", [TL(4, at=0), TL(4, fuser=True), "4@2",
                                       {"num_tokens": 4, "at": 1}])
    def test_placement_arguments_are_an_error_not_ignored(self, value):
        with pytest.raises(ValueError, match="res5"):
            x2plus1d_m(5, **{**TINY, "tokenlearner": value})

    def test_include_top_false(self):
        model = x2plus1d_m(None, include_top=False, **TINY)
        assert tuple(model.output.shape) == (None, 12)



class TestKerasContract(TestCase):
    @pytest.mark.parametrize(
        "kwargs, mixed_precision",
        [
            ({}, ("mixed_bfloat16", "mixed_float16")),
            ({"module": "conv2d_tokenlearner_mhsa"}, ("mixed_bfloat16",)),
            ({"module": "conv2d_conv1d", "tokenlearner": None}, ("mixed_bfloat16",)),
        ],
        ids=["tokenlearner", "tokenlearner_mhsa", "backbone"],
    )
    def test_model_contract(self, kwargs, mixed_precision, tiny):
        """Config, forward, `.keras` round trip, bfloat16 (and float16) by value, a
        gradient for every trainable weight: the paper's module, its MHSA variant and the
        plain backbone."""
        model = self.run_model_test(
            X2Plus1D, {**TINY, "num_classes": 5, **kwargs}, clip(), (2, 5),
            model=None if kwargs else tiny, mixed_precision=mixed_precision,
        )
        assert model.get_layer("res5_unit0").module == kwargs.get("module", "conv2d_tokenlearner")


class TestTrainAndSave:
    def test_trains_a_step(self, tiny):
        model = tiny
        x = clip()
        y = (RNG.uniform(size=(2, 5)) > 0.5).astype("float32")  # multi-label targets
        before = [to_numpy(w).copy() for w in model.trainable_weights]
        bn = model.get_layer("stem_norm")
        moving_mean = to_numpy(bn.moving_mean).copy()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),  # any non-zero gradient moves a weight
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            # TF: eager starts in ~2 s where tracing the whole net takes ~10-25 s on CPU;
            # JAX: its jit is the faster path (op-by-op JAX is slow).
            run_eagerly=keras.backend.backend() == "tensorflow",
        )
        # Three steps: the zero-initialised last BN of each unit and the zero-initialised
        # TokenFuser mixing open the gradient path to the module one step at a time.
        history = model.fit(x, y, batch_size=2, epochs=3, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        unchanged = [
            w.path for w, b in zip(model.trainable_weights, before)
            if np.array_equal(to_numpy(w), b)
        ]
        assert not unchanged, unchanged
        # Training updated the batch-norm statistics too.
        assert not np.allclose(to_numpy(bn.moving_mean), moving_mean)

    @pytest.mark.tf_only
    def test_tf_function_train_step(self, tiny):
        """The trainer's path: a traced `tf.function` forward/backward of the whole net."""
        import tensorflow as tf  # a TensorFlow-only test

        model = tiny
        optimizer = keras.optimizers.SGD(0.01)
        loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        x = tf.constant(clip())
        y = tf.constant((RNG.uniform(size=(2, 5)) > 0.5).astype("float32"))

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss, grads

        loss, grads = step(x, y)
        assert np.isfinite(loss.numpy())
        assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)

    def test_config_is_the_arguments(self):
        model = X2Plus1D(num_classes=3, tokenlearner=TL(4, version="1"),
                         **{k: v for k, v in TINY.items() if k != "tokenlearner"})
        config = model.get_config()
        assert config["tokenlearner"] == {"num_tokens": 4, "at": None, "fuser": False, "version": "1"}
        assert config["widths"] == (4, 8, 8, 16) and config["module"] == "conv2d_tokenlearner"
        clone = X2Plus1D.from_config(config)
        assert clone.count_params() == model.count_params()


class TestRegistry:
    def test_create_model_and_list(self):
        assert "x2plus1d_m" in list_models("x2plus1d*")
        model = create_model("x2plus1d_m", num_classes=7, **TINY)
        assert isinstance(model, X2Plus1D) and tuple(model.output.shape) == (None, 7)

    def test_exported_from_models(self):
        assert tl_keras.models.x2plus1d_m is x2plus1d_m


class TestErrors:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"module": "conv3d"}, "module"),
            ({"tokenlearner": None}, "tokenlearner"),
            ({"tokenlearner": 0}, "tokenlearner"),
            ({"widths": (4, 8)}, "widths"),
            ({"num_frames": 0}, "num_frames"),
            ({"image_size": (64,)}, "image_size"),
            ({"fuser": "concat"}, "fuser"),
            ({"dropout_rate": 1.0}, "dropout_rate"),
            ({"expansion": 0}, "expansion"),
            ({"depthwise": "yes"}, "depthwise"),
        ],
    )
    def test_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            x2plus1d_m(5, **{**TINY, **kwargs})

    def test_num_classes(self):
        with pytest.raises(ValueError, match="num_classes"):
            x2plus1d_m(0, **TINY)

    def test_plain_backbone_needs_no_tokens(self):
        model = x2plus1d_m(5, **{**TINY, "module": "conv2d_conv1d", "tokenlearner": None})
        assert model.get_layer("res5_unit0").module == "conv2d_conv1d"
