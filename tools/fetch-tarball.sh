# shellcheck shell=bash
# shellcheck disable=SC2154  # set by the sourcing script
# The download of a set published as one .tar.gz of binary files (CIFAR-10, CIFAR-100),
# shared by tools/fetch-cifar10.sh and tools/fetch-cifar100.sh, which set these and source
# this file (besides tools/fetch-common.sh's name, title, out and here):
#   url      the archive's URL;  md5  its published MD5;  size  its size, for usage()
#   inner    the folder inside the archive that holds the files
#   files    the data files, an array (moved last);  sizes  their exact byte sizes
#   extras   other files of the archive to keep (class names), an array
#   format   kiln synth's --format of the same layout
# Does nothing when the data files are there with their full sizes. Exits 1 when the
# download fails (offline) or the checksum differs, leaving DIR untouched.

# shellcheck source=tools/fetch-common.sh
source "$here/tools/fetch-common.sh"

usage() {
  echo "usage: tools/$name.sh [--out DIR]"
  echo "  downloads $title (binary version, $size) into DIR (default: ${out#"$here"/})"
}

parse_out "$@"

complete() {
  local i
  for i in "${!files[@]}"; do
    [ -f "$out/${files[$i]}" ] && [ "$(stat -c %s "$out/${files[$i]}")" -eq "${sizes[$i]}" ] || return 1
  done
}

if complete; then
  echo "$name: $title is already in $out"
  exit 0
fi
make_work
archive=$work/$(basename "$url")
download "$url" "$archive" "$md5" "download $(basename "$url") by hand and unpack it into $out,
          or make a synthetic set in the same format with: kiln synth --format $format --out DIR"

tar -xzf "$archive" -C "$work" || fail "cannot unpack $archive"
src=$work/$inner
for f in "${files[@]}"; do
  [ -f "$src/$f" ] || fail "the archive has no $inner/$f"
done
mkdir -p "$out" || fail "cannot create $out"
# The data files last: an interrupted run leaves the set incomplete, so the next run fetches again.
for f in "${extras[@]}" "${files[@]}"; do
  if [ -f "$src/$f" ]; then mv -f "$src/$f" "$out/$f" || fail "cannot move $f into $out"; fi
done
complete || fail "$out is incomplete after unpacking"
echo "$name: $title is in $out"
