#!/usr/bin/env bash
# Downloads (here, on a Debian 12 machine with network) the .deb packages kiln needs to build
# and run on the lent GPU machine, which has nvcc, CMake, ninja and PyTorch's cuDNN/cuBLAS
# but no fmt, yaml-cpp, CLI11, nlohmann-json, GoogleTest or OpenBLAS, and no network or apt.
# The .debs land in the git-ignored .deps/debs/, which the device run carries (carry: [".deps/debs"])
# and tools/device/unpack-deps.sh unpacks there into a prefix inside the repository.
#
#   tools/device/fetch-deps.sh            # (re)fill .deps/debs/
#   KILN_DEPS_DIR=/elsewhere tools/device/fetch-deps.sh
#
# The packages are named explicitly (no recursive apt resolution) so the bundle stays small;
# the script then checks every Depends: of every .deb and lists the ones NOT bundled, which
# must already be on the target (glibc, libstdc++, libgcc: any image with a C++ compiler has them).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=${KILN_DEPS_DIR:-$here/.deps/debs}
max_bytes=$((20 * 1024 * 1024))   # the whole carry budget is 64 MiB; the CIFAR subset needs most of it

packages=(
  # build: headers + CMake package configs; run: the shared libraries
  libfmt-dev libfmt9
  libyaml-cpp-dev libyaml-cpp0.7
  libcli11-dev                      # header-only
  nlohmann-json3-dev                # header-only
  libgtest-dev                      # static libgtest.a/libgtest_main.a + GTestConfig.cmake
  libgmock-dev                      # optional for GTestConfig (included OPTIONAL), tiny; tests may use gmock later
  # OpenBLAS, pthread flavour. The real files live in .../openblas-pthread/; the plain
  # libopenblas.so.0 / cblas.h names are alternatives symlinks made by postinst, which
  # dpkg -x does not run (unpack-deps.sh makes them).
  libopenblas-dev libopenblas0      # metapackages (docs only), kept so the set is what apt would install
  libopenblas-pthread-dev           # cblas.h, openblas_config.h, libopenblas.so (-> .so.0)
  libopenblas0-pthread              # libopenblas.so.0 (also libblas.so.3, liblapack.so.3)
  libgfortran5 libquadmath0         # libopenblas.so.0 NEEDs libgfortran.so.5; that NEEDs libquadmath.so.0.
                                    # Not part of a CUDA image or of a plain Ubuntu base.
  zlib1g-dev zlib1g                 # the IDX readers inflate .gz files (zlib.h, libz.so)
  libpng-dev libpng16-16            # image folders and kiln predict: PNG
  libjpeg62-turbo-dev libjpeg62-turbo  # ... and JPEG (libjpeg-turbo)
)
# Depends: that are deliberately not bundled: present on any image that can run g++/nvcc
# (libc6-dev: its C headers, which zlib1g-dev needs).
assumed_present='^(libc6|libc6-dev|libc-dev|libgcc-s1|libstdc\+\+6|gcc-12-base|googletest)$'
# (googletest is libgtest-dev's dependency holding GoogleTest's *sources* in /usr/src; the
#  prebuilt static libraries are in libgtest-dev itself, so it is not needed.)

command -v apt-get >/dev/null || { echo "fetch-deps: apt-get not found (run this on the Debian 12 dev machine)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "fetch-deps: dpkg-deb not found" >&2; exit 1; }
if [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "fetch-deps: this machine is $(dpkg --print-architecture); the GPU machine is amd64 (x86-64)" >&2
  exit 1
fi

mkdir -p "$dest"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-debs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# apt-get download writes into the current directory; download into a scratch dir first so a
# failure leaves the old bundle untouched. apt-get download refuses to run as root into a
# directory the _apt user cannot write to only with a warning, so stay quiet about that.
echo "fetch-deps: downloading ${#packages[@]} packages"
if ! (cd "$tmp" && apt-get download -q "${packages[@]}" 2>"$tmp/apt.err"); then
  cat "$tmp/apt.err" >&2
  echo "fetch-deps: apt-get download failed (try 'apt-get update' first)" >&2
  exit 1
fi
grep -v -i "sandbox\|unsandboxed" "$tmp/apt.err" >&2 || true

rm -f "$dest"/*.deb
mv "$tmp"/*.deb "$dest"/

# Check the dependency closure: every Depends:/Pre-Depends: alternative group must be satisfied
# by a bundled package or be on the assumed-present list.
bundled=$(for f in "$dest"/*.deb; do dpkg-deb -f "$f" Package; done | sort -u)
missing=""
for f in "$dest"/*.deb; do
  deps=$(dpkg-deb -f "$f" Depends Pre-Depends | sed -e 's/^[A-Za-z-]*: //' | tr '\n' ',')
  IFS=',' read -r -a groups <<<"$deps"
  for g in "${groups[@]}"; do
    g=$(echo "$g" | sed -e 's/([^)]*)//g' -e 's/:any//g' -e 's/ //g')
    [ -z "$g" ] && continue
    ok=""
    IFS='|' read -r -a alts <<<"$g"
    for a in "${alts[@]}"; do
      if grep -qx -- "$a" <<<"$bundled" || [[ $a =~ $assumed_present ]]; then ok=1; break; fi
    done
    [ -z "$ok" ] && missing+="  $(dpkg-deb -f "$f" Package) needs $g"$'\n'
  done
done
if [ -n "$missing" ]; then
  printf 'fetch-deps: dependencies neither bundled nor assumed present:\n%s' "$missing" >&2
  exit 1
fi

echo "fetch-deps: bundle in $dest:"
total=0
for f in "$dest"/*.deb; do
  sz=$(stat -c %s "$f")
  total=$((total + sz))
  printf '  %9d  %s\n' "$sz" "$(basename "$f")"
done
printf '  %9d  total (%s MiB, %d files)\n' "$total" "$(awk -v b="$total" 'BEGIN{printf "%.1f", b/1048576}')" "$(ls "$dest"/*.deb | wc -l)"
echo "fetch-deps: not bundled, assumed on the target: libc6 (glibc >= 2.34), libstdc++6 (GLIBCXX_3.4.29, i.e. GCC >= 11), libgcc-s1"
if [ "$total" -gt "$max_bytes" ]; then
  echo "fetch-deps: bundle is over $((max_bytes / 1048576)) MiB" >&2
  exit 1
fi
