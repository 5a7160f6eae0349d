"""Vision Transformer (Dosovitskiy et al. 2021) with TokenLearner (Ryoo et al. 2021).

Layer names of the Keras functional model (checkpoint names in `tl_keras.convert`):
`embedding` (PatchEmbedding), `cls` (ClassToken, with `pooling="token"`),
`posembed_input`, `encoderblock_{i}`, `tokenlearner_{k}`, `tokenfuser_{k}`,
`encoder_norm`, `pool`, `pre_logits` (with `representation_size`), `head`.
"""

import keras

from tl_keras.layers.embeddings import PatchEmbedding
from tl_keras.models._common import TransformerModel, build_trunk, resolve_arguments
from tl_keras.models.registry import create_model, register_family, register_model


@register_family("vit")
@keras.saving.register_keras_serializable(package="tl_keras")
class ViT(TransformerModel):
    """ViT, optionally with TokenLearner / TokenFuser, as a Keras functional model.

    Args:
        image_size: int or `(H, W)`, divisible by the patch (non-square allowed).
        patch_size: int or `(ph, pw)`.
        hidden_dim, num_layers, num_heads, mlp_dim: encoder size.
        num_classes: classes of the head (`include_top=True`).
        include_top: add the head; otherwise the output is the pooled (pre-logits)
            feature `[B, C]`.
        pooling: `"token"` (class token) or `"gap"` (mean of the final tokens); default
            `"token"` without TokenLearner, `"gap"` with it (the reference).
        dropout_rate: dropout after the position embedding, in the blocks and in the
            TokenLearner/TokenFuser MLPs.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block (linear from 0).
        representation_size: width of the `Dense + tanh` pre-logits layer, or None.
        tokenlearner: `tl_keras.TL(num_tokens, at, fuser=False, version="1.1")`, its
            config dict or a string like `"8@6+fuser"`; None = plain ViT.
        extra_layers: blocks added after the TokenLearner (the paper's "24+11").
        name: model name.
        **kwargs: base `keras.Model` arguments (`trainable`).

    Input `[B, H, W, 3]` (`"images"`); output logits `[B, num_classes]` in float32.
    Every argument is checked before any weight is made (ValueError naming it).
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        hidden_dim=768,
        num_layers=12,
        num_heads=12,
        mlp_dim=3072,
        num_classes=1000,
        include_top=True,
        pooling=None,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        representation_size=None,
        tokenlearner=None,
        extra_layers=0,
        name=None,
        **kwargs,
    ):
        arguments = dict(
            image_size=image_size,
            patch_size=patch_size,
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
        )
        r = resolve_arguments("vit", **arguments)
        inputs = keras.Input(shape=r.image_size + (3,), name="images")
        x = PatchEmbedding(r.hidden_dim, r.patch_size, name="embedding")(inputs)  # [B, N, C]
        outputs = build_trunk(x, r)
        super().__init__(inputs=inputs, outputs=outputs, name=name or "vit", **kwargs)
        self._set_arguments(arguments, r)


@register_model
def vit_ti16(**kwargs):
    """ViT-Ti/16 (192 wide, 12 layers, 3 heads)."""
    return create_model("vit_ti16", **kwargs)


@register_model
def vit_s16(**kwargs):
    """ViT-S/16 (384 wide, 12 layers, 6 heads)."""
    return create_model("vit_s16", **kwargs)


@register_model
def vit_s32(**kwargs):
    """ViT-S/32."""
    return create_model("vit_s32", **kwargs)


@register_model
def vit_b16(**kwargs):
    """ViT-B/16 (768 wide, 12 layers, 12 heads)."""
    return create_model("vit_b16", **kwargs)


@register_model
def vit_b32(**kwargs):
    """ViT-B/32."""
    return create_model("vit_b32", **kwargs)


@register_model
def vit_l16(**kwargs):
    """ViT-L/16 (1024 wide, 24 layers, 16 heads)."""
    return create_model("vit_l16", **kwargs)


@register_model
def vit_l14(**kwargs):
    """ViT-L/14."""
    return create_model("vit_l14", **kwargs)


@register_model
def vit_l10(**kwargs):
    """ViT-L/10 (default 220 px = 22x22 patches)."""
    return create_model("vit_l10", **kwargs)


@register_model
def vit_l8(**kwargs):
    """ViT-L/8."""
    return create_model("vit_l8", **kwargs)


@register_model
def vit_h14(**kwargs):
    """ViT-H/14 (1280 wide, 32 layers, 16 heads)."""
    return create_model("vit_h14", **kwargs)
