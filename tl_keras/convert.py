"""Loading parameters of the reference JAX/Flax implementation (Scenic) into tl_keras.

The reference stores parameters as a nested dict (a Flax `params` tree) whose leaves
are arrays. Each tl_keras layer knows the reference names of its variables
(`flax_variable_map`); `load_flax_params` checks the whole tree against that map
before it assigns anything, so a failed load changes no weight.

Flax and Keras use the same layouts: Dense kernels `[in, out]`, Conv kernels
`[kh, kw, in, out]`, LayerNorm `scale`/`bias` = Keras `gamma`/`beta`.

Whole ViT / ViViT checkpoints of every public layout (the JAX ViT release, Scenic,
big_vision, timm) load through one function, `load_vit_weights(model, source)`, which
detects the layout and returns a report of what was loaded, adapted and skipped;
`save_vit_npz` and `save_vit_safetensors` (timm layout) write them back out.

This module depends on the models, never the other way round: the ViT -> ViViT weight
transfer is the ViViT family's (`tl_keras.models.vivit.inflate`), re-exported here.
"""

import json
import os
import re
import tempfile
import zipfile

import h5py
import keras
import numpy as np
import tensorflow as tf

from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.vector_attention import VectorAttention
from tl_keras.models.base import FamilyModel
from tl_keras.models.vit.model import TransformerModel, adapt_position_embedding
from tl_keras.models.vivit.inflate import (  # noqa: F401  (re-exported)
    KERNEL_INITS,
    inflate_kernel,
    tile_fuser_mixing,
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


def assign_checked(variable_map, params, what, strict=True, aliases=None, problems=()):
    """Checks every name and shape, then assigns. Raises one ValueError listing all misfits.

    Args:
        variable_map: `{path: keras.Variable}`.
        params: flat `{path: array}`.
        what: what is being loaded (for the message).
        strict: also reject parameters that the map does not use.
        aliases: optional `{path: name in the source file}`, shown beside a misfit whose
            name was translated from another layout (e.g. timm's).
        problems: further lines for the same error (found before, e.g. while reading
            another layout); any of them fails the load.
    """
    aliases = aliases or {}
    shown = lambda path: f"{path} ({aliases[path]})" if path in aliases else path  # noqa: E731
    missing, misshaped = [], []
    for path, var in variable_map.items():
        if path not in params:
            missing.append(shown(path))
            continue
        shape = tuple(np.shape(params[path]))
        if shape != tuple(var.shape):
            misshaped.append(f"{shown(path)}: got {shape}, expected {tuple(var.shape)}")
    unexpected = sorted(set(params) - set(variable_map)) if strict else []
    if missing or misshaped or unexpected or problems:
        lines = [f"{what}: parameters do not fit."]
        lines.extend(f"  {p}" for p in problems)
        if missing:
            lines.append("  missing: " + ", ".join(sorted(missing)))
        if misshaped:
            lines.append("  wrong shape: " + "; ".join(misshaped))
        if unexpected:
            lines.append("  unexpected: " + ", ".join(shown(p) for p in unexpected))
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


# ----------------------------------------------------------------------------------------
# Reading checkpoints of every public ViT layout.
#
# Each layout is translated to the JAX ViT release's names (the table above), then one
# loader adapts and checks the whole set:
#
# layout       recognised by                           translated
# jax_vit      `.../MultiHeadDotProductAttention_1/`   as is
# scenic       `..._0/` + `posembed_input`             as is (`naming="scenic"`)
# big_vision   root `pos_embedding`, scanned           `params/` prefix dropped; position
#              `Transformer/encoderblock/`,            embedding of the patches only
#              `MAPHead_0`, or `_0` names + `head`     (class token added after it: a zero
#                                                      row for it); scanned blocks
#                                                      unstacked; `_0`/`LayerNorm_1`/
#                                                      `MlpBlock_0` -> `_1`/`_2`/`_3`
# timm         `patch_embed.`, `blocks.{i}.`,          PyTorch `[out, in]` Linear and
#              `cls_token`, `pos_embed`                `[out, in, kh, kw]` Conv weights
#                                                      transposed; fused `qkv` split into
#                                                      `[C, H, D]` query/key/value
# keras_hub    a `ViTBackbone` / `ViTImageClassifier`  Keras layouts already; names only
#              model object (`keras_hub_to_jax_vit`)
#
# timm weights carry no head count: `attn.qkv` is split with the model's `num_heads`
# (a model with other heads loads without error and computes something else). timm and
# keras-hub ViTs use the exact (erf) GELU: build the model with `gelu="exact"` for the
# same function (the report notes a mismatch).

VIT_LAYOUTS = ("jax_vit", "scenic", "big_vision", "timm", "keras_hub")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")

_BIG_VISION_BLOCK = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
# timm features that change the function and that a tl_keras ViT has no place for.
_TIMM_UNSUPPORTED = (
    (r"^fc_norm\.", (
        "a LayerNorm after the pooling (timm `global_pool='avg'` with `fc_norm`); "
        "tl_keras normalises the tokens before pooling, as timm's `fc_norm=False`")),
    (r"^norm_pre\.", "a LayerNorm before the blocks (timm `pre_norm=True`)"),
    (r"^reg_token$", "register tokens (timm `reg_tokens`)"),
    (r"^blocks\.\d+\.ls[12]\.", "layer scale (timm `init_values`)"),
    (r"^blocks\.\d+\.attn\.[qk]_norm\.", "query/key normalisation (timm `qk_norm=True`)"),
    (r"^blocks\.\d+\.(attn\.norm|mlp\.norm)\.", (
        "a norm inside the attention or MLP (timm `scale_attn_norm` / `scale_mlp_norm`)")),
    (r"^attn_pool\.", "an attention-pooling head (timm `global_pool='map'`)"),
)
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TIMM_BLOCK_PARTS = {
    "norm1": "LayerNorm_0",
    "norm2": "LayerNorm_2",
    "mlp.fc1": "MlpBlock_3/Dense_0",
    "mlp.fc2": "MlpBlock_3/Dense_1",
}


def _to_numpy(value):
    """An array of any framework as NumPy (torch bfloat16 as float32)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _read_safetensors(path):
    """`safetensors.numpy.load_file`, bfloat16 tensors (hub checkpoints often are) as
    float32. NumPy knows bfloat16 through `ml_dtypes`, which Keras imports."""
    try:
        from safetensors.numpy import load_file
    except ImportError as err:
        raise ImportError(
            f"read_checkpoint({path!r}): reading .safetensors needs the `safetensors` "
            "package (pip install safetensors)."
        ) from err
    return {k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v
            for k, v in load_file(path).items()}


def read_checkpoint(source):
    """A checkpoint as a flat `{name: np.ndarray}` dict, whatever its file type.

    Args:
        source: a path or file object of an `.npz`, a path of a `.safetensors` file
            (needs the `safetensors` package), of a PyTorch `.pth` / `.pt` / `.bin` state
            dict (needs torch; never required otherwise), or a (nested or flat) dict of
            arrays (NumPy, or tensors of any framework).
    """
    if hasattr(source, "read"):
        with np.load(source, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"read_checkpoint: no such file {path!r}.")
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in data.files}
        if suffix == ".safetensors":
            return _read_safetensors(path)
        if suffix in TORCH_SUFFIXES:
            try:
                import torch
            except ImportError as err:
                raise ImportError(
                    f"read_checkpoint({path!r}): a PyTorch state dict needs torch; convert "
                    "it to .safetensors where torch is installed, or install torch."
                ) from err
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):  # a training checkpoint's wrapper
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
            return {k: _to_numpy(v) for k, v in state.items()}
        raise ValueError(
            f"read_checkpoint: unknown checkpoint type {suffix!r} of {path!r}; known: .npz, "
            f".safetensors, {', '.join(TORCH_SUFFIXES)}."
        )
    if hasattr(source, "items"):
        return {k: _to_numpy(v) for k, v in flatten_params(source).items()}
    raise ValueError(
        f"read_checkpoint: expected a path, a file object or a dict of arrays, got "
        f"{type(source).__name__}."
    )


def _strip_prefix(params, prefix):
    if any(k.startswith(prefix) for k in params):
        return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}, [
            k for k in params if not k.startswith(prefix)]
    return params, []


def detect_vit_layout(params):
    """The layout of a flat parameter dict: one of `VIT_LAYOUTS` (see the table above)."""
    keys = list(params)
    if any(k.startswith(("patch_embed.", "blocks.")) or k in ("cls_token", "pos_embed")
           for k in keys):
        return "timm"
    keys = [k[len("params/"):] if k.startswith("params/") else k for k in keys]
    if any(k.startswith("params/") for k in params) or any(
        k in ("pos_embedding", "Transformer/pos_embedding")
        or k.startswith(("Transformer/encoderblock/", "MAPHead_0/")) for k in keys
    ):
        return "big_vision"
    naming = _detect_naming(dict.fromkeys(keys))
    if naming == "npz":
        return "jax_vit"
    if any(k.startswith("head/") for k in keys) and not any(
        "posembed_input" in k for k in keys
    ):
        return "big_vision"  # unscanned, `head`, no learned position embedding
    return "scenic"


def _class_row(posemb, has_cls):
    """Adds a zero class-token row to a position embedding of the patches alone (the
    class token joins after the position embedding: big_vision, timm `no_embed_class`);
    the same function, in the JAX ViT's `[1, 1 + N, C]` form."""
    rows = np.shape(posemb)[1]
    if has_cls and np.ndim(posemb) == 3 and _is_square(rows):
        return np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1), True
    return posemb, False


def _is_square(n):
    side = int(round(np.sqrt(n)))
    return side * side == n


def big_vision_to_jax_vit(params):
    """big_vision names -> JAX ViT names. Returns `(params, aliases, problems, notes)`."""
    params, outside = _strip_prefix(dict(params), "params/")
    out, aliases, problems, notes = {}, {}, [], []
    if outside:
        shown = ", ".join(sorted(outside)[:3]) + (", ..." if len(outside) > 3 else "")
        notes.append(f"ignored {len(outside)} entries outside `params/` (e.g. optimizer "
                     f"state): {shown}")
    map_head = sorted(k for k in params if k.startswith("MAPHead_0/"))
    if map_head:
        problems.append(
            "MAPHead_0 (a multi-head attention-pooling head, big_vision "
            "`pool_type='map'`): a tl_keras ViT pools with 'token' or 'gap' and has no "
            "MAP head to load it into; use a 'gap' or 'tok' checkpoint."
        )
    depth = None
    for key, value in params.items():
        if key.startswith("MAPHead_0/"):
            continue
        parts = key.split("/")
        if key in ("pos_embedding", "Transformer/pos_embedding"):
            value, added = _class_row(value, "cls" in params)
            if added:
                notes.append("big_vision position embedding (patches only): zero "
                             "class-token row added")
            name = "Transformer/posembed_input/pos_embedding"
            out[name] = value
            aliases[name] = key
        elif len(parts) > 2 and parts[0] == "Transformer" and parts[1] == "encoderblock":
            inner = "/".join([_BIG_VISION_BLOCK.get(parts[2], parts[2])] + parts[3:])
            depth = np.shape(value)[0]
            for i in range(depth):
                name = f"Transformer/encoderblock_{i}/{inner}"
                out[name] = np.asarray(value[i])
                aliases[name] = f"{key}[{i}]"
        elif len(parts) > 2 and parts[0] == "Transformer" and parts[1].startswith(
                "encoderblock_"):
            name = "/".join(parts[:2] + [_BIG_VISION_BLOCK.get(parts[2], parts[2])] + parts[3:])
            out[name] = value
            aliases[name] = key
        else:
            out[key] = value
    if depth is not None:
        notes.append(f"scanned `Transformer/encoderblock` unstacked into {depth} blocks")
    return out, aliases, problems, notes


def _timm_linear(prefix, name, params, used):
    out = {}
    for torch_name, jax_name, transpose in (("weight", "kernel", True), ("bias", "bias", False)):
        key = f"{prefix}.{torch_name}"
        if key in params:
            used.add(key)
            value = np.asarray(params[key])
            out[f"{name}/{jax_name}"] = (value.T if transpose and value.ndim == 2 else value, key)
    return out


def _timm_norm(prefix, name, params, used):
    out = {}
    for torch_name, jax_name in (("weight", "scale"), ("bias", "bias")):
        key = f"{prefix}.{torch_name}"
        if key in params:
            used.add(key)
            out[f"{name}/{jax_name}"] = (np.asarray(params[key]), key)
    return out


def timm_to_jax_vit(params, num_heads):
    """timm `VisionTransformer` state dict -> JAX ViT names. Returns `(params, aliases,
    problems, notes)`; `num_heads` splits the fused `attn.qkv` (timm stores no head
    count)."""
    params = dict(params)
    if params and all(k.startswith("module.") for k in params):
        params = {k[len("module."):]: v for k, v in params.items()}  # DataParallel
    entries, used, problems, notes = {}, set(), [], []
    for pattern, reason in _TIMM_UNSUPPORTED:
        names = sorted(k for k in params if re.search(pattern, k))
        if names:
            used.update(names)
            shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
            problems.append(f"{shown}: {reason}, which a tl_keras ViT does not have.")
    kernel = params.get("patch_embed.proj.weight")
    if kernel is not None:
        used.add("patch_embed.proj.weight")
        kernel = np.asarray(kernel)
        if kernel.ndim == 4:
            kernel = kernel.transpose(2, 3, 1, 0)  # [C, 3, ph, pw] -> [ph, pw, 3, C]
        entries["embedding/kernel"] = (kernel, "patch_embed.proj.weight")
    if "patch_embed.proj.bias" in params:
        used.add("patch_embed.proj.bias")
        entries["embedding/bias"] = (np.asarray(params["patch_embed.proj.bias"]),
                                     "patch_embed.proj.bias")
    if "cls_token" in params:
        used.add("cls_token")
        entries["cls"] = (np.asarray(params["cls_token"]), "cls_token")
    if "pos_embed" in params:
        used.add("pos_embed")
        posemb, added = _class_row(np.asarray(params["pos_embed"]), "cls_token" in params)
        if added:
            notes.append("timm `no_embed_class` position embedding: zero class-token row "
                         "added")
        entries["Transformer/posembed_input/pos_embedding"] = (posemb, "pos_embed")
    entries.update(_timm_norm("norm", "Transformer/encoder_norm", params, used))
    entries.update(_timm_linear("head", "head", params, used))
    entries.update(_timm_linear("pre_logits.fc", "pre_logits", params, used))
    for key in params:
        match = _TIMM_BLOCK.match(key)
        if not match or key in used:
            continue
        index, rest = match.groups()
        prefix = f"Transformer/encoderblock_{index}"
        module, _, kind = rest.rpartition(".")
        if module in _TIMM_BLOCK_PARTS and kind in ("weight", "bias"):
            target = f"{prefix}/{_TIMM_BLOCK_PARTS[module]}"
            convert = _timm_norm if module.startswith("norm") else _timm_linear
            entries.update(convert(f"blocks.{index}.{module}", target, params, used))
        elif module == "attn.qkv" and kind in ("weight", "bias"):
            used.add(key)
            entries.update(_split_qkv(np.asarray(params[key]), kind, num_heads,
                                      f"{prefix}/MultiHeadDotProductAttention_1", key))
        elif module == "attn.proj" and kind in ("weight", "bias"):
            used.add(key)
            value = np.asarray(params[key])
            name = f"{prefix}/MultiHeadDotProductAttention_1/out"
            if kind == "weight":
                c = value.shape[0]
                if value.ndim == 2 and value.shape[1] % num_heads == 0:
                    value = value.T.reshape(num_heads, value.shape[1] // num_heads, c)
                entries[f"{name}/kernel"] = (value, key)  # [H, D, C]
            else:
                entries[f"{name}/bias"] = (value, key)
    unknown = sorted(set(params) - used)
    out = {name: value for name, (value, _) in entries.items()}
    aliases = {name: key for name, (_, key) in entries.items()}
    for key in unknown:  # kept under their timm names: `strict` reports them
        out[key] = np.asarray(params[key])
    return out, aliases, problems, notes


def _split_qkv(value, kind, num_heads, prefix, key):
    """timm's fused `qkv` (`[3C, C]` weight, `[3C]` bias; rows q, k, v, heads, head
    dims) -> query/key/value kernels `[C, H, D]` and biases `[H, D]`."""
    rows = value.shape[0]
    fits = rows % 3 == 0 and (rows // 3) % num_heads == 0 and (
        kind == "bias" or (value.ndim == 2 and value.shape[1] == rows // 3))
    out = {}
    for i, name in enumerate(("query", "key", "value")):
        jax_kind = "kernel" if kind == "weight" else "bias"
        if not fits:
            out[f"{prefix}/{name}/{jax_kind}"] = (value, key)  # reported as mis-shaped
            continue
        c = rows // 3
        part = value[i * c:(i + 1) * c]  # [C(out), C(in)] or [C]
        if kind == "weight":
            part = part.T.reshape(-1, num_heads, c // num_heads)  # [C, H, D]
        else:
            part = part.reshape(num_heads, c // num_heads)  # [H, D]
        out[f"{prefix}/{name}/{jax_kind}"] = (part, key)
    return out


def _keras_hub_kind(source):
    """`"backbone"` / `"classifier"` for a keras-hub `ViTBackbone` / `ViTImageClassifier`
    (recognised by class name: keras-hub is never imported here), else None."""
    names = {cls.__name__ for cls in type(source).__mro__}
    if "ViTImageClassifier" in names:
        return "classifier"
    if "ViTBackbone" in names:
        return "backbone"
    return None


def keras_hub_to_jax_vit(source):
    """A keras-hub `ViTBackbone` or `ViTImageClassifier` (built model object) -> JAX ViT
    names. Returns `(params, aliases, problems, notes)`.

    keras-hub keeps the Keras/Flax layouts (`MultiHeadAttention` kernels `[C, H, D]`,
    Conv2D `[kh, kw, 3, C]`), so only names change: `vit_patching_and_embedding`
    (`patch_embedding`, `class_token`, `position_embedding`), `vit_encoder`
    (`transformer_block_{i+1}`: `ln_1`, `mha`, `ln_2`, `mlp.dense_{1,2}`; `ln`), and a
    classifier's `pre_logits` and `predictions`. Its MLP runs the exact GELU.
    """
    kind = _keras_hub_kind(source)
    backbone = source.backbone if kind == "classifier" else source
    value = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float32)  # noqa: E731
    out, aliases, problems, notes = {}, {}, [], []

    def put(name, variable):
        out[name] = value(variable)
        aliases[name] = f"keras-hub {variable.path}"

    def put_dense(prefix, dense):
        put(f"{prefix}/kernel", dense.kernel)
        if dense.bias is not None:
            put(f"{prefix}/bias", dense.bias)

    def put_norm(prefix, norm):
        if abs(float(norm.epsilon) - 1e-6) > 1e-12:
            problems.append(f"{norm.path}: LayerNorm epsilon {norm.epsilon}, tl_keras uses "
                            "1e-6.")
        put(f"{prefix}/scale", norm.gamma)
        put(f"{prefix}/bias", norm.beta)

    embedding = backbone.get_layer("vit_patching_and_embedding")
    if getattr(embedding, "data_format", "channels_last") != "channels_last":
        notes.append("keras-hub backbone is channels_first; tl_keras takes NHWC images")
    put_dense("embedding", embedding.patch_embedding)
    if getattr(embedding, "use_class_token", False):
        put("cls", embedding.class_token)
    posemb = embedding.position_embedding.embeddings  # [N(+1), C]
    out["Transformer/posembed_input/pos_embedding"] = value(posemb)[None]  # [1, N(+1), C]
    aliases["Transformer/posembed_input/pos_embedding"] = f"keras-hub {posemb.path}"
    encoder = backbone.get_layer("vit_encoder")
    for i, block in enumerate(encoder.encoder_layers):
        prefix = f"Transformer/encoderblock_{i}"
        attention = f"{prefix}/MultiHeadDotProductAttention_1"
        put_norm(f"{prefix}/LayerNorm_0", block.layer_norm_1)
        put_dense(f"{attention}/query", block.mha.query_dense)
        put_dense(f"{attention}/key", block.mha.key_dense)
        put_dense(f"{attention}/value", block.mha.value_dense)
        put_dense(f"{attention}/out", block.mha.output_dense)
        put_norm(f"{prefix}/LayerNorm_2", block.layer_norm_2)
        put_dense(f"{prefix}/MlpBlock_3/Dense_0", block.mlp.dense_1)
        put_dense(f"{prefix}/MlpBlock_3/Dense_1", block.mlp.dense_2)
    put_norm("Transformer/encoder_norm", encoder.layer_norm)
    if kind == "classifier":
        if source.pooling == "gap" and getattr(embedding, "use_class_token", False):
            notes.append("keras-hub classifier averages its tokens with the class token; "
                         "a tl_keras 'gap' model has none")
        if getattr(source, "intermediate_dim", None) is not None:
            put_dense("pre_logits", source.intermediate_layer)
        put_dense("head", source.output_dense)
    return out, aliases, problems, notes


def _detect_naming(params):
    for key in params:
        if "/MultiHeadDotProductAttention_1/" in key or "/MlpBlock_3/" in key:
            return "npz"
        if "/MultiHeadDotProductAttention_0/" in key or "/MlpBlock_0/" in key:
            return "scenic"
    return "npz"


def load_vit_weights(model, source, kernel_init="central_frame", strict=True):
    """Loads a pretrained ViT checkpoint of any public layout into a tl_keras ViT / ViViT.

    The layout is detected (`detect_vit_layout`): the original JAX ViT release
    (`.npz`), Scenic trees, big_vision (`.npz`, with or without `params/`, scanned or
    not, with or without `cls`) and timm `VisionTransformer` state dicts (`.safetensors`;
    `.pth` / `.bin` when torch is installed), and keras-hub `ViTBackbone` /
    `ViTImageClassifier` models (objects or saved). Each is translated to the JAX ViT names,
    then adapted to the model:

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
          else those layers keep their fresh initialisation; so do the `extra_layers`
          blocks when the file has no block of that index.

    Everything else must fit exactly: one ValueError lists every missing, mis-shaped,
    unsupported (e.g. a big_vision `MAPHead_0`, a timm `fc_norm`) and (with `strict`)
    unused name, the source file's own name beside a translated one, and then no weight
    has been changed.

    Args:
        model: a `tl_keras.models.ViT` / `ViViT`.
        source: anything `read_checkpoint` reads (a path, file object or dict of
            arrays), or a keras-hub `ViTBackbone` / `ViTImageClassifier`: the object, a
            preset directory (`save_to_preset`), a `.weights.h5` beside its keras-hub
            `config.json`, or its `.keras` file.
        kernel_init: inflation of a 2-D patch kernel for a ViViT.
        strict: reject checkpoint entries that the model does not use.

    Returns:
        dict with `format` (one of `VIT_LAYOUTS`), `loaded` (JAX ViT names assigned),
        `skipped` (checkpoint names not used, with the reason), `initialised` (model
        names left as they were), `adapted` (`{name: what was done}`: resized, tiled,
        inflated) and `notes` (translation remarks, a GELU form that differs from the
        source's).
    """
    _check_model(model, "load_vit_weights")
    aliases, problems, notes = {}, [], []
    if isinstance(source, (str, os.PathLike)) and _keras_hub_saved(os.fspath(source)):
        source = _read_keras_hub(os.fspath(source), f"load_vit_weights({model.name})")
    if _keras_hub_kind(source):
        layout = "keras_hub"
        params, aliases, problems, notes = keras_hub_to_jax_vit(source)
    else:
        params = read_checkpoint(source)
        layout = detect_vit_layout(params)
    if layout in ("timm", "keras_hub"):
        if layout == "timm":
            params, aliases, problems, notes = timm_to_jax_vit(params, model.resolved.num_heads)
        if model.resolved.gelu != "exact":
            notes.append(f"{layout} ViTs use the exact (erf) GELU; this model has "
                         f"gelu={model.resolved.gelu!r} (build it with gelu='exact' for "
                         "the same function)")
    else:
        if layout == "big_vision":
            params, aliases, problems, notes = big_vision_to_jax_vit(params)
        if model.resolved.gelu != "tanh":
            notes.append(f"{layout} ViTs use the tanh GELU; this model has "
                         f"gelu={model.resolved.gelu!r}")
    report = _load_jax_vit(model, params, kernel_init, strict, aliases, problems,
                           what=f"load_vit_weights({model.name}, {layout} layout)")
    return WeightsReport(format=layout, **report, notes=notes)


def _load_jax_vit(model, params, kernel_init, strict, aliases, problems, what):
    r = model.resolved
    naming = _detect_naming(params)
    variable_map = model_variable_map(model, naming=naming)
    head = "head" if naming == "npz" else "output_projection"
    skipped, initialised, adapted = {}, [], {}

    # Class token and position embedding.
    ckpt_prefix = 1 if "cls" in params else 0
    if ckpt_prefix and "cls" not in variable_map:
        skipped["cls"] = "the model pools with 'gap' (no class token)"
        params.pop("cls")
    pos_name = "Transformer/posembed_input/pos_embedding"
    if pos_name in params and pos_name in variable_map:
        source_shape = tuple(np.shape(params[pos_name]))
        result = adapt_position_embedding(
            np.asarray(params[pos_name], np.float32), ckpt_prefix, r
        )
        if result is not None:
            params[pos_name] = result
            if result.shape != source_shape:
                adapted[pos_name] = f"{source_shape} -> {tuple(result.shape)}"

    # Patch kernel inflation for video.
    kernel = params.get("embedding/kernel")
    if r.family == "vivit" and kernel is not None and np.ndim(kernel) == 4:
        params["embedding/kernel"] = inflate_kernel(
            kernel, r.tubelet_size, kernel_init, owner="load_vit_weights"
        )
        adapted["embedding/kernel"] = (
            f"2-D kernel inflated over {r.tubelet_size} frames ({kernel_init})")

    # An image TokenFuser's token mixing `[S, S]` into a fuser mixing a clip's `T'*S`
    # tokens: the per-frame mixing on the block diagonal (as `transfer_vit_to_vivit`).
    for n in list(params):
        if re.match(r"^Transformer/TokenFuser_\d+/Dense_0/(kernel|bias)$", n) and n in variable_map:
            have, want = np.shape(params[n]), tuple(variable_map[n].shape)
            if len(have) == len(want) and have[0] and want[0] % have[0] == 0 and have != want:
                params[n] = tile_fuser_mixing(params[n], want[0] // have[0])
                adapted[n] = f"{tuple(have)} -> {want} (per-frame mixing, block diagonal)"

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

    # TokenLearner / TokenFuser (and baseline tokenizers), and the `extra_layers` blocks
    # (after the first `num_layers`): optional, per module.
    core = ("encoderblock_", "posembed_input", "encoder_norm")
    extra = {f"encoderblock_{i}" for i in range(r.num_layers, r.num_layers + r.extra_layers)}
    for n in list(variable_map):
        parts = n.split("/")
        if parts[0] != "Transformer" or (parts[1].startswith(core) and parts[1] not in extra):
            continue
        if not any(p.startswith(f"Transformer/{parts[1]}/") for p in params):
            initialised.append(n)
            variable_map.pop(n)

    if not strict:
        for n in sorted(set(params) - set(variable_map)):
            skipped[n] = "not used by the model (strict=False)"
    assign_checked(variable_map, params, what, strict=strict, aliases=aliases,
                   problems=problems)
    return {
        "loaded": sorted(variable_map),
        "skipped": skipped,
        "initialised": sorted(initialised),
        "adapted": adapted,
    }


def load_vit_npz(model, source, kernel_init="central_frame", strict=True):
    """Loads a JAX ViT checkpoint (`.npz`) into a tl_keras ViT or ViViT.

    Reads the public checkpoints of the original JAX ViT release (names such as
    `embedding/kernel`, `cls`, `Transformer/posembed_input/pos_embedding`,
    `Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query/kernel`,
    `.../MlpBlock_3/Dense_0`, `.../LayerNorm_{0,2}`, `Transformer/encoder_norm`,
    `pre_logits`, `head`), and flattened Scenic trees (linen names, `output_projection`);
    any other layout `load_vit_weights` reads works too (this is the same function).
    Adaptations, errors and the returned report: as `load_vit_weights`.
    """
    return load_vit_weights(model, source, kernel_init=kernel_init, strict=strict)


class WeightsReport(dict):
    """What a load did (a dict): `format`, `loaded`, `skipped` (`{name: reason}`),
    `initialised`, `adapted` (`{name: what was done}`), `notes`, and `source` (the file or
    object loaded). `summary()` is one line of it (what the training loop logs)."""

    def summary(self):
        parts = [f"{len(self.get('loaded', ()))} loaded"]
        if self.get("adapted"):
            parts.append("adapted: " + "; ".join(
                f"{_module_of(n)} {n.rsplit('/', 1)[-1]} {how}"
                for n, how in self["adapted"].items()))
        initialised = self.get("initialised", ())
        if initialised:
            modules = sorted({_module_of(n) for n in initialised})
            parts.append(f"{len(initialised)} left as initialised ({', '.join(modules)})")
        if self.get("skipped"):
            parts.append(f"{len(self['skipped'])} skipped ({', '.join(sorted(self['skipped']))})")
        parts += self.get("notes", ())
        return f"{self.get('source', '?')} ({self.get('format')}): " + "; ".join(parts)


def _module_of(name):
    """`Transformer/TokenLearnerModuleV11_0/LayerNorm_0/scale` -> `TokenLearnerModuleV11_0`,
    `head/kernel` -> `head`, a Keras path `head/kernel` -> `head`."""
    parts = name.split("/")
    return parts[1] if parts[0] == "Transformer" and len(parts) > 2 else parts[0]


def load_pretrained(model, source, kernel_init="central_frame", strict=True):
    """Starts a built tl_keras model from pretrained weights; the one function behind
    `weights=` of every model constructor / entrypoint and `model.init_checkpoint` of
    the trainer.

    `source` may be

    * a ViT checkpoint of any public layout, or a keras-hub `ViTBackbone` /
      `ViTImageClassifier` (ViT / ViViT models only): `load_vit_weights`; a keras-hub
      ViT may also be saved: a preset directory (`backbone.save_to_preset(dir)`), a
      `.weights.h5` beside its keras-hub `config.json`, or a `.keras` file (reading
      these imports keras-hub);
    * a tl_keras ViT / ViViT (a model object or its `.keras` file, e.g. the
      `export/<step>/model.keras` of a training run), into a ViT / ViViT of the same
      width and depth: its weights go through the same adaptation as a checkpoint
      (an image model into a ViViT: patch kernel inflated by `kernel_init`, position
      embedding resized and tiled over time, an image TokenFuser's mixing made
      per-frame; head re-initialised when the class count differs, TokenLearner /
      TokenFuser / `extra_layers` initialised when the source has none);
    * any other tl_keras model (X(2+1)D) or its `.keras` file: the same architecture,
      every weight by name and shape;
    * any other `.weights.h5` file: weights of the same architecture (the file holds no
      architecture; for another member of the family use the `.keras` file).

    A source that does not fit raises one ValueError naming the source and every
    mismatch, and then no weight has been changed.

    Returns:
        a `WeightsReport` (see `load_vit_weights` for the keys), with `source`.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"load_pretrained: expected a Keras model, got {type(model).__name__}.")
    if kernel_init not in KERNEL_INITS:
        raise ValueError(f"load_pretrained: `kernel_init` must be one of {KERNEL_INITS}, "
                         f"got {kernel_init!r}.")
    shown = _source_name(source)
    if isinstance(source, (str, os.PathLike)) and "://" in os.fspath(source):
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(os.fspath(source)))
            _copy_remote(os.fspath(source), local, model.name)
            report = load_pretrained(model, local, kernel_init=kernel_init, strict=strict)
        report["source"] = shown
        return report
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"load_pretrained({model.name}): no such file {path!r}.")
        if _keras_hub_saved(path) is not None:  # load_vit_weights reads it
            report = _load_checkpoint(model, path, kernel_init, strict, shown)
        elif path.endswith(".weights.h5"):
            report = _load_same_architecture_h5(model, path)
        elif path.endswith(".keras"):
            try:
                source_model = keras.saving.load_model(path, compile=False)
            except Exception as err:
                raise ValueError(
                    f"load_pretrained({model.name}): cannot read the Keras archive {path!r}: "
                    f"{err}") from err
            report = _load_from_model(model, source_model, kernel_init, strict, path)
            report["format"] = "keras"
        else:
            report = _load_checkpoint(model, path, kernel_init, strict, shown)
    elif isinstance(source, FamilyModel):
        report = _load_from_model(model, source, kernel_init, strict, shown)
    else:
        report = _load_checkpoint(model, source, kernel_init, strict, shown)
    report["source"] = shown
    return report


KERAS_HUB_VITS = ("ViTBackbone", "ViTImageClassifier")


def _keras_hub_saved(path):
    """The class name of the keras-hub model saved at `path`, else None: a preset
    directory (`backbone.save_to_preset(dir)`: `config.json` + `model.weights.h5`), a
    `.weights.h5` file beside such a `config.json`, or a `.keras` archive of one."""
    config = None
    try:
        if os.path.isdir(path):
            config_path = os.path.join(path, "config.json")
        elif path.endswith(".weights.h5"):
            config_path = os.path.join(os.path.dirname(path), "config.json")
        else:
            config_path = None
        if config_path is not None and os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        elif path.endswith(".keras") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "config.json" in archive.namelist():
                    config = json.loads(archive.read("config.json"))
    except (OSError, ValueError):
        return None  # not readable as a keras-hub save: the other readers say why
    name = config.get("registered_name") if isinstance(config, dict) else None
    if isinstance(name, str) and name.startswith("keras_hub>"):
        return name.split(">", 1)[1]
    return None


def _read_keras_hub(path, owner):
    """The keras-hub ViT saved at `path` (see `_keras_hub_saved`) as a model object; a
    preset directory gives its backbone (`model.weights.h5`)."""
    name = _keras_hub_saved(path)
    if name not in KERAS_HUB_VITS:
        raise ValueError(f"{owner}: {path!r} is a keras-hub {name}; tl_keras reads the "
                         f"keras-hub ViTs ({', '.join(KERAS_HUB_VITS)}) only.")
    try:
        import keras_hub  # noqa: F401  (registers its classes for deserialisation)
    except ImportError as err:
        raise ValueError(f"{owner}: {path!r} is a saved keras-hub {name}; reading it needs "
                         "keras-hub (pip install keras-hub).") from err
    if path.endswith(".keras"):
        config_dir, weights = None, None
    elif os.path.isdir(path):
        config_dir, weights = path, os.path.join(path, "model.weights.h5")
    else:
        config_dir, weights = os.path.dirname(path), path
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"{owner}: the keras-hub preset {config_dir!r} has no weights file "
                         f"{os.path.basename(weights)!r} (backbone.save_to_preset writes one).")
    try:
        if config_dir is None:
            return keras.saving.load_model(path, compile=False)
        with open(os.path.join(config_dir, "config.json")) as f:
            source = keras.saving.deserialize_keras_object(json.load(f))
        source.load_weights(weights)
        return source
    except Exception as err:
        raise ValueError(f"{owner}: cannot read the keras-hub {name} {path!r}: {err}") from err


def _copy_remote(path, local, owner):
    """A `gs://` (or other `tf.io.gfile`) file -> a local copy."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"load_pretrained({owner}): no such file {path!r}.")
    tf.io.gfile.copy(path, local, overwrite=True)


def _source_name(source):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, keras.Model):
        return f"{type(source).__name__} model {source.name!r}"
    return type(source).__name__


def _load_checkpoint(model, source, kernel_init, strict, shown):
    if not isinstance(model, TransformerModel):
        raise ValueError(
            f"load_pretrained({model.name}): {shown!r} is a ViT checkpoint; a "
            f"{type(model).__name__} starts from a `.keras` / `.weights.h5` file of the same "
            "architecture.")
    try:
        return load_vit_weights(model, source, kernel_init=kernel_init, strict=strict)
    except ValueError as err:
        raise ValueError(f"load_pretrained({model.name}) from {shown!r}: {err}") from err


def _load_from_model(model, source, kernel_init, strict, shown):
    """A tl_keras model object -> `model` (ViT family: adapted; other: same architecture)."""
    if isinstance(model, TransformerModel) and isinstance(source, TransformerModel):
        params = vit_npz_params(source)
        notes = []
        if source.resolved.gelu != model.resolved.gelu:
            notes.append(f"the source has gelu={source.resolved.gelu!r}, this model "
                         f"gelu={model.resolved.gelu!r}")
        if source.resolved.family == "vivit" and model.resolved.family == "vit":
            raise ValueError(
                f"load_pretrained({model.name}): {shown!r} is a ViViT; a ViT starts from an "
                "image model (a ViT or an image checkpoint).")
        try:
            report = _load_jax_vit(
                model, params, kernel_init, strict, {}, [],
                what=f"load_pretrained({model.name}) from {shown!r} ({source.name})")
        except ValueError as err:
            raise ValueError(str(err).replace(
                "parameters do not fit.",
                f"parameters do not fit ({type(source).__name__} -> {type(model).__name__}; "
                "they must share width, depth, heads and MLP size).", 1)) from err
        return WeightsReport(format="tl_keras", **report, notes=notes)
    if not isinstance(source, keras.Model):
        raise ValueError(f"load_pretrained({model.name}): {shown!r} is not a Keras model.")
    if type(source) is not type(model):
        raise ValueError(
            f"load_pretrained({model.name}): {shown!r} is a {type(source).__name__}; a "
            f"{type(model).__name__} starts from the same architecture.")
    theirs = {w.path: w for w in source.weights}
    mine = {w.path: w for w in model.weights}
    missing = sorted(set(mine) - set(theirs))
    unexpected = sorted(set(theirs) - set(mine))
    misshaped = [f"{p}: got {tuple(theirs[p].shape)}, expected {tuple(mine[p].shape)}"
                 for p in sorted(set(mine) & set(theirs))
                 if tuple(theirs[p].shape) != tuple(mine[p].shape)]
    if missing or unexpected or misshaped:
        lines = [(f"load_pretrained({model.name}) from {shown!r}: the weights do not fit "
                  "(not the same architecture).")]
        if missing:
            lines.append("  missing: " + ", ".join(missing))
        if misshaped:
            lines.append("  wrong shape: " + "; ".join(misshaped))
        if unexpected:
            lines.append("  unexpected: " + ", ".join(unexpected))
        raise ValueError("\n".join(lines))
    for p, w in mine.items():
        w.assign(keras.ops.convert_to_numpy(theirs[p]))
    return WeightsReport(format="tl_keras", loaded=sorted(mine), skipped={}, initialised=[],
                         adapted={}, notes=[])


def _load_same_architecture_h5(model, path):
    """`model.load_weights(path)`, checked: a file of another architecture raises a
    ValueError naming it, and the model keeps its weights."""
    with h5py.File(path, "r") as f:
        shapes = []
        f.visititems(lambda name, obj: shapes.append(tuple(obj.shape))
                     if isinstance(obj, h5py.Dataset) else None)
    expected = [tuple(w.shape) for w in model.weights]
    hint = ("a .weights.h5 file holds no architecture, so it loads into the same "
            "architecture only; to start another member of the family from it (e.g. a "
            "ViT into a ViViT), use the run's `.keras` file (export/<step>/model.keras).")
    if sorted(shapes) != sorted(expected):
        extra = sorted(set(shapes) - set(expected))
        lacking = sorted(set(expected) - set(shapes))
        raise ValueError(
            f"load_pretrained({model.name}): {path!r} does not fit the model: it holds "
            f"{len(shapes)} arrays, the model has {len(expected)} weights"
            + (f"; shapes only in the file: {extra}" if extra else "")
            + (f"; shapes only in the model: {lacking}" if lacking else "")
            + f". {hint}")
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    try:
        model.load_weights(path)
    except Exception as err:
        for w, v in zip(model.weights, before):
            w.assign(v)
        raise ValueError(f"load_pretrained({model.name}): {path!r} does not fit the "
                         f"model: {err}\n{hint}") from err
    return WeightsReport(format="keras_weights", loaded=sorted(w.path for w in model.weights),
                         skipped={}, initialised=[], adapted={}, notes=[])


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


def timm_state_dict(model):
    """The weights of a tl_keras ViT as a timm `VisionTransformer` state dict
    (`{name: np.ndarray}`, PyTorch layouts); the inverse of the timm reader.

    The matching timm model: `VisionTransformer(img_size, patch_size, embed_dim=C,
    depth, num_heads, mlp_ratio=mlp_dim / C, num_classes, class_token=pooling == "token",
    global_pool="token" or "avg", fc_norm=False)`; timm runs the exact GELU, as
    `gelu="exact"` here. Only plain image ViTs have a timm counterpart: a ViViT, a
    TokenLearner / TokenFuser, extra layers or a pre-logits layer raise ValueError.
    """
    _check_model(model, "timm_state_dict")
    r = model.resolved
    unsupported = []
    if r.family != "vit":
        unsupported.append(f"a {r.family} model (timm's VisionTransformer takes images)")
    if r.tokenlearner is not None:
        unsupported.append("a TokenLearner / TokenFuser")
    if r.representation_size is not None:
        unsupported.append("a pre-logits layer (`representation_size`)")
    if unsupported:
        raise ValueError(
            f"timm_state_dict({model.name}): timm's VisionTransformer has no "
            f"{' or '.join(unsupported)}; save with `save_vit_npz` instead."
        )
    jax = vit_npz_params(model)
    c = r.hidden_dim
    out = {}
    if "cls" in jax:
        out["cls_token"] = jax["cls"]
    posemb = jax["Transformer/posembed_input/pos_embedding"]
    out["pos_embed"] = posemb
    out["patch_embed.proj.weight"] = jax["embedding/kernel"].transpose(3, 2, 0, 1)  # [C, 3, ph, pw]
    out["patch_embed.proj.bias"] = jax["embedding/bias"]
    for i in range(r.num_layers + r.extra_layers):
        src = f"Transformer/encoderblock_{i}"
        dst = f"blocks.{i}"
        attention = f"{src}/MultiHeadDotProductAttention_1"
        out[f"{dst}.norm1.weight"] = jax[f"{src}/LayerNorm_0/scale"]
        out[f"{dst}.norm1.bias"] = jax[f"{src}/LayerNorm_0/bias"]
        out[f"{dst}.attn.qkv.weight"] = np.concatenate(
            [jax[f"{attention}/{n}/kernel"].reshape(c, c).T for n in ("query", "key", "value")]
        )  # [3C, C]
        out[f"{dst}.attn.qkv.bias"] = np.concatenate(
            [jax[f"{attention}/{n}/bias"].reshape(c) for n in ("query", "key", "value")]
        )  # [3C]
        out[f"{dst}.attn.proj.weight"] = jax[f"{attention}/out/kernel"].reshape(c, c).T
        out[f"{dst}.attn.proj.bias"] = jax[f"{attention}/out/bias"]
        out[f"{dst}.norm2.weight"] = jax[f"{src}/LayerNorm_2/scale"]
        out[f"{dst}.norm2.bias"] = jax[f"{src}/LayerNorm_2/bias"]
        for j, fc in enumerate(("fc1", "fc2")):
            out[f"{dst}.mlp.{fc}.weight"] = jax[f"{src}/MlpBlock_3/Dense_{j}/kernel"].T
            out[f"{dst}.mlp.{fc}.bias"] = jax[f"{src}/MlpBlock_3/Dense_{j}/bias"]
    out["norm.weight"] = jax["Transformer/encoder_norm/scale"]
    out["norm.bias"] = jax["Transformer/encoder_norm/bias"]
    if "head/kernel" in jax:
        out["head.weight"] = jax["head/kernel"].T
        out["head.bias"] = jax["head/bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def save_vit_safetensors(model, path):
    """Writes `timm_state_dict(model)` to a `.safetensors` file that timm's
    `VisionTransformer.load_state_dict` reads (needs the `safetensors` package)."""
    try:
        from safetensors.numpy import save_file
    except ImportError as err:
        raise ImportError(
            "save_vit_safetensors: writing .safetensors needs the `safetensors` package "
            "(pip install safetensors)."
        ) from err
    save_file(timm_state_dict(model), os.fspath(path), metadata={"format": "pt"})
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
