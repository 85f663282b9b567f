#!/usr/bin/env bash
# Downloads the CIFAR-100 binary version, checks its MD5 and unpacks it:
#   tools/fetch-cifar100.sh              into data/cifar-100-binary under the repository
#   tools/fetch-cifar100.sh --out DIR    into DIR
# Does nothing when train.bin and test.bin are already there with their full size. Exits 1
# when the download fails (offline) or the archive's checksum differs, leaving DIR untouched.
# KILN_CIFAR100_URL replaces the URL (a mirror); the checksum stays the published one.
set -euo pipefail

url=${KILN_CIFAR100_URL:-https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz}
md5=03b5dce01913d631647c71ecec9e9cb8
# Records of 3,074 bytes: 50,000 in train.bin, 10,000 in test.bin.
files=(train.bin test.bin)
sizes=(153700000 30740000)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/data/cifar-100-binary

usage() {
  echo "usage: tools/fetch-cifar100.sh [--out DIR]"
  echo "  downloads CIFAR-100 (binary version, 161 MiB) into DIR (default: data/cifar-100-binary)"
}

fail() {
  echo "fetch-cifar100: error: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ $# -ge 2 ] || { echo "fetch-cifar100: --out needs a directory" >&2; exit 2; }
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
      echo "fetch-cifar100: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
done

complete() {
  local i
  for i in "${!files[@]}"; do
    [ -f "$out/${files[$i]}" ] && [ "$(stat -c %s "$out/${files[$i]}")" -eq "${sizes[$i]}" ] || return 1
  done
}

if complete; then
  echo "fetch-cifar100: CIFAR-100 is already in $out"
  exit 0
fi
[ ! -e "$out" ] || [ -d "$out" ] || fail "$out exists and is not a directory"

# Unpacked beside the target, so the final moves are renames within one file system.
parent=$(dirname "$out")
mkdir -p "$parent" || fail "cannot create $parent"
work=$(mktemp -d "$parent/.fetch-cifar100.XXXXXX") || fail "cannot create a temporary directory in $parent"
trap 'rm -rf "$work"' EXIT
archive=$work/cifar-100-binary.tar.gz

echo "fetch-cifar100: downloading $url"
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 2 --connect-timeout 20 -o "$archive" "$url" || rm -f "$archive"
fi
if [ ! -s "$archive" ] && command -v wget >/dev/null 2>&1; then
  wget -q --tries=2 --timeout=20 -O "$archive" "$url" || rm -f "$archive"
fi
[ -s "$archive" ] || fail "could not download $url (offline, or the server is unreachable; tried curl and wget)
    hint: download cifar-100-binary.tar.gz by hand and unpack it into $out,
          or make a synthetic set in the same format with: kiln synth --format cifar100 --out DIR"

actual=$(md5sum "$archive" | cut -d' ' -f1)
[ "$actual" = "$md5" ] || fail "checksum mismatch for $url: MD5 $actual, expected $md5
    the download is truncated or altered; nothing was written to $out"

tar -xzf "$archive" -C "$work" || fail "cannot unpack $archive"
src=$work/cifar-100-binary
for f in "${files[@]}"; do
  [ -f "$src/$f" ] || fail "the archive has no cifar-100-binary/$f"
done
mkdir -p "$out" || fail "cannot create $out"
# train.bin and test.bin last: an interrupted run leaves the set incomplete, so the next run fetches again.
for f in fine_label_names.txt coarse_label_names.txt "${files[@]}"; do
  if [ -f "$src/$f" ]; then mv -f "$src/$f" "$out/$f" || fail "cannot move $f into $out"; fi
done
complete || fail "$out is incomplete after unpacking"
echo "fetch-cifar100: CIFAR-100 is in $out"
