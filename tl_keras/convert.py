"""Loading parameters of the reference JAX/Flax implementation (Scenic) into tl_keras.

The reference stores parameters as a nested dict (a Flax `params` tree) whose leaves
are arrays. Each tl_keras layer knows the reference names of its variables
(`flax_variable_map`); `load_flax_params` checks the whole tree against that map
before it assigns anything, so a failed load changes no weight.

Flax and Keras use the same layouts: Dense kernels `[in, out]`, Conv kernels
`[kh, kw, in, out]`, LayerNorm `scale`/`bias` = Keras `gamma`/`beta`.
"""

import numpy as np

from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.vector_attention import VectorAttention

_MAPPERS = {}


def register_flax_mapping(cls):
    """Decorator: `fn(layer) -> {flax_path: keras.Variable}` for layers of type `cls`."""

    def wrap(fn):
        _MAPPERS[cls] = fn
        return fn

    return wrap


def flatten_params(tree, prefix=""):
    """`{"a": {"b": x}}` -> `{"a/b": x}`; already-flat `"a/b"` keys pass through."""
    flat = {}
    for key, value in dict(tree).items():
        path = f"{prefix}{key}"
        if hasattr(value, "items"):
            flat.update(flatten_params(value, prefix=path + "/"))
        else:
            flat[path] = value
    return flat


def _layer_norm(prefix, ln):
    return {f"{prefix}/scale": ln.gamma, f"{prefix}/bias": ln.beta}


def _dense(prefix, dense):
    out = {f"{prefix}/kernel": dense.kernel}
    if dense.use_bias:
        out[f"{prefix}/bias"] = dense.bias
    return out


def _mlp(prefix, mlp):
    dense_0, _, dense_1, _ = mlp
    return {**_dense(f"{prefix}/Dense_0", dense_0), **_dense(f"{prefix}/Dense_1", dense_1)}


@register_flax_mapping(TokenLearner)
def _token_learner_map(layer):
    # Scenic `TokenLearnerModuleV11`.
    return {
        **_layer_norm("LayerNorm_0", layer.layer_norm),
        **_mlp("token_masking", layer.token_masking),
    }


@register_flax_mapping(TokenLearnerV1)
def _token_learner_v1_map(layer):
    # Scenic `TokenLearnerModule`.
    out = _layer_norm("LayerNorm_0", layer.layer_norm)
    for i, conv in enumerate(layer.convs):
        out[f"Conv_{i}/kernel"] = conv.kernel
    return out


@register_flax_mapping(TokenFuser)
def _token_fuser_map(layer):
    # Scenic `TokenFuser`.
    out = {
        **_dense("Dense_0", layer.token_mixing),
        **_layer_norm("LayerNorm_0", layer.input_norm),
        **_mlp("token_masking", layer.token_masking),
    }
    if layer.use_normalization:
        out.update(_layer_norm("fuser_mix_norm1", layer.mix_norm1))
        out.update(_layer_norm("fuser_mix_norm2", layer.mix_norm2))
    return out


@register_flax_mapping(VectorAttention)
def _vector_attention_map(layer):
    out = {}
    for name in ("query", "key", "value", "gamma"):
        sub = getattr(layer, name)
        if sub is not None:
            out.update(_dense(name, sub))
    return out


def flax_variable_map(layer):
    """`{reference parameter path: Keras variable}` for a built tl_keras layer."""
    for cls in type(layer).__mro__:
        if cls in _MAPPERS:
            if not layer.built:
                raise ValueError(
                    f"load_flax_params: layer '{layer.name}' is not built; call it on an "
                    "input (or build it) before loading parameters."
                )
            return _MAPPERS[cls](layer)
    known = ", ".join(sorted(c.__name__ for c in _MAPPERS))
    raise ValueError(
        f"load_flax_params: no reference-name mapping for {type(layer).__name__}; "
        f"known: {known}."
    )


def assign_checked(variable_map, params, what, strict=True):
    """Checks every name and shape, then assigns. Raises one ValueError listing all misfits.

    Args:
        variable_map: `{path: keras.Variable}`.
        params: flat `{path: array}`.
        what: what is being loaded (for the message).
        strict: also reject parameters that the map does not use.
    """
    missing, misshaped = [], []
    for path, var in variable_map.items():
        if path not in params:
            missing.append(path)
            continue
        shape = tuple(np.shape(params[path]))
        if shape != tuple(var.shape):
            misshaped.append(f"{path}: got {shape}, expected {tuple(var.shape)}")
    unexpected = sorted(set(params) - set(variable_map)) if strict else []
    if missing or misshaped or unexpected:
        lines = [f"{what}: parameters do not fit."]
        if missing:
            lines.append("  missing: " + ", ".join(sorted(missing)))
        if misshaped:
            lines.append("  wrong shape: " + "; ".join(misshaped))
        if unexpected:
            lines.append("  unexpected: " + ", ".join(unexpected))
        raise ValueError("\n".join(lines))
    for path, var in variable_map.items():
        var.assign(np.asarray(params[path], dtype=var.dtype))


def load_flax_params(layer, params, strict=True):
    """Loads a reference (Scenic/Flax) parameter tree into a built tl_keras layer.

    Args:
        layer: a built `TokenLearner`, `TokenLearnerV1`, `TokenFuser` or
            `VectorAttention` (models register their own mappings).
        params: nested dict of arrays with the reference names, e.g.
            `{"LayerNorm_0": {"scale", "bias"}, "token_masking": {"Dense_0": ...}}`, or
            a flat dict with `/`-joined keys.
        strict: reject parameters that the layer does not use.

    Raises:
        ValueError: naming every missing, unexpected or mis-shaped array; nothing is
            assigned in that case.
    """
    variable_map = flax_variable_map(layer)
    assign_checked(
        variable_map, flatten_params(params), f"load_flax_params({layer.name})", strict=strict
    )
    return layer
