"""The X(2+1)D family (paper §6): its layers (`layers`: the (2+1)D convolution, the
residual unit and the bottleneck modules of Tables 12-14), the model (`model`:
`X2Plus1D`, `x2plus1d_m`) and its cost (`flops`, imported on its own:
`python -m tl_keras.models.x2plus1d.flops` prints the BENCHMARKS.md tables)."""

from tl_keras.models.x2plus1d.layers import (
    DEFAULT_MODULE,
    MODULE_DESCRIPTIONS,
    MODULE_TITLES,
    MODULES,
    Conv2Plus1D,
    FrameBroadcastAttention,
    FrameMLPMixer,
    SpaceTimeAttention,
    SpaceTimeModule,
    TokenLearnerModule,
    X2Plus1DUnit,
)
from tl_keras.models.x2plus1d.model import X2PLUS1D_M, X2Plus1D, x2plus1d_m, x2plus1d_tiny

__all__ = [
    "DEFAULT_MODULE",
    "MODULES",
    "MODULE_TITLES",
    "MODULE_DESCRIPTIONS",
    "Conv2Plus1D",
    "FrameBroadcastAttention",
    "FrameMLPMixer",
    "SpaceTimeAttention",
    "SpaceTimeModule",
    "TokenLearnerModule",
    "X2Plus1DUnit",
    "X2PLUS1D_M",
    "X2Plus1D",
    "x2plus1d_m",
    "x2plus1d_tiny",
]
