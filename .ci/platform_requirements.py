"""Print the pins of the default and `dev` installs as they apply on one platform, markers resolved.

pip's `--platform` picks wheel tags for another machine but evaluates environment markers on this
one, so `.ci/platforms.sh` hands it requirements whose markers were already evaluated for the target.
Usage: python .ci/platform_requirements.py macos-arm64|linux-aarch64|linux-x86_64
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ENVIRONMENTS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
}


def main(platform: str) -> int:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    environment = {"python_version": "3.11", "python_full_version": "3.11.0", **ENVIRONMENTS[platform]}
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            print(requirement)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
