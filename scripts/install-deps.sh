#!/usr/bin/env bash
# Installs anybit's build and test dependencies: Debian's packages (Debian 12) and the project
# venv (.venv) with torch, torchvision and the Python test packages from PyPI. Only what is
# missing is installed, so repeated runs cost a dpkg query and a file comparison.
#
# LibTorch is the user's torch 2.x: CMake takes it from the venv's torch
# (torch.utils.cmake_prefix_path), so the C++ core, the CLI and the Python extension all link
# the very libraries `import torch` loads. Debian's LibTorch 1.13 (libtorch-dev) is no longer a
# supported configuration (docs/design.md, "Build").
set -euo pipefail
# libgloo-dev: its headers compile c10d's ProcessGroupGloo.hpp (the wheel ships none);
# libdnnl-dev: the oneDNN 2.x that core/fused_eval.cc links (the wheel keeps its own hidden);
# python3-numpy: tests/cli_test.sh and tests/intsim_sanitize.sh write .npy files with
# /usr/bin/python3 (no torch there)
PKGS=(
  cmake make g++ pkg-config zlib1g-dev libjpeg62-turbo-dev libpng-dev
  libopenblas0 libgloo-dev libdnnl-dev python3-venv python3-numpy
  dataset-fashion-mnist
  pybind11-dev python3-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "anybit: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The project's venv (.venv), with site-packages of its own (no --system-site-packages: a
# Debian python3-torch or numpy on the machine must not mix with PyPI's), from the pins in
# scripts/requirements-torch.txt (torch, torchvision, numpy, pyyaml, pytest, onnx) and
# scripts/requirements.txt (ONNX Runtime, which runs the exported ONNX files in the tests).
# The tests, the benchmarks and the Python package run in it. A venv of an earlier layout
# (one that sees the system's site-packages) is made anew; configure the build anew then too
# (make clean).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
REQ=("$ROOT/scripts/requirements-torch.txt" "$ROOT/scripts/requirements.txt")
STAMP="$VENV/.anybit-requirements"
if [ -x "$VENV/bin/python" ] && ! grep -qx "include-system-site-packages = false" "$VENV/pyvenv.cfg"; then
  echo "anybit: .venv sees the system's site-packages (an earlier layout): making it anew"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "anybit: creating the project venv in .venv"
  /usr/bin/python3 -m venv "$VENV"
fi
if ! cat "${REQ[@]}" | cmp -s - "$STAMP"; then
  echo "anybit: installing $(cat "${REQ[@]}" | grep -v '^#' | tr '\n' ' ')into .venv (PyPI)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "${REQ[0]}" -r "${REQ[1]}"
  cat "${REQ[@]}" > "$STAMP"
fi
