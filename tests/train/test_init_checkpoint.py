"""`model.init_checkpoint` (the trainer's start from weights, `tl_keras.convert.
load_pretrained`): an image ViT of `experiments/imagenet.py --runlocal` starts the
ViViT of `experiments/kinetics.py --runlocal` (paper §5.2: "ViViT initialised from a 2-D
ViT"), with the features of the image model on a frame-replicated clip.

The two runlocal models share width, depth, heads, MLP, TokenLearner placement, crop
(32 px) and class count, but not the patch: imagenet's is 4, kinetics' 8. The kinetics
side is therefore run with `--set model.patch_size=4` (a patch-8 ViViT is refused, with
the file and the misfit named: `test_a_file_that_does_not_fit_names_it_and_the_misfits`).
"""

import typing

import keras
import numpy as np
import pytest

import tl_keras.models  # noqa: F401  (registers the models for keras.saving.load_model)
from experiments import imagenet, kinetics
from tl_keras import configs
from tl_keras.convert import load_pretrained
from tl_keras.models.vivit.inflate import KERNEL_INITS
from tl_keras.train import loop, tasks

pytestmark = pytest.mark.tf_only


def _kinetics_cfg(init_checkpoint, patch_size=4):
    cfg = kinetics.get_config(runlocal=True)
    configs.apply_overrides(cfg, [f"model.patch_size={patch_size}",
                                  f"model.init_checkpoint={init_checkpoint}"])
    tasks.resolve_data(cfg)  # classes and frames of the dataset, as the command does
    return cfg


def _features(model):
    """The pooled (pre-head) features of a ViT / ViViT."""
    return keras.Model(model.input, model.get_layer("head").input)


def _frame_replicated(images, frames):
    return np.repeat(images[:, None], frames, axis=1)  # [B, H, W, 3] -> [B, T, H, W, 3]


@pytest.fixture(scope="module")
def image_model_file(tmp_path_factory):
    """The runlocal image ViT (the trainer's model function) with random weights, as a
    `.keras` file: what a run's `export/<step>/model.keras` is, without the run."""
    cfg = imagenet.get_config(runlocal=True)
    model = imagenet.runlocal_task(cfg).model_fn()
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("image") / "model.keras")
    model.save(path)
    return path, model


def test_runlocal_vivit_starts_with_the_image_features(image_model_file):
    """The ViViT the trainer builds, after the trainer's init step: on a clip of one
    repeated frame its features (and logits: same class count) are the image ViT's."""
    path, image_model = image_model_file
    cfg = _kinetics_cfg(path)
    video_model = tasks.make_task(cfg).model_fn()
    report = load_pretrained(video_model, cfg.model.init_checkpoint)
    assert report["format"] == "keras" and report["source"] == path
    assert "embedding/kernel" in report["adapted"]  # inflated over the tubelet
    assert "Transformer/posembed_input/pos_embedding" in report["adapted"]  # tiled
    assert report["initialised"] == [] and report["skipped"] == {}
    frames = video_model.resolved.num_frames
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    want = np.asarray(_features(image_model)(images))
    got = np.asarray(_features(video_model)(_frame_replicated(images, frames)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(video_model(_frame_replicated(images, frames))),
                               np.asarray(image_model(images)), rtol=1e-4, atol=1e-5)


def test_a_file_that_does_not_fit_names_it_and_the_misfits(image_model_file):
    path, _ = image_model_file
    cfg = _kinetics_cfg(path, patch_size=8)  # kinetics' own runlocal patch
    video_model = tasks.make_task(cfg).model_fn()
    before = [np.asarray(w) for w in video_model.weights]
    with pytest.raises(ValueError) as err:
        load_pretrained(video_model, cfg.model.init_checkpoint)
    message = str(err.value)
    assert path in message and "embedding/kernel" in message and "wrong shape" in message
    for w, v in zip(video_model.weights, before):
        np.testing.assert_array_equal(np.asarray(w), v)  # nothing assigned


def test_kernel_init_key_reaches_the_trainers_load(image_model_file):
    """`--set model.init_checkpoint_kernel_init=average` reaches `load_pretrained` through
    the trainer's init step (`loop.load_init_checkpoint`): the step-0 ViViT differs from the
    `central_frame` one in the patch kernel only (kernel / t on every frame instead of the
    kernel on the middle frame, zeros elsewhere); every other weight is the same."""
    path, image_model = image_model_file
    image_kernel = next(np.asarray(w) for w in image_model.weights if w.ndim == 4)
    weights = {}
    for mode in ("central_frame", "average"):
        cfg = _kinetics_cfg(path)
        configs.apply_overrides(cfg, [f"model.init_checkpoint_kernel_init={mode}"])
        video_model = tasks.make_task(cfg).model_fn()
        report = loop.load_init_checkpoint(video_model, cfg.model)
        assert report["adapted"]["embedding/kernel"].endswith(f"({mode})")
        weights[mode] = {w.path: np.asarray(w) for w in video_model.weights}
    (kernel_path,) = [p for p, v in weights["average"].items() if v.ndim == 5]
    central, average = weights["central_frame"][kernel_path], weights["average"][kernel_path]
    t = central.shape[0]
    assert t == 2
    np.testing.assert_array_equal(central[t // 2], image_kernel)
    np.testing.assert_array_equal(central[: t // 2], 0)
    np.testing.assert_allclose(average, np.broadcast_to(image_kernel / t, average.shape),
                               rtol=1e-6)
    for p in weights["average"]:
        if p != kernel_path:
            np.testing.assert_array_equal(weights["average"][p], weights["central_frame"][p])
    # A mode that does not exist is refused by the config, with the choices.
    with pytest.raises(configs.ConfigError, match="'central_frame', 'average'"):
        configs.apply_overrides(cfg, ["model.init_checkpoint_kernel_init=middle"])


def test_kernel_init_key_has_the_loaders_choices_and_is_suggested():
    hint = typing.get_type_hints(configs.ModelConfig)["init_checkpoint_kernel_init"]
    assert typing.get_args(hint) == KERNEL_INITS  # configs.py imports no Keras: pinned here
    assert configs.ModelConfig().init_checkpoint_kernel_init == "central_frame"
    with pytest.raises(configs.ConfigError,
                       match="Did you mean[^?]*'model.init_checkpoint_kernel_init'"):
        configs.set_value(configs.Config(), "model.kernel_init", "average")


# The command-line path (an `imagenet.py --runlocal` export starts `kinetics.py --runlocal`)
# is checked by the imagenet case of tests/train/test_train_video.py (slow), which trains
# that image model anyway.
