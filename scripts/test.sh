#!/usr/bin/env bash
# Runs every check and test: formatting, the core-imports rule, clippy for the ssr and hydrate
# builds, the Rust tests against SQLite and against a throw-away PostgreSQL, and the end2end
# Playwright journeys in Debian's Chromium. Installs what it needs first (idempotent).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/ensure-tools.sh" test

work=$(mktemp -d /tmp/smtp-vault-test.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
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

"$ROOT/scripts/build.sh" debug

say "end2end: Playwright in Chromium"
bao_port=$(free_port)
root_token="e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
start_openbao "$bao_port" "$root_token" "$work/openbao.log"
pids+=("$BAO_PID")
console_port=$(free_port)
(
  export VAULT_ADDR="http://127.0.0.1:$bao_port" DATABASE_URL="sqlite://$work/e2e.db"
  export SMTP_VAULT_KEYRING="$work/keyring.json" LEPTOS_SITE_ADDR="127.0.0.1:$console_port"
  target/debug/smtp-vault keys generate 2>/dev/null
  setup=$(VAULT_TOKEN=$root_token target/debug/smtp-vault vault-setup 2>/dev/null)
  export VAULT_ROLE_ID VAULT_SECRET_ID
  VAULT_ROLE_ID=$(sed -n 's/^VAULT_ROLE_ID=//p' <<<"$setup")
  VAULT_SECRET_ID=$(sed -n 's/^VAULT_SECRET_ID=//p' <<<"$setup")
  exec target/debug/smtp-vault serve >"$work/console.log" 2>&1
) &
pids+=("$!")
wait_http "http://127.0.0.1:$console_port/readyz" 60 || { cat "$work/console.log" >&2; die "console did not start"; }
(cd end2end && SMTP_VAULT_BASE_URL="http://127.0.0.1:$console_port" npx playwright test)

runner=(cargo nextest run --no-fail-fast)
command -v cargo-nextest >/dev/null || runner=(cargo test --no-fail-fast)

say "Rust tests on SQLite"
"${runner[@]}"

say "Rust tests on PostgreSQL"
start_postgres "$work/pg"
SMTP_VAULT_TEST_DATABASE=$PG_URL "${runner[@]}"
