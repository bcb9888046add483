#!/usr/bin/env bash
# Every pin of the default and dev installs must have a wheel for Python 3.11 on macOS arm64 (Apple
# Silicon) and Linux aarch64: pip resolves the whole dependency tree for each with --only-binary=:all:,
# so a pin without a wheel there fails here. Only metadata is fetched (PyPI serves it apart from the
# wheels, PEP 658), into pip's HTTP cache: keep PIP_CACHE_DIR between CI runs and a repeat is faster.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# macOS 12+ on Apple Silicon; Linux aarch64 with glibc 2.28+ (Debian 10, RHEL 8, Ubuntu 20.04 and later):
# pip expands a macOS tag to older releases itself, but a manylinux_2_Y tag must be listed per glibc.
AARCH64="$(for minor in $(seq 28 -1 17); do printf -- '--platform manylinux_2_%s_aarch64 ' "$minor"; done)"
for target in "macos-arm64|--platform macosx_12_0_arm64" "linux-aarch64|$AARCH64--platform manylinux2014_aarch64"; do
  name=${target%%|*}
  read -r -a tags <<<"${target#*|}"
  start=$(date +%s)
  "$PYTHON" .ci/platform_requirements.py "$name" >"$work/$name.txt"
  # Transitive dependencies' own markers are still evaluated for this machine (pip has no switch for that).
  "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --target "$work/$name" \
    --only-binary=:all: "${tags[@]}" --python-version 3.11 --implementation cp --abi cp311 \
    --report "$work/$name.json" -r "$work/$name.txt"
  count=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["install"]))' "$work/$name.json")
  echo "platforms: $name (${tags[1]}, Python 3.11): $(wc -l <"$work/$name.txt") pins, $count wheels resolved in $(($(date +%s) - start)) s"
done
