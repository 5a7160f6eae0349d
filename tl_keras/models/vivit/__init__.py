"""The ViViT family (paper §5): `ViViT`, its entrypoints and the initialisation from a
ViT (`vivit_from_vit`, `transfer_vit_to_vivit`). Its cost is the ViT family's
(`tl_keras.models.vit.flops`)."""

from tl_keras.models.vivit.inflate import (
    inflate_kernel,
    transfer_vit_to_vivit,
    vivit_from_vit,
)
from tl_keras.models.vivit.model import ViViT, vivit_b16, vivit_l10, vivit_l14, vivit_l16

__all__ = [
    "ViViT",
    "inflate_kernel",
    "transfer_vit_to_vivit",
    "vivit_from_vit",
    "vivit_b16",
    "vivit_l16",
    "vivit_l14",
    "vivit_l10",
]
