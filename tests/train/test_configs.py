"""tl_keras.configs: typed `key=value` overrides, numeric ranges declared beside the fields,
errors that name the key and suggest the closest valid keys."""

import dataclasses
import importlib
import json
import math

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


def test_unknown_key_suggests_the_closest_keys_only():
    cfg = configs.Config()
    with pytest.raises(ConfigError) as e:
        configs.apply_overrides(cfg, ["train.num_step=30"])
    msg = str(e.value)
    assert msg.startswith("Unknown config key 'train.num_step'.")
    assert "Did you mean 'train.num_steps' (int or none)" in msg
    assert "--print_config" in msg and "valid_keys" in msg
    assert "\n" not in msg  # one line, not every key
    listed = [k for k in configs.flatten(cfg) if f"'{k}'" in msg]
    assert 1 <= len(listed) <= 3, listed
    # By the last part when the section is right: optim.lr -> optim.base_lr / optim.end_lr.
    with pytest.raises(ConfigError, match="'optim.base_lr' \\(float\\)"):
        configs.set_value(cfg, "optim.lr", "0.1")
    # Nothing close: still one line with where to find every key.
    with pytest.raises(ConfigError) as e:
        configs.set_value(cfg, "zzz", "1")
    assert "Did you mean" not in str(e.value) and "--print_config" in str(e.value)
    # valid_keys lists every leaf, for --print_config.
    assert {line.split(" ")[0] for line in configs.valid_keys(cfg)} == set(configs.flatten(cfg))


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
    assert "\n" not in str(e.value)
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


# --------------------------------------------------------------------------------------
# Numeric ranges (declared next to the fields with `configs._num`).
# --------------------------------------------------------------------------------------


def _constrained(cfg, prefix=""):
    """`{key: Range}` of every leaf that declares a range, read from the field metadata."""
    out = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            out.update(_constrained(value, prefix + field.name + "."))
        elif "range" in field.metadata:
            out[prefix + field.name] = field.metadata["range"]
    return out


CONSTRAINED = _constrained(configs.Config())
TYPES = configs._leaf_types(configs.Config())


def _bad_values(key):
    """Values outside the key's range: just past each bound, and nan / inf for floats."""
    allowed, tp = CONSTRAINED[key], str(TYPES[key])
    is_float = "float" in tp
    step = 1e-9 if is_float else 1
    bad = []
    if allowed.low is not None:
        bad.append(allowed.low if allowed.low_open else allowed.low - step)
    if allowed.high is not None:
        bad.append(allowed.high if allowed.high_open else allowed.high + step)
    if is_float:
        bad += [math.nan, math.inf, -math.inf]
    return [repr(v) if not isinstance(v, float) or math.isfinite(v) else str(v) for v in bad]


def test_the_issue_examples_are_configuration_errors():
    for override in ["optim.base_lr=nan", "train.batch_size=-8", "optim.base_lr=-0.1",
                     "train.num_steps=-1", "optim.grad_clip_norm=-1", "optim.warmup_steps=-5",
                     "eval.batch_size=0"]:
        key = override.split("=")[0]
        with pytest.raises(ConfigError, match=f"^Config key '{key}' must be "):
            configs.apply_overrides(configs.Config(), [override])


def test_every_float_is_checked_for_finiteness():
    floats = [k for k, tp in TYPES.items() if "float" in str(tp)]
    assert "eval.wait_timeout_s" in floats and "optim.base_lr" in floats
    for key in floats:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            configs.set_value(configs.Config(), key, "nan")
    # inf is > 0: the message says what is wrong with it.
    for value in ("inf", "nan"):
        with pytest.raises(ConfigError, match=rf"^Config key 'optim.base_lr' must be > 0 and "
                                              rf"finite, got {value}\.$"):
            configs.set_value(configs.Config(), "optim.base_lr", value)


@pytest.mark.parametrize("key", sorted(CONSTRAINED))
def test_every_constrained_key_rejects_out_of_range_values(key):
    bad = _bad_values(key)
    assert bad, f"{key}: a range with no bound"
    for value in bad:
        cfg = configs.Config()
        before = configs.flatten(cfg)
        with pytest.raises(ConfigError) as e:
            configs.set_value(cfg, key, value)
        msg = str(e.value)
        assert msg.startswith(f"Config key {key!r} must be {CONSTRAINED[key]}"), msg
        assert configs.flatten(cfg) == before  # nothing changed
        # The same value from a config.json (from_dict) is refused too.
        data = value
        for part in reversed(key.split(".")):
            data = {part: data}
        with pytest.raises(ConfigError, match=repr(key)):
            configs.from_dict(configs.Config, data)
    # A value at the closed bound (or just inside an open one) is accepted.
    allowed = CONSTRAINED[key]
    inside = allowed.low if allowed.low is not None else allowed.high
    if allowed.low is not None and allowed.low_open:
        inside = allowed.low + (1e-9 if "float" in str(TYPES[key]) else 1)
    elif allowed.low is None and allowed.high_open:
        inside = allowed.high - 1e-9
    assert configs.set_value(configs.Config(), key, str(inside)) == pytest.approx(inside)


def test_optional_constrained_keys_still_accept_none():
    cfg = configs.Config()
    configs.apply_overrides(cfg, ["optim.grad_clip_norm=none", "optim.warmup_steps=none",
                                  "train.num_steps=none", "model.tokenlearner.at=none"])
    assert cfg.optim.grad_clip_norm is None and cfg.model.tokenlearner.at is None


def test_validate_checks_values_set_in_python():
    cfg = configs.Config()
    assert configs.validate(cfg) is cfg
    cfg.optim.grad_clip_norm = -1.0
    with pytest.raises(ConfigError, match="'optim.grad_clip_norm' must be > 0, got -1.0"):
        configs.validate(cfg)
    cfg.optim.grad_clip_norm = None
    cfg.model.tokenlearner.num_tokens = 0
    with pytest.raises(ConfigError, match="'model.tokenlearner.num_tokens'"):
        configs.validate(cfg)


@pytest.mark.parametrize("name", ["imagenet", "kinetics", "charades", "avid"])
@pytest.mark.parametrize("runlocal", [False, True])
def test_every_experiment_config_is_in_range(name, runlocal):
    module = importlib.import_module(f"experiments.{name}")
    configs.validate(module.get_config(runlocal=runlocal))
