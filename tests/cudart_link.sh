#!/usr/bin/env bash
# The CUDA runtime is linked once, and the shared one (CUDA::cudart): no -lcudart_static or
# -lcudadevrt, and libcudart.so at most once, on the link lines of libkiln, the CLI and the GPU
# tests; and libkiln.so NEEDs libcudart.so.N once. Exit 77 (a skip) in a CPU-only build.
#
#   tests/cudart_link.sh BUILD_DIR KILN_HAVE_CUDA LIBKILN [TARGET=FILE...]
set -uo pipefail
build=$1 have_cuda=$2 lib=$3
shift 3
if [ "$have_cuda" != ON ] && [ "$have_cuda" != 1 ] && [ "$have_cuda" != TRUE ]; then
  echo "CPU-only build: no CUDA runtime to link"; exit 77
fi
failures=0
for pair in "$@"; do
  target=${pair%%=*} file=${pair#*=}
  # The final link command: Ninja's (by the output file), else the Makefile generator's link.txt.
  if [ -f "$build/build.ninja" ]; then
    line=$(cd "$build" && ninja -t commands "${file#"$build"/}" | tail -n 1)
  else
    line=$(cat "$(find "$build" -path "*/$target.dir/link.txt" | head -n 1)" 2>/dev/null)
  fi
  [ -n "$line" ] || { echo "FAIL: no link command for $target"; failures=$((failures + 1)); continue; }
  words=$(tr ' ' '\n' <<<"$line")
  shared=$(grep -cE '(^|/)libcudart\.so(\.[0-9.]+)?$|^-lcudart$' <<<"$words")
  static=$(grep -cE 'cudart_static|cudadevrt' <<<"$words")
  echo "$target: libcudart.so/-lcudart $shared time(s), cudart_static/cudadevrt $static time(s)"
  if [ "$shared" -gt 1 ] || [ "$static" -ne 0 ]; then
    echo "FAIL: $target links the CUDA runtime $((shared + static)) times:"; grep -E 'cudart|cudadevrt' <<<"$words" | sed 's/^/  /'
    failures=$((failures + 1))
  fi
done
needed=$(readelf -d "$lib" | grep -c 'NEEDED.*\[libcudart\.so')
echo "$lib: NEEDED libcudart.so.N $needed time(s)"
[ "$needed" -eq 1 ] || { echo "FAIL: $lib NEEDs libcudart $needed times, not once"; failures=$((failures + 1)); }
[ $failures -eq 0 ]
