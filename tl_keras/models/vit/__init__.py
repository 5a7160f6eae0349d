"""The ViT family (paper §3): `ViT`, its entrypoints, the transformer trunk ViViT shares,
and its cost (`tl_keras.models.vit.flops`)."""

from tl_keras.models.vit.model import (
    TransformerArguments,
    TransformerModel,
    ViT,
    vit_b16,
    vit_b32,
    vit_h14,
    vit_l8,
    vit_l10,
    vit_l14,
    vit_l16,
    vit_s16,
    vit_s32,
    vit_ti16,
)

__all__ = [
    "TransformerArguments",
    "TransformerModel",
    "ViT",
    "vit_ti16",
    "vit_s16",
    "vit_s32",
    "vit_b16",
    "vit_b32",
    "vit_l16",
    "vit_l14",
    "vit_l10",
    "vit_l8",
    "vit_h14",
]
