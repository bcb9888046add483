"""mammo: an MLflow experiment-tracking suite for mass-vs-calcification mammography CNNs.

Module map (one line each):
    errors       the error classes; every message says how to fix the problem; user-caused library errors in one line
    console      a clean console: TensorFlow's native start-up notes dropped in entry points and benchmarks
    pixels       the pixel convention: uint16 patches, /65535 and one resize for training, Grad-CAM and serving
    labels       the class convention: mass 0, calcification 1, their names, the default threshold 0.5
    booleans     the one reading of true/false written as text (flags, MLproject parameters, logged params)
    compat       the private APIs of Optuna, Keras, MLflow and argparse we use, behind one door
    precision    the Keras dtype policy a run trains in (what the hardware runs fastest)
    decision     the decision rule (calcification when p > the model's threshold) and its default, 0.5
    data/store   the prepared dataset (patches.npy, manifest.csv, dataset.json), written atomically, locked
    data/dicom   DICOM reading through pydicom's LUT helpers (a region mapped alone, files memory-mapped); resize
    data/masks   ROI masks told from crops by content, their box, the region to cut around them
    data/cbis    the CBIS-DDSM case-description CSVs, row → file matching, ingest
    data/dicom_index  the DICOM tree indexed by header UIDs; the worker pool (processes, or threads for roi)
    data/tensors the published project's numpy layout
    data/synthetic  a generated CBIS-DDSM tree in the real TCIA layout (the default)
    data/cohort  synthetic patients, lesions, CSV descriptors and the official split (pure)
    data/phantom synthetic pixels: breast, tissue, masses, calcification clusters (pure)
    data/splits  validation carved from train by patient (or by image, as published), cross-validation folds
    data/prepare source → prepared dataset, with the skip report; the default folder per options
    feature_maps the conv blocks' arithmetic: feature-map side, deepest stack, smallest image (pure)
    variants     Model 0–5 as a table of hyperparameters + one Functional builder
    backbones    pretrained keras.applications backbones: the table, the builder, the weights
    finetune     two-phase fine-tuning (head, then the top blocks) in one epoch counter
    pipeline     tf.data input from the memory map, standardisation statistics, augmentation layers
    training     fit with callbacks, the kept checkpoint and the decision threshold; one run's logging
    resume       the epoch checkpoint (weights, optimizer, kept-best, early stopping) and the resume of a run
    series       train_all: the variants (× seeds, × folds) as child runs, then the comparison
    crossval     cross-validated comparison: mean ± sd over folds, corrected paired t-test (pure)
    evaluation   metrics, confidence intervals (Wilson, DeLong), McNemar, wrong/worst, calibration, threshold
    subgroups    accuracy and AUC per pathology, view, breast density and subtlety
    saliency     Grad-CAM maps from the last conv layer (tf.GradientTape)
    published    the published project's Model 0–5 figures and when ours compare with them
    plots        matplotlib figures, computed then rendered
    reports      what a run logs about a model: test report, Grad-CAM, subgroups, the comparison table
    tracking     every MLflow tracking name and call (runs, metrics, artifacts, experiments, UI links)
    search       Optuna space, storage, sampler, pruner, study loading (Optuna only)
    study        the search run: each trial a nested MLflow run, the best trial's model
    study_report the study's parent run: summary, Optuna plots, McNemar vs Model 5, the summary line
    workers      several study workers: the study-wide trial budget, dead workers' trials (Optuna only)
    trial_runs   a failed trial's record and a dead worker's runs, on the MLflow side
    candidates   which run's model to put forward: the kept checkpoint's validation score
    lineage      which prepared dataset a run or a model came from; its test patches
    gate         the promotion gate: better by min_delta and not worse by McNemar (pure)
    model_card   the Markdown card a registered version carries (pure)
    registry     the registry side: register or reuse a version, move aliases safely, the promotion lock
    promotion    promote: candidate, data, gate and aliases put together; the promote run
    model_input  what the served model accepts (dicom / patch / pixels rows) and the request limits
    serving      the pyfunc (models from code, carrying this package), logging, loading and scoring it
    served_model the served model's code file (MLflow models from code)
    scoring      an evaluate run: any model URI scored on a prepared dataset's test split
    inference    batch prediction over a folder of DICOM / PNG / NumPy files → a CSV
"""

__version__ = "0.1.0"
