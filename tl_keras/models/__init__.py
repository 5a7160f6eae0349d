"""The model families, by name: ViT and ViViT with TokenLearner, X(2+1)D-M with the
bottleneck TokenLearner module.

One folder per family (`vit/`, `vivit/`, `x2plus1d/`: model, entrypoints, its own
layers and cost), the size table (`specs.MODEL_SPECS`, the one source of size
defaults), the registry, the argument-resolving base of every family (`base`) and the
per-layer cost formulas they share (`flops_formulas`; public front: `tl_keras.flops`).

```python
from tl_keras import TL, models
model = models.vit_b16(image_size=384, tokenlearner=TL(8, at=6, fuser=True))
model = models.create_model("vivit_l16", num_frames=32, tokenlearner="16@12")
models.list_models("vit_l*")
model = models.x2plus1d_m(num_classes=157, tokenlearner=8)
model = models.vit_b16(weights="ViT-B_16.npz", tokenlearner=TL(8, at=6), num_classes=10)
model.weights_report.summary()  # loaded / resized / left as initialised / skipped
```
"""

from tl_keras.models.base import UnknownArgumentError
from tl_keras.models.registry import (
    create_model,
    get_model_spec,
    list_models,
    register_model,
)
from tl_keras.models.specs import MODEL_SPECS, TL
from tl_keras.models.vit import (
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
from tl_keras.models.vivit import (
    ViViT,
    vivit_b16,
    vivit_from_vit,
    vivit_l10,
    vivit_l14,
    vivit_l16,
)
from tl_keras.models.x2plus1d import X2Plus1D, x2plus1d_m, x2plus1d_tiny

__all__ = [
    "UnknownArgumentError",
    "MODEL_SPECS",
    "TL",
    "ViT",
    "ViViT",
    "create_model",
    "get_model_spec",
    "list_models",
    "register_model",
    "vivit_from_vit",
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
    "vivit_b16",
    "vivit_l16",
    "vivit_l14",
    "vivit_l10",
    "X2Plus1D",
    "x2plus1d_m",
    "x2plus1d_tiny",
]
