#!/usr/bin/env bash
# Fuzzes the parsers that read attacker-controllable input (fuzz/: envelope, tenant_id,
# backup_file, mailu_response) with cargo-fuzz on the nightly toolchain. Installs what it needs
# (idempotent): nightly, and cargo-fuzz into the tool root. A crash stops the run and leaves
# its input under fuzz/artifacts/.
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 300 envelope backup_file
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --root "$TOOLS"

secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope tenant_id backup_file mailu_response)
for target in "${targets[@]}"; do
  say "fuzzing $target for ${secs} s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -print_final_stats=1
done
