"""tl_keras.configs: typed `key=value` overrides, errors that list the valid keys."""

import json

import pytest

from tl_keras import configs
from tl_keras.configs import ConfigError


def test_overrides_are_parsed_by_type():
    cfg = configs.Config()
    configs.apply_overrides(
        cfg,
        [
            "train.num_steps=30",
            "train.batch_size=1_024",
            "optim.base_lr=1e-3",
            "optim.grad_clip_norm=none",
            "train.deterministic=true",
            "train.jit_compile=false",
            "model.tokenlearner.at=6",
            "model.tokenlearner.version=1",
            "data.data_dir=gs://bucket/k400",
            "eval.average=probabilities",
            "train.num_epochs=2",
        ],
    )
    assert cfg.train.num_steps == 30 and isinstance(cfg.train.num_steps, int)
    assert cfg.train.batch_size == 1024
    assert cfg.optim.base_lr == pytest.approx(1e-3) and isinstance(cfg.optim.base_lr, float)
    assert cfg.optim.grad_clip_norm is None
    assert cfg.train.deterministic is True
    assert cfg.train.jit_compile is False
    assert cfg.model.tokenlearner.at == 6
    assert cfg.model.tokenlearner.version == "1"
    assert cfg.data.data_dir == "gs://bucket/k400"
    assert cfg.eval.average == "probabilities"
    assert cfg.train.num_epochs == 2.0 and isinstance(cfg.train.num_epochs, float)


def test_unknown_key_lists_valid_keys_and_suggests():
    cfg = configs.Config()
    with pytest.raises(ConfigError) as e:
        configs.apply_overrides(cfg, ["train.num_step=30"])
    msg = str(e.value)
    assert "train.num_step" in msg
    assert "Did you mean 'train.num_steps'" in msg
    assert "Valid keys" in msg and "optim.base_lr (float)" in msg
    # Every leaf is listed.
    for key in configs.flatten(cfg):
        assert f"  {key} (" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.num_steps=abc", "expects int"),
        ("train.num_steps=1.5", "expects int"),
        ("optim.base_lr=fast", "expects float"),
        ("train.deterministic=maybe", "expects bool"),
        ("eval.average=median", "one of 'logits', 'probabilities'"),
        ("optim.name=lamb", "one of 'momentum'"),
        ("train.batch_size=none", "expects int"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(override, fragment):
    cfg = configs.Config()
    before = configs.flatten(cfg)
    with pytest.raises(ConfigError) as e:
        configs.apply_overrides(cfg, [override])
    key = override.split("=")[0]
    assert repr(key) in str(e.value)
    assert fragment in str(e.value)
    assert "Valid keys" in str(e.value)
    assert configs.flatten(cfg) == before  # nothing changed


def test_section_and_malformed_override_are_errors():
    cfg = configs.Config()
    with pytest.raises(ConfigError, match="Unknown config key 'train'"):
        configs.apply_overrides(cfg, ["train=3"])
    with pytest.raises(ConfigError, match="key=value"):
        configs.apply_overrides(cfg, ["train.num_steps"])


def test_json_round_trip_and_strict_from_dict():
    cfg = configs.Config()
    configs.apply_overrides(cfg, ["model.tokenlearner.at=4", "optim.warmup_steps=7"])
    data = json.loads(configs.to_json(cfg))
    again = configs.from_dict(configs.Config, data)
    assert configs.flatten(again) == configs.flatten(cfg)
    assert configs.diff(cfg, again) == {}
    data["train"]["bogus"] = 1
    with pytest.raises(ConfigError, match="train.bogus"):
        configs.from_dict(configs.Config, data)


def test_diff_lists_changed_keys():
    a, b = configs.Config(), configs.Config()
    b.train.num_steps = 5
    assert configs.diff(a, b) == {"train.num_steps": (None, 5)}
