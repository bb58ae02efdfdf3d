#!/usr/bin/env bash
# Installs anybit's build and test dependencies from Debian's packages (Debian 12).
# Only what is missing is installed, so repeated runs cost a dpkg query.
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
# onnxruntime-node from the npm registry, pinned by tools/onnxrt/package-lock.json, runs the
# exported ONNX files in the tests. Its install script would fetch extra GPU libraries from
# outside the registry: skip it (the CPU runtime ships in the package).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$ROOT/tools/onnxrt/node_modules/onnxruntime-node" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "anybit: installing onnxruntime-node into tools/onnxrt"
    ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix "$ROOT/tools/onnxrt" --no-audit --no-fund --loglevel=error
  else
    echo "anybit: npm not found; the ONNX Runtime tests will be skipped"
  fi
fi
