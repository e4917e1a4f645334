#!/usr/bin/env bash
# Pure-Python/abi3 extras that fastfashion needs beside DALI + webdataset on an offline GPU machine (Python 3.12,
# torch present): tqdm (progress bars, required) and psutil (bench: worker CPU time and memory, optional).
#   usage: benchmarks/pack_extras.sh OUT_DIR      then unpack on the machine into the same folder as the DALI parts:
#          mkdir -p /tmp/site && tar -xzf OUT_DIR/extras.tar.gz -C /tmp/site
set -euo pipefail
out=${1:?usage: pack_extras.sh OUT_DIR}; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$work/whl" tqdm psutil
mkdir -p "$work/site" "$out"
for w in "$work"/whl/*.whl; do python3 -m zipfile -e "$w" "$work/site/"; done
tar -C "$work/site" -czf "$out/extras.tar.gz" .
ls -l "$out/extras.tar.gz"
