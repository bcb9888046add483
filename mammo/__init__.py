"""mammo: an MLflow experiment-tracking suite for mass-vs-calcification mammography CNNs.

Folders, in the order the data flows back from the registry to the pixels: a module imports only from its
own folder and the folders below it (tests/test_layout.py reads this list), and `mlflow` only in tracking/,
registry/ and serve/ (and core/compat, lazily: the private-API door).
    search/    the Optuna search beyond Model 5: space and storage, the study run, its report, workers, trial runs
    registry/  the model registry: candidates, lineage, the gate, versions and aliases, the lock, the card, promote, evaluate
    train/     one training run (fit, kept checkpoint, threshold, resume), fine-tuning phases, train_all, cross-validation
    serve/     what the served model accepts, the pyfunc, batch prediction over folders (the logged model carries this)
    report/    what a run reports: metrics and intervals, subgroups, Grad-CAM, published figures, plots, logged reports
    model/     the networks: Model 0–5 and pretrained backbones as data, one builder, conv arithmetic, the tf.data input
    tracking/  every MLflow tracking name and call the others share (one module: the package itself)
    data/      sources (synthetic, cbis-ddsm, tensors), DICOM reading, the prepared store, splits
    core/      conventions every layer shares: errors, console, pixels, labels, the decision rule, precision, private APIs

Modules (one line each):
    search/space           Optuna space, storage, sampler, pruner, study loading (Optuna only)
    search/study           the search run: each trial a nested MLflow run, the best trial's model
    search/study_report    the study's parent run: summary, Optuna plots, McNemar vs Model 5, the summary line
    search/trial_runs      a failed trial's record and a dead worker's runs, on the MLflow side
    search/workers         several study workers: the study-wide trial budget, dead workers' trials (Optuna only)
    registry/candidates    which run's model to put forward: the kept checkpoint's validation score
    registry/gate          the promotion gate: better by min_delta and not worse by McNemar (pure)
    registry/lineage       which prepared dataset a run or a model came from; its test patches
    registry/model_card    the Markdown card a registered version carries (pure)
    registry/promotion     promote: candidate, data, gate and aliases put together; the promote run
    registry/scoring       an evaluate run: any model URI scored on a prepared dataset's test split
    registry/versions      the registry side: register or reuse a version, move aliases safely, the promotion lock
    train/crossval         cross-validated comparison: mean ± sd over folds, corrected paired t-test (pure)
    train/finetune         two-phase fine-tuning (head, then the top blocks) in one epoch counter
    train/resume           the epoch checkpoint (weights, optimizer, kept-best, early stopping) and the resume of a run
    train/series           train_all: the variants (× seeds, × folds) as child runs, then the comparison
    train/training         fit with callbacks, the kept checkpoint and the decision threshold; one run's logging
    serve/inference        batch prediction over a folder of DICOM / PNG / NumPy files → a CSV
    serve/model_input      what the served model accepts (dicom / patch / pixels rows) and the request limits
    serve/pyfunc           the pyfunc the logged model runs (PatchClassifier, its signature): what the model carries
    serve/served_model     the served model's code file (MLflow models from code)
    serve/serving          logging the pyfunc (models from code, carrying serve/pyfunc's import closure), loading, scoring
    report/evaluation      metrics, confidence intervals (Wilson, DeLong), McNemar, wrong/worst, calibration, threshold
    report/plots           matplotlib figures, computed then rendered
    report/published       the published project's Model 0–5 figures and when ours compare with them
    report/reports         what a run logs about a model: test report, Grad-CAM, subgroups, the comparison table
    report/saliency        Grad-CAM maps from the last conv layer (tf.GradientTape)
    report/subgroups       accuracy and AUC per pathology, view, breast density and subtlety
    model/backbones        pretrained keras.applications backbones: the table, the builder, the weights
    model/feature_maps     the conv blocks' arithmetic: feature-map side, deepest stack, smallest image (pure)
    model/pipeline         tf.data input from the memory map, standardisation statistics, augmentation layers
    model/variants         Model 0–5 as a table of hyperparameters + one Functional builder
    tracking/__init__      every MLflow tracking name and call (runs, metrics, artifacts, experiments, UI links)
    data/cbis              the CBIS-DDSM case-description CSVs, row → file matching, ingest
    data/cohort            synthetic patients, lesions, CSV descriptors and the official split (pure)
    data/dicom             DICOM reading through pydicom's LUT helpers (a region mapped alone, files memory-mapped); resize
    data/dicom_index       the DICOM tree indexed by header UIDs; the worker pool (processes, or threads for roi)
    data/masks             ROI masks told from crops by content, their box, the region to cut around them
    data/phantom           synthetic pixels: breast, tissue, masses, calcification clusters (pure)
    data/prepare           source → prepared dataset, with the skip report; the default folder per options
    data/splits            validation carved from train by patient (or by image, as published), cross-validation folds
    data/store             the prepared dataset (patches.npy, manifest.csv, dataset.json), written atomically, locked
    data/synthetic         a generated CBIS-DDSM tree in the real TCIA layout (the default)
    data/tensors           the published project's numpy layout
    core/booleans          the one reading of true/false written as text (flags, MLproject parameters, logged params)
    core/compat            the private APIs of Optuna, Keras, MLflow and argparse we use, behind one door (lazy imports)
    core/console           a clean console: TensorFlow's native start-up notes dropped in entry points and benchmarks
    core/decision          the decision rule (calcification when p > the model's threshold) and its default, 0.5
    core/errors            the error classes; every message says how to fix the problem; user-caused library errors in one line
    core/labels            the class convention: mass 0, calcification 1, their names, the default threshold 0.5
    core/pixels            the pixel convention: uint16 patches, /65535 and one resize for training, Grad-CAM and serving
    core/precision         the Keras dtype policy a run trains in (what the hardware runs fastest)

Why scoring (the evaluate run) sits in registry/: it reads a model's lineage and a run's loss the way promote
does, above train/; serve/ stays small enough to travel with every logged model.
"""

__version__ = "0.1.0"
