"""The promoted model loads and predicts anywhere: a fresh virtual environment built only from the model's
own requirements.txt, in a folder outside this checkout, where `mammo` is not installed.

The model carries its code (MLflow "models from code" + serve/pyfunc and what it imports as code_paths),
so nothing of ours is unpickled and nothing of training, search or the registry travels with it. pip installs from its cache when the project's own install filled it (CI does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mammo import tracking
from mammo.data.dicom import patch_from_dicom
from mammo.registry import promotion
from mammo.serve import serving
from tests.test_registry import SIZE, log_training_run, make_dataset, threshold_model
from tests.test_serving import DICOM

CHECK = """
import base64, importlib.util, json, sys
assert importlib.util.find_spec("mammo") is None, "mammo is importable: this venv is not fresh"
import mlflow, numpy as np, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
patches = np.load(sys.argv[2])
dicom = open(sys.argv[3], "rb").read()
from_patches = model.predict(pd.DataFrame({"patch": [p.astype("<u2").tobytes() for p in patches]}))
from_dicom = model.predict(pd.DataFrame({"dicom": [dicom]}))
print(json.dumps({"patches": from_patches["p_calcification"].tolist(), "labels": from_patches["predicted_label"].tolist(),
                  "dicom": from_dicom["p_calcification"].tolist(), "code": sys.modules["mammo"].__file__}))
"""


@pytest.mark.slow
def test_the_champion_loads_and_predicts_in_a_fresh_venv_built_from_its_requirements(
    tmp_path: Path, shared_cbis: Path
) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    promotion.promote(run_id=log_training_run(dataset, threshold_model(0.65), val_auc=0.7))
    champion = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"
    outside = tmp_path / "elsewhere"  # not the repo, not its parent: ../shared is not reachable from here either
    model_dir = Path(mlflow.artifacts.download_artifacts(champion, dst_path=str(outside / "model")))
    patches = np.asarray(dataset.patches[dataset.split_indices("test")])
    np.save(outside / "patches.npy", patches)
    dicom = outside / "crop.dcm"
    dicom.write_bytes((shared_cbis / DICOM).read_bytes())

    result = predict_in_fresh_venv(model_dir, patches=outside / "patches.npy", dicom=dicom, folder=outside)

    assert Path(result["code"]).is_relative_to(model_dir)  # the model's own copy of the package
    carried = sorted(path.relative_to(model_dir / "code" / "mammo").as_posix()
                     for path in (model_dir / "code" / "mammo").rglob("*.py"))  # fmt: skip
    assert carried == [path.relative_to(serving.PACKAGE_ROOT).as_posix() for path in serving.served_modules()]
    assert "serve/pyfunc.py" in carried and "data/dicom.py" in carried
    assert not [name for name in carried if name.split("/")[0] in {"train", "search", "registry", "report", "model"}]
    model = mlflow.pyfunc.load_model(champion)
    assert result["patches"] == pytest.approx(serving.predict_batches(model, patches).tolist(), abs=1e-6)
    assert result["labels"] == [int(p > serving.threshold(model)) for p in result["patches"]]
    here = serving.predict_batches(model, patch_from_dicom(dicom, size=SIZE)[0][None])
    assert result["dicom"] == pytest.approx(here.tolist(), abs=1e-6)


def predict_in_fresh_venv(model_dir: Path, *, patches: Path, dicom: Path, folder: Path) -> dict:
    """CHECK's output for a downloaded model, run in a new venv under `folder` built from its requirements.txt."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The project's pip installs into the new interpreter (`--python`), from the pip cache where it can.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--disable-pip-version-check",
         "-r", str(model_dir / "requirements.txt")],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(folder),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK, str(model_dir), str(patches), str(dicom)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-3000:]
    return json.loads(check.stdout.strip().splitlines()[-1])
