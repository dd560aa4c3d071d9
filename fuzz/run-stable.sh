#!/usr/bin/env bash
# Runs the `decode` fuzz target on a stable toolchain, without cargo-fuzz: libFuzzer with
# SanitizerCoverage instrumentation but no AddressSanitizer (the codec has no unsafe code, so
# the sanitizer would find little that a panic does not). Usage: fuzz/run-stable.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
target="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$target" --bin decode
mkdir -p corpus/decode artifacts/decode
"$CARGO_TARGET_DIR/$target/release/decode" corpus/decode -artifact_prefix=artifacts/decode/ \
  -max_total_time="$secs" -max_len=4096 -print_final_stats=1
