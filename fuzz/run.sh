#!/usr/bin/env bash
# Runs a fuzz target on stable Rust: fuzz/run.sh TARGET SECONDS.
# New inputs go to fuzz/target/work/TARGET; the committed seed corpus stays as it is.
# A crash leaves its input in fuzz/artifacts/TARGET and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target}
seconds=${2:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
mkdir -p "target/work/$target"
cargo fuzz run "$target" "target/work/$target" "corpus/$target" --sanitizer none -- \
  -max_total_time="$seconds" -print_final_stats=1
