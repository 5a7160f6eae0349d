"""Measured throughput against GFLOPs (the x-axis of the paper's Fig. 5), one panel per model.

    python benchmarks/plot.py                      # benchmarks/results/throughput.json -> .png
    python benchmarks/plot.py --json R.json --out R.png
    python benchmarks/plot.py --quick              # runs throughput.py --quick, plots it (CI)

Every point is one measured median of `benchmarks/throughput.py` (images or videos per
second) at the model's GFLOPs from `tl_keras.flops` (MACs, as the paper). Colours are the
modes (inference / train step, XLA off / on); the dotted curve through each base model is
what a variant would reach if time were proportional to GFLOPs (base speed x base GFLOPs /
GFLOPs), so a TokenLearner point on its curve gets all of its FLOPs saving, and one below
it gets part of it. The timm peer (ViT-B/16 inference) is a star.

Needs matplotlib (`pip install matplotlib`; not a dependency of tl_keras).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import variants as V  # noqa: E402

STYLES = {
    ("inference", False): dict(color="tab:blue", marker="o", label="inference, XLA off"),
    ("inference", True): dict(color="tab:cyan", marker="s", label="inference, XLA on"),
    ("train", False): dict(color="tab:red", marker="o", label="train step, XLA off"),
    ("train", True): dict(color="tab:orange", marker="s", label="train step, XLA on"),
}


def plot(results, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SystemExit(f"plot.py needs matplotlib (pip install matplotlib): {err}")
    groups = results["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 5.2), squeeze=False)
    for ax, group in zip(axes[0], groups):
        base_label = group["variants"][0][0]
        rows = [r for r in group["timed"] if r["framework"] == "tl_keras"]
        xs = sorted({r["gflops"] for r in rows})
        span = (min(xs) * 0.85, max(xs) * 1.08)
        for (mode, xla), style in STYLES.items():
            series = [r for r in rows if r["mode"] == mode and r["xla"] == xla]
            if not series:
                continue
            base = next(r for r in series if r["variant"] == base_label)
            ax.scatter([r["gflops"] for r in series], [r["median"] for r in series],
                       s=46, zorder=3, **style)
            k = base["median"] * base["gflops"]
            grid = [span[0] + i * (span[1] - span[0]) / 60 for i in range(61)]
            ax.plot(grid, [k / g for g in grid], ":", color=style["color"], lw=1, zorder=1)
            for r in series:
                ax.annotate(r["variant"], (r["gflops"], r["median"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points", color=style["color"])
        for r in group["timed"]:
            if r["framework"] == "timm":
                ax.scatter([r["gflops"]], [r["median"]], marker="*", s=160, color="black",
                           zorder=4, label=f"timm {group['peer']['timm']} (PyTorch), inference")
        ax.set_xlim(*span)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("GFLOPs per " + group["unit"][:-1] + " (MACs, as the paper; tl_keras.flops)")
        ax.set_ylabel(f"measured {group['unit']}/s (median)")
        ax.set_title(group["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    m = results["machine"]
    fig.suptitle(
        f"tl_keras throughput vs GFLOPs, {m['cores']} cores {m['cpu']}, TF {m['tensorflow']}, "
        f"{m['date']} (dotted: time proportional to GFLOPs)", fontsize=10,
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


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
