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
  "$ROOT/scripts/mail-standin.sh" stop "$work/mail" >/dev/null 2>&1 || true
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
# The mail stand-in (a tenant to reset) and the alert sinks (SMTP + Slack webhook).
MAILU_SIM="$ROOT/target/debug/mailu-sim" "$ROOT/scripts/mail-standin.sh" start "$work/mail" >/dev/null
# shellcheck disable=SC1091
source "$work/mail/standin.env"
target/debug/alert-sink >"$work/sink.out" 2>"$work/sink.err" &
pids+=("$!")
for _ in $(seq 1 200); do [ "$(wc -l < "$work/sink.out")" -ge 2 ] && break; sleep 0.05; done
sink_smtp=$(sed -n 's/^smtp_port=//p' "$work/sink.out")
sink_http=$(sed -n 's/^http_port=//p' "$work/sink.out")
[ -n "$sink_http" ] || die "alert-sink did not start"
export SMTP_VAULT_SMTP_CA_FILE=$CA_FILE SMTP_VAULT_ALERT_SMTP_URL="smtp://127.0.0.1:$sink_smtp?tls=none"
export SMTP_VAULT_ALERT_EMAIL_TO=security@example.com SMTP_VAULT_SLACK_WEBHOOK_URL="http://127.0.0.1:$sink_http/slack"
export SMTP_VAULT_ALERT_RETRY_MS=200 SMTP_VAULT_BACKUP_TARGET="file://$work/backups" SMTP_VAULT_BACKUP_KEY="$work/backup.key"
console_port=$(free_port)
# WebAuthn needs a domain origin (localhost, not 127.0.0.1) with the exact port; the reveal
# window is shortened so the journey can watch it close.
export VAULT_ADDR="http://127.0.0.1:$bao_port" DATABASE_URL="sqlite://$work/e2e.db"
export SMTP_VAULT_KEYRING="$work/keyring.json" LEPTOS_SITE_ADDR="127.0.0.1:$console_port"
export SMTP_VAULT_PUBLIC_URL="http://localhost:$console_port" SMTP_VAULT_REVEAL_WINDOW_SECS=10
target/debug/smtp-vault keys generate 2>/dev/null
target/debug/smtp-vault keys generate --backup 2>/dev/null
setup=$(VAULT_TOKEN=$root_token target/debug/smtp-vault vault-setup 2>/dev/null)
export VAULT_ROLE_ID VAULT_SECRET_ID
VAULT_ROLE_ID=$(sed -n 's/^VAULT_ROLE_ID=//p' <<<"$setup")
VAULT_SECRET_ID=$(sed -n 's/^VAULT_SECRET_ID=//p' <<<"$setup")
target/debug/smtp-vault serve >"$work/console.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$console_port/readyz" 60 || { cat "$work/console.log" >&2; die "console did not start"; }
token=$(target/debug/smtp-vault token create --name e2e --scope credentials:write --scope credentials:read-secret 2>/dev/null)
for tenant in acme globex; do
  curl -fsS -o /dev/null -X PUT "http://127.0.0.1:$console_port/api/v1/tenants/$tenant/smtp-credentials" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin@$tenant.example\",\"password\":\"E2E-$tenant-Secret-Pass\",\"smtp_host\":\"mail.$tenant.example\",\"smtp_port\":587,\"webmail_url\":\"https://mail.$tenant.example/\",\"mailu_api_url\":\"https://mail.$tenant.example/api/v1\",\"mailu_api_token\":\"t\"}"
done
# initech lives on the stand-in, so it can really be rotated (emergency-reset journey).
curl -fsS -o /dev/null -X POST "http://127.0.0.1:$console_port/api/v1/tenants/initech/smtp-credentials/provision" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin@initech.example\",\"smtp_host\":\"localhost\",\"smtp_port\":$SMTP_PORT,\"webmail_url\":\"https://mail.initech.example/\",\"mailu_api_url\":\"$API_URL\",\"mailu_api_token\":\"$API_TOKEN\"}" \
  || die "provisioning initech on the stand-in failed"
(cd end2end && SMTP_VAULT_BASE_URL="http://localhost:$console_port" SMTP_VAULT_BIN="$ROOT/target/debug/smtp-vault" \
  SMTP_VAULT_E2E_TOKEN="$token" SMTP_VAULT_SINK_URL="http://127.0.0.1:$sink_http" SMTP_VAULT_E2E_SMTP_PORT="$SMTP_PORT" \
  SMTP_VAULT_E2E_CA="$CA_FILE" npx playwright test)
unset VAULT_ADDR DATABASE_URL SMTP_VAULT_KEYRING LEPTOS_SITE_ADDR SMTP_VAULT_PUBLIC_URL SMTP_VAULT_REVEAL_WINDOW_SECS VAULT_ROLE_ID VAULT_SECRET_ID
unset SMTP_VAULT_SMTP_CA_FILE SMTP_VAULT_ALERT_SMTP_URL SMTP_VAULT_ALERT_EMAIL_TO SMTP_VAULT_SLACK_WEBHOOK_URL SMTP_VAULT_ALERT_RETRY_MS
unset SMTP_VAULT_BACKUP_TARGET SMTP_VAULT_BACKUP_KEY

runner=(cargo nextest run --no-fail-fast)
command -v cargo-nextest >/dev/null || runner=(cargo test --no-fail-fast)

say "Rust tests on SQLite"
"${runner[@]}"

say "Rust tests on PostgreSQL"
start_postgres "$work/pg"
SMTP_VAULT_TEST_DATABASE=$PG_URL "${runner[@]}"
