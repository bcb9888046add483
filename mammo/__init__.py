"""mammo: an MLflow experiment-tracking suite for mass-vs-calcification mammography CNNs.

Module map (one line each):
    errors       the error classes; every message says how to fix the problem
    data/store   the prepared dataset (patches.npy, manifest.csv, dataset.json)
    data/dicom   DICOM reading through pydicom's LUT helpers (a region mapped alone, files memory-mapped); resize
    data/masks   ROI masks told from crops by content, their box, the region to cut around them
    data/cbis    the CBIS-DDSM case-description CSVs, row → file matching, ingest
    data/dicom_index  the DICOM tree indexed by header UIDs; the worker pool (processes, or threads for roi)
    data/tensors the published project's numpy layout
    data/synthetic  a generated CBIS-DDSM tree in the real TCIA layout (the default)
    data/cohort  synthetic patients, lesions, CSV descriptors and the official split (pure)
    data/phantom synthetic pixels: breast, tissue, masses, calcification clusters (pure)
    data/splits  validation carved from train by patient (or by image, as published)
    data/prepare source → prepared dataset, with the skip report
    variants     Model 0–5 as a table of hyperparameters + one Functional builder
    pipeline     tf.data input, scaling, standardisation statistics, augmentation, precision policy
    training     fit with callbacks and the best checkpoint
    evaluation   metrics, confidence intervals (Wilson, DeLong), McNemar, wrong/worst, calibration, threshold
    subgroups    accuracy and AUC per pathology, view, breast density and subtlety
    saliency     Grad-CAM maps from the last conv layer (tf.GradientTape)
    published    the published project's Model 0–5 figures and when ours compare with them
    plots        matplotlib figures, computed then rendered
    reports      what a run logs about a model: test report, Grad-CAM, subgroups, the comparison table
    tracking     every MLflow name and call
    search       Optuna space, storage, sampler, pruner, study loading (Optuna only)
    study        the search run: each trial a nested MLflow run, the best trial's model
    study_report the study's parent run: summary, Optuna plots, McNemar vs Model 5
    workers      several study workers: the study-wide trial budget, dead workers' trials (Optuna only)
    gate         the promotion gate: better by min_delta and not worse by McNemar (pure)
    registry     register, promote, aliases
    serving      pyfunc wrapper: DICOM or pixel arrays in, probabilities out
"""

__version__ = "0.1.0"
