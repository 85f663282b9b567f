#!/usr/bin/env bash
# Downloads the CIFAR-100 binary version, checks its MD5 and unpacks it:
#   tools/fetch-cifar100.sh              into data/cifar-100-binary under the repository
#   tools/fetch-cifar100.sh --out DIR    into DIR
# Does nothing when train.bin and test.bin are already there with their full size. Exits 1
# when the download fails (offline) or the archive's checksum differs, leaving DIR untouched.
# KILN_CIFAR100_URL replaces the URL (a mirror); the checksum stays the published one.
set -euo pipefail

name=fetch-cifar100
title=CIFAR-100
url=${KILN_CIFAR100_URL:-https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz}
md5=03b5dce01913d631647c71ecec9e9cb8
size="161 MiB"
inner=cifar-100-binary
# Records of 3,074 bytes: 50,000 in train.bin, 10,000 in test.bin.
files=(train.bin test.bin)
sizes=(153700000 30740000)
extras=(fine_label_names.txt coarse_label_names.txt)
format=cifar100
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/data/cifar-100-binary

# shellcheck source=tools/fetch-tarball.sh
source "$here/tools/fetch-tarball.sh"
