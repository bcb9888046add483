"""The synthetic cohort: patients, their abnormalities, the CSV descriptors and the official split.

Pure logic (no pixels, no files), so the structure of the synthetic dataset can be checked on its
own: patients with 1–3 abnormalities, each seen in CC and MLO views, an official train/test split by
patient, mass and calcification patients in equal numbers, and BI-RADS descriptors, pathology,
assessment and subtlety drawn with roughly the frequencies of the real CBIS-DDSM CSVs (benign
lesions get benign-looking descriptors). `synthetic` renders and writes what this plans.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

TEST_FRACTION = 0.2  # official split, by patient
MIN_CASES = 8  # four patients: a mass and a calcification patient in each official split
SEPARATE_MASK = 0.07  # mass ROI masks with a study and series of their own (92 of 1318 in mass-train)

_HEAD = ["patient_id", "{density}", "left or right breast", "image view", "abnormality id", "abnormality type"]
_TAIL = ["assessment", "pathology", "subtlety", "image file path", "cropped image file path", "ROI mask file path"]
COLUMNS = {  # the real headers, spelling differences included
    "mass": [c.format(density="breast_density") for c in _HEAD] + ["mass shape", "mass margins", *_TAIL],
    "calcification": [c.format(density="breast density") for c in _HEAD] + ["calc type", "calc distribution", *_TAIL],
}

# Descriptor vocabularies and rough frequencies, from the real CSVs; benign lesions look more benign.
PATHOLOGY = {
    "mass": {"MALIGNANT": 0.46, "BENIGN": 0.44, "BENIGN_WITHOUT_CALLBACK": 0.10},
    "calcification": {"MALIGNANT": 0.35, "BENIGN": 0.35, "BENIGN_WITHOUT_CALLBACK": 0.30},
}
DESCRIPTORS = {
    ("mass", True): (
        {"IRREGULAR": 5, "LOBULATED": 2, "OVAL": 1, "ROUND": 1, "ARCHITECTURAL_DISTORTION": 1,
         "IRREGULAR-ARCHITECTURAL_DISTORTION": 1},
        {"SPICULATED": 5, "ILL_DEFINED": 3, "MICROLOBULATED": 1, "OBSCURED": 1, "ILL_DEFINED-SPICULATED": 0.5},
    ),
    ("mass", False): (
        {"OVAL": 4, "LOBULATED": 3, "ROUND": 2, "IRREGULAR": 1, "LYMPH_NODE": 0.5, "FOCAL_ASYMMETRIC_DENSITY": 0.3,
         "ASYMMETRIC_BREAST_TISSUE": 0.3},
        {"CIRCUMSCRIBED": 5, "OBSCURED": 3, "ILL_DEFINED": 2, "MICROLOBULATED": 0.5, "SPICULATED": 0.3, "NA": 0.2},
    ),
    ("calcification", True): (
        {"PLEOMORPHIC": 6, "FINE_LINEAR_BRANCHING": 2, "AMORPHOUS": 2, "PUNCTATE-PLEOMORPHIC": 1},
        {"CLUSTERED": 6, "SEGMENTAL": 2, "LINEAR": 2, "REGIONAL": 0.5, "CLUSTERED-LINEAR": 0.5},
    ),
    ("calcification", False): (
        {"PLEOMORPHIC": 2, "PUNCTATE": 2, "LUCENT_CENTER": 2, "VASCULAR": 1.5, "AMORPHOUS": 1, "COARSE": 1,
         "ROUND_AND_REGULAR-LUCENT_CENTER": 1, "EGGSHELL": 0.5},
        {"CLUSTERED": 4, "NA": 3, "REGIONAL": 1.5, "SEGMENTAL": 1, "DIFFUSELY_SCATTERED": 1, "LINEAR": 0.5},
    ),
}  # fmt: skip
ASSESSMENT = {
    "MALIGNANT": {4: 5, 5: 4, 3: 1, 0: 1},
    "BENIGN": {4: 4, 3: 3, 2: 2, 0: 1},
    "BENIGN_WITHOUT_CALLBACK": {2: 6, 3: 2, 0: 1},
}
DENSITY = {1: 0.15, 2: 0.38, 3: 0.32, 4: 0.15}
SUBTLETY = {1: 0.05, 2: 0.1, 3: 0.25, 4: 0.27, 5: 0.33}
ABNORMALITIES_PER_PATIENT = {1: 0.72, 2: 0.2, 3: 0.08}


@dataclass(frozen=True)
class Abnormality:
    """One abnormality of one patient: what its CSV rows say (both views share it)."""

    patient: int
    kind: str  # "mass" | "calcification"
    split: str  # "train" | "test"
    side: str
    number: int  # abnormality id, counted per patient and breast side
    views: tuple[str, ...]
    density: int
    descriptors: tuple[str, str]  # (mass shape, mass margins) or (calc type, calc distribution)
    assessment: int
    pathology: str
    subtlety: int
    separate_mask: bool

    @property
    def patient_id(self) -> str:
        return f"P_{self.patient:05d}"

    def csv_row(self, *, view: str, paths: tuple[str, str, str]) -> list[str]:
        """The record, with the embedded newline where TCIA put it (mask path: mass; crop path: calc)."""
        image, crop, mask = paths
        if self.kind == "mass":
            mask += "\n"
        else:
            crop += "\n"
        head = [self.patient_id, str(self.density), self.side, view, str(self.number), self.kind, *self.descriptors]
        return [*head, str(self.assessment), self.pathology, str(self.subtlety), image, crop, mask]


def _pick(rng: np.random.Generator, weights: dict) -> object:
    keys = list(weights)
    probabilities = np.asarray(list(weights.values()), dtype=float)
    return keys[int(rng.choice(len(keys), p=probabilities / probabilities.sum()))]


def plan_abnormalities(rng: np.random.Generator, *, cases: int) -> list[Abnormality]:
    """Patients, their abnormalities and the by-patient split, adding up to exactly `cases` rows.

    Patients alternate between the mass and calcification collections (balanced labels), and there
    are at least four, so each collection has a train and a test patient. The last abnormality is
    cut to one view when `cases` is odd, as happens in the real files.
    """
    patients: list[tuple[int, str, int]] = []  # (number, kind, abnormality count)
    rows, number, first_kind = 0, 0, int(rng.integers(0, 2))
    while rows < cases:
        number += int(rng.integers(1, 4))
        reserved = 2 * max(0, 3 - len(patients))  # rows kept for the patients still needed to reach four
        count = max(1, min(int(_pick(rng, ABNORMALITIES_PER_PATIENT)), (cases - rows - reserved + 1) // 2))
        patients.append((number, ("mass", "calcification")[(len(patients) + first_kind) % 2], count))
        rows += 2 * count
    test = _test_patients(rng, patients)
    plan, remaining = [], cases
    for patient, kind, count in patients:
        density, sides_used = int(_pick(rng, DENSITY)), defaultdict(int)
        for _ in range(count):
            side = ("LEFT", "RIGHT")[int(rng.integers(0, 2))]
            sides_used[side] += 1
            views = ("CC", "MLO") if remaining >= 2 else ("CC",)
            remaining -= len(views)
            plan.append(_abnormality(rng, patient, kind, side, sides_used[side], views, density, test))
    return plan


def _test_patients(rng: np.random.Generator, patients: list[tuple[int, str, int]]) -> set[int]:
    """About TEST_FRACTION of each collection's patients, at least one where there are two."""
    test: set[int] = set()
    for kind in ("mass", "calcification"):
        numbers = [number for number, patient_kind, _ in patients if patient_kind == kind]
        size = max(round(TEST_FRACTION * len(numbers)), 1 if len(numbers) >= 2 else 0)
        test.update(int(n) for n in rng.permutation(np.asarray(numbers, dtype=int))[:size])
    return test


def _abnormality(
    rng: np.random.Generator, patient: int, kind: str, side: str, number: int, views: tuple[str, ...], density: int,
    test: set[int],
) -> Abnormality:  # fmt: skip
    pathology = str(_pick(rng, PATHOLOGY[kind]))
    shapes, spreads = DESCRIPTORS[kind, pathology == "MALIGNANT"]
    return Abnormality(
        patient=patient, kind=kind, split="test" if patient in test else "train", side=side, number=number,
        views=views, density=density, descriptors=(str(_pick(rng, shapes)), str(_pick(rng, spreads))),
        assessment=int(_pick(rng, ASSESSMENT[pathology])), pathology=pathology, subtlety=int(_pick(rng, SUBTLETY)),
        separate_mask=kind == "mass" and rng.random() < SEPARATE_MASK,
    )  # fmt: skip
