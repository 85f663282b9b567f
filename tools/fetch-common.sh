# shellcheck shell=bash
# shellcheck disable=SC2154  # name, title, out, here: set by the sourcing script
# What the dataset download scripts share (tools/fetch-tarball.sh, tools/fetch-idx.sh, and
# through them every tools/fetch-*.sh): the --out argument, errors, downloading with curl or
# wget, checksums, and a scratch directory beside the target. The sourcing script sets
#   name    the script's name, for messages (fetch-mnist)
#   title   the set's name (MNIST)
#   out     the default directory
#   here    the repository root
# and defines usage(). Exits: 1 for a failure (offline, a checksum, a file system error),
# 2 for a usage error.

fail() {
  echo "$name: error: $*" >&2
  exit 1
}

# Sets `out` from --out DIR / --out=DIR; -h prints usage().
parse_out() {
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
}

# Sets `work`, a scratch directory beside `out` (so the final moves are renames within one
# file system), removed on exit.
make_work() {
  [ ! -e "$out" ] || [ -d "$out" ] || fail "$out exists and is not a directory"
  local parent
  parent=$(dirname "$out")
  mkdir -p "$parent" || fail "cannot create $parent"
  work=$(mktemp -d "$parent/.$name.XXXXXX") || fail "cannot create a temporary directory in $parent"
  trap 'rm -rf "$work"' EXIT
}

# download URL FILE EXPECTED_MD5 HINT: fetches URL into FILE (curl, else wget) and checks it.
download() {
  local url=$1 file=$2 md5=$3 hint=$4 actual
  echo "$name: downloading $url"
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 --connect-timeout 20 -o "$file" "$url" || rm -f "$file"
  fi
  if [ ! -s "$file" ] && command -v wget >/dev/null 2>&1; then
    wget -q --tries=2 --timeout=20 -O "$file" "$url" || rm -f "$file"
  fi
  [ -s "$file" ] || fail "could not download $url (offline, or the server is unreachable; tried curl and wget)
    hint: $hint"
  actual=$(md5sum "$file" | cut -d' ' -f1)
  [ "$actual" = "$md5" ] || fail "checksum mismatch for $url: MD5 $actual, expected $md5
    the download is truncated or altered; nothing was written to $out"
}
