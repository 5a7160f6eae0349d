"""`tl_keras.models.base`: the argument checks every family uses and the family-model
contract (config = constructor arguments, `defaults()`)."""

import pytest

from tl_keras import TL
from tl_keras.models import ViT, ViViT, X2Plus1D
from tl_keras.models.base import (
    Checks,
    FamilyModel,
    UnknownArgumentError,
    check_keywords,
    constructor_arguments,
)


@pytest.mark.parametrize(
    "method, value, message",
    [
        ("positive_int", 0, "`n` must be a positive integer, got 0."),
        ("positive_int", True, "`n` must be a positive integer, got True."),
        ("rate", 1.0, "`n` must be a float in [0, 1), got 1.0."),
        ("boolean", 1, "`n` must be a bool, got 1."),
        ("positive_number", 0, "`n` must be a number > 0, got 0."),
        ("pair", (1, 2, 3), "`n` must be an int or (h, w), got (1, 2, 3)."),
        ("int_tuple", (), "`n` must be a tuple of positive integers, got ()."),
    ],
)
def test_checks_name_the_owner_and_argument(method, value, message):
    with pytest.raises(ValueError) as err:
        getattr(Checks("Owner"), method)(value, "n")
    assert str(err.value) == f"Owner: {message}"


def test_checks_return_the_value():
    check = Checks("Owner")
    assert check.pair(3, "n") == (3, 3) and check.pair([2, 4], "n") == (2, 4)
    assert check.int_tuple([1, 2], "n") == (1, 2)
    assert check.one_of("a", "n", {"a": 1}) == "a"
    with pytest.raises(ValueError, match=r"unknown `n`='b'; known: \['a'\]"):
        check.one_of("b", "n", {"a": 1})


def test_every_family_is_a_family_model():
    for cls, family in ((ViT, "vit"), (ViViT, "vivit"), (X2Plus1D, "x2plus1d")):
        assert issubclass(cls, FamilyModel) and cls.family == family
        assert "name" not in cls.defaults() and "kwargs" not in cls.defaults()


def test_constructor_arguments():
    def init(self, a, b=2, name=None, **kwargs):
        return constructor_arguments(locals())

    assert init(None, 1, name="x", trainable=False) == {"a": 1, "b": 2}


def test_config_holds_the_arguments_as_given():
    model = ViT(image_size=[16, 16], patch_size=8, hidden_dim=8, num_layers=1, num_heads=1,
                mlp_dim=8, num_classes=2, tokenlearner=TL(2, at=0))
    config = model.get_config()
    assert config["image_size"] == (16, 16)  # lists become tuples
    assert config["tokenlearner"] == TL(2, at=0).to_config()
    assert config["name"] == "vit" and config["trainable"] is True


def test_check_keywords_names_the_key_and_the_closest_valid_names():
    valid = {"num_classes": 1, "num_layers": 2, "image_size": 3}
    check_keywords("Owner", {"trainable": False, "name": "m", "weights": None}, valid)
    with pytest.raises(UnknownArgumentError) as err:
        check_keywords("Owner", {"num_layer": 4}, valid)
    assert str(err.value) == (
        "Owner: unknown argument `num_layer`; did you mean `num_layers` or `num_classes`?")
    assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)
    with pytest.raises(UnknownArgumentError, match=r"`zzz`; valid arguments: image_size, "
                                                   r"name, num_classes, num_layers, trainable, "
                                                   r"weights, weights_kernel_init\."):
        check_keywords("Owner", {"zzz": 1}, valid)
    with pytest.raises(FileNotFoundError, match=r"Owner: `weights`: no such file 'w\.h5'"):
        check_keywords("Owner", {"weights": "w.h5"}, valid)
    with pytest.raises(ValueError, match=r"Owner: `weights_kernel_init` must be one of "
                                         r"\('central_frame', 'average'\), got 'mean'"):
        check_keywords("Owner", {"weights_kernel_init": "mean"}, valid)
    check_keywords("Owner", {"weights": {"a": 1}, "weights_kernel_init": "average"}, valid)
    from tl_keras.models.base import WEIGHTS_KERNEL_INITS
    from tl_keras.models.vivit.inflate import KERNEL_INITS

    assert WEIGHTS_KERNEL_INITS == KERNEL_INITS  # checked before building = what inflates


@pytest.mark.parametrize("cls", [ViT, ViViT, X2Plus1D])
def test_constructors_reject_unknown_keywords_before_building(cls, monkeypatch):
    monkeypatch.setattr(cls, "build_graph", classmethod(lambda *a: pytest.fail("built")))
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: unknown argument `num_class`; "
                                        "did you mean `num_classes`"):
        cls(num_class=10)
