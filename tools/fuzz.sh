#!/usr/bin/env bash
# Builds kiln's libFuzzer harnesses (tests/fuzz) with clang, ASan and UBSan, and runs each
# for SECONDS (default 60) over its seed corpus (tests/fuzz/corpus/NAME), the inputs it once
# failed on (tests/fuzz/regressions/NAME) and what earlier runs found (BUILD/corpus/NAME, kept
# between runs). Prints the executions and the findings of each; exits 1 if any harness found
# a crash, hang, leak or sanitizer report, leaving the input in BUILD/artifacts/NAME/.
#
#   tools/fuzz.sh [SECONDS] [NAME...]      NAME: spec cifar10 cifar100 idx image safetensors train_state (default: all)
#
# Environment: KILN_FUZZ_BUILD (default build-fuzz), KILN_FUZZ_JOBS (fuzzing processes per
# harness, default 1), KILN_JOBS (build jobs).
#
# A finding is fixed in the code, and its input copied into tests/fuzz/regressions/NAME/ so
# that every build replays it (the fuzz_replay.* tests).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(spec cifar10 cifar100 idx image safetensors train_state)
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: tools/fuzz.sh [SECONDS per harness] [spec|cifar10|cifar100|idx|image|safetensors|train_state ...]" >&2
  exit 2
fi
for h in "${harnesses[@]}"; do
  [ -f "tests/fuzz/fuzz_$h.cpp" ] || { echo "tools/fuzz.sh: no harness '$h' (tests/fuzz/fuzz_$h.cpp)" >&2; exit 2; }
done

build=${KILN_FUZZ_BUILD:-build-fuzz}
jobs=${KILN_FUZZ_JOBS:-1}
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$cxx" ] || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "tools/fuzz.sh: needs clang and libFuzzer: apt-get install clang libclang-rt-14-dev libomp-14-dev" >&2
  exit 2
fi

echo "== building the fuzzers in $build ($cxx, ASan + UBSan + libFuzzer)"
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_FUZZ=ON \
  -DKILN_SANITIZE=ON -DKILN_WITH_CUDA=OFF -DKILN_WITH_ONEDNN=OFF -DKILN_BUILD_TESTS=OFF -DKILN_WERROR="${KILN_WERROR:-OFF}" >"$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
cmake --build "$build" --target kiln_fuzzers -j "${KILN_JOBS:-$(nproc)}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tools/lsan.supp:print_suppressions=0}

failed=()
summary=()
for h in "${harnesses[@]}"; do
  corpus="$build/corpus/$h"
  artifacts="$build/artifacts/$h"
  log="$build/fuzz_$h.log"
  mkdir -p "$corpus" "$artifacts"
  dict=()
  case $h in
    spec) dict=(-dict=tests/fuzz/spec.dict) ;;
    safetensors | train_state) dict=(-dict=tests/fuzz/safetensors.dict) ;;
  esac
  echo "== fuzz_$h for ${seconds}s (log: $log)"
  before=$(find "$artifacts" -type f | wc -l)
  rc=0
  # The first directory receives new inputs; the seeds and regressions are only read.
  # -timeout: one input running 10 s is a hang. -rss_limit_mb: more than 2 GiB is a bug.
  if [ "$jobs" -gt 1 ]; then
    "$build/tests/fuzz/fuzz_$h" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" -jobs="$jobs" -workers="$jobs" \
      "$corpus" "tests/fuzz/corpus/$h" "tests/fuzz/regressions/$h" >"$log" 2>&1 || rc=$?
    cat fuzz-*.log >>"$log" 2>/dev/null && rm -f fuzz-*.log
  else
    "$build/tests/fuzz/fuzz_$h" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" \
      "$corpus" "tests/fuzz/corpus/$h" "tests/fuzz/regressions/$h" >"$log" 2>&1 || rc=$?
  fi
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  size=$(find "$corpus" -type f | wc -l)
  found=$(($(find "$artifacts" -type f | wc -l) - before))
  if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
    failed+=("$h")
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)|deadly signal|Test unit written' "$log" | head -20 || true
    summary+=("$(printf '%-12s %12s executions  %5s in corpus  FOUND %s (exit %s): see %s' "$h" "$runs" "$size" "$found" "$rc" "$artifacts")")
  else
    summary+=("$(printf '%-12s %12s executions  %5s in corpus  nothing found' "$h" "$runs" "$size")")
  fi
done

echo "== fuzzing summary (${seconds}s per harness)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "tools/fuzz.sh: findings in: ${failed[*]}" >&2
  exit 1
fi
