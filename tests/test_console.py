"""mammo.core.console: TensorFlow's native start-up notes leave the console, nothing else does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

NOTES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796220546.299773   24184 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.\n"
)


def _stderr_of(code: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    return done.stderr


def test_the_notes_are_dropped_and_every_other_line_is_kept_in_order() -> None:
    code = (
        "import os, sys\n"
        "from mammo.core.console import native_notes_dropped\n"
        "print('before', file=sys.stderr)\n"
        "with native_notes_dropped():\n"
        f"    os.write(2, b'kept 1\\n' + {NOTES.encode()!r} + b'kept 2\\n')\n"
        "    print('from python', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    assert _stderr_of(code) == "before\nkept 1\nkept 2\nfrom python\nafter\n"


def test_a_failing_block_still_gives_its_output_back() -> None:
    code = (
        "import os\n"
        "from mammo.core.console import native_notes_dropped\n"
        "try:\n"
        "    with native_notes_dropped():\n"
        "        os.write(2, b'what went wrong\\n')\n"
        "        raise RuntimeError\n"
        "except RuntimeError:\n"
        "    os.write(2, b'caught\\n')\n"
    )
    assert _stderr_of(code) == "what went wrong\ncaught\n"


@pytest.mark.slow
@pytest.mark.parametrize("package", ["entrypoints", "bench"])
def test_an_entry_points_or_benchmarks_tensorflow_import_prints_no_native_notes(package: str) -> None:
    """On CPUs with oneDNN on by default (AVX-512 VNNI/BF16, AMX) a bare `import keras` prints them."""
    stderr = _stderr_of(
        f"import os, sys, {package}, keras, tensorflow as tf; tf.constant(1.0) + 1.0\n"
        "print('levels', os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['MLFLOW_LOGGING_LEVEL'], file=sys.stderr)"
    )
    assert "oneDNN custom operations" not in stderr and "absl::InitializeLog" not in stderr, stderr
    assert stderr.endswith("levels 2 WARNING\n"), stderr
