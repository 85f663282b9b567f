#!/usr/bin/env bash
# Downloads the CIFAR-10 binary version, checks its MD5 and unpacks it:
#   tools/fetch-cifar10.sh              into data/cifar-10-batches-bin under the repository
#   tools/fetch-cifar10.sh --out DIR    into DIR
# Does nothing when the six batch files are already there with their full size. Exits 1 when
# the download fails (offline) or the archive's checksum differs, leaving DIR untouched.
# KILN_CIFAR10_URL replaces the URL (a mirror); the checksum stays the published one.
set -euo pipefail

url=${KILN_CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz}
md5=c32a1d4ab5d03f1284b67883e8d87530
# 10,000 records of 3,073 bytes per file.
batch_bytes=30730000
files=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/data/cifar-10-batches-bin

usage() {
  echo "usage: tools/fetch-cifar10.sh [--out DIR]"
  echo "  downloads CIFAR-10 (binary version, 163 MiB) into DIR (default: data/cifar-10-batches-bin)"
}

fail() {
  echo "fetch-cifar10: error: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ $# -ge 2 ] || { echo "fetch-cifar10: --out needs a directory" >&2; exit 2; }
      out=$2
      shift 2
      ;;
    --out=*)
      out=${1#--out=}
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "fetch-cifar10: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
done

complete() {
  local f
  for f in "${files[@]}"; do
    [ -f "$out/$f" ] && [ "$(stat -c %s "$out/$f")" -eq "$batch_bytes" ] || return 1
  done
}

if complete; then
  echo "fetch-cifar10: CIFAR-10 is already in $out"
  exit 0
fi
[ ! -e "$out" ] || [ -d "$out" ] || fail "$out exists and is not a directory"

# Unpacked beside the target, so the final moves are renames within one file system.
parent=$(dirname "$out")
mkdir -p "$parent" || fail "cannot create $parent"
work=$(mktemp -d "$parent/.fetch-cifar10.XXXXXX") || fail "cannot create a temporary directory in $parent"
trap 'rm -rf "$work"' EXIT
archive=$work/cifar-10-binary.tar.gz

echo "fetch-cifar10: downloading $url"
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 2 --connect-timeout 20 -o "$archive" "$url" || rm -f "$archive"
fi
if [ ! -s "$archive" ] && command -v wget >/dev/null 2>&1; then
  wget -q --tries=2 --timeout=20 -O "$archive" "$url" || rm -f "$archive"
fi
[ -s "$archive" ] || fail "could not download $url (offline, or the server is unreachable; tried curl and wget)
    hint: download cifar-10-binary.tar.gz by hand and unpack it into $out,
          or make a synthetic set in the same format with: kiln synth --out DIR"

actual=$(md5sum "$archive" | cut -d' ' -f1)
[ "$actual" = "$md5" ] || fail "checksum mismatch for $url: MD5 $actual, expected $md5
    the download is truncated or altered; nothing was written to $out"

tar -xzf "$archive" -C "$work" || fail "cannot unpack $archive"
src=$work/cifar-10-batches-bin
for f in "${files[@]}"; do
  [ -f "$src/$f" ] || fail "the archive has no cifar-10-batches-bin/$f"
done
mkdir -p "$out" || fail "cannot create $out"
# test_batch.bin last: an interrupted run leaves the set incomplete, so the next run fetches again.
for f in batches.meta.txt readme.html "${files[@]}"; do
  if [ -f "$src/$f" ]; then mv -f "$src/$f" "$out/$f" || fail "cannot move $f into $out"; fi
done
complete || fail "$out is incomplete after unpacking"
echo "fetch-cifar10: CIFAR-10 is in $out"
