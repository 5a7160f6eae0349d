"""GFLOPs and parameter counts of every model family, counted the way the paper reports
them: multiply-accumulates (MACs) of all matmuls, convolutions and attention products,
in billions (paper §3, Tables 2-7; the per-layer formulas are
`tl_keras.models.flops_formulas`).

This is the public front; it dispatches by family to the family's own count:
`tl_keras.models.vit.flops` (ViT and ViViT; its docstring says how the count relates to
the paper's numbers) and `tl_keras.models.x2plus1d.flops` (X(2+1)D, paper §6).

`gflops("vit_l16", image_size=512, tokenlearner=TL(16, at=12))` counts from the
validated arguments without building anything; `gflops(model)` counts a built model
(ViT / ViViT: layer by layer, with the same formulas; a test checks they agree).
"""

import numpy as np

from tl_keras.models.registry import resolve_model
from tl_keras.models.vit import flops as transformer_flops
from tl_keras.models.vit.flops import PAPER_TABLE, count_model_macs, layer_macs  # noqa: F401
from tl_keras.models.x2plus1d import flops as x2plus1d_flops
from tl_keras.models.x2plus1d.flops import (  # noqa: F401  (the X(2+1)D functions)
    PAPER_MODULES,
    PAPER_NETWORKS,
    module_cost,
    module_gflops,
    module_params,
    module_table_markdown,
    network_table_markdown,
    x2plus1d_cost,
    x2plus1d_gflops,
)
from tl_keras.models.x2plus1d.model import X2Plus1D

#: Family (`MODEL_SPECS[name]["family"]`) -> cost of its resolved arguments.
FAMILY_COSTS = {
    "vit": transformer_flops.resolved_cost,
    "vivit": transformer_flops.resolved_cost,
    "x2plus1d": x2plus1d_flops.resolved_cost,
}


def cost(name, /, **model_kwargs):
    """`Cost` (MACs, parameters, per-part breakdown) of a registered model with
    `create_model` arguments; nothing is built."""
    resolved = resolve_model(name, **model_kwargs)
    return FAMILY_COSTS[resolved.family](resolved)


def gflops(model_or_name, /, **model_kwargs):
    """GFLOPs of one example as the paper counts them: MACs of all matmuls, convolutions
    and attention products, in billions.

    Args:
        model_or_name: a registered model name (counted from its arguments, nothing is
            built) or a built tl_keras / Keras functional model.
        **model_kwargs: with a name: arguments as for `create_model`.

    `gflops("vit_b16", image_size=384)` -> 55.48 (paper: 55.63).
    """
    if isinstance(model_or_name, str):
        return cost(model_or_name, **model_kwargs).macs / 1e9
    if model_kwargs:
        raise ValueError("gflops: keyword arguments are only used with a model name.")
    if isinstance(model_or_name, X2Plus1D):
        return x2plus1d_flops.resolved_cost(model_or_name.resolved).macs / 1e9
    return count_model_macs(model_or_name) / 1e9


def count_params(model_or_name, /, **model_kwargs):
    """Trainable parameters of a registered model (from its arguments) or a model."""
    if isinstance(model_or_name, str):
        return cost(model_or_name, **model_kwargs).params
    return int(sum(np.prod(w.shape) for w in model_or_name.trainable_weights))


def paper_table():
    """Rows `(description, ours, paper, relative difference)` of `PAPER_TABLE`."""
    rows = []
    for description, name, kwargs, paper in PAPER_TABLE:
        ours = gflops(name, **kwargs)
        rows.append((description, ours, paper, ours / paper - 1.0))
    return rows


def paper_table_markdown():
    """`PAPER_TABLE` as a Markdown table (ours vs the paper), for the README."""
    lines = ["| Model | tl_keras GFLOPs | Paper GFLOPs | Difference |", "|---|---:|---:|---:|"]
    for description, ours, paper, rel in paper_table():
        lines.append(f"| {description} | {ours:.2f} | {paper:g} | {100 * rel:+.2f}% |")
    return "\n".join(lines)
