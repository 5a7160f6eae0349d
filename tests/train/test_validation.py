"""Bad configuration fails before training, with a message naming the key."""

import os
import subprocess
import sys

import pytest

from experiments import kinetics
from tl_keras import configs
from tl_keras.configs import ConfigError
from tl_keras.train import tasks

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _kinetics_config(runlocal=False):
    return kinetics.get_config(runlocal=runlocal)


@pytest.fixture
def data_dir(tmp_path):
    for name in ("train-00000-of-00001", "validation-00000-of-00001"):
        (tmp_path / name).write_bytes(b"")
    return str(tmp_path)


def test_valid_config_passes(data_dir):
    cfg = _kinetics_config()
    cfg.data.data_dir = data_dir
    tasks.resolve_data(cfg)
    tasks.validate(cfg, num_replicas=8, modes=("train_and_evaluate",))


def test_global_batch_not_divisible_by_replicas(data_dir):
    cfg = _kinetics_config()
    cfg.data.data_dir = data_dir
    with pytest.raises(ConfigError, match=r"train\.batch_size=64 .* not divisible by the 3 replicas"):
        tasks.validate(cfg, num_replicas=3)
    cfg.train.batch_size = 63
    with pytest.raises(ConfigError, match=r"eval\.batch_size=64 .* 3 replicas"):
        tasks.validate(cfg, num_replicas=3)


@pytest.mark.parametrize("at, ok", [(0, True), (23, True), (24, False), (-1, False)])
def test_tokenlearner_position_out_of_range(data_dir, at, ok):
    cfg = _kinetics_config()  # ViViT-L: 24 blocks
    cfg.data.data_dir = data_dir
    cfg.model.tokenlearner.at = at
    if ok:
        tasks.validate(cfg)
        return
    with pytest.raises(ConfigError, match=r"model\.tokenlearner\.at=.* out of range.*\[0, 23\]"):
        tasks.validate(cfg)


def test_tokenlearner_position_counts_num_layers_override(data_dir):
    cfg = _kinetics_config()
    cfg.data.data_dir = data_dir
    cfg.model.num_layers = 4
    cfg.model.tokenlearner.at = 18
    with pytest.raises(ConfigError, match=r"model\.tokenlearner\.at=18 .* 4 blocks .*\[0, 3\]"):
        tasks.validate(cfg)


@pytest.mark.parametrize("key, value", [("at", 3), ("fuser", True)])
def test_x2plus1d_tokenlearner_placement_is_an_error_not_ignored(data_dir, key, value):
    from experiments import charades

    cfg = charades.get_config(runlocal=False)  # X(2+1)D-M: the TokenLearner is in res5
    cfg.data.data_dir = data_dir
    tasks.validate(cfg)
    setattr(cfg.model.tokenlearner, key, value)
    with pytest.raises(ConfigError, match=r"model\.tokenlearner\.at=.*res5"):
        tasks.validate(cfg)


def test_crop_larger_than_resized_frame(data_dir):
    cfg = _kinetics_config()
    cfg.data.data_dir = data_dir
    configs.apply_overrides(cfg, ["data.crop_size=288", "data.min_resize=256"])
    with pytest.raises(ConfigError, match=r"data\.crop_size=288 is larger than the resized frame .*data\.min_resize=256"):
        tasks.validate(cfg)


def test_missing_data_directory(tmp_path):
    cfg = _kinetics_config()
    with pytest.raises(ConfigError, match=r"data\.data_dir is not set.*--data_dir"):
        tasks.validate(cfg)
    cfg.data.data_dir = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"data\.data_dir=.*nowhere.* does not exist"):
        tasks.validate(cfg)
    cfg.data.data_dir = str(tmp_path)  # exists, but holds no shards
    with pytest.raises(ConfigError, match=r"data\.train_pattern='train\*'.*matched no files"):
        tasks.validate(cfg)
    # Export needs no data.
    tasks.validate(cfg, modes=("export",))


def test_resolve_data_fills_from_the_dataset_facts():
    cfg = configs.Config()
    cfg.data.dataset = "charades"
    cfg.data.eval_split = "test"
    tasks.resolve_data(cfg)
    assert (cfg.data.num_classes, cfg.data.multilabel, cfg.data.num_frames) == (157, True, 64)
    assert (cfg.eval.num_clips, cfg.eval.num_crops) == (4, 3)
    cfg.data.dataset = "ucf101"
    with pytest.raises(ConfigError, match="data.dataset='ucf101'"):
        tasks.resolve_data(cfg)


def _cli(*args, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "kinetics.py"), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_cli_unknown_key_fails_fast_listing_valid_keys(tmp_path):
    proc = _cli("--runlocal", f"--workdir={tmp_path}", "--set", "train.num_step=30")
    assert proc.returncode == 2
    assert "Unknown config key 'train.num_step'" in proc.stderr
    assert "Did you mean 'train.num_steps'" in proc.stderr and "--print_config" in proc.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.tf_only
def test_cli_missing_data_dir_fails_before_training(tmp_path, capsys):
    # In this process (the script's own wiring is checked by the subprocess test above).
    code = kinetics.main([f"--data_dir={tmp_path / 'missing'}", f"--workdir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "data.data_dir=" in err and "does not exist" in err
    assert not (tmp_path / "run").exists()
