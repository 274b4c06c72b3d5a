#!/usr/bin/env bash
# Builds KenLM's trainer (lmplz) and build_binary from the kenlm sources on PyPI into $1 (a bin dir).
# Needs cmake, a C++ compiler and Boost (program_options, system, thread, test) + zlib/bz2/lzma
# headers: installed with apt-get when run as root on Debian/Ubuntu, otherwise install them first.
set -euo pipefail
BIN=${1:?usage: build_kenlm.sh BIN_DIR}
PY=${PYTHON:-python3}
if [ -x "$BIN/lmplz" ] && [ -x "$BIN/build_binary" ]; then exit 0; fi
if command -v lmplz >/dev/null && command -v build_binary >/dev/null; then
  ln -sf "$(command -v lmplz)" "$BIN/lmplz"; ln -sf "$(command -v build_binary)" "$BIN/build_binary"; exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  pkgs="libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev cmake"
  # shellcheck disable=SC2086
  dpkg -s $pkgs >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary kenlm -d "$work" "kenlm>=0.2,<0.4"
tar xzf "$work"/kenlm-*.tar.gz -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -n 1)
log="$work/build.log"
if ! { cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release && \
       make -C "$work/build" -j"$(nproc)" lmplz build_binary; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "error: building KenLM's lmplz failed (see above); install Boost, zlib/bz2/lzma headers and cmake" >&2
  exit 1
fi
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$BIN/"
echo "built lmplz and build_binary into $BIN"
