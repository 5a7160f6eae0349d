"""ViViT (Arnab et al. 2021), the unfactorised ("joint space-time") model, with
TokenLearner applied per time step (Ryoo et al. 2021, §4-5).

A `[B, T, H, W, 3]` clip becomes `T/t x H/ph x W/pw` tubelet tokens (frame-major), a
learned position embedding is added, and the shared encoder runs over all of them. A
TokenLearner turns each of the `T/t` token frames into S tokens (`T/t * S` in all).

Layer names are those of `tl_keras.models.vit`; the stem is a `TubeletEmbedding`
named `embedding` (Conv3D kernel `[t, ph, pw, 3, C]`).
"""

import keras

from tl_keras.layers.embeddings import TubeletEmbedding
from tl_keras.models._common import TransformerModel, build_trunk, resolve_arguments
from tl_keras.models.registry import create_model, register_family, register_model


@register_family("vivit")
@keras.saving.register_keras_serializable(package="tl_keras")
class ViViT(TransformerModel):
    """ViViT with optional TokenLearner / TokenFuser, as a Keras functional model.

    Args:
        num_frames: T, frames of the input clip (divisible by `tubelet_size`).
        image_size: int or `(H, W)`, divisible by the patch.
        patch_size: spatial patch, int or `(ph, pw)`.
        tubelet_size: t, frames per tubelet (16x16x2 = `patch_size=16, tubelet_size=2`).
        fuser_mix_tokens_over_time: the TokenFuser's token mixing runs over all
            `T/t * S` tokens (the paper and DESIGN, default) or over the S tokens of
            each frame (Scenic's ViViT; use False to load its checkpoints).
        Other arguments: as `tl_keras.models.ViT`.

    Input `[B, T, H, W, 3]` (`"videos"`); output logits `[B, num_classes]` (float32).
    """

    def __init__(
        self,
        num_frames=32,
        image_size=224,
        patch_size=16,
        tubelet_size=2,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        num_classes=400,
        include_top=True,
        pooling=None,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        representation_size=None,
        tokenlearner=None,
        extra_layers=0,
        fuser_mix_tokens_over_time=True,
        name=None,
        **kwargs,
    ):
        arguments = dict(
            num_frames=num_frames,
            image_size=image_size,
            patch_size=patch_size,
            tubelet_size=tubelet_size,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            num_classes=num_classes,
            include_top=include_top,
            pooling=pooling,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate,
            representation_size=representation_size,
            tokenlearner=tokenlearner,
            extra_layers=extra_layers,
            fuser_mix_tokens_over_time=fuser_mix_tokens_over_time,
        )
        r = resolve_arguments("vivit", **arguments)
        inputs = keras.Input(shape=(r.num_frames,) + r.image_size + (3,), name="videos")
        x = TubeletEmbedding(
            r.hidden_dim, r.patch_size, r.tubelet_size, name="embedding"
        )(inputs)  # [B, T'*N, C]
        outputs = build_trunk(x, r)
        super().__init__(inputs=inputs, outputs=outputs, name=name or "vivit", **kwargs)
        self._set_arguments(arguments, r)


def vivit_from_vit(
    vit_model,
    num_frames=32,
    tubelet_size=2,
    kernel_init="central_frame",
    **kwargs,
):
    """A ViViT initialised from a 2-D ViT (ViViT §3.4; TokenLearner paper §5.2).

    The ViViT gets the ViT's size, TokenLearner placement, pooling, head and image size
    (any of them can be overridden by `kwargs`, e.g. `num_classes=400`,
    `image_size=320`). Weights: the patch kernel is inflated over time
    (`"central_frame"`: the 2-D kernel on the middle frame of each tubelet, zeros
    elsewhere; `"average"`: the kernel / t on every frame); the position embedding is
    resized to the new grid (if it differs) and tiled over the token frames; blocks,
    TokenLearner, TokenFuser, norms, pre-logits and (when the class count matches) the
    head are copied. A fuser that mixes all `T*S` tokens starts as the per-frame mixing of
    the image model (block-diagonal kernel).

    With `pooling="gap"` and central-frame inflation, a clip of identical frames gives the
    ViT's output on that frame.
    """
    from tl_keras.models.vit import ViT

    if not isinstance(vit_model, ViT):
        raise ValueError(
            f"vivit_from_vit: expected a tl_keras.models.ViT, got {type(vit_model).__name__}."
        )
    if kernel_init not in ("central_frame", "average"):
        raise ValueError(
            f"vivit_from_vit: `kernel_init` must be 'central_frame' or 'average', "
            f"got {kernel_init!r}."
        )
    config = vit_model.get_config()
    config.pop("trainable", None)
    config["name"] = kwargs.pop("name", "vivit")
    config.update(num_frames=num_frames, tubelet_size=tubelet_size)
    config.update(kwargs)
    vivit = ViViT(**config)
    from tl_keras.convert import transfer_vit_to_vivit

    transfer_vit_to_vivit(vit_model, vivit, kernel_init=kernel_init)
    return vivit


@register_model
def vivit_b16(**kwargs):
    """ViViT-B/16x2 (32 frames, 224 px by default)."""
    return create_model("vivit_b16", **kwargs)


@register_model
def vivit_l16(**kwargs):
    """ViViT-L/16x2 (the paper's 32x224 model, 1446 GFLOPs per view)."""
    return create_model("vivit_l16", **kwargs)


@register_model
def vivit_l14(**kwargs):
    """ViViT-L/14x2."""
    return create_model("vivit_l14", **kwargs)


@register_model
def vivit_l10(**kwargs):
    """ViViT-L/10x2 (default 220 px = 22x22 patches)."""
    return create_model("vivit_l10", **kwargs)
