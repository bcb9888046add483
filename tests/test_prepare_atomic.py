"""The prepared store never goes stale: real `prepare` processes killed with SIGKILL mid-write, concurrent
first-use prepares of the default, a memory-mapped reader that outlives a re-prepare, stale file detection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from entrypoints import prepare as prepare_entry
from mammo.core.errors import DataError
from mammo.data.prepare import prepare
from mammo.data.store import STAGING_PREFIX, is_up_to_date, load_prepared
from tests.conftest import REPO_ROOT
from tests.test_tensors import _write_tensors

SIZE = 150
BIG = 1500  # abnormality patches per split: ~130 MB of patches, so the write takes long enough to be caught


def _prepare_command(data_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "entrypoints.prepare", "--source", "tensors", "--data-dir", str(data_dir),
            "--out", str(out), "--image-size", str(SIZE), "--no-progress"]  # fmt: skip


def _kill_while_writing(command: list[str], out: Path, cwd: Path) -> None:
    """Start a real prepare and SIGKILL it as soon as its staging folder holds patches.npy."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if any(out.parent.glob(f"{STAGING_PREFIX}{out.name}-*/patches.npy")):
                os.kill(process.pid, signal.SIGKILL)
                break
            if process.poll() is not None:
                pytest.fail(f"prepare finished (exit {process.returncode}) before it could be killed mid-write")
            time.sleep(0.002)
        else:
            pytest.fail("prepare never started writing within 240 s")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_prepare_killed_mid_write_never_leaves_a_dataset_that_loads_and_the_rerun_completes(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write_tensors(first, size=SIZE, train=BIG, test=BIG // 4)
    _write_tensors(second, size=SIZE, train=BIG, test=BIG // 4)
    np.save(second / "train_tensor.npy", np.load(second / "train_tensor.npy")[:, ::-1])  # other pixels, same shape
    out = tmp_path / "prepared"

    # 1. Killed on its first run: no dataset at all, and nothing that claims to be one.
    _kill_while_writing(_prepare_command(first, out), out, tmp_path)
    with pytest.raises(DataError, match="is not a complete prepared dataset"):
        load_prepared(out)
    assert prepare_entry.main(["--source", "tensors", "--data-dir", str(first), "--out", str(out),
                               "--image-size", str(SIZE), "--no-progress"]) == 0  # fmt: skip
    old = load_prepared(out)
    old_first = np.array(old.patches[0])
    assert len(old.patches) == BIG + BIG // 4 and not list(tmp_path.glob(f"{STAGING_PREFIX}*"))  # staging cleaned

    # 2. Killed while replacing that dataset with other data: the old one still loads, whole and unchanged.
    _kill_while_writing(_prepare_command(second, out), out, tmp_path)
    survivor = load_prepared(out)
    assert survivor.digest == old.digest and np.array_equal(survivor.patches[:5], old.patches[:5])
    subprocess.run(_prepare_command(second, out), cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                   check=True, capture_output=True)  # fmt: skip
    new = load_prepared(out)
    assert new.digest != old.digest and new.info["options"]["data_dir"] == str(second.resolve())
    # A reader that memory-mapped the old patches.npy before the replacement still reads its own pixels.
    assert np.array_equal(old.patches[0], old_first) and not np.array_equal(new.patches[0], old_first)


def test_a_tampered_file_is_not_up_to_date_and_a_truncated_one_does_not_load(tmp_path: Path) -> None:
    _write_tensors(tmp_path / "npy", size=32, train=6, test=4)
    result = prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "out", image_size=32)
    options = result.dataset.info["options"]
    assert is_up_to_date(tmp_path / "out", options)
    manifest = tmp_path / "out" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("BENIGN", "MALIGN"))  # same length, other content
    assert not is_up_to_date(tmp_path / "out", options)
    again = prepare(source="tensors", data_dir=tmp_path / "npy", out=tmp_path / "out", image_size=32)
    assert not again.reused and "MALIGN," not in manifest.read_text()  # prepared again, not "up to date"
    patches = tmp_path / "out" / "patches.npy"
    patches.write_bytes(patches.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"patches\.npy has .* bytes, dataset\.json says"):
        load_prepared(tmp_path / "out")


@pytest.mark.slow
def test_several_workers_preparing_the_default_at_once_take_turns(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "entrypoints.prepare", "--cases", "40", "--image-size", "32", "--no-progress"]
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(3)]  # fmt: skip
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    assert sum("already prepared (no-op" in output for output in outputs) == 2, outputs
    (folder,) = [path for path in (tmp_path / "data" / "prepared").iterdir() if path.is_dir()]  # named by its options
    assert folder.name.startswith("synthetic-crop-32px-") and load_prepared(folder).image_size == 32
    other = prepare(cases=40, image_size=48, progress=False).dataset.path
    assert other != folder  # another size never shares the default folder


def test_a_prepare_that_leaves_a_split_empty_says_why_and_exits_non_zero(
    shared_cbis: Path, tmp_path: Path, capsys
) -> None:
    argv = ["--source", "cbis-ddsm", "--data-dir", str(shared_cbis / "dicom"), "--csv-dir", str(shared_cbis / "csv"),
            "--on-error", "skip", "--out", str(tmp_path / "real"), "--no-progress"]  # fmt: skip
    assert prepare_entry.main(argv) == 2
    message = capsys.readouterr().err
    assert "prepare made 0 train and 3 test patches: the train split is empty" in message
    assert "main skip reason is missing_file (3565 of 3568 records" in message and "Traceback" not in message
    assert (tmp_path / "real.skipped.csv").is_file() and not (tmp_path / "real" / "dataset.json").exists()
