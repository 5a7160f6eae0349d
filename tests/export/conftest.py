"""Fixtures of the export tests: a tiny ViT (images) and a tiny ViViT (videos) with
TokenLearner, random heads (so outputs depend on the input), each exported once per session."""

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from tl_keras import data, export
from tl_keras.models import TL, create_model

IMAGE_CLASSES = ["cat", "dog", "bird", "fish", "frog"]


def tiny_vit(num_classes=5, seed=0):
    model = create_model(
        "vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
        mlp_dim=64, num_classes=num_classes, tokenlearner=TL(4, at=1),
    )
    return randomize_head(model, seed)


def tiny_vivit(num_classes=6, seed=1):
    model = create_model(
        "vivit_b16", num_frames=4, image_size=32, patch_size=8, tubelet_size=2, hidden_dim=32,
        num_layers=2, num_heads=2, mlp_dim=64, num_classes=num_classes,
        tokenlearner=TL(3, at=1),
    )
    return randomize_head(model, seed)


def randomize_head(model, seed):
    """The reference head is zero-initialised (every input gives the same logits)."""
    rng = np.random.default_rng(seed)
    head = model.get_layer("head")
    head.kernel.assign(rng.normal(0, 1.0, head.kernel.shape).astype("float32"))
    head.bias.assign(rng.normal(0, 0.5, head.bias.shape).astype("float32"))
    return model


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Both models and their SavedModels: `image` (softmax, class names, top 3;
    `export_saved_model`) and `video` (multi-label sigmoid, no class names, the
    crop-then-resize "validation" evaluation; written by the trainer's `export_model` from a
    run's config, with its `.keras` archive beside)."""
    root = tmp_path_factory.mktemp("exported")
    image_model = tiny_vit()
    image_prep = data.preprocessing_for(image_model)  # min_resize 37 = round(32 / 0.875)
    image_path = export.export_saved_model(
        image_model, str(root / "image"), class_names=IMAGE_CLASSES, top_k=3
    )
    video_model = tiny_vivit()
    video_prep = data.preprocessing_for(video_model, min_resize=40, eval_split="validation")
    config = {"data": {"min_resize": 40, "eval_split": "validation", "multilabel": True}}
    video_paths = export.export_model(video_model, str(root / "video"), config=config)
    return types.SimpleNamespace(
        root=root,
        image=types.SimpleNamespace(
            model=image_model, prep=image_prep, path=image_path, classes=IMAGE_CLASSES,
            multilabel=False, k=3, name="images",
        ),
        video=types.SimpleNamespace(
            model=video_model, prep=video_prep, path=video_paths["saved_model"], classes=None,
            multilabel=True, k=5, name="videos", keras_path=video_paths["keras"],
        ),
    )


@pytest.fixture
def tiny_models():
    return types.SimpleNamespace(vit=tiny_vit, vivit=tiny_vivit, randomize_head=randomize_head)


@pytest.fixture(scope="session")
def subprocess_env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# A finished run of the README's main command to reuse instead of training it again: .ci/run
# runs that command (as a user would, TF_CPP_MIN_LOG_LEVEL unset), keeps its stderr, and
# points these at the run so that the slow step does not repeat the same 600 steps.
RUNLOCAL_WORKDIR_ENV = "TL_KERAS_TEST_RUNLOCAL_WORKDIR"
RUNLOCAL_STDERR_ENV = "TL_KERAS_TEST_RUNLOCAL_STDERR"


def _finished_runlocal(tmp_path_factory):
    """`(workdir, stderr)` of the run named by the environment (copied: the tests write into
    it), or None; a named run that is not a finished kinetics `--runlocal` is an error."""
    source, stderr_file = os.environ.get(RUNLOCAL_WORKDIR_ENV), os.environ.get(RUNLOCAL_STDERR_ENV)
    if not source:
        return None
    for path in (os.path.join(source, "metrics.json"), os.path.join(source, "config.json"),
                 stderr_file or f"${RUNLOCAL_STDERR_ENV}"):
        if not os.path.isfile(path):
            raise pytest.UsageError(f"{RUNLOCAL_WORKDIR_ENV}={source}: no file {path}")
    with open(os.path.join(source, "config.json")) as f:
        experiment = json.load(f)["experiment"]
    if not (experiment.startswith("kinetics") and experiment.endswith("-runlocal")):
        raise pytest.UsageError(f"{RUNLOCAL_WORKDIR_ENV}={source}: a {experiment!r} run, "
                                "not kinetics.py --runlocal")
    workdir = tmp_path_factory.mktemp("runlocal") / "run"
    shutil.copytree(source, workdir, symlinks=True)
    with open(stderr_file) as f:
        return str(workdir), f.read()


@pytest.fixture(scope="session")
def trained_runlocal(tmp_path_factory, subprocess_env):
    """`(workdir, stderr)` of the README's main command, `experiments/kinetics.py
    --runlocal` trained in full (600 steps; 1-3 minutes here), run as from a user's shell (no
    TF_CPP_MIN_LOG_LEVEL: the command must quieten TensorFlow itself). Trained once per
    session (per xdist worker: the modules that use it share the `export_runlocal` group),
    or the finished run that `TL_KERAS_TEST_RUNLOCAL_WORKDIR` names (CI: its main command)."""
    reused = _finished_runlocal(tmp_path_factory)
    if reused:
        return reused
    workdir = str(tmp_path_factory.mktemp("runlocal") / "run")
    env = {k: v for k, v in subprocess_env.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TL_KERAS_SHOW_STARTUP")}
    args = [sys.executable, "experiments/kinetics.py", "--runlocal", f"--workdir={workdir}"]
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return workdir, proc.stderr
