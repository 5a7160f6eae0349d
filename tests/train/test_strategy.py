"""Strategy choice from flags (no real TPU is ever contacted) and the experiments' flags."""

import importlib
import json

import pytest

from tl_keras.train.strategy import choose_strategy_kind, tf_config_num_workers



def _tf_config(workers, chief=0):
    cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:1999"]
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(strategy="auto"), "one_device"),
        (dict(strategy="auto", num_gpus=1), "one_device"),
        (dict(strategy="auto", num_gpus=4), "mirrored"),
        (dict(strategy="auto", tpu="my-tpu"), "tpu"),
        (dict(strategy="auto", tpu="my-tpu", num_gpus=8, tf_config=_tf_config(2)), "tpu"),
        (dict(strategy="auto", tf_config=_tf_config(2)), "multi_worker"),
        (dict(strategy="auto", num_gpus=4, tf_config=_tf_config(3)), "multi_worker"),
        (dict(strategy="auto", tf_config=_tf_config(1, chief=1)), "multi_worker"),
        (dict(strategy="auto", tf_config=_tf_config(1)), "one_device"),
        (dict(strategy="mirrored"), "mirrored"),
        (dict(strategy="one_device", num_gpus=8), "one_device"),
        (dict(strategy="multi_worker"), "multi_worker"),
        (dict(strategy="tpu", tpu="local"), "tpu"),
    ],
)
def test_choose_strategy_kind(kwargs, expected):
    kwargs.setdefault("tf_config", "")
    assert choose_strategy_kind(**kwargs) == expected


def test_choose_strategy_kind_errors():
    with pytest.raises(ValueError, match="--strategy='bogus'"):
        choose_strategy_kind("bogus", tf_config="")
    with pytest.raises(ValueError, match="needs --tpu"):
        choose_strategy_kind("tpu", tf_config="")
    with pytest.raises(ValueError, match="--tpu='x' was given with --strategy='mirrored'"):
        choose_strategy_kind("mirrored", tpu="x", tf_config="")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        tf_config_num_workers("{not json")


def test_tf_config_from_environment(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _tf_config(2, chief=1))
    assert tf_config_num_workers() == 3
    assert choose_strategy_kind("auto") == "multi_worker"
    monkeypatch.delenv("TF_CONFIG")
    assert tf_config_num_workers() == 0
    assert choose_strategy_kind("auto") == "one_device"


def _load(name):
    """`experiments/<name>.py`: the package `experiments`, installed beside tl_keras."""
    return importlib.import_module(f"experiments.{name}")


def test_flags_parse_tpu_strategy_and_repeatable_set():
    common = _load("common")
    parser = common.build_parser("x")
    args = parser.parse_args([
        "--tpu=my-tpu", "--strategy=auto", "--data_dir=/d", "--workdir=/w", "--mode=evaluate",
        "--set", "train.num_steps=30", "optim.base_lr=0.1", "--set", "model.tokenlearner.at=3",
    ])
    assert (args.tpu, args.strategy, args.data_dir, args.workdir, args.mode) == (
        "my-tpu", "auto", "/d", "/w", "evaluate")
    kinetics = _load("kinetics")
    cfg = common.make_config(kinetics.get_config, args, {"dataset": "kinetics600"})
    assert cfg.train.num_steps == 30 and cfg.optim.base_lr == 0.1
    assert cfg.model.tokenlearner.at == 3
    assert cfg.data.data_dir == "/d" and cfg.data.dataset == "kinetics600"
    with pytest.raises(SystemExit):
        parser.parse_args(["--strategy=horovod"])


@pytest.mark.parametrize("name", ["imagenet", "kinetics", "charades", "avid"])
def test_experiment_configs_are_the_papers(name):
    module = _load(name)
    cfg = module.get_config()
    local = module.get_config(runlocal=True)
    assert local.train.num_steps and local.train.num_steps <= 2000
    if local.model.name.startswith("x2plus1d"):  # the TokenLearner sits in the res5 module
        assert local.model.module == "conv2d_tokenlearner" and local.model.tokenlearner.num_tokens
    else:
        assert local.model.tokenlearner.at is not None
    if name == "kinetics":
        assert (cfg.model.name, cfg.optim.name, cfg.optim.base_lr, cfg.train.num_epochs) == (
            "vivit_l16", "momentum", 0.05, 30)
        assert (cfg.data.num_frames, cfg.eval.num_clips, cfg.eval.num_crops) == (32, 4, 3)
        assert module.get_config(dataset="kinetics600").data.dataset == "kinetics600"
    if name == "charades":
        assert cfg.model.name == "x2plus1d_m" and cfg.model.module == "conv2d_tokenlearner"
        assert cfg.optim.schedule == "cosine" and cfg.train.loss == "sigmoid"
        assert cfg.optim.base_lr * cfg.train.batch_size / cfg.optim.lr_reference_batch == pytest.approx(51.2)
        assert (cfg.train.num_steps, cfg.data.num_frames, cfg.train.label_smoothing) == (100_000, 64, 0.0)
        # A.3: 64-frame segments, merged; §6.1: 224 px training, 256 px testing.
        assert (cfg.data.eval_split, cfg.eval.segment_merge, cfg.eval.num_clips) == (
            "segments", "max", None)
        assert (cfg.data.crop_size, cfg.data.eval_crop_size, cfg.data.min_resize) == (224, 256, 256)
        # --runlocal exercises both: segments, and a larger evaluation size than training.
        assert local.data.eval_split == "segments"
        assert local.data.eval_crop_size > local.data.crop_size
    if name == "avid":
        assert cfg.model.name == "x2plus1d_m"
        assert cfg.train.label_smoothing == 0.2 and cfg.optim.base_lr == 0.025
        assert cfg.optim.lr_reference_batch == 8
    if name == "imagenet":
        assert cfg.optim.name == "adamw" and cfg.optim.schedule == "cosine"  # ViT Table 3
        assert cfg.data.crop_size == 384 and cfg.optim.warmup_steps > 0


@pytest.mark.parametrize("name", ["kinetics", "charades", "avid"])
def test_experiment_default_configs_validate_and_build(name, tmp_path):
    """The paper configs pass validation with data present, and their model arguments are
    accepted (built here at a small frame count / size to keep it quick)."""
    from tl_keras import configs
    from tl_keras.train import tasks

    for shard in ("train-00000-of-00001", "validation-00000-of-00001", "test-00000-of-00001"):
        (tmp_path / shard).write_bytes(b"")
    cfg = _load(name).get_config()
    cfg.data.data_dir = str(tmp_path)
    tasks.resolve_data(cfg)
    tasks.validate(cfg, num_replicas=8, modes=("train_and_evaluate",))
    kwargs = tasks.model_kwargs(cfg)
    assert kwargs["num_classes"] == {"kinetics": 400, "charades": 157, "avid": 887}[name]
    assert kwargs["num_frames"] == cfg.data.num_frames and kwargs["image_size"] == 224
    assert "tokenlearner" in kwargs
    configs.apply_overrides(cfg, ["data.num_frames=4", "data.crop_size=64", "data.min_resize=64"])
    if name == "kinetics":
        configs.apply_overrides(cfg, ["model.num_layers=2", "model.hidden_dim=64",
                                      "model.num_heads=2", "model.mlp_dim=64",
                                      "model.tokenlearner.at=1"])
    model = tasks.build_model(cfg)
    assert model.outputs[0].shape[-1] == kwargs["num_classes"]
    assert tuple(model.inputs[0].shape[1:]) == (4, 64, 64, 3)
