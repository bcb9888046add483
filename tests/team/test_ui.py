"""The MLflow UI in a real headless Chromium (Debian's, driven by Playwright): a `train_all` parent's variants
with their test accuracy and 95 % interval side by side in the "Model training" runs table.

The project tags its experiment `mlflow.experimentKind = custom_model_development`; MLflow 3.17's UI
follows its own GenAI / Model training switch instead (default GenAI), so the link the project
prints (`tracking.ui_link`, `?workflowType=machine_learning`) is what opens the runs table. The
screenshot is saved under MAMMO_TEST_ARTIFACTS (CI prints where).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import urllib.parse
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from entrypoints import train_all
from mammo import tracking
from tests.team.conftest import TRAINER, TeamServer, unavailable
from tests.team.test_server import TINY_TRAIN
from tests.test_study_entry import write_tiny_dataset

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
COLUMNS = ("test_accuracy", "test_accuracy_ci_low", "test_accuracy_ci_high")

pytestmark = pytest.mark.slow


def _show_column(page, name: str) -> None:
    """Tick one metric in the runs table's Columns menu (searched by name, its group opened if needed)."""
    page.get_by_placeholder("Search columns").fill(name)
    page.wait_for_timeout(500)
    nodes = page.locator(".du-bois-light-tree-treenode")
    leaf = nodes.filter(has_text=re.compile(f"^{name}$"))
    if leaf.count() == 0:  # the Metrics group is collapsed: open it
        nodes.filter(has_text=re.compile(r"^Metrics")).first.locator(".du-bois-light-tree-switcher").click()
        page.wait_for_timeout(500)
    box = leaf.first.locator(".du-bois-light-tree-checkbox")
    box.click()
    page.wait_for_timeout(300)
    assert "checked" in (box.get_attribute("class") or ""), f"column {name} did not tick"


def _metric_cell(page, run_id: str, name: str):
    return page.locator(f"[role=row][row-id='{run_id}'] [col-id='metrics.`{name}`']").first


def test_the_runs_table_shows_the_variants_with_test_accuracy_and_ci_side_by_side(
    team_server: TeamServer, as_user, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does.")
    from playwright.sync_api import sync_playwright

    as_user(TRAINER)
    dataset = write_tiny_dataset(tmp_path / "tiny")
    assert train_all.main(["--data", str(dataset.path), "--variants", "model0,model5", *TINY_TRAIN]) == 0
    link = re.search(r"compare them in the MLflow UI: (\S+)", capsys.readouterr().out).group(1)
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    assert link == f"{team_server.url}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    (parent,) = MlflowClient().search_runs([experiment.experiment_id], "tags.`mammo.entry` = 'train_all'")
    children = MlflowClient().search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(child.info.run_name for child in children) == ["model0-seed0", "model5-seed0"]

    shot = Path(os.environ.get("MAMMO_TEST_ARTIFACTS", tmp_path)) / "ui-train-all.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    only_this_parent = urllib.parse.quote(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(
            http_credentials={"username": TRAINER, "password": team_server.passwords[TRAINER]},
            viewport={"width": 1800, "height": 900},
        )  # fmt: skip
        page = context.new_page()
        try:
            # Not "networkidle": MLflow 3.17's assistant panel keeps polling, so the network may never go quiet.
            page.goto(f"{link}&searchFilter={only_this_parent}", wait_until="domcontentloaded", timeout=90_000)
            page.get_by_text("matching runs").wait_for(timeout=90_000)
            assert page.get_by_role("button", name="Model training").count() >= 1  # the training view, not GenAI
            page.get_by_role("button", name="Columns", exact=True).click()
            for column in COLUMNS:
                _show_column(page, column)
            page.keyboard.press("Escape")
            assistant = page.locator("button[aria-label='Close']")
            if assistant.count():  # MLflow 3.17's assistant panel takes a third of the width
                assistant.first.click()
            parent_row = page.locator(f"[role=row][row-id='{parent.info.run_id}']").first
            parent_row.locator("button").first.click()  # expand the parent: its children are the variants
            page.wait_for_timeout(1500)
            boxes = [page.locator(f"[role=columnheader][col-id='metrics.`{c}`']").first.bounding_box() for c in COLUMNS]
            boxes = sorted(boxes, key=lambda box: box["x"])  # the UI orders them by name: accuracy, ci_high, ci_low
            for box, following in itertools.pairwise(boxes):
                assert abs(box["x"] + box["width"] - following["x"]) < 2, boxes  # side by side, nothing between
            for child in children:
                shown = [_metric_cell(page, child.info.run_id, column).inner_text().strip() for column in COLUMNS]
                assert [float(text) for text in shown] == pytest.approx(
                    [child.data.metrics[column] for column in COLUMNS], abs=1e-6
                ), (child.info.run_name, shown)
                assert _metric_cell(page, child.info.run_id, "test_accuracy").is_visible()
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    print(f"UI screenshot: {shot}")
    assert shot.stat().st_size > 10_000
