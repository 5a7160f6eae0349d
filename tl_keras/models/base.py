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

Every model also takes `weights=` (a path, a model or a checkpoint dict to start from)
and `weights_kernel_init=` (`"central_frame"` / `"average"`: how a ViViT inflates a 2-D
patch kernel); they are not part of `get_config()`. The model is built, then
`tl_keras.convert.load_pretrained` loads the weights; its report (what was loaded,
adapted, left as initialised, skipped) is `model.weights_report` (None without
`weights`).
"""

import dataclasses
import difflib
import inspect
import os

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
# Keywords of the weights to start from (not model arguments: not in `get_config()`).
WEIGHTS_KEYWORDS = ("weights", "weights_kernel_init")
WEIGHTS_KERNEL_INITS = ("central_frame", "average")  # = models.vivit.inflate.KERNEL_INITS


def check_keywords(owner, kwargs, valid):
    """Raises `UnknownArgumentError` for a key of `kwargs` that is not in `valid` (the
    constructor's arguments, `name`, `BASE_KEYWORDS` and `WEIGHTS_KEYWORDS`), naming it
    and the closest valid names. A `weights` path that does not exist raises
    FileNotFoundError and a wrong `weights_kernel_init` ValueError, both before
    anything is built."""
    weights = kwargs.get("weights", None)
    if (isinstance(weights, (str, os.PathLike)) and "://" not in os.fspath(weights)
            and not os.path.exists(weights)):  # a remote (gs://) path is checked on reading
        raise FileNotFoundError(f"{owner}: `weights`: no such file {os.fspath(weights)!r}.")
    init = kwargs.get("weights_kernel_init", "central_frame")
    if init not in WEIGHTS_KERNEL_INITS:
        raise ValueError(f"{owner}: `weights_kernel_init` must be one of "
                         f"{WEIGHTS_KERNEL_INITS}, got {init!r}.")
    valid = sorted(set(valid) | {"name", *BASE_KEYWORDS, *WEIGHTS_KEYWORDS})
    for key in kwargs:
        if key in valid:
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
        weights = kwargs.pop("weights", None)  # None: no weights
        kernel_init = kwargs.pop("weights_kernel_init", "central_frame")
        resolved = self.resolve(**arguments)
        inputs, outputs = self.build_graph(resolved)
        super().__init__(inputs=inputs, outputs=outputs, name=name or self.family, **kwargs)
        self._arguments = _serialisable(arguments)
        self.resolved = resolved
        report = None
        if weights is not None:
            from tl_keras.convert import load_pretrained  # convert imports the models

            report = load_pretrained(self, weights, kernel_init=kernel_init)
        # Past Keras' attribute tracking: the report is a plain dict, not model state.
        object.__setattr__(self, "_weights_report", report)

    @property
    def weights_report(self):
        """What `weights=` loaded (`tl_keras.convert.WeightsReport`: `format`, `loaded`,
        `adapted`, `initialised`, `skipped`, `notes`, `source`; `.summary()`), or None
        when the model was built without `weights`."""
        return self.__dict__.get("_weights_report")

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
