"""The command lines (`tools/*.py`, `experiments/*.py`): `--help` without TensorFlow, user
errors as one line (`NAME: error: ...`, exit code 2, no traceback), missing paths named as
missing, and TensorFlow's start-up noise hidden (`tl_keras/_cli.py`) while real messages
stay."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tf_noise import NOISE
from tl_keras import _cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOOLS = sorted(p for p in (ROOT / "tools").glob("*.py") if not p.name.startswith("_"))
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").glob("*.py")
                     if p.name not in ("__init__.py", "common.py"))


def _run(script, *args, importtime=False, timeout=120):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell: the CLIs must quieten TF alone
    env.pop("TL_KERAS_SHOW_STARTUP", None)
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, str(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _imported(stderr):
    """Top-level package names in `python -X importtime` output."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", stderr, re.M)
    return {n.split(".")[0] for n in names}


def _user_lines(stderr):
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


def test_the_scripts_are_found():
    assert {p.name for p in TOOLS} >= {"count_flops.py", "fewshot_eval.py", "visualize_tokens.py",
                                       "plot_run.py"}
    assert {p.name for p in EXPERIMENTS} == {"imagenet.py", "kinetics.py", "charades.py", "avid.py"}


@pytest.mark.parametrize("script", TOOLS + EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_answers_without_importing_tensorflow(script):
    proc = _run(script, "--help", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: ")
    imported = _imported(proc.stderr)
    assert "argparse" in imported  # the import log was read
    assert not imported & {"tensorflow", "keras", "jax"}, sorted(imported & {"tensorflow", "keras"})


def _python(code, timeout=120, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, **env))


def test_command_lines_import_tl_keras_lazily_without_tensorflow():
    """Under `TL_KERAS_LAZY_IMPORT=1` (what every tool and experiment sets)."""
    code = ("import sys, tl_keras; from tl_keras import configs, _cli; "
            "configs.apply_overrides(configs.Config(), ['train.num_steps=3']); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    proc = _python(code, TL_KERAS_LAZY_IMPORT="1")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    # And the library is still one attribute away.
    code = ("import tl_keras; print(tl_keras.layers.TokenLearner.__name__, "
            "tl_keras.TL.parse('8@6').num_tokens, 'layers' in dir(tl_keras))")
    proc = _python(code, TL_KERAS_LAZY_IMPORT="1")
    assert proc.returncode == 0 and proc.stdout.split() == ["TokenLearner", "8", "True"], proc.stderr


def test_import_tl_keras_registers_the_models_for_load_model(tmp_path):
    """A user's `import tl_keras` (before or after `import keras`) is enough for
    `keras.saving.load_model` to find the tl_keras classes."""
    from tl_keras.models import create_model

    path = str(tmp_path / "m.keras")
    create_model("vit_s16", image_size=32, patch_size=16, hidden_dim=16, num_layers=1,
                 num_heads=2, mlp_dim=32, num_classes=3).save(path)
    env = {k: v for k, v in os.environ.items() if k != "TL_KERAS_LAZY_IMPORT"}
    for imports in ("import tl_keras, keras", "import keras, tl_keras"):
        code = f"{imports}; print(type(keras.saving.load_model({path!r})).__name__)"
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode == 0 and proc.stdout.strip() == "ViT", (imports, proc.stderr[-2000:])


@pytest.mark.parametrize("override, fragment", [
    ("optim.base_lr=nan", "'optim.base_lr' must be > 0 and finite, got nan"),
    ("optim.grad_clip_norm=-1", "'optim.grad_clip_norm' must be > 0"),
    ("eval.batch_size=0", "'eval.batch_size' must be > 0"),
    ("train.num_step=3", "Did you mean 'train.num_steps'"),
])
def test_experiment_configuration_error_is_one_line_before_tensorflow(tmp_path, override, fragment):
    proc = _run(ROOT / "experiments" / "kinetics.py", "--runlocal", f"--workdir={tmp_path}",
                "--set", override, importtime=True)
    lines = _user_lines(proc.stderr)
    assert proc.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("kinetics.py: error: "), lines
    assert fragment in lines[0]
    assert "tensorflow" not in _imported(proc.stderr)
    assert not os.listdir(tmp_path)


def test_print_config_lists_every_key_without_tensorflow():
    proc = _run(ROOT / "experiments" / "imagenet.py", "--runlocal", "--print_config",
                "--set", "optim.base_lr=0.01", importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config_json, keys = proc.stdout.split("\nValid --set keys:\n")
    assert json.loads(config_json)["optim"]["base_lr"] == 0.01
    assert "  optim.base_lr (float) = 0.01" in keys.splitlines()
    assert len(keys.splitlines()) > 50
    assert "tensorflow" not in _imported(proc.stderr)


def test_missing_workdir_is_named_in_one_line():
    proc = _run(ROOT / "experiments" / "avid.py")
    assert proc.returncode == 2
    assert _user_lines(proc.stderr) == [
        "avid.py: error: --workdir is required (except with --runlocal)."]


@pytest.mark.parametrize("args, fragment", [
    (["--tokenlearner=16"], "give a model name"),  # argparse's own one-line usage error
    (["vit_b16", "--tokenlearner=16@x"], "--tokenlearner=16@x: TL.parse: cannot read '16@x'"),
    (["vit_b16", "--tokenlearner=16"], "`tokenlearner` needs `at`"),
    (["vit_b16", "--image_size=500"], "not divisible"),
])
def test_count_flops_errors_are_one_line(args, fragment):
    proc = _run(ROOT / "tools" / "count_flops.py", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()  # also past argparse, where TensorFlow loaded (quietly)
    assert len(lines) == 1 and lines[0].startswith("count_flops") and fragment in lines[0], lines


# Tools still on plain argparse (usage block before the message): `_common.ArgumentParser`.
@pytest.mark.parametrize("script", TOOLS + EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_argument_errors_are_one_line(script):
    proc = _run(script, "--no_such_flag")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script.name}: error: "), lines
    assert lines[0].endswith("(see --help)")


@pytest.mark.parametrize("tool, args", [
    ("fewshot_eval.py", ["--model={missing}", "--dataset=synthetic_single"]),
    ("visualize_tokens.py", ["--model={missing}", "--input={here}", "--output=x.png"]),
    ("visualize_tokens.py", ["--model={here}", "--input={missing}", "--output=x.png"]),
])
def test_missing_paths_are_said_to_be_missing(tmp_path, tool, args):
    missing = tmp_path / "no_such_run"
    args = [a.format(missing=missing, here=__file__) for a in args]
    proc = _run(ROOT / "tools" / tool, *args, importtime=True)
    flag = next(a.split("=")[0] for a in args if str(missing) in a)
    assert proc.returncode == 2
    assert _user_lines(proc.stderr) == [
        f"{tool[:-3]}: error: {flag}={missing}: no such file or directory."]
    assert "tensorflow" not in _imported(proc.stderr)  # found before loading anything


def test_common_load_model_messages(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import _common

    with pytest.raises(_common.ToolError, match="no_run: no such file or directory"):
        _common.load_model(str(tmp_path / "no_run"))
    with pytest.raises(_common.ToolError, match="--workdir=.*gone: no such file or directory"):
        _common.model_from_workdir(str(tmp_path / "gone"))
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(_common.ToolError, match="expected a .keras file or a training run"):
        _common.load_model(str(tmp_path / "weights.h5"))
    with pytest.raises(_common.ToolError, match="a directory without config.json"):
        _common.load_model(str(tmp_path))
    assert issubclass(_common.ToolError, ValueError)


def test_run_or_report(capsys):
    def fails(kind):
        raise kind("--flag=x: bad")

    for kind in (_cli.UserError, ValueError, FileNotFoundError):
        assert _cli.run_or_report("tool", fails, kind) == 2
        assert capsys.readouterr().err == "tool: error: --flag=x: bad\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        _cli.run_or_report("tool", fails, KeyError)
    assert _cli.run_or_report("tool", lambda: 0) == 0


LOG = "I0000 00:00:1796297341.601624   16544 "
STARTUP = f"""WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
{LOG}port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
{LOG}cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
{LOG}cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
W0000 00:00:1796297341.7   16544 some_op.cc:1] a real warning
E0000 00:00:1796297350.069645   16544 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_filter_keeps_real_lines_and_cuinit_where_drivers_exist():
    assert _cli.filter_startup_lines(STARTUP) == (
        "W0000 00:00:1796297341.7   16544 some_op.cc:1] a real warning\n")
    with_drivers = "".join(line for line in STARTUP.splitlines(keepends=True)
                           if "cudart_stub" not in line)
    kept = _cli.filter_startup_lines(with_drivers)
    assert "a real warning" in kept and "failed call to cuInit" in kept
    assert "oneDNN" not in kept


def test_tensorflow_starts_quietly_and_real_messages_stay():
    code = ("import os, sys; from tl_keras import _cli\n"
            "with _cli.quiet_startup():\n"
            "    os.write(2, b'C++ line kept\\n'); print('python line kept', file=sys.stderr)\n"
            "tf = _cli.import_tensorflow(); tf.constant(1) + 1\n"
            "print('after', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:2] == ["C++ line kept", "python line kept"] and lines[-1] == "after"
    assert not [line for line in lines if any(n in line for n in NOISE)], lines


@pytest.mark.tf_only
def test_training_on_data_without_one_good_example_stops_with_one_line(tmp_path):
    """A pattern whose only shard is random bytes: the run ends (instead of waiting for a
    batch forever) with one line naming the file and the skip counts, exit code 1."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "rb.tfrecord").write_bytes(os.urandom(20000))
    proc = _run(ROOT / "experiments" / "kinetics.py", "--runlocal",
                f"--workdir={tmp_path / 'run'}", "--set", "data.dataset=kinetics400",
                f"data.data_dir={data_dir}", "data.train_pattern=rb.tfrecord",
                "data.eval_pattern=rb.tfrecord", "train.num_steps=5", timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tl_keras: ERROR: tl_keras.data: a full pass over the data yielded "
                           "no good example"), proc.stderr[-3000:]
    assert "rb.tfrecord" in last and "truncated_file=1" in last
    assert "Traceback" not in proc.stderr
