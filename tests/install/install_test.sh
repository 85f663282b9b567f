#!/usr/bin/env bash
# Installs kiln from the build tree into a temporary prefix and builds tools/examples/embed
# against that prefix alone, as a user would: find_package(kiln) with CMake, then the same
# program through pkg-config. Runs both and checks their output and exit codes.
#
#   install_test.sh CMAKE BUILD_DIR SOURCE_DIR GENERATOR MAKE_PROGRAM CXX HAVE_CUDA VERSION SOVERSION [SANITIZE_FLAGS]
#
# SANITIZE_FLAGS (the ASan/UBSan build): the consumer is compiled with them too, since an
# instrumented libkiln.so can only be loaded by an instrumented program.
set -euo pipefail

cmake=$1
build=$(cd "$2" && pwd)
src=$(cd "$3" && pwd)
generator=$4
make_program=$5
cxx=$6
have_cuda=$7
version=$8
major=$9  # the SONAME's number (KILN_SOVERSION)
sanitize=${10:-}
minor=${version%.*}  # 0.2.0 -> 0.2: before 1.0, a minor version changes the API

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-install-test.XXXXXX")
if [ -z "${KILN_KEEP_INSTALL_TEST:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "keeping $work"; fi
prefix=$work/prefix

# Nothing from the environment may point the consumer at another kiln or at the build tree.
unset CMAKE_PREFIX_PATH kiln_DIR CMAKE_INCLUDE_PATH CMAKE_LIBRARY_PATH CPATH CPLUS_INCLUDE_PATH LIBRARY_PATH \
      LD_LIBRARY_PATH PKG_CONFIG_PATH

fail() {
  echo "FAILED: $*"
  exit 1
}

step() { echo "== $*"; }

step "install $build into $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }

libdir=$(cd "$prefix" && ls -d lib* | head -n 1)
for f in "$libdir/libkiln.so.$version" "$libdir/libkiln.so.$major" "$libdir/libkiln.so" include/kiln/kiln.hpp \
         include/kiln/plan.hpp include/kiln/version.hpp include/kiln/export.hpp bin/kiln \
         "$libdir/cmake/kiln/kilnConfig.cmake" "$libdir/cmake/kiln/kilnConfigVersion.cmake" \
         "$libdir/cmake/kiln/kilnTargets.cmake" "$libdir/pkgconfig/kiln.pc" share/kiln/models/cifar_quick.yaml; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
for h in "$src"/include/kiln/*.hpp; do
  cmp -s "$h" "$prefix/include/kiln/$(basename "$h")" || fail "header not installed (or differs): include/kiln/$(basename "$h")"
done
[ -e "$prefix/include/kiln/version.hpp.in" ] && fail "include/kiln/version.hpp.in was installed"
grep -q "KILN_VERSION_STRING \"$version\"" "$prefix/include/kiln/version.hpp" || fail "installed version.hpp is not $version"
soname=$(readelf -d "$prefix/$libdir/libkiln.so.$version" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libkiln.so.$major" ] || fail "SONAME is '$soname', expected libkiln.so.$major"
[ "$(readlink "$prefix/$libdir/libkiln.so")" = "libkiln.so.$major" ] || fail "libkiln.so does not link to libkiln.so.$major"

# True when `program` loads the installed libkiln.so (ldd resolves it, as the loader would).
loads_installed_kiln() {
  local loaded
  loaded=$(ldd "$1" | awk -v lib="libkiln.so.$major" '$1 == lib { print $3 }')
  [ -n "$loaded" ] && [ "$(realpath "$loaded")" = "$(realpath "$prefix/$libdir/libkiln.so.$major")" ]
}

step "the installed CLI runs from the prefix"
loads_installed_kiln "$prefix/bin/kiln" || { ldd "$prefix/bin/kiln"; fail "bin/kiln does not load $prefix/$libdir/libkiln.so.$major"; }
"$prefix/bin/kiln" --version | grep -q "$version" || fail "bin/kiln --version does not print $version"
(cd "$work" && "$prefix/bin/kiln" check "$prefix/share/kiln/models/resnet20.yaml" >"$work/check.log") ||
  { cat "$work/check.log"; fail "bin/kiln check share/kiln/models/resnet20.yaml"; }

configure() {  # source dir, build dir, extra args...
  local s=$1 b=$2
  shift 2
  "$cmake" -S "$s" -B "$b" -G "$generator" -DCMAKE_MAKE_PROGRAM="$make_program" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    ${sanitize:+"-DCMAKE_CXX_FLAGS=$sanitize" "-DCMAKE_EXE_LINKER_FLAGS=$sanitize"} "$@"
}

step "find_package(kiln) version checks"
mkdir -p "$work/versions"
cat >"$work/versions/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(kiln_versions LANGUAGES CXX)
find_package(kiln @MINOR@ REQUIRED)
if(NOT TARGET kiln::kiln OR NOT TARGET kiln::cli)
  message(FATAL_ERROR "kiln::kiln or kiln::cli missing")
endif()
get_target_property(_cuda kiln::kiln KILN_HAS_CUDA)
message(STATUS "kiln_VERSION=${kiln_VERSION} kiln_HAS_CUDA=${kiln_HAS_CUDA} property=${_cuda}")
foreach(_v 0.1 1 ${kiln_VERSION_MAJOR}.${kiln_VERSION_MINOR}.999 ${kiln_VERSION_MAJOR}.999)
  unset(kiln_FOUND)
  find_package(kiln ${_v} QUIET)
  if(kiln_FOUND)
    message(FATAL_ERROR "kiln ${kiln_VERSION} claims to satisfy find_package(kiln ${_v})")
  endif()
endforeach()
CMAKE
sed -i "s/@MINOR@/$minor/" "$work/versions/CMakeLists.txt"
configure "$work/versions" "$work/versions/build" >"$work/versions.log" 2>&1 || { cat "$work/versions.log"; fail "version checks"; }
cuda_bool=$([ "$have_cuda" = 1 ] && echo TRUE || echo FALSE)
grep -q "kiln_VERSION=$version " "$work/versions.log" || { cat "$work/versions.log"; fail "kiln_VERSION is not $version"; }
cuda_words=$([ "$have_cuda" = 1 ] && echo 'on|1|true' || echo 'off|0|false')
grep -Eiq "kiln_HAS_CUDA=($cuda_words) property=($cuda_words)\b" "$work/versions.log" ||
  { cat "$work/versions.log"; fail "kiln_HAS_CUDA does not say CUDA=$cuda_bool"; }

step "configure and build tools/examples/embed against $prefix"
configure "$src/tools/examples/embed" "$work/embed" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; fail "configuring the example"; }
cat "$work/configure.log" | grep "kiln " || true
found=$(sed -n 's/^kiln_DIR:PATH=//p' "$work/embed/CMakeCache.txt")
[ "$found" = "$prefix/$libdir/cmake/kiln" ] || fail "the example found kiln in '$found', not in $prefix/$libdir/cmake/kiln"
"$cmake" --build "$work/embed" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "building the example"; }
# Neither the sources nor the build tree may have been used: only the prefix.
if grep -F -e "$src/include" -e "$build" "$work/embed/compile_commands.json"; then
  fail "the example was compiled with kiln's source or build tree on its include path"
fi
loads_installed_kiln "$work/embed/embed" ||
  { ldd "$work/embed/embed"; fail "the example does not load $prefix/$libdir/libkiln.so.$major"; }

check_run() {  # name, program
  local name=$1 program=$2 rc=0
  step "run $name"
  "$program" "$work" >"$work/$name.out" 2>&1 || rc=$?
  cat "$work/$name.out"
  [ $rc -eq 0 ] || fail "$name exited with $rc"
  grep -q "^rejected: layer 'huge': " "$work/$name.out" || fail "$name: no GraphError for layer 'huge'"
  [ "$(grep -Ec '^step [1-8]/[0-9]+ loss [0-9]+\.[0-9]+$' "$work/$name.out")" -eq 8 ] || fail "$name: not 8 step lines with a loss"
  grep -q "^saved $work/embed.safetensors$" "$work/$name.out" || fail "$name: no checkpoint saved"
  [ -s "$work/embed.safetensors" ] || fail "$name: $work/embed.safetensors is missing or empty"
  grep -q '^reloaded checkpoint: 640 logits, max |difference| 0$' "$work/$name.out" ||
    fail "$name: the reloaded checkpoint does not predict the same logits"
  [ "$(tail -n 1 "$work/$name.out")" = "embed: ok" ] || fail "$name: does not end with 'embed: ok'"
  rm -f "$work/embed.safetensors"
}
check_run embed "$work/embed/embed"

step "errors reach the program as kiln exceptions: an unwritable checkpoint exits 1"
rc=0
"$work/embed/embed" "$work/no/such/dir" >"$work/error.out" 2>&1 || rc=$?
[ $rc -eq 1 ] || { cat "$work/error.out"; fail "expected exit 1 for an unwritable checkpoint, got $rc"; }
grep -q "embed: FAILED: kiln error: .*$work/no/such/dir" "$work/error.out" || { cat "$work/error.out"; fail "no kiln::Error naming the file"; }

step "pkg-config"
if command -v pkg-config >/dev/null 2>&1; then
  export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
  [ "$(pkg-config --modversion kiln)" = "$version" ] || fail "pkg-config --modversion kiln is not $version"
  [ "$(pkg-config --variable=cuda kiln)" = "$([ "$have_cuda" = 1 ] && echo yes || echo no)" ] || fail "kiln.pc: cuda= is wrong"
  read -r -a pc_flags <<<"$(pkg-config --cflags --libs kiln)"
  pc_libdir=$(pkg-config --variable=libdir kiln)
  [ "$(realpath "$pc_libdir")" = "$(realpath "$prefix/$libdir")" ] || fail "kiln.pc's libdir $pc_libdir is not $prefix/$libdir"
  # shellcheck disable=SC2086
  "$cxx" -std=c++20 $sanitize "$src/tools/examples/embed/main.cpp" -o "$work/embed-pc" "${pc_flags[@]}" -Wl,-rpath,"$pc_libdir" ||
    fail "building the example with pkg-config's flags (${pc_flags[*]})"
  check_run embed-pc "$work/embed-pc"
else
  echo "(pkg-config not installed: kiln.pc not checked)"
fi

echo "ok: kiln $version installs, and a program builds and runs against the installed package alone"
