#!/usr/bin/env bash
# Builds the Zig example to a WASI preview 1 command module with Zig from PyPI
# (`pip install ziglang`, run as `python3 -m ziglang`; `.ci/run` installs it).
# Usage: build.sh [OUT_DIR]   (default: this directory)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)"
zig=(python3 -m ziglang)
# Zig writes its cache next to the build; keep it out of the source tree.
export ZIG_LOCAL_CACHE_DIR="${ZIG_LOCAL_CACHE_DIR:-$out/.zig-cache}"
export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$out/.zig-global-cache}"
"${zig[@]}" build-exe -target wasm32-wasi -O ReleaseSmall \
  -femit-bin="$out/upper.wasm" "$here/upper.zig"
echo "built $out/upper.wasm"
