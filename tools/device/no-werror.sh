#!/usr/bin/env bash
# A compiler launcher (CMAKE_CXX_COMPILER_LAUNCHER) for the device build: runs the compile
# command with every -Werror removed. kiln's own code builds with -Werror under the g++ that CI
# uses (12); the GPU machine's g++ is whatever its image has (likely 13), whose new warnings
# (-Wdangling-reference, ...) must not cost the one short device run a failed build. Warnings
# are still printed. configure.sh uses it unless KILN_WERROR=1.
set -euo pipefail
args=()
for a in "$@"; do
  [ "$a" = -Werror ] || args+=("$a")
done
exec "${args[@]}"
