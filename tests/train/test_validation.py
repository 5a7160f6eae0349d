"""Bad configuration fails before training, with a message naming the key."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

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


# -- evaluation protocol and splits (data.eval_split=segments, data.eval_crop_size,
#    data.train_split) ---------------------------------------------------------------------


def test_eval_keys_parse_and_reject_unknown_values():
    cfg = configs.Config()
    configs.apply_overrides(cfg, ["data.eval_split=segments", "eval.segment_merge=mean",
                                  "data.eval_crop_size=256"])
    assert (cfg.data.eval_split, cfg.eval.segment_merge, cfg.data.eval_crop_size) == (
        "segments", "mean", 256)
    assert configs.Config().eval.segment_merge == "max" and configs.Config().data.eval_crop_size is None
    with pytest.raises(ConfigError, match="eval.segment_merge"):
        configs.apply_overrides(cfg, ["eval.segment_merge=median"])
    with pytest.raises(ConfigError, match=r"data.eval_crop_size' must be > 0"):
        configs.apply_overrides(cfg, ["data.eval_crop_size=0"])


def test_eval_crop_size_checks(data_dir):
    cfg = _kinetics_config()  # ViViT-L/16, min_resize 256
    cfg.data.data_dir = data_dir
    tasks.resolve_data(cfg)
    configs.apply_overrides(cfg, ["data.eval_crop_size=288"])
    with pytest.raises(ConfigError, match=r"data\.eval_crop_size=288 is larger than .*min_resize=256"):
        tasks.validate(cfg)
    configs.apply_overrides(cfg, ["data.eval_crop_size=250"])
    with pytest.raises(ConfigError, match=r"data\.eval_crop_size=250 is not divisible by model\.patch_size=16"):
        tasks.validate(cfg)
    configs.apply_overrides(cfg, ["data.eval_crop_size=256"])
    tasks.validate(cfg)
    task = tasks.make_task(cfg)
    assert task.eval_model_fn is not None  # built at 256 on the first evaluation
    cfg.data.eval_crop_size = 224  # the training size: nothing to rebuild
    assert tasks.make_task(cfg).eval_model_fn is None


def test_segments_needs_video_and_no_clip_count(data_dir):
    from experiments import charades

    cfg = charades.get_config()
    cfg.data.data_dir = data_dir
    configs.apply_overrides(cfg, ["data.eval_split=segments", "eval.num_clips=4"])
    tasks.resolve_data(cfg)
    with pytest.raises(ConfigError, match=r"eval\.num_clips=4 applies to data\.eval_split='test'.*"
                                          r"eval\.num_clips=none"):
        tasks.validate(cfg)
    configs.apply_overrides(cfg, ["eval.num_clips=none"])
    tasks.validate(cfg)
    image = configs.Config()
    image.data.dataset, image.data.train_pattern = "imagenet2012", None
    image.data.eval_split = "segments"
    tasks.resolve_data(image)
    with pytest.raises(ConfigError, match=r"data\.eval_split='segments'.*image dataset"):
        tasks.validate(image, modes=("export",))


def test_segments_takes_no_views_from_the_test_protocol():
    cfg = configs.Config()
    configs.apply_overrides(cfg, ["data.dataset=charades", "data.eval_split=segments"])
    tasks.resolve_data(cfg)
    assert (cfg.eval.num_clips, cfg.eval.num_crops) == (None, None)


def test_train_split_picks_the_shards_read(tmp_path):
    from tl_keras.data import writer

    def video(label):
        frames = np.full((4, 24, 32, 3), 60 * label, np.uint8)
        jpegs = [writer.encode_jpeg(f) for f in frames]
        return writer.make_sequence_example(jpegs, [label]).SerializeToString()

    writer.write_tfrecord(str(tmp_path / "train-00000-of-00001"), [video(0)] * 3)
    writer.write_tfrecord(str(tmp_path / "holdout-00000-of-00001"), [video(2)] * 3)
    cfg = configs.Config()
    configs.apply_overrides(cfg, [
        "data.dataset=charades", f"data.data_dir={tmp_path}", "data.num_classes=3",
        "data.num_frames=2", "data.crop_size=16", "data.min_resize=24", "data.multilabel=false",
        "data.train_split=holdout", "data.eval_pattern=train*",
    ])
    tasks.resolve_data(cfg)
    assert cfg.data.train_pattern == "holdout*"
    assert cfg.data.num_train_examples is None  # charades has no split 'holdout'
    tasks.validate(cfg, modes=("train_and_evaluate",))
    _, y = next(iter(tasks.make_task(cfg).train_dataset_fn(tf.distribute.InputContext(), 6)))
    np.testing.assert_array_equal(y.numpy().argmax(1), [2] * 6)
    # An explicit train_pattern wins; a TFDS slice cannot select TFRecord shards.
    cfg = configs.Config()
    configs.apply_overrides(cfg, ["data.dataset=charades", "data.train_pattern=train-*",
                                  "data.train_split=validation"])
    assert tasks.resolve_data(cfg).data.train_pattern == "train-*"
    configs.apply_overrides(cfg, ["data.train_split=train[:10%]"])
    with pytest.raises(ConfigError, match=r"data\.train_split='train\[:10%\]' slices a TFDS split"):
        tasks.validate(cfg, modes=("export",))
    synthetic = configs.Config()
    configs.apply_overrides(synthetic, ["data.dataset=synthetic_single", "data.train_split=validation",
                                        "model.name=vivit_b16"])
    with pytest.raises(ConfigError, match=r"data\.train_split='validation'.*one training split"):
        tasks.validate(synthetic)


def test_train_split_is_the_tfds_split_read(monkeypatch):
    seen = {}
    monkeypatch.setattr(tasks.data_lib, "image_dataset", lambda *a, **k: seen.update(k))
    cfg = configs.Config()
    configs.apply_overrides(cfg, ["data.dataset=imagenet2012", "data.train_pattern=none",
                                  "data.train_split=train[:99%]", "data.crop_size=224",
                                  "data.eval_crop_size=256", "data.min_resize=292"])
    tasks.resolve_data(cfg)
    tasks.validate(cfg, modes=("export",))
    task = tasks.make_task(cfg)
    task.train_dataset_fn(tf.distribute.InputContext(), 8)
    assert (seen["split"], seen["tfds_split"], seen["image_size"]) == ("train", "train[:99%]", 224)
    seen.clear()
    task.eval_dataset_fn(tf.distribute.InputContext(), 8)
    assert (seen["split"], seen.get("tfds_split"), seen["image_size"]) == ("validation", None, 256)
