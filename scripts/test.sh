#!/usr/bin/env bash
# Runs every check and test: formatting, the core-imports rule, clippy for the ssr and hydrate
# builds, the end2end Playwright journeys in Debian's Chromium against the release build
# (scripts/e2e.sh), and the Rust tests against SQLite and against a throw-away PostgreSQL.
# Installs what it needs first (idempotent).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/ensure-tools.sh" test

work=$(mktemp -d /tmp/smtp-vault-test.XXXXXX)
chmod 755 "$work"
cleanup() {
  stop_postgres
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say "cargo fmt --check"
cargo fmt --all -- --check
say "core imports"
"$ROOT/scripts/check-core-imports.sh"
say "clippy (ssr)"
cargo clippy --quiet --all-targets -- -D warnings
say "clippy (hydrate)"
cargo clippy --quiet --all-targets --target wasm32-unknown-unknown --no-default-features --features hydrate -- -D warnings

"$ROOT/scripts/e2e.sh"

runner=(cargo nextest run --no-fail-fast)
command -v cargo-nextest >/dev/null || runner=(cargo test --no-fail-fast)

say "Rust tests on SQLite"
"${runner[@]}"

say "Rust tests on PostgreSQL"
start_postgres "$work/pg"
SMTP_VAULT_TEST_DATABASE=$PG_URL "${runner[@]}"
