"""Shared pytest set-up: quiet TensorFlow logs, fixed seeds, a clean Keras state per test."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# Python's garbage collector walks every tracked object on each full collection; with
# TensorFlow (or JAX) and Keras loaded that is ~400k objects and ~1 s per `gc.collect()`.
# Keras calls it itself (once per layer in `Model.quantize`, in `clear_session`), which
# made an int8 test of a 4-block ViT take 20 s, 97% of it in the collector. Objects alive
# after the imports (and after each test module, below) live for the whole session, so
# they are moved out of the collector's way; what the tests create is collected as usual.
gc.collect()
gc.freeze()


@pytest.fixture(autouse=True)
def _clean_keras_state():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    # Without Python's garbage collection: with TensorFlow loaded a full collection takes
    # 1-2 s, which after every test was a large share of the suite's time. It runs once
    # per test module instead (below).
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_module():
    yield
    gc.collect()
    gc.freeze()  # what survives a module (imports made by it, caches) stays to the end


# Every test has a time limit (pyproject.toml: `timeout`, for the default suite); the
# `slow` checks (real training runs, benchmarks in quick mode) get a longer one unless
# they set their own with `@pytest.mark.timeout(...)`.
SLOW_TIMEOUT_S = 900


# The longest tests start first (pytest-xdist hands tests out in collection order): a
# long test collected last runs alone at the end while the other workers idle. Measured
# with `--durations` (tens of seconds each); node-id fragments, whole modules where the
# module has a module-scoped fixture (moving part of a module would build it twice).
LONG_FIRST = (
    "test_runlocal_learns_in_under_five_minutes",
    "test_benchmark_scripts_quick.py::test_throughput",
    "test_multiworker.py",
    "test_train_video.py::test_vivit_on_the_video_pipeline",
    "test_export_runlocal.py",
    "x2plus1d/test_model.py",
    "learns_motion_but_not_from_one_frame",
    "test_benchmark_scripts_quick.py",
    "test_robustness.py",
    "test_train_loop.py",
    "test_data_bad_input.py",
    "test_cli.py",
)


def _start_rank(item):
    for rank, fragment in enumerate(LONG_FIRST):
        if fragment in item.nodeid:
            return rank
    return len(LONG_FIRST)


_UNGROUPED = {}  # node id -> why its xdist group was lost (failed by `_xdist_group_held`)


def _check_xdist_groups(config, items):
    """`@pytest.mark.xdist_group` keeps tests that share an expensive module or session
    fixture on one worker, which builds it once. pytest-xdist implements it by appending
    `@group` to the node id; when a pytest release stops honouring that rename (pytest 9.2
    with xdist 3.8), every worker silently builds every such fixture. Those tests fail
    instead, saying why."""
    if getattr(config, "workerinput", None) is None or not config.getvalue("loadgroup"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            _UNGROUPED[item.nodeid] = (
                f"pytest-xdist's --dist=loadgroup did not group this test under pytest "
                f"{pytest.__version__}; install a pytest that pyproject.toml's `test` extra allows")


@pytest.fixture(autouse=True)
def _xdist_group_held(request):
    if request.node.nodeid in _UNGROUPED:
        pytest.fail(_UNGROUPED[request.node.nodeid])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Long tests first (`LONG_FIRST`, stable otherwise), time limits for `slow` tests;
    `@pytest.mark.tf_only` tests are skipped under another Keras backend."""
    _check_xdist_groups(config, items)
    items.sort(key=_start_rank)
    for item in items:
        if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running {keras.backend.backend()})")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)
