"""The published course project's figures for Model 0–5, to show beside ours (pure data).

Accuracies are as printed in the project's table (percent, best-val_loss checkpoint), on its own
patches: 2676 training patches (validation: the first 20 % of a random permutation, augmented) and
a 336-patch CBIS-DDSM test set (179 mass / 157 calcification). The analysis counted "wrong"
(|label − p| > 0.5) and "worst" (> 0.8) test predictions; for model5 it reports 53 wrong and
12 worst of 336.

Model 3 and Model 4 wrong/worst counts: the issue names them, but they are not in the project
description this package was built from (DESIGN.md's table) and could not be found in any
public copy of the project, so they are None here rather than guessed. Fill them in only from the
project's own notebooks. Models 0–2 had no such counts published.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TEST_PATCHES, TEST_MASS, TEST_CALC = 336, 179, 157
COMPARABLE_SOURCES = ("cbis-ddsm", "tensors")  # data that is CBIS-DDSM; anything else is not comparable


@dataclass(frozen=True)
class PublishedScores:
    """One variant's published figures; None where the project did not publish the number."""

    val_accuracy_percent: float
    test_accuracy_percent: float
    test_wrong: int | None = None
    test_worst: int | None = None

    @property
    def test_accuracy(self) -> float:
        """As a fraction, like our `test_accuracy` metric."""
        return self.test_accuracy_percent / 100


PUBLISHED: dict[str, PublishedScores] = {
    "model0": PublishedScores(77.38, 72.92),
    "model1": PublishedScores(84.11, 78.27),
    "model2": PublishedScores(82.24, 81.55),
    "model3": PublishedScores(87.48, 83.04),  # wrong/worst: not found (module docstring)
    "model4": PublishedScores(87.48, 82.74),  # wrong/worst: not found (module docstring)
    "model5": PublishedScores(88.79, 84.23, test_wrong=53, test_worst=12),
}
PUBLISHED_COLUMNS = ("published_test_accuracy", "published_test_wrong", "published_test_worst")


@dataclass(frozen=True)
class TransferAnchor:
    """A published transfer-learning result on CBIS-DDSM mass vs calcification, with what it was measured on."""

    model: str  # what was fine-tuned
    variant: str  # our nearest variant
    test_accuracy_percent: float
    source: str
    caveat: str  # the split it was measured on, and why it does or does not compare with ours


TRANSFER_ANCHORS: tuple[TransferAnchor, ...] = (
    TransferAnchor(
        "VGG16, ImageNet weights, fine-tuned", "vgg16", 91.37, "leoll2/MedicalCNN",
        f"the published project's own {TEST_PATCHES}-patch test set (the one of Model 0–5); its validation was per "
        "image, as for Model 0–5",
    ),
    TransferAnchor(
        "VGG, ImageNet weights, fine-tuned", "vgg16", 92.53, "arXiv:1803.01906",
        "the paper's own CBIS-DDSM patches and split, not the 336-patch test set",
    ),
    TransferAnchor(
        "EfficientNet-B0 at 224 px, ImageNet weights", "efficientnetb0", 92.33, "(reported; random split)",
        "a random split of patches, not grouped by patient: views of one lesion on both sides make it optimistic",
    ),
)  # fmt: skip
"""Every result above ~89 % starts from ImageNet weights; from scratch, published peers stop at 81–85 %."""


def transfer_anchors_markdown() -> str:
    """The anchors as a markdown section for comparison.md, each with its split caveat."""
    rows = [
        f"| {anchor.model} | {anchor.variant} | {anchor.test_accuracy_percent:.2f} % | {anchor.source} | {anchor.caveat} |"
        for anchor in TRANSFER_ANCHORS
    ]
    header = "| published model | our variant | test accuracy | source | measured on |\n| --- | --- | --- | --- | --- |"
    return "## Published transfer-learning anchors\n\n" + header + "\n" + "\n".join(rows) + "\n"


def published_columns(variants: object) -> pd.DataFrame:
    """PUBLISHED_COLUMNS for each variant name (fractions and counts), NaN for unknown variants/numbers.

    A study trial or any name outside Model 0–5 gets NaN, so a comparison table can always carry
    the columns.
    """

    def number(value: float | None) -> float:
        return float("nan") if value is None else float(value)

    rows = []
    for variant in np.asarray(variants, dtype=object).reshape(-1):
        scores = PUBLISHED.get(str(variant))
        rows.append(
            (np.nan, np.nan, np.nan)
            if scores is None
            else (scores.test_accuracy, number(scores.test_wrong), number(scores.test_worst))
        )
    return pd.DataFrame(rows, columns=list(PUBLISHED_COLUMNS))


def is_comparable(data_source: str | None) -> bool:
    """Whether our numbers come from CBIS-DDSM at all (a precondition, not a guarantee of equal patches)."""
    return data_source in COMPARABLE_SOURCES


def comparability_note(data_source: str | None, *, test_patches: int | None = None) -> str:
    """One sentence for comparison.md saying whether our numbers can be read against the published ones."""
    ours = f"{test_patches} test patches" if test_patches else "our test split"
    published = f"{TEST_PATCHES} test patches, {TEST_MASS} mass / {TEST_CALC} calcification"
    if data_source is None:
        return (
            f"Data source not recorded: check it before reading our numbers against the published ones ({published})."
        )
    if data_source == "synthetic":
        return (
            "Our numbers come from the synthetic default dataset, not CBIS-DDSM: they are NOT comparable with "
            f"the published ones, shown only to place the series ({ours}; published: {published})."
        )
    if data_source == "tensors":
        return (
            f"Ours on the published numpy tensors ({ours}; published: {published}); the same test patches when the "
            "counts match. Our validation is carved differently, so validation figures differ by design."
        )
    if data_source == "cbis-ddsm":
        return (
            f"Ours on CBIS-DDSM prepared from the TCIA download ({ours}); published: {published}, cut by the "
            "project's own patch extraction, so the test patches are not the same ones."
        )
    return (
        f"Our data source is {data_source!r}, not CBIS-DDSM: not comparable with the published figures ({published})."
    )


def comparability_subtitle(data_source: str | None) -> str:
    """The same verdict in a few words, for a plot's subtitle."""
    if data_source is None:
        return "data source not recorded: check it before comparing with the published numbers"
    if not is_comparable(data_source):
        return f"ours on {data_source} data: NOT comparable with the published CBIS-DDSM numbers"
    return f"ours on {data_source}; published on the project's 336 CBIS-DDSM test patches"
