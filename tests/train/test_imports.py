"""Where things live and who imports whom (read from the sources, nothing is run): the
trainer's export step and the export module have distinct names, `Task` has one home, the
library never imports `experiments/` or `tools/`, `tl_keras.export` and `tl_keras.data` never
import the trainer, and imports sit at module level except for optional dependencies."""

import ast
import importlib.util
import pathlib

import pytest

import tl_keras
from experiments import kinetics
from tl_keras import train as train_lib
from tl_keras.train import loop, task, tasks

LIBRARY = pathlib.Path(tl_keras.__file__).parent
# Function-local imports are kept only for these optional dependencies.
OPTIONAL = ("tensorflow_datasets", "av", "tqdm", "matplotlib", "safetensors", "torch",
            "keras_hub",  # convert.py: only to read a saved keras-hub ViT
            "openvino", "tensorflow_serving")  # the last two: the `deploy` extra
# The one deferred import between library modules, with its reason: a model built with
# `weights=` loads them with the converter, and the converter reads the models' classes.
DEFERRED = {"models/base.py": {"tl_keras.convert.load_pretrained"}}
# Every module of the library.
CHECKED = sorted(LIBRARY.rglob("*.py"))


def _imports(path):
    """`[(module name, at module level?)]` of every import statement in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:  # `module.name` each
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def test_export_step_and_export_module_have_distinct_names():
    assert importlib.util.find_spec("tl_keras.train.export") is None  # no wrapper module
    assert not hasattr(train_lib, "export")  # and no function shadowing a module name
    assert train_lib.run.__module__ == train_lib.export_run.__module__ == "tl_keras.train.loop"
    assert loop.export_model.__module__ == "tl_keras.export"


def test_task_has_one_home():
    assert train_lib.Task is loop.Task is task.Task
    cfg = kinetics.get_config()
    tasks.resolve_data(cfg)
    assert type(tasks.make_task(cfg)) is task.Task


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(LIBRARY)))
def test_imports_at_module_level_except_optional_dependencies(path):
    deferred = DEFERRED.get(str(path.relative_to(LIBRARY)), set())
    local = [m for m, top in _imports(path)
             if not top and m.split(".")[0] not in OPTIONAL and m not in deferred]
    assert not local, f"{path.name}: function-local imports of {local}"


def test_dependency_rules():
    for path in LIBRARY.rglob("*.py"):
        roots = {m.split(".")[0] for m, _ in _imports(path)}
        assert not roots & {"experiments", "tools"}, f"{path} imports experiments/ or tools/"
    for path in [LIBRARY / "export.py", *(LIBRARY / "data").glob("*.py")]:
        names = [m for m, _ in _imports(path)]
        assert not [m for m in names if m.startswith("tl_keras.train")], path
    for path in (LIBRARY / "data").glob("*.py"):
        names = [m for m, _ in _imports(path)]
        assert not [m for m in names if m.startswith(("tl_keras.models", "tl_keras.layers",
                                                       "tl_keras.export", "keras"))], path
    for path in (LIBRARY / "layers").glob("*.py"):  # layers know no model, data or trainer
        names = [m for m, _ in _imports(path)]
        assert not [m for m in names if m.startswith(("tl_keras.models", "tl_keras.data",
                                                       "tl_keras.train", "tl_keras.export"))], path
