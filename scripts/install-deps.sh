#!/usr/bin/env bash
# Installs anybit's build and test dependencies: Debian's packages (Debian 12) and a venv
# with the Python packages from PyPI. Only what is missing is installed, so repeated runs cost
# a dpkg query and a file comparison.
set -euo pipefail
# Which torch: ANYBIT_TORCH_FROM=pypi (the default): torch and torchvision from PyPI, pinned in
# scripts/requirements-torch.txt, in a venv of its own; CMake takes LibTorch from that torch
# (torch.utils.cmake_prefix_path). ANYBIT_TORCH_FROM=debian: Debian's LibTorch 1.13
# (libtorch-dev) and python3-torch; the venv sees Debian's site-packages.
TORCH_FROM="${ANYBIT_TORCH_FROM:-pypi}"
case "$TORCH_FROM" in
  pypi|debian) ;;
  *) echo "anybit: ANYBIT_TORCH_FROM=$TORCH_FROM: pypi or debian" >&2; exit 2 ;;
esac
# libgloo-dev: its headers compile c10d's ProcessGroupGloo.hpp (with either torch); libdnnl-dev:
# the oneDNN 2.x that core/fused_eval.cc links (PyPI's torch keeps its own hidden); python3-numpy:
# tests/cli_test.sh and tests/intsim_sanitize.sh run /usr/bin/python3 with numpy
PKGS=(
  cmake make g++ pkg-config zlib1g-dev libjpeg62-turbo-dev libpng-dev
  libopenblas0 libgloo-dev libdnnl-dev python3-venv python3-numpy
  dataset-fashion-mnist
  pybind11-dev python3-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev
)
if [ "$TORCH_FROM" = debian ]; then
  PKGS+=(libtorch-dev python3-torch python3-torchvision python3-yaml python3-pytest python3-onnx)
fi
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
# The project's venv (.venv). pypi: its own site-packages, with torch, torchvision and the test
# packages of scripts/requirements-torch.txt. debian: Debian's python3 with its packages visible
# (--system-site-packages: torch, torchvision, numpy and onnx stay Debian's). Both: the Python
# packages Debian does not carry, pinned in scripts/requirements.txt: ONNX Runtime, which runs
# the exported ONNX files in the tests. The tests and the Python package run in it. A venv made
# for the other torch is made anew (configure the build tree anew too: make clean).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
REQ=("$ROOT/scripts/requirements.txt")
SYSTEM_SITE=true
if [ "$TORCH_FROM" = pypi ]; then
  REQ=("$ROOT/scripts/requirements-torch.txt" "${REQ[@]}")
  SYSTEM_SITE=false
fi
STAMP="$VENV/.anybit-requirements"
if [ -x "$VENV/bin/python" ] && ! grep -qx "include-system-site-packages = $SYSTEM_SITE" "$VENV/pyvenv.cfg"; then
  echo "anybit: .venv was made for the other torch: making it anew (ANYBIT_TORCH_FROM=$TORCH_FROM)"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "anybit: creating the project venv in .venv (torch from $TORCH_FROM)"
  if [ "$SYSTEM_SITE" = true ]; then
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  else
    /usr/bin/python3 -m venv "$VENV"
  fi
fi
if ! cat "${REQ[@]}" | cmp -s - "$STAMP"; then
  echo "anybit: installing $(cat "${REQ[@]}" | grep -v '^#' | tr '\n' ' ')into .venv (PyPI)"
  REQARGS=()
  for r in "${REQ[@]}"; do REQARGS+=(-r "$r"); done
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQARGS[@]}"
  cat "${REQ[@]}" > "$STAMP"
fi
