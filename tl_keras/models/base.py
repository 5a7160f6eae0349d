"""The one argument-resolving base of every model family (ViT, ViViT, X(2+1)D).

A family is a `FamilyModel` subclass with

* `family`: its name in `MODEL_SPECS` (`"vit"`, `"vivit"`, `"x2plus1d"`);
* `resolve(**arguments)`: checks every constructor argument (ValueError naming it) and
  returns a frozen `Resolved` dataclass with the derived shapes; it creates no weight,
  so `tl_keras.flops` counts from it without building anything;
* `build_graph(resolved)`: the functional graph, `(inputs, outputs)`.

The constructor lists the arguments (their defaults read from the size table,
`tl_keras.models.specs.MODEL_SPECS`) and passes them on unchanged:
`super().__init__(constructor_arguments(locals()), name=name, **kwargs)`.
`get_config()` is exactly those arguments, so `.keras` files reload through
`from_config`. `registry.resolve_model(name, **kwargs)` resolves a registered name the
same way the constructor would.

Keyword arguments are checked before anything is built: an unknown one
(`vit_s16(num_class=10)`) raises `UnknownArgumentError` naming it with the closest
valid names (as `tl_keras.configs` does for config keys), so a typo never builds the
default model. The only `keras.Model` keyword passed on is `trainable` (the functional
`keras.Model` drops every other one silently, `dtype` included).
"""

import dataclasses
import difflib
import inspect

import keras

from tl_keras.layers._utils import check_positive_int, check_rate
from tl_keras.models.specs import TL


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Base of a family's validated arguments plus derived shapes."""

    family: str


class Checks:
    """Argument checks of one model class; every error names the class and argument."""

    def __init__(self, owner):
        self.owner = owner

    def fail(self, message):
        raise ValueError(f"{self.owner}: {message}")

    def positive_int(self, value, name):
        check_positive_int(value, name, self.owner)
        return value

    def rate(self, value, name):
        """A dropout-like rate in [0, 1)."""
        check_rate(value, name, self.owner)
        return value

    def boolean(self, value, name):
        if not isinstance(value, bool):
            self.fail(f"`{name}` must be a bool, got {value!r}.")
        return value

    def positive_number(self, value, name):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(f"`{name}` must be a number > 0, got {value!r}.")
        return value

    def pair(self, value, name):
        """An int or a `(h, w)` pair of positive ints -> `(h, w)`."""
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                self.fail(f"`{name}` must be an int or (h, w), got {value!r}.")
            return tuple(self.positive_int(v, name) for v in value)
        self.positive_int(value, name)
        return (value, value)

    def int_tuple(self, value, name):
        """A non-empty tuple of positive ints."""
        if not isinstance(value, (tuple, list)) or not value:
            self.fail(f"`{name}` must be a tuple of positive integers, got {value!r}.")
        return tuple(self.positive_int(v, name) for v in value)

    def one_of(self, value, name, choices):
        if value not in choices:
            self.fail(f"unknown `{name}`={value!r}; known: {sorted(choices)}.")
        return value


class UnknownArgumentError(TypeError, ValueError):
    """An unknown or unsupported keyword argument of a model constructor or entrypoint
    (a `TypeError`, as Python's own, and a `ValueError`, as every other argument error
    here)."""


# `keras.Model` keywords a family model passes on (the functional model honours only
# `trainable`); `name` is a constructor argument of its own.
BASE_KEYWORDS = ("trainable",)


def check_keywords(owner, kwargs, valid):
    """Raises `UnknownArgumentError` for a key of `kwargs` that is not in `valid` (the
    constructor's arguments, `name` and `BASE_KEYWORDS`), naming it and the closest valid
    names. `weights=` (pretrained weights by name or path) is not supported yet; `None`
    is accepted as "no weights"."""
    if kwargs.get("weights", None) is not None:
        raise UnknownArgumentError(
            f"{owner}: `weights={kwargs['weights']!r}` is not supported yet; build the "
            "model, then load weights with `model.load_weights(path)` (a .weights.h5 file) "
            "or `tl_keras.convert` (Flax / Scenic / JAX ViT checkpoints)."
        )
    valid = sorted(set(valid) | {"name", *BASE_KEYWORDS})
    for key in kwargs:
        if key == "weights" or key in valid:
            continue
        if key == "dtype":
            raise UnknownArgumentError(
                f"{owner}: `dtype` is not a model argument (Keras would ignore it); set a "
                "policy before building, e.g. `keras.config.set_dtype_policy"
                "('mixed_float16')`."
            )
        close = difflib.get_close_matches(key, valid, n=3)
        if close:
            hint = f"did you mean {' or '.join(f'`{c}`' for c in close)}?"
        else:
            hint = f"valid arguments: {', '.join(valid)}."
        raise UnknownArgumentError(f"{owner}: unknown argument `{key}`; {hint}")


def constructor_arguments(frame_locals):
    """The arguments of a family constructor from its `locals()` (taken first thing in
    `__init__`), without `self`, `name` and the base `kwargs`."""
    return {
        k: v for k, v in frame_locals.items() if k not in ("self", "name", "kwargs", "__class__")
    }


def _serialisable(arguments):
    """`TL` -> its config dict, lists -> tuples (what `get_config()` holds)."""
    out = {}
    for key, value in arguments.items():
        if isinstance(value, TL):
            value = value.to_config()
        elif isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


class FamilyModel(keras.Model):
    """Base of the family model classes: a Keras functional model built from validated
    arguments, whose `get_config()` is exactly its constructor arguments."""

    family = None

    def __init__(self, arguments, name=None, **kwargs):
        check_keywords(type(self).__name__, kwargs, arguments)
        kwargs.pop("weights", None)  # None: no weights
        resolved = self.resolve(**arguments)
        inputs, outputs = self.build_graph(resolved)
        super().__init__(inputs=inputs, outputs=outputs, name=name or self.family, **kwargs)
        self._arguments = _serialisable(arguments)
        self.resolved = resolved

    @classmethod
    def resolve(cls, **arguments):
        """Checked arguments and derived shapes (a `Resolved`); builds nothing."""
        raise NotImplementedError

    @classmethod
    def build_graph(cls, resolved):
        """`(inputs, outputs)` of the functional model for `resolved` arguments."""
        raise NotImplementedError

    @classmethod
    def defaults(cls):
        """`{argument: default}` of the constructor (without `name`)."""
        return {
            k: p.default
            for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty and k != "name"
        }

    def get_config(self):
        return {**self._arguments, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
