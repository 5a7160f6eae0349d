"""Registry (`tl_keras.models.registry`): every registered model builds in a tiny size
(user kwargs override the table), runs, and survives a `.keras` round trip;
`resolve_model` resolves a name as the constructor does."""

import os
import re
import tempfile

import keras
import numpy as np
import pytest

from test_case import to_numpy
from tl_keras import TL, models
from tl_keras.models import MODEL_SPECS, ViT, create_model, get_model_spec, list_models
from tl_keras.models.registry import model_class, resolve_model

REQUIRED = ["vit_ti16", "vit_s16", "vit_s32", "vit_b16", "vit_b32", "vit_l16", "vit_l14",
            "vit_l10", "vit_l8", "vit_h14", "vivit_b16", "vivit_l16", "vivit_l14", "vivit_l10"]
TINY = dict(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32, num_classes=3,
            image_size=16, tokenlearner=TL(2, at=1, fuser=True))
# Tiny arguments (over the size table) and input shape per model family.
TINY_BY_FAMILY = {
    "vit": (TINY, (2, 16, 16, 3)),
    "vivit": (dict(TINY, num_frames=4), (2, 4, 16, 16, 3)),
}
RNG = np.random.default_rng(13)


def test_required_models_are_registered():
    assert set(REQUIRED) <= set(list_models())
    assert list_models() == sorted(MODEL_SPECS)
    assert list_models("vivit_*") == ["vivit_b16", "vivit_l10", "vivit_l14", "vivit_l16"]
    assert list_models("vit_l1?") == ["vit_l10", "vit_l14", "vit_l16"]
    for name in REQUIRED:
        assert callable(getattr(models, name))


def test_size_table():
    assert get_model_spec("vit_b16") == dict(
        family="vit", patch_size=16, image_size=224, hidden_dim=768, num_layers=12,
        num_heads=12, mlp_dim=3072)
    assert get_model_spec("vit_l14")["patch_size"] == 14
    assert get_model_spec("vit_h14")["num_layers"] == 32
    assert get_model_spec("vivit_l16")["tubelet_size"] == 2
    for name, spec in MODEL_SPECS.items():
        if spec["family"] in ("vit", "vivit"):
            assert spec["image_size"] % spec["patch_size"] == 0, name
    spec = get_model_spec("vit_b16")
    spec["hidden_dim"] = 1
    assert get_model_spec("vit_b16")["hidden_dim"] == 768  # a copy



def test_unknown_model():
    with pytest.raises(ValueError, match="Unknown model"):
        create_model("vit_q16")


def test_resolve_model_is_what_the_constructor_resolves():
    r = resolve_model("vit_l16", image_size=512, tokenlearner="16@12")
    assert r.family == "vit" and r.hidden_dim == 1024 and r.grid == (32, 32)
    assert model_class("vit_l16") is ViT
    model = create_model("vit_b16", **dict(TINY, tokenlearner=None))
    assert resolve_model("vit_b16", **dict(TINY, tokenlearner=None)) == model.resolved
    with pytest.raises(ValueError, match="unknown argument `hidden`; did you mean `hidden_dim`"):
        resolve_model("vit_b16", hidden=3)


# A misspelling of an argument every family takes, and the name it must suggest.
MISSPELT = [("num_class", "num_classes"), ("imagesize", "image_size")]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("typo, suggestion", MISSPELT)
def test_every_model_rejects_a_misspelt_argument_before_building(name, typo, suggestion,
                                                                 monkeypatch):
    cls = model_class(name)

    def built(*args, **kwargs):
        raise AssertionError(f"{name}: built or resolved despite the unknown `{typo}`")

    monkeypatch.setattr(cls, "resolve", classmethod(built))
    monkeypatch.setattr(cls, "build_graph", classmethod(built))
    calls = {
        "entrypoint": lambda **kw: getattr(models, name)(**kw),
        "create_model": lambda **kw: create_model(name, **kw),
        "resolve_model": lambda **kw: resolve_model(name, **kw),
        "constructor": lambda **kw: cls(**kw),
    }
    for how, call in calls.items():
        with pytest.raises(TypeError) as err:
            call(**{typo: 10})
        message = str(err.value)
        assert isinstance(err.value, ValueError), how
        assert f"unknown argument `{typo}`" in message, (how, message)
        assert f"`{suggestion}`" in message.split(";")[1], (how, message)
        assert "\n" not in message


@pytest.mark.parametrize("call", [lambda **kw: models.vit_s16(**kw),
                                  lambda **kw: create_model("vivit_b16", **kw),
                                  lambda **kw: models.x2plus1d_m(**kw),
                                  lambda **kw: resolve_model("vit_b16", **kw)])
def test_bad_weights_and_dtype_are_refused_before_building(call, monkeypatch, tmp_path):
    for cls in {model_class(n) for n in list_models()}:
        monkeypatch.setattr(cls, "build_graph", classmethod(lambda *a: pytest.fail("built")))
    missing = str(tmp_path / "missing.weights.h5")
    with pytest.raises(FileNotFoundError, match="`weights`: no such file " + re.escape(repr(missing))):
        call(weights=missing)
    with pytest.raises(ValueError, match=r"`weights_kernel_init` must be one of"):
        call(weights_kernel_init="centre")
    with pytest.raises(TypeError, match=r"`dtype` is not a model argument.*set_dtype_policy"):
        call(dtype="mixed_float16")


def test_legitimate_keywords_still_pass():
    model = create_model("vit_b16", **TINY, weights=None, trainable=False,
                         name="mine")
    assert model.name == "mine" and not model.trainable and len(model.resolved.image_size) == 2
    clone = type(model).from_config(model.get_config())  # what `.keras` loading calls
    assert clone.name == "mine" and not clone.trainable
    assert resolve_model("vit_b16", **dict(TINY, tokenlearner=None), trainable=True,
                         name="x", weights=None) == resolve_model("vit_b16", **dict(
                             TINY, tokenlearner=None))


def _first_of_family():
    """The first registered name of each family: the one whose tiny build also runs and
    round-trips through `.keras` (the others differ only in size-table entries, which the
    tiny keyword arguments replace; the families' own tests check the computation)."""
    first = {}
    for name in list_models():
        first.setdefault(get_model_spec(name)["family"], name)
    return set(first.values())


@pytest.mark.parametrize("name", list_models())
def test_every_model_tiny(name):
    family = get_model_spec(name)["family"]
    if family not in TINY_BY_FAMILY:
        # x2plus1d_m: its entrypoint, create_model and `.keras` round trip are checked in
        # tests/models/x2plus1d/test_model.py (one tiny build there).
        pytest.skip(f"the {family!r} family's entrypoint is tested with its family")
    kwargs, shape = TINY_BY_FAMILY[family]
    model = getattr(models, name)(**kwargs)  # the entrypoint; kwargs override the table
    assert model.name == name
    assert tuple(model.output.shape) == (None, 3)
    for key, value in kwargs.items():  # the user's arguments won over the size table
        value = value.to_config() if hasattr(value, "to_config") else value
        assert model.get_config()[key] == value, key
    clone = type(model).from_config(model.get_config())  # what `.keras` loading calls
    assert clone.count_params() == model.count_params()
    if name not in _first_of_family():
        return
    x = RNG.uniform(-1, 1, shape).astype("float32")
    for w in model.weights:
        if w.trainable:
            w.assign(to_numpy(w) + RNG.normal(0, 0.1, w.shape).astype("float32"))
    out = to_numpy(model(x))
    assert out.shape == (2, 3) and np.all(np.isfinite(out))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), out)


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    """`(path, model)`: a tiny plain ViT (class token, 3 classes, no TokenLearner) with
    random weights, saved in the JAX ViT layout."""
    from tl_keras.convert import save_vit_npz

    source = ViT(**dict(TINY, tokenlearner=None))
    for w in source.weights:
        w.assign(RNG.normal(0, 0.1, w.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("weights") / "vit.npz")
    return save_vit_npz(source, path), source


@pytest.mark.parametrize("name", [n for n in list_models()
                                  if get_model_spec(n)["family"] in TINY_BY_FAMILY])
def test_every_vit_family_model_starts_from_weights(name, image_checkpoint):
    """`weights=` on the entrypoint: blocks loaded; position embedding resized to the
    32 px grid (and tiled over time); head (5 classes, not 3) and TokenLearner / TokenFuser
    (not in the file) left as initialised, the class token skipped (the TokenLearner
    model pools with "gap"); the report is `model.weights_report`."""
    path, source = image_checkpoint
    kwargs, _ = TINY_BY_FAMILY[get_model_spec(name)["family"]]
    model = getattr(models, name)(**dict(kwargs, image_size=32, num_classes=5), weights=path)
    report = model.weights_report
    assert report["format"] == "jax_vit" and report["source"] == path
    modules = {n.split("/")[1] for n in report["initialised"] if n.startswith("Transformer/")}
    assert modules == {"TokenLearnerModuleV11_0", "TokenFuser_0"}
    assert {"head/kernel", "head/bias"} <= set(report["initialised"])
    assert set(report["skipped"]) == {"cls", "head/kernel", "head/bias"}
    assert "Transformer/posembed_input/pos_embedding" in report["adapted"]
    assert ("embedding/kernel" in report["adapted"]) == (model.resolved.family == "vivit")
    block = "encoderblock_1/mlp_dense_0/kernel"
    got = {w.path: w for w in model.weights}
    np.testing.assert_array_equal(to_numpy(got[block]),
                                  to_numpy({w.path: w for w in source.weights}[block]))
    assert "weights" not in model.get_config()  # a `.keras` reload does not read the file again


def test_weights_through_create_model_and_the_constructor(image_checkpoint, tmp_path):
    """The same load for `create_model` and the class; `weights_kernel_init` picks the
    inflation; a model object (or its `.keras` file) is a source too."""
    path, source = image_checkpoint
    vivit_kwargs = dict(TINY_BY_FAMILY["vivit"][0], tokenlearner=None, num_frames=4)
    central = create_model("vivit_b16", **vivit_kwargs, weights=path)
    average = models.ViViT(**vivit_kwargs, weights=path, weights_kernel_init="average")
    kernels = [to_numpy(m.get_layer("embedding").conv.kernel) for m in (central, average)]
    image_kernel = to_numpy(source.get_layer("embedding").conv.kernel)
    np.testing.assert_array_equal(kernels[0][1], image_kernel)  # the central of 2 frames
    np.testing.assert_array_equal(kernels[0][0], 0 * image_kernel)
    np.testing.assert_allclose(kernels[1], np.stack([image_kernel / 2] * 2), rtol=1e-6)
    assert central.weights_report["skipped"] == {}  # 3 classes: the head fits
    from_object = models.vit_s16(**dict(TINY, tokenlearner=None), weights=source)
    x = RNG.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(to_numpy(from_object(x)), to_numpy(source(x)))
    assert from_object.weights_report["format"] == "tl_keras"
    assert create_model("vit_b16", **TINY).weights_report is None


@pytest.mark.slow
@pytest.mark.parametrize("name, params", [("vit_b16", 86_567_656), ("vit_l16", 304_326_632)])
def test_real_size_parameter_count(name, params):
    model = create_model(name)
    assert model.count_params() == params
