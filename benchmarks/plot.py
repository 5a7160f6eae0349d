"""Measured throughput against GFLOPs (the x-axis of the paper's Fig. 5), one panel per model.

    python benchmarks/plot.py                      # benchmarks/results/throughput.json -> .png
    python benchmarks/plot.py --json R.json --out R.png
    python benchmarks/plot.py --quick              # runs throughput.py --quick, plots it (CI)

Every point is one measured median of `benchmarks/throughput.py` (images or videos per
second) at the model's GFLOPs from `tl_keras.flops` (MACs, as the paper). Colours are the
modes (inference / train step, XLA off / on), marker shapes the variants; the dotted curve through each base model is
what a variant would reach if time were proportional to GFLOPs (base speed x base GFLOPs /
GFLOPs), so a TokenLearner point on its curve gets all of its FLOPs saving, and one below
it gets part of it. The timm peer (ViT-B/16 inference) is a star.

Needs matplotlib (`pip install 'tl_keras[bench]'` or `'tl_keras[plot]'`; drawn on
`tl_keras.plotting.new_figure`, as every figure of tl_keras).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TL_KERAS_LAZY_IMPORT", "1")  # tl_keras.plotting without TensorFlow
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import variants as V  # noqa: E402

STYLES = {  # the colour of each mode
    ("inference", False): dict(color="tab:blue", label="inference, XLA off"),
    ("inference", True): dict(color="tab:cyan", label="inference, XLA on"),
    ("train", False): dict(color="tab:red", label="train step, XLA off"),
    ("train", True): dict(color="tab:orange", label="train step, XLA on"),
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")  # the shape of each variant, in order


def figure(results):
    """The throughput figure of `results` (throughput.py's JSON): a matplotlib Figure with one
    panel per model group (`tl_keras.plotting.new_figure`: the Agg canvas). Colour = mode,
    marker shape = variant (two legends), so no label sits on a point."""
    from matplotlib.lines import Line2D

    from tl_keras import plotting

    groups = results["groups"]
    fig = plotting.new_figure(figsize=(6.2 * len(groups), 5.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)
    legend = {}
    for ax, group in zip(axes[0], groups):
        base_label = group["variants"][0][0]
        rows = [r for r in group["timed"] if r["framework"] == "tl_keras"]
        names = [v[0] for v in group["variants"]]
        names += sorted({r["variant"] for r in rows} - set(names))
        marker = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(names)}
        xs = sorted({r["gflops"] for r in rows})
        span = (min(xs) * 0.85, max(xs) * 1.08)
        mode_handles = []
        for (mode, xla), style in STYLES.items():
            series = [r for r in rows if r["mode"] == mode and r["xla"] == xla]
            if not series:
                continue
            for r in series:
                ax.scatter([r["gflops"]], [r["median"]], s=40, zorder=3, color=style["color"],
                           marker=marker[r["variant"]], edgecolors="black", linewidths=0.4)
            base = next((r for r in series if r["variant"] == base_label), None)
            if base is not None:
                k = base["median"] * base["gflops"]
                grid = [span[0] + i * (span[1] - span[0]) / 60 for i in range(61)]
                ax.plot(grid, [k / g for g in grid], ":", color=style["color"], lw=1, zorder=1)
            mode_handles.append(Line2D([], [], color=style["color"], marker="o", ls=":",
                                       label=style["label"]))
        for r in group["timed"]:
            if r["framework"] == "timm":
                ax.scatter([r["gflops"]], [r["median"]], marker="*", s=160, color="black",
                           zorder=4)
                mode_handles.append(Line2D([], [], color="black", marker="*", ls="",
                                           markersize=10,
                                           label=f"timm {group['peer']['timm']} (PyTorch), "
                                                 "inference"))
        variant_handles = [
            Line2D([], [], color="0.6", marker=marker[n], ls="", markeredgecolor="black",
                   markeredgewidth=0.4, label=n)
            for n in names if any(r["variant"] == n for r in rows)
        ]
        ax.set_xlim(*span)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("GFLOPs per " + group["unit"][:-1] + " (MACs, as the paper; tl_keras.flops)")
        ax.set_ylabel(f"measured {group['unit']}/s (median)")
        ax.set_title(group["title"], fontsize=10)
        ax.grid(alpha=0.3)
        for h in mode_handles:  # one legend of the modes for the figure, below the panels
            if h.get_label() not in legend:
                legend[h.get_label()] = h
        ax.legend(handles=variant_handles, fontsize=7, loc="upper center", title="variant",
                  title_fontsize=7)
    fig.legend(handles=list(legend.values()), loc="outside lower center", ncols=len(legend),
               fontsize=8)
    m = results["machine"]
    fig.suptitle(
        f"tl_keras throughput vs GFLOPs, {m['cores']} cores {m['cpu']}, TF {m['tensorflow']}, "
        f"{m['date']} (dotted: time proportional to GFLOPs)", fontsize=10,
    )
    return fig


def plot(results, out):
    """Writes `figure(results)` to the PNG `out`; a one-line exit without matplotlib."""
    from tl_keras import plotting

    try:
        plotting.require_matplotlib()
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(f"plot.py: {err}")
    return plotting.save_figure(figure(results), out, dpi=110)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--json", default=None, action="append",
        help="throughput.py results (JSON); repeat to merge runs (a later file's group "
        "replaces an earlier one with the same key)",
    )
    p.add_argument("--out", default=None, help="PNG to write")
    p.add_argument(
        "--quick", action="store_true",
        help="run `throughput.py --quick` into a temp dir and plot it (CI smoke check)",
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.quick and args.json is None:
        tmp = tempfile.mkdtemp(prefix="tl_keras_plot_")
        args.json = [os.path.join(tmp, "throughput.json")]
        subprocess.run([sys.executable, os.path.join(HERE, "throughput.py"), "--quick",
                        "--json", args.json[0]], check=True)
        args.out = args.out or os.path.join(tmp, "throughput.png")
    args.json = args.json or [os.path.join(V.RESULTS, "throughput.json")]
    args.out = args.out or os.path.splitext(args.json[0])[0] + ".png"
    results, order = None, []
    for path in args.json:
        with open(path) as f:
            run = json.load(f)
        if results is None:
            results = dict(run, groups={})
        for group in run["groups"]:
            if group["key"] not in order:
                order.append(group["key"])
            results["groups"][group["key"]] = group
    results["groups"] = [results["groups"][k] for k in order]
    print(f"wrote {plot(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
