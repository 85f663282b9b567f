#!/usr/bin/env bash
# Downloads Fashion-MNIST (the four IDX .gz files) and checks their MD5s:
#   tools/fetch-fashion-mnist.sh              into data/fashion-mnist under the repository
#   tools/fetch-fashion-mnist.sh --out DIR    into DIR
# Keep "fashion" in the directory's name: kiln tells Fashion-MNIST from MNIST by it.
# Does nothing when the four files are already there with their checksums. Exits 1 when a
# download fails (offline) or a checksum differs, writing nothing into DIR.
# KILN_FASHION_MNIST_URL replaces the directory URL (a mirror); the checksums stay the
# published ones.
#
# On Debian and Ubuntu the package dataset-fashion-mnist installs the same data in
# /usr/share/datasets/fashion-mnist, which kiln reads as it is (--data
# /usr/share/datasets/fashion-mnist). Its .gz files are recompressed (no file name, another
# time stamp in the gzip header), so their MD5s differ from the published ones below: this
# script does not accept them, kiln does.
set -euo pipefail
# The variables below are read by tools/fetch-idx.sh.
# shellcheck disable=SC2034

name=fetch-fashion-mnist
title=Fashion-MNIST
url=${KILN_FASHION_MNIST_URL:-http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/data/fashion-mnist
declare -A md5s=(
  [train-images-idx3-ubyte.gz]=8d4fb7e6c68d591d4c3dfef9ec88bf0d
  [train-labels-idx1-ubyte.gz]=25c81989df183df01b3e8a0aad5dffbe
  [t10k-images-idx3-ubyte.gz]=bef4ecab320f06d8554ea6380940ec79
  [t10k-labels-idx1-ubyte.gz]=bb300cfdad3c16e7a12a480ee83cd310
)
hint="install the Debian package dataset-fashion-mnist and use --data /usr/share/datasets/fashion-mnist,
          or download the four files by hand into @OUT@,"
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  hint="the Debian package's copy is installed: use --data /usr/share/datasets/fashion-mnist,"
fi

# shellcheck source=tools/fetch-idx.sh
source "$here/tools/fetch-idx.sh"
