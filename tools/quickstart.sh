#!/usr/bin/env bash
# kiln quick start on a fresh Debian 12 machine with the CUDA toolkit in /usr/local/cuda:
#   tools/quickstart.sh train   install what is missing, build, train the default model
#   tools/quickstart.sh test    install what is missing, build, run the whole test suite
# Without nvcc/cuDNN kiln builds CPU-only (configure says so) and everything here still works.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
build=${KILN_BUILD_DIR:-build}
jobs=${KILN_JOBS:-$(nproc)}

packages=(cmake ninja-build g++ libfmt-dev libgtest-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libopenblas-dev)

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "quickstart: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

configure_and_build() {
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build" -j "$jobs"
}

cmd=${1:-}
case "$cmd" in
  train)
    install_missing
    configure_and_build
    shift
    # The default model, validated and compiled (the trainer arrives with the next issue).
    "$build/kiln" check data/models/cifar_quick.yaml "$@"
    if "$build/kiln" --version | grep -q cuDNN; then
      "$build/kiln" check data/models/cifar_quick.yaml --target cuda "$@" | tail -n 2
    fi
    ;;
  test)
    install_missing
    configure_and_build
    cd "$build"
    ctest --output-on-failure -j "$jobs"
    ;;
  *)
    echo "usage: tools/quickstart.sh train|test" >&2
    exit 2
    ;;
esac
