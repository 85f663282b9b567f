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

# shellcheck source=tools/fetch-common.sh
source "$here/tools/fetch-common.sh"

usage() {
  echo "usage: tools/$name.sh [--out DIR]"
  echo "  downloads $title (four IDX .gz files) into DIR (default: ${out#"$here"/})"
}

parse_out "$@"

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
make_work
for f in "${files[@]}"; do
  download "$url$f" "$work/$f" "${md5s[$f]}" "${hint//@OUT@/$out}
          or make a synthetic set in the same layout with: kiln synth --format ${title,,} --out DIR"
done

mkdir -p "$out" || fail "cannot create $out"
for f in "${files[@]}"; do
  mv -f "$work/$f" "$out/$f" || fail "cannot move $f into $out"
done
complete || fail "$out is incomplete after the download"
echo "$name: $title is in $out"
