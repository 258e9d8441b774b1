#!/usr/bin/env bash
# Runs every check and test, as CI does: formatting, the core-imports rule, clippy for the ssr and
# hydrate builds (lint), the end2end Playwright journeys in Debian's Chromium against the release
# build (e2e, scripts/e2e.sh), and the Rust suite against SQLite (sqlite) and against a
# throw-away PostgreSQL (postgres). Installs what it needs first (idempotent).
# Usage: scripts/test.sh [lint|e2e|sqlite|postgres ...]   (no stage: all of them, in that order)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(lint e2e sqlite postgres)
for stage in "${stages[@]}"; do
  case $stage in
    lint|e2e|sqlite|postgres) ;;
    *) die "unknown stage '$stage' (usage: scripts/test.sh [lint|e2e|sqlite|postgres ...])" ;;
  esac
done

"$ROOT/scripts/ensure-tools.sh" test

work=$(mktemp -d /tmp/smtp-vault-test.XXXXXX)
chmod 755 "$work"
cleanup() {
  stop_postgres
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

runner=(cargo nextest run --no-fail-fast)
command -v cargo-nextest >/dev/null || runner=(cargo test --no-fail-fast)
# The suite starts the stand-ins (tools/, a package of their own): built once here, not by the
# first tests that need them.
standins_built=0
build_standins() {
  [ $standins_built = 1 ] || cargo build --quiet -p smtp-vault-standins
  standins_built=1
}

for stage in "${stages[@]}"; do
  case $stage in
    lint)
      say "cargo fmt --check"
      cargo fmt --all -- --check
      say "core imports"
      "$ROOT/scripts/check-core-imports.sh"
      say "clippy (ssr, and the stand-ins)"
      cargo clippy --quiet --workspace --all-targets -- -D warnings
      say "clippy (hydrate)"
      cargo clippy --quiet --all-targets --target wasm32-unknown-unknown --no-default-features --features hydrate -- -D warnings
      ;;
    e2e)
      "$ROOT/scripts/e2e.sh"
      ;;
    sqlite)
      build_standins
      say "Rust tests on SQLite"
      "${runner[@]}"
      ;;
    postgres)
      build_standins
      say "Rust tests on PostgreSQL"
      start_postgres "$work/pg"
      SMTP_VAULT_TEST_DATABASE=$PG_URL "${runner[@]}"
      stop_postgres
      PG_DIR=
      ;;
  esac
done
