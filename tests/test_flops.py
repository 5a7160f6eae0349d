"""`tl_keras.flops`, the public front of the counts: dispatch by family, arguments,
counting without building, the CLI `tools/count_flops.py`."""

import importlib.util
import os

import keras
import pytest

from tl_keras import TL, flops
from tl_keras.layers.tokenizers import FUSERS
from tl_keras.models import MODEL_SPECS, list_models


def test_every_family_has_a_count():
    assert {spec["family"] for spec in MODEL_SPECS.values()} == set(flops.FAMILY_COSTS)
    for name in list_models():
        cost = flops.cost(name)
        assert cost.macs > 0 and cost.params > 0, name
        assert flops.gflops(name) == cost.macs / 1e9
        assert flops.count_params(name) == cost.params


def test_counting_builds_nothing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a weight was made")

    monkeypatch.setattr(keras.layers.Layer, "add_weight", fail)
    assert flops.gflops("vit_h14", image_size=518) > 1000
    assert flops.gflops("vivit_l16", num_frames=32, tokenlearner="8@18") < 1446
    assert flops.gflops("x2plus1d_m", module="conv2d_conv1d") > 100


def test_invalid_arguments():
    with pytest.raises(ValueError, match="image_size"):
        flops.gflops("vit_l16", image_size=500)
    with pytest.raises(ValueError, match="at"):
        flops.gflops("vit_b16", tokenlearner=TL(8, at=12))
    with pytest.raises(ValueError, match="unknown argument `image_sise`; did you mean `image_size`"):
        flops.gflops("vit_b16", image_sise=224)
    with pytest.raises(ValueError, match="unknown argument `width`"):
        flops.gflops("x2plus1d_m", width=(1, 2))
    with pytest.raises(ValueError, match="Unknown model"):
        flops.gflops("vit_x16")
    with pytest.raises(ValueError, match="only used with a model name"):
        flops.gflops(object(), image_size=224)


def _load_cli():
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "count_flops.py")
    spec = importlib.util.spec_from_file_location("count_flops_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(capsys):
    cli = _load_cli()
    assert cli.main(["vit_l16", "--image_size=512", "--tokenlearner=16@12"]) == 0
    out = capsys.readouterr().out
    assert f"{flops.gflops('vit_l16', image_size=512, tokenlearner=TL(16, 12)):.2f}" in out
    assert "parameters" in out
    assert cli.main(["vivit_l16", "--num_frames=32", "--tokenlearner=8@18", "--fuser",
                     "--extra_layers=6"]) == 0
    out = capsys.readouterr().out
    expected = flops.gflops("vivit_l16", num_frames=32, extra_layers=6,
                            tokenlearner=TL(8, 18, fuser=True))
    assert f"{expected:.2f}" in out
    for args, fuser in ((["--tokenlearner=8@6+unpool"], "unpool"),
                        (["--tokenlearner=8@6", "--fuser=reprojection"], "reprojection")):
        assert cli.main(["vit_b16", "--image_size=384", *args]) == 0
        expected = flops.gflops("vit_b16", image_size=384, tokenlearner=TL(8, 6, fuser=fuser))
        assert f"GFLOPs (MACs): {expected:.2f}" in capsys.readouterr().out
    assert set(cli.FUSER_CHOICES) == set(FUSERS)
    assert cli.main(["vit_b16", "--tokenlearner=8@6+pool_mlp", "--fuser=unpool"]) == 2
    assert "unpool" in capsys.readouterr().err
    assert cli.main(["vit_l16", "--image_size=500"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert cli.main(["--paper"]) == 0
    assert "363.10" in capsys.readouterr().out
    assert cli.main(["--paper", "--markdown"]) == 0
    assert "| ViT-L/16 @512 | 361.99 | 363.1 | -0.31% |" in capsys.readouterr().out


def test_fig7_fuser_table_in_benchmarks_md_is_the_computed_one():
    """BENCHMARKS.md's Fig. 7 rows (ViT-B/16, 384 px, 8-TL at 6) are what `flops` counts."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "BENCHMARKS.md")) as f:
        text = f.read()
    start = text.index("## ViT fusers of Fig. 7")
    section = text[start:text.index("\n## ", start + 1)]
    rows = [("", None)] + [(f"`{fuser}` " if fuser else "", TL(8, 6, fuser=fuser))
                           for fuser in (False, "tokenfuser", "unpool", "reprojection")]
    for flag, tl in rows:
        kwargs = dict(image_size=384, tokenlearner=tl)
        macs, params = flops.gflops("vit_b16", **kwargs), flops.count_params("vit_b16", **kwargs)
        assert f"| {flag}| {macs:.2f} | {params / 1e6:.1f}M |" in section, (flag, macs, params)
