#!/usr/bin/env bash
# Downloads the CIFAR-10 binary version, checks its MD5 and unpacks it:
#   tools/fetch-cifar10.sh              into data/cifar-10-batches-bin under the repository
#   tools/fetch-cifar10.sh --out DIR    into DIR
# Does nothing when the six batch files are already there with their full size. Exits 1 when
# the download fails (offline) or the archive's checksum differs, leaving DIR untouched.
# KILN_CIFAR10_URL replaces the URL (a mirror); the checksum stays the published one.
set -euo pipefail

name=fetch-cifar10
title=CIFAR-10
url=${KILN_CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz}
md5=c32a1d4ab5d03f1284b67883e8d87530
size="163 MiB"
inner=cifar-10-batches-bin
# 10,000 records of 3,073 bytes per file.
files=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)
sizes=(30730000 30730000 30730000 30730000 30730000 30730000)
extras=(batches.meta.txt readme.html)
format=cifar10
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/data/cifar-10-batches-bin

# shellcheck source=tools/fetch-tarball.sh
source "$here/tools/fetch-tarball.sh"
