"""A ViViT initialised from a 2-D ViT (paper §5.1: the patch kernel is processed "by
following the 3D initialization strategies of ViViT", the Transformer and TokenLearner
weights are adopted directly; ViViT §3.4).

`inflate_kernel` is also what `tl_keras.convert.load_vit_npz` uses to load an image
checkpoint into a ViViT.
"""

import keras
import numpy as np

from tl_keras.layers.token_learner import TokenFuser
from tl_keras.models.vit.model import ViT, adapt_position_embedding
from tl_keras.models.vivit.model import ViViT

#: Ways to inflate a 2-D patch kernel over a tubelet.
KERNEL_INITS = ("central_frame", "average")


def check_kernel_init(kernel_init, owner):
    if kernel_init not in KERNEL_INITS:
        raise ValueError(
            f"{owner}: `kernel_init` must be 'central_frame' or 'average', got {kernel_init!r}."
        )


def inflate_kernel(kernel, frames, kernel_init, owner="inflate_kernel"):
    """2-D patch kernel `[ph, pw, 3, C]` -> 3-D `[t, ph, pw, 3, C]`: `"central_frame"`
    puts it on the middle frame (zeros elsewhere), `"average"` puts `kernel / t` on
    every frame."""
    check_kernel_init(kernel_init, owner)
    kernel = np.asarray(kernel, np.float32)
    if kernel_init == "central_frame":
        out = np.zeros((frames,) + kernel.shape, dtype=np.float32)
        out[frames // 2] = kernel
        return out
    return np.tile(kernel[None], (frames, 1, 1, 1, 1)) / frames


def tile_fuser_mixing(value, frames):
    """An image TokenFuser's token mixing (kernel `[S, S]` or bias `[S]`) -> that of a
    fuser mixing all `T'*S` tokens of a clip, started as the per-frame mixing:
    block-diagonal kernel `[T'S, T'S]`, bias tiled `[T'S]`."""
    value = np.asarray(value, np.float32)
    if value.ndim == 2:
        return np.kron(np.eye(frames, dtype=np.float32), value)  # [T'S, T'S]
    return np.tile(value, frames)  # [T'S]


class _Absent(Exception):
    """The ViT has no such layer (optional layers then keep their initialisation)."""


class _Misfit(Exception):
    """The ViT's layer does not fit the ViViT's."""


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _layer_values(layer, source, vit_model, r, kernel_init):
    """`[(ViViT variable, value)]` for one ViViT layer from its ViT namesake."""
    if source is None:
        raise _Absent()
    if layer.name == "embedding":
        values = [
            (layer.conv.kernel, inflate_kernel(_numpy(source.conv.kernel), r.tubelet_size,
                                               kernel_init, owner="transfer_vit_to_vivit")),
            (layer.conv.bias, _numpy(source.conv.bias)),
        ]
    elif type(source) is not type(layer) or len(source.weights) != len(layer.weights):
        raise _Misfit(f"the ViT's layer is a {type(source).__name__}")
    elif layer.name == "posembed_input":
        posemb = adapt_position_embedding(
            _numpy(source.pos_embedding), vit_model.resolved.num_prefix_tokens, r
        )
        if posemb is None:
            raise _Misfit("the ViViT needs a class-token row the ViT does not have")
        values = [(layer.pos_embedding, posemb)]
    else:
        values = [(w, _numpy(s)) for w, s in zip(layer.weights, source.weights)]
    if isinstance(layer, TokenFuser):
        # A fuser mixing all T'*S tokens starts as the image fuser's per-frame mixing:
        # block-diagonal `[T'S, T'S]` kernel, bias tiled.
        frames = layer.token_mixing.kernel.shape[0] // source.token_mixing.kernel.shape[0]
        kernel, bias = layer.token_mixing.kernel, layer.token_mixing.bias
        for i, (w, v) in enumerate(values):
            if frames > 1 and (w is kernel or w is bias):
                values[i] = (w, tile_fuser_mixing(v, frames))
    wrong = [
        f"{w.path}: ViT {tuple(v.shape)}, ViViT {tuple(w.shape)}"
        for w, v in values if tuple(v.shape) != tuple(w.shape)
    ]
    if wrong:
        raise _Misfit("; ".join(wrong))
    return values


def transfer_vit_to_vivit(vit_model, vivit_model, kernel_init="central_frame"):
    """Copies a ViT's weights into a ViViT of the same width and depth.

    * `embedding`: the patch kernel inflated over the tubelet (`inflate_kernel`), bias
      copied;
    * `posembed_input`: resized to the ViViT's grid (if it differs) and tiled over its
      token frames; the class-token row is dropped when the ViViT pools with `"gap"`;
    * `head`, `pre_logits`: copied when the ViT has them with the same shapes, else
      left as initialised (e.g. another class count);
    * `tokenlearner_{k}`, `tokenfuser_{k}`: copied when the ViT has them, else left as
      initialised; a fuser that mixes all `T'*S` tokens gets the image fuser's `S x S`
      mixing on its block diagonal;
    * every other layer with weights (`cls`, the blocks, `encoder_norm`) must be in the
      ViT with the same shapes, and every ViT layer with weights must be used (except
      `cls`, `head` and `pre_logits`).

    One ValueError lists every misfit, and then no weight has been changed.

    Returns:
        dict with `copied` and `initialised`: paths of the ViViT's variables.
    """
    check_kernel_init(kernel_init, "transfer_vit_to_vivit")
    r = vivit_model.resolved
    sources = {layer.name: layer for layer in vit_model.layers if layer.weights}
    plan, initialised, misfits = [], [], []
    for layer in vivit_model.layers:
        if not layer.weights:
            continue
        source = sources.pop(layer.name, None)
        optional_fit = layer.name in ("head", "pre_logits")
        optional = optional_fit or layer.name.startswith(("tokenlearner_", "tokenfuser_"))
        try:
            plan += _layer_values(layer, source, vit_model, r, kernel_init)
        except _Absent:
            if not optional:
                misfits.append(f"{layer.name}: not in the ViT")
                continue
            initialised += [w.path for w in layer.weights]
        except _Misfit as e:
            if not optional_fit:
                misfits.append(f"{layer.name}: {e}")
                continue
            initialised += [w.path for w in layer.weights]
    unused = sorted(set(sources) - {"cls", "head", "pre_logits"})
    if unused:
        misfits.append(f"ViT layers the ViViT does not have: {', '.join(unused)}")
    if misfits:
        raise ValueError(
            "transfer_vit_to_vivit: the ViT does not fit the ViViT.\n  " + "\n  ".join(misfits)
        )
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))
    return {"copied": sorted(w.path for w, _ in plan), "initialised": sorted(initialised)}


def vivit_from_vit(
    vit_model,
    num_frames=32,
    tubelet_size=2,
    kernel_init="central_frame",
    **kwargs,
):
    """A ViViT initialised from a 2-D ViT (paper §5.1).

    The ViViT gets the ViT's size, TokenLearner placement, pooling, head and image size
    (any of them can be overridden by `kwargs`, e.g. `num_classes=400`,
    `image_size=320`); its weights come from `transfer_vit_to_vivit` (`kernel_init`:
    `"central_frame"` or `"average"`).

    With `pooling="gap"` and central-frame inflation, a clip of identical frames gives the
    ViT's output on that frame.
    """
    if not isinstance(vit_model, ViT):
        raise ValueError(
            f"vivit_from_vit: expected a tl_keras.models.ViT, got {type(vit_model).__name__}."
        )
    check_kernel_init(kernel_init, "vivit_from_vit")
    config = vit_model.get_config()
    config.pop("trainable", None)
    config["name"] = kwargs.pop("name", "vivit")
    config.update(num_frames=num_frames, tubelet_size=tubelet_size)
    config.update(kwargs)
    vivit = ViViT(**config)
    transfer_vit_to_vivit(vit_model, vivit, kernel_init=kernel_init)
    return vivit
