#!/usr/bin/env bash
# Fetch the authors' code that tests compare Thresher against, where it is not installable:
# cc_net's text_normalizer.py ships only in the `cc-net` sdist, whose metadata (a git URL
# dependency) pip >= 24 refuses, so a pip < 24 run from its wheel downloads the archive.
# Usage: tools/fetch_references.sh DEST   (PYTHON= picks the interpreter)
set -euo pipefail
PY=${PYTHON:-python3}
DEST=${1:?usage: fetch_references.sh DEST}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --no-deps "pip<24" -d "$tmp/pip"
"$PY" "$(ls "$tmp"/pip/pip-*.whl)/pip" download --quiet --no-deps --no-binary :all: cc-net==1.0.0 -d "$tmp"
tar -xzf "$tmp"/cc_net-1.0.0.tar.gz -C "$tmp"
mkdir -p "$DEST/cc_net"
cp "$tmp"/cc_net-1.0.0/cc_net/text_normalizer.py "$DEST/cc_net/"
echo "cc_net text_normalizer.py -> $DEST/cc_net/"
