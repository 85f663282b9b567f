#!/usr/bin/env bash
# Downloads MNIST (the four IDX .gz files) and checks their MD5s:
#   tools/fetch-mnist.sh              into data/mnist under the repository
#   tools/fetch-mnist.sh --out DIR    into DIR
# Does nothing when the four files are already there with their checksums. Exits 1 when a
# download fails (offline) or a checksum differs, writing nothing into DIR.
# KILN_MNIST_URL replaces the directory URL (a mirror); the checksums stay the published ones.
set -euo pipefail
# The variables below are read by tools/fetch-idx.sh.
# shellcheck disable=SC2034

name=fetch-mnist
title=MNIST
url=${KILN_MNIST_URL:-https://ossci-datasets.s3.amazonaws.com/mnist/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/data/mnist
declare -A md5s=(
  [train-images-idx3-ubyte.gz]=f68b3c2dcbeaaa9fbdd348bbdeb94873
  [train-labels-idx1-ubyte.gz]=d53e105ee54ea40749a09fcbcd1e9432
  [t10k-images-idx3-ubyte.gz]=9fb629c4189551a2d022fa330f9573f3
  [t10k-labels-idx1-ubyte.gz]=ec29112dd5afa0611ce80d1b7f02629c
)
hint="download the four files by hand into @OUT@,"

# shellcheck source=tools/fetch-idx.sh
source "$here/tools/fetch-idx.sh"
