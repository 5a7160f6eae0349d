"""The Python snippets of README.md's Quickstart run as written.

Each ```python block of the "## Quickstart" section runs in a fresh interpreter (as a reader
pasting it would), from an empty working directory, with the built-in dataset generated under
`tmp_path` (`TL_KERAS_DATA_DIR`); the shapes its comments state for a batch are asserted
(`with_shape_checks`). The snippet that builds the paper's full-size models takes
minutes and gigabytes on a CPU, so it is `slow`.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# Snippets that build a full-size model (ViT-L, ViViT-L): long on a CPU.
SLOW_MARKERS = ("vit_l16(", "vivit_l16(")


def quickstart_snippets() -> list[str]:
    text = README.read_text()
    match = re.search(r"^## Quickstart\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"{README}: no '## Quickstart' section"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), flags=re.S | re.M)


def with_shape_checks(code: str) -> str:
    """`code` with, after each `videos, labels = next(iter(ds))  # [shape] ..., [shape]`
    line, an assertion that the shapes are the ones its comment states (the first and the
    last bracketed list)."""
    out = []
    for line in code.splitlines():
        out.append(line)
        found = re.match(r"^(\w+), (\w+) = next\(iter\(\w+\)\)\s*#(.*)$", line)
        if found:
            lists = re.findall(r"\[([\d, ]+)\]", found.group(3))
            stated = tuple([int(n) for n in lists[i].split(",")] for i in (0, -1))
            got = f"(list({found.group(1)}.shape), list({found.group(2)}.shape))"
            out.append(f"assert {got} == {stated!r}, ({got}, {line!r})")
    return "\n".join(out) + "\n"


def params():
    snippets = quickstart_snippets()
    out = []
    for i, code in enumerate(snippets):
        slow = any(m in code for m in SLOW_MARKERS)
        marks = [pytest.mark.slow] if slow else []
        out.append(pytest.param(code, id=f"snippet{i}", marks=marks))
    return out


def test_quickstart_has_the_layer_model_and_data_snippets():
    snippets = quickstart_snippets()
    assert len(snippets) >= 3
    assert any("TokenLearner(" in s for s in snippets)
    assert any("video_dataset(" in s and "batch_size=" in s for s in snippets)
    # The data snippet's stated shapes are checked when it runs.
    checked = [s for s in snippets if with_shape_checks(s).count("assert (list(") == 2]
    assert len(checked) == 1 and "dataset=\"kinetics400\"" in checked[0]


@pytest.mark.parametrize("code", params())
def test_quickstart_snippet_runs(code, tmp_path):
    env = dict(os.environ, TL_KERAS_DATA_DIR=str(tmp_path / "data"), TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(README.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    result = subprocess.run(
        [sys.executable, "-c", with_shape_checks(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"README snippet failed:\n{code}\n{result.stderr[-3000:]}"
