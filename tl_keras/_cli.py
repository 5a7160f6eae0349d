"""Shared by the command lines (`experiments/`, `tools/`): TensorFlow imported without its
start-up noise, and user errors printed as one line.

TensorFlow writes its C++ start-up messages to file descriptor 2 before its logging is set
up, so `TF_CPP_MIN_LOG_LEVEL` does not hide them. On a CPU-only machine (TF 2.21) they are
the absl "before InitializeLog" notice, "oneDNN custom operations are on", "Could not find
cuda drivers", the CPU-instructions notice, and the error-level "failed call to cuInit".
`import_tensorflow()` captures descriptor 2 while TensorFlow loads and lists its devices,
then writes every other line back; set `TL_KERAS_SHOW_STARTUP=1` to see them all.

`ArgumentParser`, `report` and `run_or_report` make every user error one line on stderr,
`NAME: error: ...`, with exit code 2. Standard library only: importing this module loads
neither TensorFlow nor Keras.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import tempfile

_LOG = r"[IWEF]\d{4} \S+\s+\d+ "  # absl / TF C++ log prefix: I0000 00:00:17.. 1234 file.cc:1]
# Lines dropped wherever they appear during start-up (informational, not actionable).
STARTUP_NOISE = tuple(re.compile(p) for p in (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    _LOG + r"port\.cc:\d+\] oneDNN custom operations are on",
    _LOG + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    _LOG + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use",
    r"To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler",
))
# Dropped only when TensorFlow also said that there are no CUDA drivers (a CPU-only machine);
# with drivers installed, a failing cuInit is a real problem and is shown.
NO_DRIVER_NOISE = tuple(re.compile(p) for p in (
    _LOG + r"cuda_\w+\.cc:\d+\] failed call to cuInit",
))
_NO_DRIVER = re.compile(_LOG + r"cudart_stub\.cc:\d+\] Could not find cuda drivers")


def filter_startup_lines(text):
    """`text` without TensorFlow's known start-up lines (`STARTUP_NOISE`, and
    `NO_DRIVER_NOISE` when the text says there are no CUDA drivers)."""
    lines = text.splitlines(keepends=True)
    no_driver = any(_NO_DRIVER.match(line) for line in lines)
    noise = STARTUP_NOISE + (NO_DRIVER_NOISE if no_driver else ())
    return "".join(line for line in lines if not any(p.match(line) for p in noise))


@contextlib.contextmanager
def quiet_startup():
    """Captures file descriptor 2 inside the block, then writes back what
    `filter_startup_lines` keeps (also when the block raises)."""
    if os.environ.get("TL_KERAS_SHOW_STARTUP"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = filter_startup_lines(capture.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def import_tensorflow():
    """Imports TensorFlow (and lists the devices, where CUDA reports) inside
    `quiet_startup()`; returns the `tensorflow` module. Idempotent."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with quiet_startup():
        tf = importlib.import_module("tensorflow")
        tf.config.list_physical_devices()
    return tf


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line, `prog: error: message (see
    --help)`, exit code 2, instead of the usage block and the message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class UserError(ValueError):
    """A mistake in the command line or its inputs: one line, exit code 2."""


USER_ERRORS = (ValueError, OSError)  # ConfigError, ToolError and UserError are ValueErrors


def report(prog, error):
    """Prints `prog: error: <message>` on stderr (no traceback); returns the exit code 2."""
    message = str(error) or type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return 2


def run_or_report(prog, fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, or `report(prog, e)` for a `USER_ERRORS` exception."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:
        return report(prog, e)
