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

packages=(cmake ninja-build g++ libfmt-dev libgtest-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libopenblas-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev libdnnl-dev)

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
    # KILN_WERROR=ON (CI) makes warnings errors; a user's build only shows them.
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_WERROR="${KILN_WERROR:-OFF}"
  fi
  cmake --build "$build" -j "$jobs"
}

cmd=${1:-}
case "$cmd" in
  train)
    install_missing
    configure_and_build
    shift
    # A short run of the default model: one epoch unless the flags say --epochs or --steps,
    # on CIFAR-10 when $KILN_CIFAR10_DIR or data/cifar-10-batches-bin holds it, else on a
    # synthetic set made in memory; on the GPU when there is one. Flags after `train` go to
    # `kiln train`. Unless they name --out, each run gets a fresh folder runs/quickstart/N,
    # so an earlier run is never overwritten.
    extra=()
    has() { local f; for a in "${@:2}"; do for f in $1; do [[ "$a" == "$f" || "$a" == "$f="* ]] && return 0; done; done; return 1; }
    has "--epochs --steps" "$@" || extra+=(--epochs 1)
    out=""
    if ! has "--out" "$@"; then
      n=1
      while [ -e "runs/quickstart/$n" ]; do n=$((n + 1)); done
      out="runs/quickstart/$n"
      extra+=(--out "$out")
    fi
    "$build/kiln" train data/models/cifar_quick.yaml "${extra[@]}" "$@"
    [ -n "$out" ] && echo "quickstart: the weights (model.safetensors) and metrics.jsonl are in $out"
    # The curves, where matplotlib is installed (python3-matplotlib); nothing said otherwise.
    run_dir=$out
    prev=""
    for a in "$@"; do
      [ "$prev" = "--out" ] && run_dir=$a
      [[ "$a" == --out=* ]] && run_dir=${a#--out=}
      prev=$a
    done
    if [ -n "$run_dir" ] && [ -f "$run_dir/metrics.jsonl" ] && python3 -c "import matplotlib" >/dev/null 2>&1 &&
      python3 tools/plot-runs.py "$run_dir" -o "$run_dir/curves.png" >/dev/null 2>&1; then
      echo "quickstart: training curves in $run_dir/curves.png"
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
