"""Model registry (timm-style): `register_model`, `create_model`, `list_models`,
`get_model_spec`, and `resolve_model` (a name's checked arguments, nothing built).

An entrypoint is a function `name(**kwargs) -> keras.Model` whose defaults live in
`tl_keras.models.specs.MODEL_SPECS[name]`; user keyword arguments always win. The
families register themselves when `tl_keras.models` is imported (its `__init__` imports
every family package), which any import of a `tl_keras.models` module does first.
"""

import copy
import fnmatch

from tl_keras.models.base import BASE_KEYWORDS, WEIGHTS_KEYWORDS, check_keywords
from tl_keras.models.specs import MODEL_SPECS

_ENTRYPOINTS = {}
_FAMILIES = {}  # family name in MODEL_SPECS -> model class


def register_family(name):
    """Class decorator: the model class that builds specs of `family=name`."""

    def wrap(cls):
        _FAMILIES[name] = cls
        return cls

    return wrap


def register_model(fn):
    """Decorator: registers an entrypoint under its function name (which must be in
    `MODEL_SPECS`)."""
    name = fn.__name__
    if name not in MODEL_SPECS:
        raise ValueError(f"register_model: {name!r} has no entry in MODEL_SPECS.")
    _ENTRYPOINTS[name] = fn
    return fn


def _check_name(name):
    if name not in MODEL_SPECS:
        close = fnmatch.filter(sorted(MODEL_SPECS), f"*{str(name).split('_')[-1]}*")
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}. Registered: {sorted(MODEL_SPECS)}.{hint}"
        )


def get_model_spec(name):
    """A copy of the size-table entry of `name` (includes its `family`)."""
    _check_name(name)
    return copy.deepcopy(MODEL_SPECS[name])


def model_class(name):
    """The model class (`ViT`, `ViViT`, `X2Plus1D`) that builds `name`."""
    return _FAMILIES[get_model_spec(name)["family"]]


def model_arguments(model_name, /, **kwargs):
    """The table entry of `model_name` with `kwargs` on top (kwargs win), without
    `family`; the Keras model `name` defaults to `model_name`."""
    spec = get_model_spec(model_name)
    spec.pop("family")
    spec.update(kwargs)
    spec.setdefault("name", model_name)
    return spec


def create_model(model_name, /, **kwargs):
    """Builds a registered model: `create_model("vit_b16", num_classes=10,
    tokenlearner=TL(8, at=6))`. Keyword arguments override the size table (`name=` sets
    the Keras model name); an unknown one raises `UnknownArgumentError` naming it and the
    closest valid names, before any layer is built.

    `weights=PATH_OR_MODEL` starts the model from pretrained weights (any ViT layout of
    `tl_keras.convert.load_pretrained`, a tl_keras `.keras` / `.weights.h5` file or
    model; `weights_kernel_init="central_frame"` or `"average"` inflates a 2-D patch
    kernel for a ViViT); the report is `model.weights_report`."""
    cls = model_class(model_name)
    _check_keywords(model_name, cls, kwargs)
    return cls(**model_arguments(model_name, **kwargs))


def _check_keywords(model_name, cls, kwargs):
    """`check_keywords` of the keywords of `model_name` that its class does not list."""
    defaults = cls.defaults()
    check_keywords(f"{model_name} ({cls.__name__})",
                   {k: v for k, v in kwargs.items() if k not in defaults}, defaults)


def list_models(pattern="*"):
    """Sorted registered names matching an fnmatch pattern, e.g. `list_models("vit_l*")`."""
    return sorted(fnmatch.filter(_ENTRYPOINTS, pattern))


def resolve_model(model_name, /, **kwargs):
    """The checked arguments (the family's `Resolved`) of `create_model(model_name,
    **kwargs)`, without building anything: constructor defaults, then the size table,
    then `kwargs`. `UnknownArgumentError` (a TypeError and ValueError) for an argument
    the model class does not take, as the constructor."""
    cls = model_class(model_name)
    _check_keywords(model_name, cls, kwargs)
    arguments = model_arguments(model_name, **kwargs)
    defaults = cls.defaults()
    for key in ("name", *WEIGHTS_KEYWORDS, *BASE_KEYWORDS):
        arguments.pop(key, None)
    return cls.resolve(**{**defaults, **arguments})
