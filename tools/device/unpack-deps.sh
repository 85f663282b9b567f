#!/usr/bin/env bash
# On the lent GPU machine: unpacks every .deb in .deps/debs/ (made by tools/device/fetch-deps.sh
# and carried along) into a prefix INSIDE the repository -- never into / (unpacking Debian
# packages over an unknown image can break it) -- and makes the symlinks that the packages'
# maintainer scripts would have made. Prints the absolute prefix (alone) on stdout; progress
# goes to stderr, so:   prefix=$(tools/device/unpack-deps.sh)
#
#   tools/device/unpack-deps.sh [PREFIX]        PREFIX defaults to .deps/root
#   KILN_DEBS_DIR=...                           where the .debs are (default .deps/debs)
#   KILN_UNPACK_METHOD=auto|dpkg|ar|python      force one way of unpacking (auto: the first that works)
#
# No dpkg is needed: the image's distribution is unknown. Ways, in order:
#   dpkg   dpkg-deb -x (any Debian/Ubuntu image has it)
#   ar     binutils' ar x + tar (binutils comes with gcc, which nvcc needs; tar needs xz for data.tar.xz)
#   python ar parsing + tarfile (lzma is in Python's standard library), with /opt/torch/.venv/bin/python3
#          or python3
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
debs=${KILN_DEBS_DIR:-$here/.deps/debs}
prefix=${1:-${KILN_DEPS_PREFIX:-$here/.deps/root}}
method=${KILN_UNPACK_METHOD:-auto}
multiarch=x86_64-linux-gnu
marker=.kiln-deps-prefix

say() { echo "unpack-deps: $*" >&2; }
die() { echo "unpack-deps: error: $*" >&2; exit 1; }

shopt -s nullglob
files=("$debs"/*.deb)
shopt -u nullglob
[ ${#files[@]} -gt 0 ] || die "no .deb files in $debs (run tools/device/fetch-deps.sh on the dev machine, and carry .deps/debs)"

# The prefix is wiped and refilled so reruns are idempotent; only wipe a directory this script
# made (marker file) or an empty one, never an arbitrary path.
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd -P)
[ "$prefix" != / ] || die "refusing to unpack into /"
if [ -n "$(ls -A "$prefix")" ]; then
  [ -f "$prefix/$marker" ] || die "$prefix is not empty and was not made by this script; choose another prefix"
  rm -rf "${prefix:?}"/* "${prefix:?}"/.[!.]* 2>/dev/null || true
fi
touch "$prefix/$marker"

find_python() {
  local p
  for p in /opt/torch/.venv/bin/python3 python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import lzma, tarfile' 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

# Can this tar decompress data.tar.xz / .zst / .gz? (GNU tar runs the xz/zstd/gzip programs.)
tar_can() {
  case "$1" in
    *.xz) command -v xz >/dev/null ;;
    *.zst) command -v zstd >/dev/null ;;
    *.gz) command -v gzip >/dev/null ;;
    *.tar) true ;;
    *) false ;;
  esac
}

if [ "$method" = auto ]; then
  if command -v dpkg-deb >/dev/null; then method=dpkg
  elif command -v ar >/dev/null && command -v tar >/dev/null && command -v xz >/dev/null; then method=ar
  elif find_python >/dev/null; then method=python
  else die "cannot unpack .debs: no dpkg-deb, no ar+tar+xz, no python3 with lzma"
  fi
fi
say "unpacking ${#files[@]} packages from $debs into $prefix (method: $method)"

case "$method" in
  dpkg)
    command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
    for f in "${files[@]}"; do dpkg-deb -x "$f" "$prefix" || die "dpkg-deb -x failed on $f"; done
    ;;
  ar)
    command -v ar >/dev/null || die "ar not found (binutils)"
    command -v tar >/dev/null || die "tar not found"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-unpack.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    for f in "${files[@]}"; do
      rm -rf "${tmp:?}"/*
      (cd "$tmp" && ar x "$f") || die "ar x failed on $f"
      data=$(ls "$tmp"/data.tar* 2>/dev/null | head -n 1)
      [ -n "$data" ] || die "no data.tar.* member in $f"
      tar_can "$data" || die "tar cannot decompress $(basename "$data") here (missing xz/zstd?); try KILN_UNPACK_METHOD=python"
      case "$data" in
        *.zst) zstd -dc "$data" | tar -xf - -C "$prefix" ;;
        *) tar -xf "$data" -C "$prefix" ;;     # GNU tar picks the decompressor by suffix
      esac || die "tar failed on $(basename "$data") from $f"
    done
    ;;
  python)
    py=$(find_python) || die "no python3 with the lzma module"
    "$py" - "$prefix" "${files[@]}" <<'PY' || die "python unpacking failed"
import io, sys, tarfile
prefix, debs = sys.argv[1], sys.argv[2:]

def ar_members(path):
    # The ar format of a .deb: "!<arch>\n", then per member a 60-byte header
    # (name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic "`\n") and the data, padded to even.
    with open(path, "rb") as f:
        blob = f.read()
    if not blob.startswith(b"!<arch>\n"):
        raise SystemExit(f"{path}: not an ar archive")
    pos = 8
    while pos + 60 <= len(blob):
        hdr = blob[pos:pos + 60]
        if hdr[58:60] != b"`\n":
            raise SystemExit(f"{path}: bad ar member header at {pos}")
        name = hdr[0:16].decode().strip().rstrip("/")
        size = int(hdr[48:58].decode().strip())
        yield name, blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)

for deb in debs:
    data = [(n, b) for n, b in ar_members(deb) if n.startswith("data.tar")]
    if not data:
        raise SystemExit(f"{deb}: no data.tar member")
    name, blob = data[0]
    if name.endswith(".zst"):
        raise SystemExit(f"{deb}: {name} is zstd, which this Python's tarfile cannot read")
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
        # 'tar' filter (Python >= 3.12, backported to 3.8+ security releases): refuses absolute
        # paths and paths leaving the prefix, keeps the packages' relative symlinks.
        if hasattr(tarfile, "tar_filter"):
            tf.extractall(prefix, filter="tar")
        else:
            tf.extractall(prefix)
PY
    ;;
  *) die "unknown KILN_UNPACK_METHOD=$method (auto|dpkg|ar|python)" ;;
esac

# ---- what the maintainer scripts would have done ----------------------------------------------
# libopenblas0-pthread's postinst registers update-alternatives links
# /usr/lib/<multiarch>/libopenblas.so.0 (and libblas.so.3, liblapack.so.3) and libopenblas-pthread-dev's
# /usr/lib/<multiarch>/libopenblas.so and /usr/include/<multiarch>/cblas.h. dpkg -x runs no scripts,
# so those names do not exist. cmake/FindKilnBlas.cmake already searches .../openblas-pthread/, but make
# the plain names too (relative links, so the prefix can move) so that anything looking in the usual
# place -- and LD_LIBRARY_PATH=<prefix>/usr/lib/<multiarch> -- finds OpenBLAS. libblas.so.3 and
# liblapack.so.3 are left out on purpose: in LD_LIBRARY_PATH they could shadow another BLAS for
# other programs run in the same shell (numpy/torch bring their own).
lib=$prefix/usr/lib/$multiarch
inc=$prefix/usr/include/$multiarch
[ -d "$lib/openblas-pthread" ] || die "no $lib/openblas-pthread after unpacking (libopenblas0-pthread missing from the bundle?)"
ln -sfn openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
ln -sfn openblas-pthread/libopenblas.so "$lib/libopenblas.so"
for h in cblas.h openblas_config.h f77blas.h; do
  [ -e "$inc/openblas-pthread/$h" ] && ln -sfn "openblas-pthread/$h" "$inc/$h"
done

# ---- check that what the build and the binaries need is there (links resolve too) ---------------
need=(
  usr/lib/$multiarch/cmake/fmt/fmt-config.cmake
  usr/lib/$multiarch/cmake/yaml-cpp/yaml-cpp-config.cmake
  usr/share/cmake/CLI11/CLI11Config.cmake
  usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake
  usr/lib/$multiarch/cmake/GTest/GTestConfig.cmake
  usr/lib/$multiarch/libgtest.a usr/lib/$multiarch/libgtest_main.a
  usr/include/$multiarch/cblas.h
  usr/lib/$multiarch/libopenblas.so usr/lib/$multiarch/libopenblas.so.0
  usr/lib/$multiarch/libfmt.so.9 usr/lib/$multiarch/libyaml-cpp.so.0.7
  usr/lib/$multiarch/libgfortran.so.5 usr/lib/$multiarch/libquadmath.so.0
)
bad=0
for p in "${need[@]}"; do
  if [ ! -e "$prefix/$p" ]; then say "missing or dangling: $prefix/$p"; bad=1; fi
done
# Any dangling link left (e.g. an absolute or /etc/alternatives link)? Report, do not fail:
# only the names above matter for the build.
dangling=$(find "$prefix" -xtype l 2>/dev/null | grep -v "/usr/share/doc/" || true)
[ -z "$dangling" ] || say "note: dangling links (not used by the build):"$'\n'"$dangling"
[ $bad -eq 0 ] || die "the unpacked prefix is incomplete"
say "ok: $(find "$prefix" -type f | wc -l) files, $(du -sh "$prefix" | cut -f1)"
echo "$prefix"
