#!/usr/bin/env bash
# On the lent GPU machine: configures and builds kiln against the unpacked .deb prefix
# (tools/device/unpack-deps.sh) and the cuDNN/cuBLAS that machine has -- beside the CUDA toolkit,
# in the system, or only inside PyTorch's Python wheels (nvidia-cudnn-cu13, nvidia-cublas) --
# and writes <build>/env.sh with the LD_LIBRARY_PATH the built binaries (and ctest) need.
#
#   tools/device/configure.sh                  # build dir build-gpu, prefix .deps/root
#   KILN_BUILD_DIR=build-x KILN_DEPS_PREFIX=/p tools/device/configure.sh [cmake --build args...]
#
# Environment knobs (all optional):
#   KILN_BUILD_DIR      build folder (default build-gpu)
#   KILN_DEPS_PREFIX    unpacked .deb prefix (default .deps/root; unpacked now if missing)
#   KILN_CUDNN_ROOT     a cuDNN root holding include/cudnn_version.h and lib*/libcudnn.so[.9] (tried first)
#   KILN_CUBLAS_ROOT    a cuBLAS root holding include/cublas_v2.h and lib*/libcublas.so[.N] (tried first)
#   KILN_PY_SITE        site-packages folders to search for nvidia/* wheels (space-separated;
#                       default /opt/torch/.venv/lib/python3.*/site-packages and python3's own)
#   KILN_CUDA_ARCH      CMAKE_CUDA_ARCHITECTURES (default 90: sm_90 SASS + compute_90 PTX)
#   KILN_BUILD_TARGETS  what to build (default: all); KILN_NO_BUILD=1 configures only
#   KILN_JOBS           parallel jobs (default nproc)
#   KILN_CMAKE_ARGS     extra arguments for the cmake configure step (split on spaces)
#   KILN_ALLOW_CPU_ONLY=1  do not fail when CMake ends up CPU-only (for dry runs without CUDA)
#   KILN_WERROR=1       warnings are errors (default: not, as in any user's build: the device's g++
#                       is not CI's g++ 12 and a new warning must not fail the one run)
# Extra arguments are passed to `cmake --build`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"
build=${KILN_BUILD_DIR:-build-gpu}
mkdir -p "$build"
build=$(cd "$build" && pwd -P)
prefix=${KILN_DEPS_PREFIX:-$here/.deps/root}
arch=${KILN_CUDA_ARCH:-90}
jobs=${KILN_JOBS:-$(nproc 2>/dev/null || echo 8)}
multiarch=x86_64-linux-gnu
links=$build/_kiln_links          # scratch symlinks (unversioned .so names, cuBLAS headers)

say() { echo "configure: $*"; }
die() { echo "configure: error: $*" >&2; exit 1; }

# ---- the .deb prefix ---------------------------------------------------------------------------
if [ ! -f "$prefix/.kiln-deps-prefix" ]; then
  say "no unpacked prefix at $prefix; unpacking .deps/debs"
  prefix=$(bash "$here/tools/device/unpack-deps.sh" "$prefix")
fi
prefix=$(cd "$prefix" && pwd -P)
say "deps prefix:   $prefix"

# ---- tools ---------------------------------------------------------------------------------------
# The image's venv has pip's cmake and ninja; /usr/local/cuda/bin may not be on PATH.
for d in /opt/torch/.venv/bin /usr/local/cuda/bin; do
  [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH=$PATH:$d ;; esac
done
export PATH
command -v cmake >/dev/null || die "cmake not found"
cmake_ver=$(cmake --version | head -n 1 | awk '{print $3}')
say "cmake:         $(command -v cmake) ($cmake_ver)"
if ! printf '3.25\n%s\n' "$cmake_ver" | sort -V -C; then die "CMake >= 3.25 needed, found $cmake_ver"; fi
gen=(-G Ninja)
if command -v ninja >/dev/null; then say "ninja:         $(command -v ninja)"
else say "warning: ninja not found, using Unix Makefiles"; gen=(-G "Unix Makefiles"); fi
cxx=${CXX:-$(command -v g++ || command -v c++ || true)}
[ -n "$cxx" ] || die "no C++ compiler (g++) found"
say "c++:           $cxx ($("$cxx" --version | head -n 1))"
cxx_major=$("$cxx" -dumpversion | cut -d. -f1)
[ "$cxx_major" -ge 11 ] 2>/dev/null || say "warning: g++ $cxx_major may be too old for kiln's C++20 (g++ 12 is what CI uses)"

# ---- CUDA toolkit ----------------------------------------------------------------------------------
nvcc=${CUDACXX:-$(command -v nvcc || true)}
if [ -z "$nvcc" ]; then
  for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc /opt/torch/.venv/lib/python3.*/site-packages/nvidia/cu13/bin/nvcc; do
    [ -x "$c" ] && { nvcc=$c; break; }
  done
fi
[ -n "$nvcc" ] && [ -x "$nvcc" ] || die "nvcc not found (PATH, /usr/local/cuda/bin)"
cuda_root=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)
say "nvcc:          $nvcc ($("$nvcc" --version | grep -o 'release [0-9.]*'), toolkit root $cuda_root)"
cuda_major=$("$nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
cuda_incs=() cuda_libs=()
for d in "$cuda_root/include" "$cuda_root/targets/x86_64-linux/include"; do [ -d "$d" ] && cuda_incs+=("$d"); done
for d in "$cuda_root/lib64" "$cuda_root/lib" "$cuda_root/targets/x86_64-linux/lib"; do [ -d "$d" ] && cuda_libs+=("$d"); done

# site-packages folders that may hold NVIDIA's wheels (PyTorch's cuDNN and cuBLAS)
if [ -n "${KILN_PY_SITE:-}" ]; then
  read -r -a py_sites <<<"$KILN_PY_SITE"
else
  py_sites=()
  for d in /opt/torch/.venv/lib/python3.*/site-packages; do [ -d "$d" ] && py_sites+=("$d"); done
  for py in /opt/torch/.venv/bin/python3 python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    while IFS= read -r d; do [ -d "$d" ] && py_sites+=("$d"); done < <("$py" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null || true)
  done
fi

# first existing file among: DIR/NAME for each dir in $1 (space-separated), NAME in $2...
first_lib() {
  local dirs=$1; shift
  local d n
  for d in $dirs; do for n in "$@"; do [ -e "$d/$n" ] && { echo "$d/$n"; return 0; }; done; done
  return 1
}

# ---- cuDNN: a header and a library from the SAME root, major >= 9 --------------------------------
# Candidate roots as "include-dir|lib-dirs". The wheel ships libcudnn.so.9 but no libcudnn.so; the
# full path of whichever exists is pinned in CMake's cache (KILN_CUDNN_LIBRARY), so cmake/FindCuDNN.cmake
# does not search -- it could otherwise pair a header from one root with a library from another.
cudnn_cands=()
[ -n "${KILN_CUDNN_ROOT:-}" ] && cudnn_cands+=("$KILN_CUDNN_ROOT/include|$KILN_CUDNN_ROOT/lib $KILN_CUDNN_ROOT/lib64")
for i in "${cuda_incs[@]}"; do cudnn_cands+=("$i|${cuda_libs[*]}"); done
cudnn_cands+=("/usr/include|/usr/lib/$multiarch /usr/lib64" "/usr/include/$multiarch|/usr/lib/$multiarch")
for s in "${py_sites[@]}"; do cudnn_cands+=("$s/nvidia/cudnn/include|$s/nvidia/cudnn/lib"); done
cudnn_inc="" cudnn_lib="" cudnn_ver=""
for c in "${cudnn_cands[@]}"; do
  inc=${c%%|*} libdirs=${c#*|}
  [ -f "$inc/cudnn_version.h" ] || continue
  major=$(sed -n 's/^#define CUDNN_MAJOR \([0-9]*\).*/\1/p' "$inc/cudnn_version.h")
  minor=$(sed -n 's/^#define CUDNN_MINOR \([0-9]*\).*/\1/p' "$inc/cudnn_version.h")
  patch=$(sed -n 's/^#define CUDNN_PATCHLEVEL \([0-9]*\).*/\1/p' "$inc/cudnn_version.h")
  if [ -z "$major" ] || [ "$major" -lt 9 ]; then say "  cuDNN ${major:-?}.${minor:-?} at $inc: too old, skipped"; continue; fi
  lib=$(first_lib "$libdirs" libcudnn.so "libcudnn.so.$major") || { say "  cuDNN header at $inc but no libcudnn.so[.$major] in $libdirs, skipped"; continue; }
  cudnn_inc=$inc cudnn_lib=$lib cudnn_ver=$major.$minor.$patch
  break
done
[ -n "$cudnn_inc" ] || die "cuDNN >= 9 not found (looked in: ${cudnn_cands[*]}); set KILN_CUDNN_ROOT"
cudnn_root=$(dirname "$cudnn_inc")
cudnn_libdir=$(dirname "$cudnn_lib")
say "cuDNN:         $cudnn_ver, header $cudnn_inc/cudnn_version.h, library $cudnn_lib"

# ---- cuBLAS: the toolkit's if it has it, else the wheel's (nvidia/cu13) ------------------------------
# FindCUDAToolkit looks for an unversioned libcublas.so beside the toolkit and uses the toolkit's
# include dir. A wheel has only libcublas.so.13 (+ libcublasLt.so.13) and its own include dir, so
# for a wheel: pin CUDA_cublas_LIBRARY / CUDA_cublasLt_LIBRARY to unversioned links in a scratch
# folder, and put the cuBLAS headers (links to them alone, so no other wheel header can shadow the
# toolkit's) on the include path with -isystem.
cmake_cublas=() extra_flags="" cublas_libdir=""
cublas_cands=()
[ -n "${KILN_CUBLAS_ROOT:-}" ] && cublas_cands+=("$KILN_CUBLAS_ROOT/include|$KILN_CUBLAS_ROOT/lib $KILN_CUBLAS_ROOT/lib64|explicit")
for i in "${cuda_incs[@]}"; do cublas_cands+=("$i|${cuda_libs[*]}|toolkit"); done
for s in "${py_sites[@]}"; do cublas_cands+=("$s/nvidia/cu$cuda_major/include|$s/nvidia/cu$cuda_major/lib|wheel"); done
for c in "${cublas_cands[@]}"; do
  inc=${c%%|*} rest=${c#*|}; libdirs=${rest%|*} kind=${rest##*|}
  [ -f "$inc/cublas_v2.h" ] || continue
  lib=$(first_lib "$libdirs" libcublas.so "libcublas.so.$cuda_major") || continue
  lt=$(first_lib "$libdirs" libcublasLt.so "libcublasLt.so.$cuda_major") || continue
  cublas_libdir=$(dirname "$lib")
  if [ "$kind" = toolkit ]; then
    say "cuBLAS:        toolkit's ($lib)"
  else
    rm -rf "$links/cublas"; mkdir -p "$links/cublas/include" "$links/cublas/lib"
    for h in "$inc"/cublas*.h; do ln -sfn "$h" "$links/cublas/include/$(basename "$h")"; done
    ln -sfn "$lib" "$links/cublas/lib/libcublas.so"
    ln -sfn "$lt" "$links/cublas/lib/libcublasLt.so"
    cmake_cublas=(-DCUDA_cublas_LIBRARY="$links/cublas/lib/libcublas.so" -DCUDA_cublasLt_LIBRARY="$links/cublas/lib/libcublasLt.so")
    extra_flags="-isystem $links/cublas/include"
    say "cuBLAS:        $kind's: $lib (headers $inc, linked through $links/cublas)"
  fi
  break
done
[ -n "$cublas_libdir" ] || die "cuBLAS (cublas_v2.h + libcublas.so[.$cuda_major]) found neither beside the toolkit nor in a wheel; set KILN_CUBLAS_ROOT"

# ---- run-time library path -------------------------------------------------------------------------
# Build-tree RUNPATHs cover kiln's direct dependencies, but not what those load in turn
# (libopenblas.so.0 -> libgfortran.so.5 -> libquadmath.so.0; libcudnn.so.9 dlopens libcudnn_*.so.9),
# and gtest_discover_tests RUNS the test binaries while building, so export it before building too.
# The toolkit's folders come before the wheels': a wheel folder such as nvidia/cu13/lib also holds a
# libcudart.so.13 of another minor version, and kiln was compiled against the toolkit's.
ld_dirs=("$prefix/usr/lib/$multiarch" "${cuda_libs[@]}" "$cudnn_libdir" "$cublas_libdir")
ld=""
for d in "${ld_dirs[@]}"; do case ":$ld:" in *":$d:"*) ;; *) ld=${ld:+$ld:}$d ;; esac; done
export LD_LIBRARY_PATH="$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- configure -------------------------------------------------------------------------------------
cmake_args=(
  -S "$here" -B "$build" "${gen[@]}"
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_CXX_COMPILER="$cxx"
  -DCMAKE_CUDA_COMPILER="$nvcc"
  -DCUDAToolkit_ROOT="$cuda_root"
  -DCMAKE_CUDA_ARCHITECTURES="$arch"
  -DKILN_DEPS_PREFIX="$prefix"
  -DKILN_CUDNN_ROOT="$cudnn_root"
  -DKILN_CUDNN_INCLUDE_DIR="$cudnn_inc"
  -DKILN_CUDNN_LIBRARY="$cudnn_lib"
  "${cmake_cublas[@]}"
)
[ -n "$extra_flags" ] && cmake_args+=(-DCMAKE_CXX_FLAGS="$extra_flags" -DCMAKE_CUDA_FLAGS="$extra_flags")
if [ "${KILN_WERROR:-0}" = 1 ]; then
  cmake_args+=(-DKILN_WERROR=ON)
else
  cmake_args+=(-DKILN_WERROR=OFF)
  say "warnings are not errors in this build (KILN_WERROR=1 makes them so)"
fi
if [ -n "${KILN_CMAKE_ARGS:-}" ]; then read -r -a more <<<"$KILN_CMAKE_ARGS"; cmake_args+=("${more[@]}"); fi
say "cmake ${cmake_args[*]}"
if ! cmake "${cmake_args[@]}" 2>&1 | tee "$build/configure.log"; then
  die "cmake configure failed (log: $build/configure.log)"
fi

# What did CMake pick? (Each should be under $prefix or the cuDNN/cuBLAS found above.)
say "CMake picked:"
grep -E '^(fmt_DIR|yaml-cpp_DIR|CLI11_DIR|nlohmann_json_DIR|GTest_DIR|KILN_CBLAS_INCLUDE_DIR|KILN_OPENBLAS_LIBRARY|KILN_CUDNN_INCLUDE_DIR|KILN_CUDNN_LIBRARY|CUDA_cublas_LIBRARY|CUDA_cudart_LIBRARY|CMAKE_CUDA_COMPILER):' \
  "$build/CMakeCache.txt" | sed 's/^/  /'
if ! grep -q 'kiln: CUDA backend ON' "$build/configure.log"; then
  grep 'kiln: building CPU-only' "$build/configure.log" >&2 || true
  [ "${KILN_ALLOW_CPU_ONLY:-0}" = 1 ] || die "CMake configured kiln CPU-only (see above); the device run needs the CUDA backend"
fi

# ---- env.sh for later steps --------------------------------------------------------------------------
cat >"$build/env.sh" <<ENV
# Written by tools/device/configure.sh: source it before running kiln, its tests or ctest.
export PATH="$PATH"
export LD_LIBRARY_PATH="$ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export KILN_BUILD_DIR="$build"
ENV
say "export LD_LIBRARY_PATH=\"$ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
say "(written to $build/env.sh: source it before running kiln or ctest)"

# ---- build ----------------------------------------------------------------------------------------------
[ "${KILN_NO_BUILD:-0}" = 1 ] && exit 0
targets=()
[ -n "${KILN_BUILD_TARGETS:-}" ] && { read -r -a t <<<"$KILN_BUILD_TARGETS"; targets=(--target "${t[@]}"); }
say "building with $jobs jobs ${targets[*]}"
cmake --build "$build" -j "$jobs" "${targets[@]}" "$@" || die "build failed"
if [ -x "$build/kiln" ]; then
  if ldd "$build/kiln" | grep -q 'not found'; then
    ldd "$build/kiln" | grep 'not found' >&2
    die "$build/kiln has unresolved libraries"
  fi
  say "$("$build/kiln" --version 2>&1 | head -n 3 | tr '\n' ' ')"
fi
say "done: $build"
