#!/usr/bin/env bash
# Writes a small but valid CIFAR-10 binary directory into the git-ignored .cifar-subset/, for the
# device run (carry: [".cifar-subset"]). The full set (6 x 30 MB) does not fit the 64 MiB that a
# device run may carry together with the repository and .deps/debs, so take the FIRST records of
# each file: CIFAR-10's batches are in random order, so a prefix stays class-balanced (counts printed).
# kiln's reader accepts any whole number of 3,073-byte records per file.
#
#   tools/device/make-cifar-subset.sh                     # 2,000 per train file (10,000) + 5,000 test
#   KILN_SUBSET_TRAIN_PER_FILE=3000 KILN_SUBSET_TEST=2000 tools/device/make-cifar-subset.sh
#   KILN_CIFAR10_DIR=/elsewhere/cifar-10-batches-bin tools/device/make-cifar-subset.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
src=${KILN_CIFAR10_DIR:-/work/shared/cifar10}
dest=$here/.cifar-subset
per_file=${KILN_SUBSET_TRAIN_PER_FILE:-2000}
test_n=${KILN_SUBSET_TEST:-5000}
rec=3073                               # 1 label byte + 3 x 32 x 32 pixel bytes
budget=$((64 * 1024 * 1024))           # what one device run may carry, repository included

die() { echo "make-cifar-subset: error: $*" >&2; exit 1; }

for f in data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin; do
  [ -f "$src/$f" ] || die "$src/$f missing (set KILN_CIFAR10_DIR to a CIFAR-10 binary directory)"
  sz=$(stat -c %s "$src/$f")
  [ $((sz % rec)) -eq 0 ] || die "$src/$f is not a whole number of $rec-byte records"
done
for n in "$per_file" "$test_n"; do
  case $n in ''|*[!0-9]*) die "record counts must be whole numbers (got '$n')" ;; esac
  [ "$n" -ge 1 ] && [ "$n" -le 10000 ] || die "record counts must be 1..10000 (got $n)"
done

rm -rf "$dest"
mkdir -p "$dest"
# head -c copies whole records: the byte count is a multiple of the record size.
for i in 1 2 3 4 5; do
  head -c $((per_file * rec)) "$src/data_batch_$i.bin" >"$dest/data_batch_$i.bin"
done
head -c $((test_n * rec)) "$src/test_batch.bin" >"$dest/test_batch.bin"
if [ -f "$src/batches.meta.txt" ]; then
  cp "$src/batches.meta.txt" "$dest/"
else
  printf '%s\n' airplane automobile bird cat deer dog frog horse ship truck >"$dest/batches.meta.txt"
fi
cat >"$dest/README.md" <<TXT
A subset of CIFAR-10 (binary version) made by tools/device/make-cifar-subset.sh from $src:
the first $per_file records of each data_batch_N.bin ($((per_file * 5)) training records) and the
first $test_n records of test_batch.bin. Not for accuracy claims against the full set.
TXT

# Check: sizes are whole records, labels all 0..9, classes roughly balanced.
echo "make-cifar-subset: $dest"
for f in "$dest"/*.bin; do
  sz=$(stat -c %s "$f")
  [ $((sz % rec)) -eq 0 ] || die "$f is not a whole number of records"
  line=$(od -An -v -tu1 -w$rec "$f" | awk '{c[$1]++; if ($1 > 9) bad++} END {
           s=""; for (k = 0; k < 10; k++) s = s sprintf(" %d", c[k]); printf "%s|%d", s, bad + 0 }')
  [ "${line#*|}" = 0 ] || die "$f has labels outside 0..9"
  printf '  %9d bytes  %5d records  %-16s per class:%s\n' "$sz" $((sz / rec)) "$(basename "$f")" "${line%|*}"
done
total=$(du -cb "$dest" | tail -n 1 | cut -f1)
printf '  %9d bytes total (%s MiB)\n' "$total" "$(awk -v b="$total" 'BEGIN{printf "%.1f", b/1048576}')"

# The device run carries the repository, .deps/debs and this folder: say whether they fit.
repo=$(cd "$here" && git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | awk '/\ttotal$/{s+=$1} END{print s+0}')
debs=0
[ -d "$here/.deps/debs" ] && debs=$(du -cb "$here/.deps/debs" | tail -n 1 | cut -f1)
all=$((repo + debs + total))
printf 'make-cifar-subset: repository %d + .deps/debs %d + .cifar-subset %d = %d bytes (%s of 64 MiB)\n' \
  "$repo" "$debs" "$total" "$all" "$(awk -v b="$all" 'BEGIN{printf "%.1f MiB", b/1048576}')"
[ "$all" -le "$budget" ] || die "over the 64 MiB a device run can carry: use fewer records"
