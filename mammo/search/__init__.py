"""The Optuna search beyond Model 5: space and storage, the study run, workers, trial runs."""
