"""Loading parameters of the reference JAX/Flax implementation (Scenic) into tl_keras.

The reference stores parameters as a nested dict (a Flax `params` tree) whose leaves
are arrays. Each tl_keras layer knows the reference names of its variables
(`flax_variable_map`); `load_flax_params` checks the whole tree against that map
before it assigns anything, so a failed load changes no weight.

Flax and Keras use the same layouts: Dense kernels `[in, out]`, Conv kernels
`[kh, kw, in, out]`, LayerNorm `scale`/`bias` = Keras `gamma`/`beta`.

This module depends on the models, never the other way round: the ViT -> ViViT weight
transfer is the ViViT family's (`tl_keras.models.vivit.inflate`), re-exported here.
"""

import os
import re

import keras
import numpy as np

from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.vector_attention import VectorAttention
from tl_keras.models.vit.model import TransformerModel, adapt_position_embedding
from tl_keras.models.vivit.inflate import (  # noqa: F401  (re-exported)
    inflate_kernel,
    transfer_vit_to_vivit,
)

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


# ----------------------------------------------------------------------------------------
# Whole models: ViT / ViViT.
#
# Keras layer name          JAX ViT release (.npz)                    Scenic (Flax linen)
# embedding                 embedding/{kernel,bias}                   (same)
# cls                       cls                                       (same)
# posembed_input            Transformer/posembed_input/pos_embedding  (same)
# encoderblock_{i}          Transformer/encoderblock_{i}/...          (same prefix)
#   .layer_norm_0             LayerNorm_0                               LayerNorm_0
#   .attention                MultiHeadDotProductAttention_1/           ..._0/
#                               {query,key,value,out}/{kernel,bias}
#   .layer_norm_1             LayerNorm_2                               LayerNorm_1
#   .mlp_dense_{0,1}          MlpBlock_3/Dense_{0,1}                    MlpBlock_0/Dense_{0,1}
# tokenlearner_{k}          Transformer/TokenLearnerModuleV11_{k} (v1.1),
#                           Transformer/TokenLearnerModule_{k} (v1)   (same)
# tokenfuser_{k}            Transformer/TokenFuser_{k}                (same)
# encoder_norm              Transformer/encoder_norm                  (same)
# pre_logits                pre_logits                                pre_logits
# head                      head                                      output_projection
#
# Inside a TokenLearner / TokenFuser the names are those of the layer mappings above.
# The TokenLearner/TokenFuser entries are not part of a ViT checkpoint; `load_vit_npz`
# loads them when present and otherwise leaves those layers as initialised.

NPZ_BLOCK_NAMES = {
    "layer_norm_0": "LayerNorm_0",
    "attention": "MultiHeadDotProductAttention_1",
    "layer_norm_1": "LayerNorm_2",
    "mlp": "MlpBlock_3",
}
SCENIC_BLOCK_NAMES = {
    "layer_norm_0": "LayerNorm_0",
    "attention": "MultiHeadDotProductAttention_0",
    "layer_norm_1": "LayerNorm_1",
    "mlp": "MlpBlock_0",
}

_INDEXED = re.compile(r"^(encoderblock|tokenlearner|tokenfuser)_(\d+)$")


def _attention_map(prefix, attention):
    out = {}
    for name in ("query", "key", "value", "out"):
        out[f"{prefix}/{name}/kernel"] = getattr(attention, f"{name}_kernel")
        out[f"{prefix}/{name}/bias"] = getattr(attention, f"{name}_bias")
    return out


def _block_map(prefix, block, names):
    return {
        **_layer_norm(f"{prefix}/{names['layer_norm_0']}", block.layer_norm_0),
        **_attention_map(f"{prefix}/{names['attention']}", block.attention),
        **_layer_norm(f"{prefix}/{names['layer_norm_1']}", block.layer_norm_1),
        **_dense(f"{prefix}/{names['mlp']}/Dense_0", block.mlp_dense_0),
        **_dense(f"{prefix}/{names['mlp']}/Dense_1", block.mlp_dense_1),
    }


def _tokenlearner_module(layer):
    return "TokenLearnerModule" if isinstance(layer, TokenLearnerV1) else "TokenLearnerModuleV11"


def _check_model(model, what):
    if not isinstance(model, TransformerModel):
        raise ValueError(
            f"{what}: expected a tl_keras ViT or ViViT model, got {type(model).__name__}."
        )


def model_variable_map(model, naming="npz"):
    """`{checkpoint name: Keras variable}` of a tl_keras ViT / ViViT.

    Args:
        model: a `tl_keras.models.ViT` or `ViViT`.
        naming: `"npz"` (the JAX ViT release: `MultiHeadDotProductAttention_1`,
            `LayerNorm_2`, `MlpBlock_3`, `head`) or `"scenic"` (Flax linen names of the
            reference TokenLearner model: `..._0`, `LayerNorm_1`, `MlpBlock_0`,
            `output_projection`).
    """
    _check_model(model, "model_variable_map")
    if naming not in ("npz", "scenic"):
        raise ValueError(f"model_variable_map: `naming` must be 'npz' or 'scenic', got {naming!r}.")
    names = NPZ_BLOCK_NAMES if naming == "npz" else SCENIC_BLOCK_NAMES
    head = "head" if naming == "npz" else "output_projection"
    out = {}
    for layer in model.layers:
        name = layer.name
        indexed = _INDEXED.match(name)
        if name == "embedding":
            out["embedding/kernel"] = layer.conv.kernel
            out["embedding/bias"] = layer.conv.bias
        elif name == "cls":
            out["cls"] = layer.cls
        elif name == "posembed_input":
            out["Transformer/posembed_input/pos_embedding"] = layer.pos_embedding
        elif name == "encoder_norm":
            out.update(_layer_norm("Transformer/encoder_norm", layer))
        elif name == "pre_logits":
            out.update(_dense("pre_logits", layer))
        elif name == "head":
            out.update(_dense(head, layer))
        elif indexed:
            kind, index = indexed.groups()
            if kind == "encoderblock":
                out.update(_block_map(f"Transformer/{name}", layer, names))
            else:
                out.update(_tokenizer_map(kind, index, layer))
    return out


def _tokenizer_map(kind, index, layer):
    """Reference names of a TokenLearner / TokenFuser; other tokenizers (the ablation
    baselines, which have no reference) get `Transformer/{ClassName}_{k}/{Keras path}`."""
    if any(cls in _MAPPERS for cls in type(layer).__mro__):
        module = "TokenFuser" if kind == "tokenfuser" else _tokenlearner_module(layer)
        prefix = f"Transformer/{module}_{index}"
        return {f"{prefix}/{k}": v for k, v in flax_variable_map(layer).items()}
    prefix = f"Transformer/{type(layer).__name__}_{index}"
    return {
        f"{prefix}/{w.path.split('/', 1)[1] if '/' in w.path else w.path}": w
        for w in layer.trainable_weights
    }


# A whole ViT / ViViT maps to the Scenic names (`load_flax_params`, `export_flax_params`).
register_flax_mapping(TransformerModel)(lambda model: model_variable_map(model, naming="scenic"))


def _as_flat_params(source):
    if isinstance(source, (str, os.PathLike)) or hasattr(source, "read"):
        with np.load(source, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    return {k: np.asarray(v) for k, v in flatten_params(source).items()}


def _detect_naming(params):
    for key in params:
        if "/MultiHeadDotProductAttention_1/" in key or "/MlpBlock_3/" in key:
            return "npz"
        if "/MultiHeadDotProductAttention_0/" in key or "/MlpBlock_0/" in key:
            return "scenic"
    return "npz"


def load_vit_npz(model, source, kernel_init="central_frame", strict=True):
    """Loads a JAX ViT checkpoint (`.npz`) into a tl_keras ViT or ViViT.

    Reads the public checkpoints of the original JAX ViT release (names such as
    `embedding/kernel`, `cls`, `Transformer/posembed_input/pos_embedding`,
    `Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query/kernel`,
    `.../MlpBlock_3/Dense_0`, `.../LayerNorm_{0,2}`, `Transformer/encoder_norm`,
    `pre_logits`, `head`), and flattened Scenic trees (linen names, `output_projection`).

    Adaptations:
        * the position embedding is resized (bilinear) to the model's patch grid, tiled
          over time for a ViViT, and its class-token row dropped when the model pools
          with `"gap"` (the `cls` entry is then skipped);
        * a ViViT gets the 2-D patch kernel inflated over the tubelet (`kernel_init`:
          `"central_frame"` or `"average"`);
        * the head is skipped (left as initialised) when the model has none or its class
          count differs; likewise `pre_logits` when the model has no such layer or the
          checkpoint lacks it;
        * TokenLearner / TokenFuser parameters are loaded when the file has them (Scenic
          names `Transformer/TokenLearnerModuleV11_{k}`, `Transformer/TokenFuser_{k}`),
          else those layers keep their fresh initialisation.

    Everything else must fit exactly: one ValueError lists every missing, mis-shaped and
    (with `strict`) unused name, and then no weight has been changed.

    Args:
        model: a `tl_keras.models.ViT` / `ViViT`.
        source: path or file object of an `.npz`, or a (nested or `/`-flat) dict of arrays.
        kernel_init: inflation of a 2-D patch kernel for a ViViT.
        strict: reject checkpoint entries that the model does not use.

    Returns:
        dict with `loaded` (checkpoint names assigned), `skipped` (checkpoint names not
        used, with the reason) and `initialised` (model names left as they were).
    """
    _check_model(model, "load_vit_npz")
    r = model.resolved
    params = _as_flat_params(source)
    naming = _detect_naming(params)
    variable_map = model_variable_map(model, naming=naming)
    head = "head" if naming == "npz" else "output_projection"
    skipped, initialised = {}, []

    # Class token and position embedding.
    ckpt_prefix = 1 if "cls" in params else 0
    if ckpt_prefix and "cls" not in variable_map:
        skipped["cls"] = "the model pools with 'gap' (no class token)"
        params.pop("cls")
    pos_name = "Transformer/posembed_input/pos_embedding"
    if pos_name in params and pos_name in variable_map:
        adapted = adapt_position_embedding(
            np.asarray(params[pos_name], np.float32), ckpt_prefix, r
        )
        if adapted is not None:
            params[pos_name] = adapted

    # Patch kernel inflation for video.
    kernel = params.get("embedding/kernel")
    if r.family == "vivit" and kernel is not None and np.ndim(kernel) == 4:
        params["embedding/kernel"] = inflate_kernel(
            kernel, r.tubelet_size, kernel_init, owner="load_vit_npz"
        )

    # Head and pre-logits: used only when they fit.
    for prefix in (head, "pre_logits"):
        names = [n for n in variable_map if n.startswith(prefix + "/")]
        in_ckpt = [n for n in params if n.startswith(prefix + "/")]
        fits = names and all(
            n in params and tuple(np.shape(params[n])) == tuple(variable_map[n].shape)
            for n in names
        )
        if not fits:
            reason = (
                f"the model has no `{prefix}` layer" if not names
                else f"`{prefix}` does not fit the model (shape or presence)"
            )
            for n in in_ckpt:
                skipped[n] = reason
                params.pop(n)
            for n in names:
                initialised.append(n)
                variable_map.pop(n)

    # TokenLearner / TokenFuser (and baseline tokenizers): optional, per module.
    core = ("encoderblock_", "posembed_input", "encoder_norm")
    for n in list(variable_map):
        parts = n.split("/")
        if parts[0] != "Transformer" or parts[1].startswith(core):
            continue
        if not any(p.startswith(f"Transformer/{parts[1]}/") for p in params):
            initialised.append(n)
            variable_map.pop(n)

    assign_checked(variable_map, params, f"load_vit_npz({model.name})", strict=strict)
    return {
        "loaded": sorted(variable_map),
        "skipped": skipped,
        "initialised": sorted(initialised),
    }


def vit_npz_params(model, naming="npz"):
    """The model's weights as a flat `{checkpoint name: np.ndarray}` dict (the format of
    the JAX ViT `.npz` files, TokenLearner/TokenFuser included under Scenic names)."""
    return {
        name: np.asarray(keras.ops.convert_to_numpy(var))
        for name, var in model_variable_map(model, naming=naming).items()
    }


def save_vit_npz(model, path, naming="npz"):
    """Writes `vit_npz_params(model)` to `path` (`np.savez`)."""
    np.savez(path, **vit_npz_params(model, naming=naming))
    return path


def unflatten_params(flat):
    """`{"a/b": x}` -> `{"a": {"b": x}}` (a Flax-style nested tree)."""
    tree = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def export_flax_params(layer):
    """A layer's or model's weights as a nested tree with the reference (Scenic) names;
    the inverse of `load_flax_params`."""
    return unflatten_params(
        {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in flax_variable_map(layer).items()}
    )
