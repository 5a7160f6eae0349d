"""Model registry (timm-style): `register_model`, `create_model`, `list_models`,
`get_model_spec`.

An entrypoint is a function `name(**kwargs) -> keras.Model` whose defaults live in
`tl_keras.models.specs.MODEL_SPECS[name]`; user keyword arguments always win.
"""

import copy
import fnmatch
import importlib
import importlib.util

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
    _import_models()
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
    """The model class (`ViT`, `ViViT`) that builds `name`."""
    _import_models()
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
    the Keras model name)."""
    return model_class(model_name)(**model_arguments(model_name, **kwargs))


def list_models(pattern="*"):
    """Sorted registered names matching an fnmatch pattern, e.g. `list_models("vit_l*")`."""
    _import_models()
    return sorted(fnmatch.filter(_ENTRYPOINTS, pattern))


# Modules whose entrypoints register themselves on import (optional ones may be absent).
_MODEL_MODULES = ("vit", "vivit", "x2plus1d")


def _import_models():
    for module in _MODEL_MODULES:
        name = f"tl_keras.models.{module}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
