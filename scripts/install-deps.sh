#!/usr/bin/env bash
# Installs anybit's build and test dependencies: Debian's packages (Debian 12) and a venv
# with the few Python packages Debian lacks (PyPI). Only what is missing is installed, so
# repeated runs cost a dpkg query and a file comparison.
set -euo pipefail
PKGS=(
  cmake make g++ pkg-config zlib1g-dev libjpeg62-turbo-dev libpng-dev
  libtorch-dev libopenblas0 libgloo-dev libdnnl-dev
  python3-torch python3-torchvision python3-numpy python3-yaml python3-pytest python3-venv
  dataset-fashion-mnist
  pybind11-dev python3-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-onnx clang-14 libclang-rt-14-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "anybit: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The project's venv (.venv): Debian's python3 with its packages visible
# (--system-site-packages: torch, torchvision, numpy and onnx stay Debian's) plus the Python
# packages Debian does not carry, from PyPI, pinned in scripts/requirements.txt: ONNX Runtime,
# which runs the exported ONNX files in the tests. The tests and the Python package run in it.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"
STAMP="$VENV/.anybit-requirements"
if [ ! -x "$VENV/bin/python" ]; then
  echo "anybit: creating the project venv in .venv"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
if ! cmp -s "$REQ" "$STAMP"; then
  echo "anybit: installing $(grep -v '^#' "$REQ" | tr '\n' ' ')into .venv (PyPI)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi
