"""A clean console: TensorFlow's native start-up notes dropped, everything else on stderr kept.

On CPUs where TensorFlow turns oneDNN's custom operations on by default (AVX512_VNNI/BF16, AMX), every
process that imports it prints two pairs of lines from C++, before absl's logging is initialised, so
`TF_CPP_MIN_LOG_LEVEL` does not reach them (TF_ENABLE_ONEDNN_OPTS=1 prints them too):

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:… port.cc:153] oneDNN custom operations are on. You may see slightly different …

They carry nothing a user acts on (docs/performance.md says what oneDNN changes). `quiet_tensorflow_import`
installs an import hook: the first `import tensorflow` (direct, or through Keras) runs with file
descriptor 2 sent to a temporary file, whose lines go back to stderr afterwards, minus those notes. An
import that fails writes everything back before its error propagates. The entry points install it;
a library user's process is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

NATIVE_NOTES = (
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"oneDNN custom operations are on",
)


@contextlib.contextmanager
def native_notes_dropped(notes: Sequence[bytes] = NATIVE_NOTES) -> Iterator[None]:
    """Send fd 2 to a temporary file for the block, then write its lines back without `notes`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured.read().splitlines(keepends=True) if not _is_note(line, notes))
            while kept:
                kept = kept[os.write(2, kept) :]


def _is_note(line: bytes, notes: Sequence[bytes]) -> bool:
    return any(note in line for note in notes)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the first load of the `tensorflow` package in `native_notes_dropped`, then steps aside."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the package's own submodules load as usual
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            with native_notes_dropped():
                load(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


QUIET_DEFAULTS = (
    ("TF_CPP_MIN_LOG_LEVEL", "2"),  # TensorFlow's C++ INFO/WARNING lines (CPU features, oneDNN)
    ("MLFLOW_LOGGING_LEVEL", "WARNING"),  # MLflow's INFO lines
    ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),  # progress bars for local artifact copies
)


def quiet_console() -> None:
    """A clean console for a mammo process (entry points, benchmarks); each setting stays adjustable.

    Sets the QUIET_DEFAULTS where the environment does not already set them, and installs the import
    hook for the notes printed before absl's logging starts, which TF_CPP_MIN_LOG_LEVEL misses.
    """
    for name, value in QUIET_DEFAULTS:
        os.environ.setdefault(name, value)
    quiet_tensorflow_import()


def quiet_tensorflow_import() -> None:
    """Drop TensorFlow's native start-up notes when it is first imported (no-op if it already is)."""
    if "tensorflow" in sys.modules or any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())
