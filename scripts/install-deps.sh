#!/usr/bin/env bash
# Installs anybit's build and test dependencies from Debian's packages (Debian 12).
# Only what is missing is installed, so repeated runs cost a dpkg query.
set -euo pipefail
PKGS=(
  cmake make g++ pkg-config zlib1g-dev libjpeg62-turbo-dev libpng-dev
  libtorch-dev libopenblas0
  python3-torch python3-torchvision python3-numpy python3-yaml python3-pytest python3-venv
  dataset-fashion-mnist
  pybind11-dev python3-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "anybit: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
