"""Property-based: whatever bytes or CSV rows reach the readers, only the project's own errors come out.

Random bytes go to the DICOM reader (as bytes and as a file), the prepared-store loader, the tensors
reader and the served model's input decoding; random rows go into copies of the four real CBIS-DDSM
CSVs (their real headers) that are then ingested against the real reference DICOMs. A crash, an
AssertionError or a library exception escaping (ValueError, KeyError, IndexError...) fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mammo.core.errors import MammoError
from mammo.data import cbis, dicom, tensors
from mammo.data.store import load_prepared
from mammo.serve.model_input import patches_from_input
from tests.conftest import SHARED_CBIS, make_dicom

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_DICOM = make_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8) * 500)


def _only_ours(call) -> None:
    with contextlib.suppress(MammoError):
        call()


@FUZZ
@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=256).map(lambda tail: VALID_DICOM[:200] + tail)))
def test_random_bytes_to_the_dicom_reader_raise_only_record_errors(data: bytes) -> None:
    _only_ours(lambda: dicom.read_header(data))
    _only_ours(lambda: dicom.read_pixels(data))
    _only_ours(lambda: dicom.patch_from_dicom(data, size=16, max_side=64))
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        _only_ours(lambda: dicom.patch_from_dicom(handle.name, size=16))


@FUZZ
@given(
    st.lists(
        st.one_of(st.binary(max_size=512), st.text(max_size=64), st.none(), st.integers()), min_size=1, max_size=4
    ),
    st.sampled_from(["dicom", "patch", "pixels", "other"]),
    st.one_of(st.none(), st.lists(st.integers(-3, 70), min_size=0, max_size=3), st.text(max_size=8)),
)
def test_random_request_rows_raise_only_record_errors(values: list, column: str, shape) -> None:
    table = pd.DataFrame({column: values})
    if shape is not None:
        table["shape"] = [shape] * len(values)
    _only_ours(lambda: patches_from_input(table, size=16))
    encoded = pd.DataFrame({column: [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in values]})
    _only_ours(lambda: patches_from_input(encoded, size=16))


@FUZZ
@given(st.recursive(st.one_of(st.integers(-10, 70000), st.floats(allow_nan=True), st.text(max_size=3)),
                    lambda inner: st.lists(inner, max_size=5), max_leaves=40))  # fmt: skip
def test_random_pixel_arrays_raise_only_record_errors(pixels) -> None:
    _only_ours(lambda: patches_from_input({"pixels": [pixels]}, size=16))


@FUZZ
@given(st.dictionaries(st.sampled_from(["patches.npy", "manifest.csv", "dataset.json", "train_tensor.npy",
                                        "train_labels.npy", "public_test_tensor.npy", "public_test_labels.npy"]),
                       st.binary(max_size=512), min_size=1))  # fmt: skip
def test_random_files_in_a_dataset_or_tensor_folder_raise_only_data_errors(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        _only_ours(lambda: load_prepared(tmp))
        _only_ours(lambda: tensors.read_tensors(tmp, image_size=16, on_error="skip"))


CELL = st.one_of(
    st.text(max_size=30), st.sampled_from(["", " ", "0", "-1", "1.5", "MALIGNANT", "mass", "../../etc", "/abs"])
)


@pytest.mark.reference
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(CELL, min_size=14, max_size=14), min_size=1, max_size=4), st.sampled_from(cbis.CSV_FILES),
       st.sampled_from(["raise", "skip"]))  # fmt: skip
def test_random_csv_rows_raise_only_data_errors(rows: list[list[str]], target: str, on_error: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in cbis.CSV_FILES:
            shutil.copy(SHARED_CBIS / "csv" / name, Path(tmp) / name)
        header = (Path(tmp) / target).read_text().splitlines()[0]
        pd.DataFrame(rows, columns=header.split(",")).to_csv(Path(tmp) / target, index=False)
        _only_ours(lambda: cbis.read_case_descriptions(tmp))
        _only_ours(
            lambda: cbis.ingest_cbis(
                data_dir=SHARED_CBIS / "dicom", csv_dir=tmp, image_size=16, on_error=on_error, progress=False
            )
        )
