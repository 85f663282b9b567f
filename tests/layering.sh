#!/usr/bin/env bash
# The compiled plan is the only layer that drives a backend executor, and it sits below the
# trainer:
#   - nothing in src/plan includes a header of src/train;
#   - outside src/backend, cuda/ and the plan's compile/options/init files, no source names
#     the Executor type or makes an executor;
#   - the training step (an executor's backward()) is called in one place.
#
#   layering.sh SOURCE_DIR
set -uo pipefail
cd "$1" || exit 1
status=0

if hits=$(grep -n '#include "train/' src/plan/*.cpp src/plan/*.hpp); then
  echo "FAILED: src/plan includes the trainer's headers:"; echo "$hits" | sed 's/^/    /'; status=1
fi

allowed='^(src/backend/|src/plan/(compiled_plan|options|init)\.|src/util/build_info\.cpp)'
if hits=$(grep -nE '\bExecutor\b|make_(cpu_|cuda_)?executor\(' src/*/*.cpp src/*/*.hpp tools/kiln/*.cpp | grep -Ev "$allowed"); then
  echo "FAILED: a client drives an executor directly (use detail::CompiledPlan):"; echo "$hits" | sed 's/^/    /'; status=1
fi

if hits=$(grep -nE '(->|\.)backward\(' src/*/*.cpp src/*/*.hpp tools/kiln/*.cpp | grep -Ev '^src/(backend|layers)/|^src/plan/compiled_plan\.cpp:'); then
  echo "FAILED: a training step outside CompiledPlan::train_step:"; echo "$hits" | sed 's/^/    /'; status=1
fi

[ $status -eq 0 ] && echo "ok: one compiled-plan layer drives the executors"
exit $status
