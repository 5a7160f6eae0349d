"""The one registry of token learners and fusers: their names and the factories.

A token learner turns each image / frame into S tokens; a fuser maps processed tokens
back onto the grid. Every name a `TL` spec's `version` / `fuser`, a config's
`model.tokenlearner.version` / `model.tokenlearner.fuser` (ViT / ViViT) / `model.fuser`
(X(2+1)D) or an X(2+1)D module may use is a key here:

| name | layer | paper |
|---|---|---|
| `"1.1"` | `TokenLearner` (MLP + softmax over positions) | §2.1, Appendix (v1.1) |
| `"1"` | `TokenLearnerV1` (convs + sigmoid, sum pooling) | Eq. 1 |
| `"grid"`, `"pool"`, `"fc"`, `"pool_mlp"` | the baselines of `tl_keras.layers.baselines` | Table 6, §6.3 |

| fuser | layer | paper |
|---|---|---|
| `"tokenfuser"` | `TokenFuser` | Eq. 2 |
| `"unpool"`, `"reprojection"` | `UnpoolFuser`, `ReprojectionFuser` | Fig. 7 |

To add a token learner: write the layer (same inputs and outputs as `TokenLearner`),
add it to `TOKENIZERS`, and add its name to the `Literal` of
`tl_keras.configs.TokenLearnerConfig.version` (a test pins the two together).
"""

import inspect

from tl_keras.layers.baselines import (
    FCTokenizer,
    GridTokenizer,
    PoolMLPTokenizer,
    PoolTokenizer,
    ReprojectionFuser,
    UnpoolFuser,
)
from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1

#: Token learner name (a `TL` spec's `version`) -> layer class.
TOKENIZERS = {
    "1.1": TokenLearner,
    "1": TokenLearnerV1,
    "grid": GridTokenizer,
    "pool": PoolTokenizer,
    "fc": FCTokenizer,
    "pool_mlp": PoolMLPTokenizer,
}

#: Fuser name -> layer class.
FUSERS = {"tokenfuser": TokenFuser, "unpool": UnpoolFuser, "reprojection": ReprojectionFuser}


def _accepted(cls):
    return set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def _instantiate(cls, positional, common, extra, owner):
    accepted = _accepted(cls)
    unknown = sorted(set(extra) - accepted)
    if unknown:
        raise ValueError(
            f"{owner}: {cls.__name__} does not take {unknown}; it takes {sorted(accepted)}."
        )
    base = {"dtype", "name"}  # base-layer arguments every layer takes
    args = {
        k: v for k, v in common.items() if (k in accepted or k in base) and v is not None
    }
    args.update(extra)
    return cls(*positional, **args)


def make_tokenizer(
    version,
    num_tokens,
    *,
    temporal=False,
    spatial_shape=None,
    dropout_rate=None,
    dtype=None,
    name=None,
    **kwargs,
):
    """Builds a token learner by name (a key of `TOKENIZERS`).

    The common arguments (`temporal`, `spatial_shape` (the `(h, w)` of a frame),
    `dropout_rate`) go to the layers that have them and are ignored by the others (e.g.
    `"1.1"` needs no frame size, `"grid"` has no dropout); any other keyword (e.g.
    `num_conv_layers=1` for `"1"`, `pooling="avg"` for `"pool"`) must be an argument of
    the chosen layer, else ValueError.
    """
    version = str(version)
    if version not in TOKENIZERS:
        raise ValueError(
            f"make_tokenizer: unknown `version`={version!r}; known: {sorted(TOKENIZERS)}."
        )
    common = dict(
        temporal=temporal,
        spatial_shape=tuple(spatial_shape) if spatial_shape is not None else None,
        dropout_rate=dropout_rate,
        dtype=dtype,
        name=name,
    )
    return _instantiate(TOKENIZERS[version], (num_tokens,), common, kwargs, "make_tokenizer")


def make_fuser(kind, *, temporal=False, dropout_rate=None, dtype=None, name=None, **kwargs):
    """Builds a fuser by name: `"tokenfuser"` (TokenFuser), `"unpool"` (UnpoolFuser,
    called with the token learner's maps as a third input) or `"reprojection"`
    (ReprojectionFuser). Extra keywords must be arguments of the chosen layer."""
    if kind not in FUSERS:
        raise ValueError(f"make_fuser: unknown `kind`={kind!r}; known: {sorted(FUSERS)}.")
    common = dict(temporal=temporal, dropout_rate=dropout_rate, dtype=dtype, name=name)
    return _instantiate(FUSERS[kind], (), common, kwargs, "make_fuser")


def tokenizer_has_maps(layer):
    """Whether `layer.attention_maps(x)` exists (what `UnpoolFuser` needs)."""
    if isinstance(layer, PoolMLPTokenizer):
        return False
    if isinstance(layer, FCTokenizer):
        return layer.has_maps
    return hasattr(layer, "attention_maps")


def version_has_maps(version):
    """Whether the token learner named `version` (a `TOKENIZERS` key, default
    arguments) has spatial maps, i.e. can feed an `UnpoolFuser`."""
    return hasattr(TOKENIZERS[str(version)], "attention_maps")
