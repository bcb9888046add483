"""Project files agree with each other: pins, MLproject entry points, README commands."""

from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from tests.conftest import REPO_ROOT

# The platforms the README names: Linux x86-64 is tested in CI, the other two are resolved in CI.
PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
}


def _pins(requirements: list[str]) -> dict[tuple[str, str], str]:
    """(name, environment marker) → pinned version, for every `name==version[; marker]` line."""
    pins = {}
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # conda's `-e .`
            continue
        versions = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if versions:
            pins[(requirement.name.lower(), str(requirement.marker or ""))] = versions[0]
    return pins


def _project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def test_conda_yaml_pins_the_same_versions_as_pyproject() -> None:
    project = _project()
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["postgres"] + extras["team"]
    unpinned = [r for r in project["dependencies"] + extras["team"] + extras["dev"] if "==" not in r]
    assert not unpinned, f"every runtime dependency must be pinned with ==: {unpinned}"
    conda = yaml.safe_load((REPO_ROOT / "conda.yaml").read_text())
    pip_section = next(item["pip"] for item in conda["dependencies"] if isinstance(item, dict))
    assert _pins(pip_section) == _pins(declared)
    python_pin = next(item for item in conda["dependencies"] if isinstance(item, str) and item.startswith("python="))
    assert python_pin == "python=3.11" and project["requires-python"].startswith(">=3.11")


def test_each_platform_installs_exactly_one_tensorflow_of_the_same_version() -> None:
    """tensorflow-cpu has wheels for Linux x86-64 only; macOS arm64 and Linux aarch64 take tensorflow."""
    dependencies = [Requirement(line) for line in _project()["dependencies"]]
    expected = {"linux-x86_64": "tensorflow-cpu", "macos-arm64": "tensorflow", "linux-aarch64": "tensorflow"}
    for platform, environment in PLATFORMS.items():
        chosen = [
            (req.name, str(req.specifier))
            for req in dependencies
            if req.name.startswith("tensorflow") and (req.marker is None or req.marker.evaluate(environment))
        ]
        assert chosen == [(expected[platform], "==2.21.0")], platform
    others = [req.name for req in dependencies if req.marker is not None and not req.name.startswith("tensorflow")]
    assert not others, f"only TensorFlow differs by platform: {others}"


def test_every_mlproject_entry_point_runs_a_module_that_exists() -> None:
    mlproject = yaml.safe_load((REPO_ROOT / "MLproject").read_text())
    assert mlproject["conda_env"] == "conda.yaml"
    for name, entry in mlproject["entry_points"].items():
        module = re.search(r"python -m (entrypoints\.\w+)", entry["command"]).group(1)
        assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), f"entry point {name}: {module} missing"
        for parameter in entry.get("parameters", {}):
            assert "{" + parameter + "}" in entry["command"], f"{name}: parameter {parameter} is never passed"


def test_readme_shows_the_two_commands_and_env_manager_local() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])
    assert "make run" in first_screen and "make test" in first_screen
    assert "--env-manager local" in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_the_fast_loop_skips_only_the_slow_tests_and_ci_lints_first() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    fast = re.search(r"^test-fast:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert fast and fast.group(1).startswith('python -m pytest -m "not slow"'), "make test-fast must deselect `slow`"
    assert "slow:" in (REPO_ROOT / "pyproject.toml").read_text()  # the marker is registered (no typo goes unseen)
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert "make lint" in ci and ci.index("make lint") < ci.index("make test")
