"""`tl_keras.models.specs`: the size table is the one source of the families' size
defaults; the `TL` placement spec."""

import pytest

from tl_keras import TL
from tl_keras.models import MODEL_SPECS, ViT, ViViT, X2Plus1D

# The constructor whose defaults each entry gives.
DEFAULT_ENTRY = {ViT: "vit_b16", ViViT: "vivit_b16", X2Plus1D: "x2plus1d_m"}


@pytest.mark.parametrize("cls", list(DEFAULT_ENTRY), ids=lambda c: c.__name__)
def test_constructor_size_defaults_are_the_table(cls):
    spec = dict(MODEL_SPECS[DEFAULT_ENTRY[cls]])
    assert spec.pop("family") == cls.family
    defaults = cls.defaults()
    assert {k: defaults[k] for k in spec} == spec


def test_tl_spec():
    spec = TL.parse("8@6+fuser")
    assert spec == TL(8, 6, fuser=True) and str(spec) == "8@6+fuser"
    assert TL.parse("16@12") == TL(16, 12)
    assert TL.parse("8@6+v1").version == "1"
    assert TL.from_config(spec.to_config()) == spec
    with pytest.raises(Exception):
        spec.at = 3  # frozen
    for bad in (dict(num_tokens=0, at=1), dict(num_tokens=2, at=-1),
                dict(num_tokens=2, at=1, version="2")):
        with pytest.raises(ValueError):
            TL(**bad)


def test_tl_fuser_is_false_or_a_fuser_name():
    """Fig. 7 fusers: `fuser=True` keeps meaning TokenFuser; the alternatives by name,
    in the string form too; anything else (or unpool without maps) is an error."""
    assert TL(8, 6, fuser=True) == TL(8, 6, fuser="tokenfuser")
    assert TL(8, 6, fuser=True).fuser == "tokenfuser" and TL(8, 6).fuser is False
    assert TL.from_config({"num_tokens": 8, "at": 6, "fuser": True, "version": "1.1"}) == (
        TL(8, 6, fuser="tokenfuser"))  # a config saved before the fuser names
    for fuser in ("unpool", "reprojection"):
        spec = TL(8, 6, fuser=fuser, version="1")
        assert str(spec) == f"8@6+{fuser}+v1" and TL.parse(str(spec)) == spec
        assert TL.from_config(spec.to_config()) == spec
    assert TL.parse("8@6+tokenfuser") == TL.parse("8@6+fuser")
    assert TL.parse("8@6+pool+unpool") == TL(8, 6, fuser="unpool", version="pool")
    for bad in ("concat", 1, 0, None, ["unpool"]):
        with pytest.raises(ValueError, match="fuser"):
            TL(8, 6, fuser=bad)
    with pytest.raises(ValueError, match="unpool.*pool_mlp"):
        TL(8, 6, fuser="unpool", version="pool_mlp")
    with pytest.raises(ValueError, match="unknown option"):
        TL.parse("8@6+concat")


def test_tl_without_at_is_for_x2plus1d_and_a_clear_error_for_a_transformer():
    assert TL.parse("8") == TL(8) and TL(8).at is None
    assert TL.parse("8+v1") == TL(8, version="1") and str(TL(8, version="1")) == "8+v1"
    assert TL.from_config(TL(8).to_config()) == TL(8)
    with pytest.raises(ValueError, match=r"needs `at`.*TL\(8, at="):
        ViT(image_size=32, patch_size=16, hidden_dim=16, num_layers=2, num_heads=2,
            mlp_dim=32, num_classes=3, tokenlearner=TL(8))
