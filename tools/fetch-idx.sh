# shellcheck shell=bash
# shellcheck disable=SC2154  # name, title, url, out, md5s, hint: set by the sourcing script
# The download of an MNIST-layout set (four IDX .gz files), shared by tools/fetch-mnist.sh and
# tools/fetch-fashion-mnist.sh, which set these and source this file:
#   name    the script's name, for messages (fetch-mnist)
#   title   the set's name (MNIST)
#   url     where the four files are (a directory URL ending in /)
#   out     the default directory
#   md5s    an associative array: file name -> its published MD5
#   hint    what to say when the download fails, besides kiln synth (@OUT@: the directory)
# The .gz files are kept as they are (kiln reads them compressed). Does nothing when all four
# are there with their published checksums. Exits 1 when a download fails (offline) or a
# checksum differs, writing nothing into DIR.

files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

usage() {
  echo "usage: tools/$name.sh [--out DIR]"
  echo "  downloads $title (four IDX .gz files) into DIR (default: ${out#"$here"/})"
}

fail() {
  echo "$name: error: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ $# -ge 2 ] || { echo "$name: --out needs a directory" >&2; exit 2; }
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
      echo "$name: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
done

complete() {
  local f
  for f in "${files[@]}"; do
    [ -f "$out/$f" ] && [ "$(md5sum "$out/$f" | cut -d' ' -f1)" = "${md5s[$f]}" ] || return 1
  done
}

if complete; then
  echo "$name: $title is already in $out"
  exit 0
fi
[ ! -e "$out" ] || [ -d "$out" ] || fail "$out exists and is not a directory"

# Downloaded beside the target, so the final moves are renames within one file system.
parent=$(dirname "$out")
mkdir -p "$parent" || fail "cannot create $parent"
work=$(mktemp -d "$parent/.$name.XXXXXX") || fail "cannot create a temporary directory in $parent"
trap 'rm -rf "$work"' EXIT

for f in "${files[@]}"; do
  echo "$name: downloading $url$f"
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 --connect-timeout 20 -o "$work/$f" "$url$f" || rm -f "$work/$f"
  fi
  if [ ! -s "$work/$f" ] && command -v wget >/dev/null 2>&1; then
    wget -q --tries=2 --timeout=20 -O "$work/$f" "$url$f" || rm -f "$work/$f"
  fi
  [ -s "$work/$f" ] || fail "could not download $url$f (offline, or the server is unreachable; tried curl and wget)
    hint: ${hint//@OUT@/$out}
          or make a synthetic set in the same layout with: kiln synth --format ${title,,} --out DIR"
  actual=$(md5sum "$work/$f" | cut -d' ' -f1)
  [ "$actual" = "${md5s[$f]}" ] || fail "checksum mismatch for $url$f: MD5 $actual, expected ${md5s[$f]}
    the download is truncated or altered; nothing was written to $out"
done

mkdir -p "$out" || fail "cannot create $out"
for f in "${files[@]}"; do
  mv -f "$work/$f" "$out/$f" || fail "cannot move $f into $out"
done
complete || fail "$out is incomplete after the download"
echo "$name: $title is in $out"
