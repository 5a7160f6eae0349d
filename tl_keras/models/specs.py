"""The one size table of tl_keras, and `TL`, the TokenLearner placement spec.

`MODEL_SPECS[name]` holds the defaults of a registered model; any keyword argument the
user passes to `create_model(name, **kwargs)` (or to the entrypoint `vit_b16(**kwargs)`)
wins over the table. The family constructors take their size defaults from it too
(`ViT`: `vit_b16`, `ViViT`: `vivit_b16`, `X2Plus1D`: `x2plus1d_m`).

ViT sizes (Dosovitskiy et al. 2021, Table 1, Ti and S as Steiner et al. 2021; the
paper's §3.1; hidden, layers, MLP, heads):
Ti 192/12/768/3, S 384/12/1536/6, B 768/12/3072/12, L 1024/24/4096/16,
H 1280/32/5120/16. ViViT uses the same encoders on 16x16x2 tubelets (Arnab et al. 2021).
"""

import dataclasses
import re
from typing import Optional, Union

from tl_keras.layers.tokenizers import FUSERS, TOKENIZERS, version_has_maps

_SIZES = {
    "Ti": dict(hidden_dim=192, num_layers=12, num_heads=3, mlp_dim=768),
    "S": dict(hidden_dim=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "B": dict(hidden_dim=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "L": dict(hidden_dim=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "H": dict(hidden_dim=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}


def _vit(size, patch, image_size=224):
    return dict(family="vit", patch_size=patch, image_size=image_size, **_SIZES[size])


def _vivit(size, patch, image_size=224):
    return dict(
        family="vivit",
        patch_size=patch,
        tubelet_size=2,
        num_frames=32,
        image_size=image_size,
        **_SIZES[size],
    )


# Default image sizes must be divisible by the patch. The /10 models use 220 px: the
# paper's 224 px with a VALID /10 convolution also gives 22x22 patches.
MODEL_SPECS = {
    "vit_ti16": _vit("Ti", 16),
    "vit_s16": _vit("S", 16),
    "vit_s32": _vit("S", 32),
    "vit_b16": _vit("B", 16),
    "vit_b32": _vit("B", 32),
    "vit_l16": _vit("L", 16),
    "vit_l14": _vit("L", 14),
    "vit_l10": _vit("L", 10, image_size=220),
    "vit_l8": _vit("L", 8),
    "vit_h14": _vit("H", 14),
    "vivit_b16": _vivit("B", 16),
    "vivit_l16": _vivit("L", 16),
    "vivit_l14": _vivit("L", 14),
    "vivit_l10": _vivit("L", 10, image_size=220),
    # X(2+1)D-M (paper §6.1): X3D-M widths and depths (X3D paper Table 1), each 3-D conv
    # factorised into a 2-D spatial and a 1-D temporal conv; res5 holds the TokenLearner.
    "x2plus1d_m": dict(
        family="x2plus1d",
        num_frames=64,
        image_size=224,
        stem_width=24,
        widths=(24, 48, 96, 192),
        depths=(3, 5, 11, 7),
        expansion=2.25,
        head_width=432,
        fc_width=2048,
    ),
    # X(2+1)D-M scaled down for `--runlocal` and tests (`experiments/charades.py`): two
    # stages instead of four, so that the last one (res5's role, holding the module) is
    # 4x4 per frame at 32 px; 8 frames.
    "x2plus1d_tiny": dict(
        family="x2plus1d",
        num_frames=8,
        image_size=32,
        stem_width=16,
        widths=(24, 48),
        depths=(2, 2),
        expansion=2.0,
        head_width=96,
        fc_width=96,
    ),
}


_TL_PATTERN = re.compile(r"^\s*(\d+)\s*(?:@\s*(\d+)\s*)?((?:\+\s*[\w.]+\s*)*)$")


@dataclasses.dataclass(frozen=True)
class TL:
    """Where and how TokenLearner goes into a ViT / ViViT encoder (frozen, serialisable).

    Args:
        num_tokens: S, tokens learned per image (per frame for video).
        at: the TokenLearner goes before block `at` (0-based): "8-TL at 6" of a 12-layer
            model is `TL(8, at=6)`, after the 6th block. Required by ViT / ViViT; left
            out (None) for X(2+1)D-M, whose TokenLearner sits in res5's modules
            (`TL(8)`, `TL(8, version="1")`).
        fuser: False = paper model "a" (TokenLearner once); a fuser name = model "b"
            (every block from `at` on is TokenLearner -> block -> fuser + residual):
            `"tokenfuser"` (`TokenFuser`, Eq. 2; `True` means this one), or the Fig. 7
            alternatives `"unpool"` (the tokens spread back with the token learner's
            own maps) and `"reprojection"` (one more attention layer from the positions
            to the tokens). Stored as False or the name: `TL(8, 6, fuser=True) ==
            TL(8, 6, fuser="tokenfuser")`.
        version: `"1.1"` (MLP + softmax maps, the reference default), `"1"` (paper
            Eq. 1, four 3x3 convs + sigmoid), or a baseline tokenizer of the paper's
            ablations (`"grid"`, `"pool"`, `"fc"`, `"pool_mlp"`; see
            `tl_keras.layers.baselines`).

    `TL.parse("16@12")`, `TL.parse("8@6+fuser")`, `TL.parse("8@6+fuser+v1")`,
    `TL.parse("8@6+unpool")`, `TL.parse("8@6+reprojection")`, `TL.parse("8@6+pool")`,
    `TL.parse("8+v1")` (no `at`); `str(TL(8, 6, fuser=True)) == "8@6+fuser"`.
    """

    num_tokens: int
    at: Optional[int] = None
    fuser: Union[bool, str] = False
    version: str = "1.1"

    def __post_init__(self):
        if isinstance(self.num_tokens, bool) or not isinstance(self.num_tokens, int) or (
            self.num_tokens <= 0
        ):
            raise ValueError(f"TL: `num_tokens` must be a positive int, got {self.num_tokens!r}.")
        if self.at is not None and (
            isinstance(self.at, bool) or not isinstance(self.at, int) or self.at < 0
        ):
            raise ValueError(f"TL: `at` must be an int >= 0 (or None), got {self.at!r}.")
        fuser = self.fuser
        if fuser is True:
            fuser = "tokenfuser"
        if fuser is not False and not (isinstance(fuser, str) and fuser in FUSERS):
            raise ValueError(
                f"TL: `fuser` must be False, True (= 'tokenfuser') or one of "
                f"{sorted(FUSERS)}, got {self.fuser!r}."
            )
        version = str(self.version)
        versions = TOKENIZERS
        if version not in versions:
            raise ValueError(
                f"TL: unknown `version`={self.version!r}; known: {sorted(versions)}."
            )
        if fuser == "unpool" and not version_has_maps(version):
            raise ValueError(
                f"TL: `fuser='unpool'` spreads the tokens back with the token learner's "
                f"maps, and `version`={version!r} has none."
            )
        object.__setattr__(self, "fuser", fuser)
        object.__setattr__(self, "version", version)

    def to_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def parse(cls, text):
        """`"S@AT"` (or `"S"`, no `at`) with an optional fuser (`+fuser` = `+tokenfuser`,
        `+unpool`, `+reprojection`) and a version suffix: `+v1`, `+v1.1` or a baseline
        name (`+grid`, `+pool`, ...)."""
        match = _TL_PATTERN.match(str(text))
        if not match:
            raise ValueError(
                f"TL.parse: cannot read {text!r}; expected 'S@AT' (or 'S') with optional "
                "'+fuser' and '+v1' (e.g. '16@12', '8@6+fuser', '8+v1')."
            )
        num_tokens = int(match.group(1))
        at = None if match.group(2) is None else int(match.group(2))
        fuser, version = False, "1.1"
        versions = TOKENIZERS
        for flag in filter(None, (f.strip() for f in match.group(3).split("+"))):
            if flag == "fuser":
                fuser = "tokenfuser"
            elif flag in FUSERS:
                fuser = flag
            elif flag.startswith("v") and flag[1:] in ("1", "1.1"):
                version = flag[1:]
            elif flag in versions and flag not in ("1", "1.1"):
                version = flag
            else:
                raise ValueError(f"TL.parse: unknown option {flag!r} in {text!r}.")
        return cls(num_tokens, at, fuser=fuser, version=version)

    def __str__(self):
        text = f"{self.num_tokens}" if self.at is None else f"{self.num_tokens}@{self.at}"
        if self.fuser:
            text += "+fuser" if self.fuser == "tokenfuser" else f"+{self.fuser}"
        if self.version in ("1", "1.1"):
            text += "+v1" if self.version == "1" else ""
        else:
            text += f"+{self.version}"
        return text


def as_tl(value, owner="tokenlearner"):
    """None, a `TL`, its config dict or a string like `"16@12"` -> `TL` or None."""
    if value is None or isinstance(value, TL):
        return value
    if isinstance(value, str):
        return TL.parse(value)
    if isinstance(value, dict):
        return TL.from_config(value)
    raise ValueError(
        f"{owner}: expected a tl_keras.TL, its config dict or a string like '16@12'; "
        f"got {value!r}."
    )
