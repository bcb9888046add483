"""What a logged model carries: serve/pyfunc's import closure inside `mammo`, and requirements for exactly its imports."""

from __future__ import annotations

import ast
import sys

from mammo.serve import serving

# What a requirement is for when the carried code does not import it by name: Keras's backend, pydicom's decoders.
RUNTIME_ONLY = {"tensorflow", "tensorflow-cpu", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle"}
DISTRIBUTION = {"skimage": "scikit-image"}  # import name -> the distribution that provides it, where they differ


def _third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in serving.served_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {name for name in names - {"mammo", "__future__"} if name not in sys.stdlib_module_names}


def test_the_served_code_is_the_pyfunc_and_what_it_imports_nothing_of_training_search_or_the_registry() -> None:
    carried = {path.relative_to(serving.PACKAGE_ROOT).as_posix() for path in serving.served_modules()}
    assert {"__init__.py", "serve/__init__.py", "serve/pyfunc.py", "serve/model_input.py", "data/dicom.py",
            "core/pixels.py", "core/decision.py"} <= carried  # fmt: skip
    assert not {name for name in carried if name.split("/")[0] in {"train", "search", "registry", "report", "model"}}
    assert not {"serve/serving.py", "serve/inference.py", "tracking/__init__.py", "data/store.py"} & carried


def test_the_models_requirements_are_what_the_served_code_imports() -> None:
    required = {line.split("==")[0] for line in serving.requirements()}
    imported = {DISTRIBUTION.get(name, name) for name in _third_party_imports()}
    assert imported <= required, f"imported but not required: {imported - required}"
    assert required - imported <= RUNTIME_ONLY, f"required but not imported: {required - imported - RUNTIME_ONLY}"
