"""The served model's code file (MLflow "models from code"): `serving.log_model` logs this file.

MLflow runs it when the model loads, with the model's own copy of the modules it imports
(`serve/pyfunc` and below: its `code_paths`) first on sys.path, so the model loads wherever its requirements are installed,
without this checkout and without unpickling any of our classes.
"""

from mammo.serve.pyfunc import PatchClassifier, set_model

set_model(PatchClassifier())
