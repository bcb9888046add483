"""`evaluate` and `predict` entry points against a registered champion on a real SQLite store."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from entrypoints import evaluate as evaluate_entry
from entrypoints import predict as predict_entry
from entrypoints import promote as promote_entry
from mammo import tracking
from mammo.model.variants import make_config
from mammo.registry import promotion
from mammo.train.training import train_run
from tests.conftest import artifact_paths
from tests.test_registry import CALC_MEANS, SIZE, make_dataset

CHAMPION = f"models:/{tracking.MODEL_NAME}@{tracking.ALIAS_CHAMPION}"


@pytest.mark.slow
def test_evaluate_and_predict_the_champion(tmp_path: Path, shared_cbis: Path, capsys) -> None:
    dataset = make_dataset(tmp_path / "prepared")
    config = make_config("model5", image_size=SIZE, epochs=1, filters="8-16", dense_units=8)
    run_id, _, trained = train_run(config, dataset, verbose=0)
    assert promotion.promote().run_id == run_id  # the only run: promoted as the first champion

    # evaluate: the champion's own test split, found through its data_digest; the metrics train logged.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate_entry.main(["--model-uri", CHAMPION]) == 0
    noise = [f"{w.category.__name__}: {w.message}" for w in caught if "mlflow" in w.filename]
    assert not [line for line in noise if "integer column" in line], noise  # MLflow's hint on a clean console
    assert f"test_accuracy = {trained['test_accuracy']:.4f}" in capsys.readouterr().out
    runs = mlflow.search_runs(filter_string="tags.`mammo.entry` = 'evaluate'", search_all_experiments=True)
    assert len(runs) == 1
    evaluation_run = mlflow.get_run(runs.iloc[0]["run_id"])
    metrics = evaluation_run.data.metrics
    assert {name: metrics[name] for name in tracking.TEST_METRICS} == pytest.approx(
        {name: trained[name] for name in tracking.TEST_METRICS}, abs=1e-6
    )
    assert metrics["accuracy_score"] == pytest.approx(trained["test_accuracy"])  # mlflow.models.evaluate's own
    assert metrics["true_positives"] + metrics["false_negatives"] == len(CALC_MEANS)
    assert evaluation_run.data.params["data_digest"] == dataset.digest
    assert {
        tracking.PLOT_CONFUSION,
        tracking.PLOT_ROC,
        tracking.PLOT_CALIBRATION,
        tracking.PLOT_WORST,
    } <= artifact_paths(evaluation_run.info.run_id, "plots")
    assert tracking.PREDICTIONS_FILE in artifact_paths(evaluation_run.info.run_id)
    assert evaluate_entry.main(["--model-uri", "models:/mammo-cnn@nobody"]) == 2
    assert "nobody" in capsys.readouterr().err

    # predict: the three real cropped-ROI DICOMs (two sit in folders misnamed "ROI mask images").
    assert (
        predict_entry.main(["--model-uri", CHAMPION, "--input", str(shared_cbis / "dicom"), "--output", "pred.csv"])
        == 0
    )
    table = pd.read_csv("pred.csv", dtype={"PatientID": str})
    assert len(table) == 3 and table["error"].isna().all()
    assert table["p_calcification"].between(0, 1).all() and set(table["predicted_label"]) <= {0, 1}
    assert set(table["PatientID"]) == {
        "Mass-Test_P_00016_LEFT_CC_1",
        "Mass-Test_P_00116_RIGHT_MLO_1",
        "Mass-Test_P_00116_RIGHT_MLO_2",
    }
    assert table["SeriesInstanceUID"].str.startswith("1.3.6.1.4.1.9590").all()

    # A mixed folder: PNG (8- and 16-bit) and NumPy patches are scored; bad files are listed, not dropped.
    mixed = tmp_path / "mixed" / "nested"
    mixed.mkdir(parents=True)
    bright = np.full((40, 50), 0.9 * 65535, np.uint16) + np.arange(50, dtype=np.uint16)
    Image.fromarray(bright).save(mixed / "bright16.png")
    Image.fromarray(np.full((SIZE, SIZE), 40, np.uint8) + np.eye(SIZE, dtype=np.uint8)).save(mixed / "dark8.png")
    np.save(mixed / "bright.npy", bright)
    np.save(mixed / "mask.npy", (np.arange(100).reshape(10, 10) > 50).astype(np.uint16) * 65535)
    (mixed / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "colour.png")
    assert (
        predict_entry.main(["--model-uri", CHAMPION, "--input", str(tmp_path / "mixed"), "--output", "mixed.csv"]) == 0
    )
    printed = capsys.readouterr().out
    assert (
        "predicted 3 of 6 files" in printed
        and "3 files not scored, by reason: roi_mask 1, unreadable_dicom 1, wrong_image_kind 1" in printed
    )
    table = pd.read_csv("mixed.csv").set_index("file")
    scored = table.loc[["nested/bright16.png", "nested/bright.npy", "nested/dark8.png"]]
    assert scored["p_calcification"].between(0, 1).all() and scored["error"].isna().all()
    # The same pixels as PNG and as NumPy make the same patch, hence the same probability.
    assert scored.loc["nested/bright16.png", "p_calcification"] == pytest.approx(
        scored.loc["nested/bright.npy", "p_calcification"]
    )
    assert table.loc["nested/mask.npy", "error"].startswith("roi_mask:")
    assert table.loc["nested/notes.txt", "error"].startswith("unreadable_dicom:")
    assert table.loc["nested/colour.png", "error"].startswith("wrong_image_kind:")
    assert table.loc["nested/notes.txt", ["p_calcification", "predicted_label"]].isna().all()


def test_mlproject_empty_strings_mean_defaults(capsys) -> None:
    """MLproject passes every parameter, "" when unset: each entry point reads "" as its default."""
    promote = promote_entry.parse_args(["--model-name", "", "--run-id", "", "--select-metric", "", "--gate-metric", "",
                                        "--data", "", "--alias", "", "--min-delta", "", "--alpha", "", "--experiment", ""])  # fmt: skip
    assert (promote.model_name, promote.run_id, promote.select_metric, promote.gate_metric) == (
        "mammo-cnn",
        None,
        "val_auc",
        "test_accuracy",
    )
    assert (promote.data, promote.alias, promote.min_delta, promote.alpha) == (None, "champion", 0.0, 0.05)
    evaluate = evaluate_entry.parse_args(["--model-uri", "", "--data", "", "--experiment", ""])
    assert (evaluate.model_uri, evaluate.data) == (CHAMPION, None)
    predict = predict_entry.parse_args(["--model-uri", "", "--input", "in", "--output", "", "--experiment", ""])
    assert (predict.model_uri, predict.output) == (CHAMPION, "predictions.csv")
    with pytest.raises(SystemExit):
        predict_entry.parse_args(["--input", ""])
    assert "--input is required" in capsys.readouterr().err
