"""Lines TensorFlow prints while it starts (quietened by `tl_keras/_cli.py`): none may
reach the user of a command-line tool. Substrings, written independently of `_cli`'s
own patterns so the tests check them rather than repeat them."""

NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers",
         "failed call to cuInit", "cpu_feature_guard")


def noise_lines(stderr):
    """The lines of `stderr` that are TensorFlow start-up noise."""
    return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
