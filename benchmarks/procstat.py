"""This process's memory from `/proc/self/status` (Linux), for the benchmark children.
Standard library only, so a child that must not import TensorFlow can use it."""

import re


def status_kb(field):
    """`VmRSS`, `VmHWM`, ... of this process, in kB."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def reset_peak():
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
