#!/usr/bin/env bash
# Builds the C examples to WASI preview 1 modules with Debian's clang, lld and wasi-libc
# (packages clang, lld, wasi-libc, libclang-rt-14-dev-wasm32; `.ci/run` installs them).
# Usage: build.sh [OUT_DIR]   (default: this directory)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
mkdir -p "$out"
cc="${CC_WASM:-clang}"
sysroot="${WASI_SYSROOT:-/usr}"
flags=(--target=wasm32-wasi --sysroot="$sysroot" -O2 -Wall -Werror)
# A command: wasi-libc's crt1-command.o provides `_start`, which calls main.
"$cc" "${flags[@]}" -o "$out/wordcount.wasm" "$here/wordcount.c"
# A reactor: crt1-reactor.o provides `_initialize`; no `_start`, no main.
"$cc" "${flags[@]}" -mexec-model=reactor -o "$out/counter.wasm" "$here/counter.c"
echo "built $out/wordcount.wasm $out/counter.wasm"
