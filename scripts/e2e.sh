#!/usr/bin/env bash
# The end2end journeys (Playwright in Debian's Chromium) against the release build, the one an
# operator runs: builds it (scripts/build.sh release, which uses only the pinned wasm-opt),
# starts OpenBao, the mail stand-in, the alert sinks and the console with three tenants, runs
# every journey and stops what it started. A bundle that does not hydrate fails every journey
# with the browser's errors in the output.
# Usage: scripts/e2e.sh [--no-build] [playwright args...]   (--no-build: test target/site as it is)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
"$ROOT/scripts/ensure-tools.sh" test
if [ $build = 1 ]; then "$ROOT/scripts/build.sh" release; fi
bin=$ROOT/target/release
[ -x "$bin/smtp-vault" ] && [ -f target/site/pkg/smtp-vault.wasm ] || die "no release build (scripts/build.sh release)"

work=$(mktemp -d /tmp/smtp-vault-e2e.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  "$ROOT/scripts/mail-standin.sh" stop "$work/mail" >/dev/null 2>&1 || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say "end2end: Playwright in Chromium against the release build"
bao_port=$(free_port)
root_token="e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
start_openbao "$bao_port" "$root_token" "$work/openbao.log"
pids+=("$BAO_PID")
# The mail stand-in (a tenant to reset) and the alert sinks (SMTP + Slack webhook).
MAILU_SIM="$bin/mailu-sim" "$ROOT/scripts/mail-standin.sh" start "$work/mail" >/dev/null
# shellcheck disable=SC1091
source "$work/mail/standin.env"
start_alert_sink "$bin/alert-sink" "$work"
pids+=("$SINK_PID")
sink_http=$SINK_HTTP_PORT
export SMTP_VAULT_SMTP_CA_FILE=$CA_FILE
# The stand-in and the sinks answer over plain http/SMTP on loopback.
export SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT=true SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8,::1/128
export SMTP_VAULT_ALERT_RETRY_MS=200 SMTP_VAULT_BACKUP_TARGET="file://$work/backups" SMTP_VAULT_BACKUP_KEY="$work/backup.key"
console_port=$(free_port)
# WebAuthn needs a domain origin (localhost, not 127.0.0.1) with the exact port; the reveal
# window is shortened so the journey can watch it close.
export VAULT_ADDR="http://127.0.0.1:$bao_port" DATABASE_URL="sqlite://$work/e2e.db"
export SMTP_VAULT_KEYRING="$work/keyring.json" LEPTOS_SITE_ADDR="127.0.0.1:$console_port"
export SMTP_VAULT_PUBLIC_URL="http://localhost:$console_port" SMTP_VAULT_REVEAL_WINDOW_SECS=10
"$bin/smtp-vault" keys generate 2>/dev/null
"$bin/smtp-vault" keys generate --backup 2>/dev/null
vault_setup "$bin/smtp-vault" "$root_token"
"$bin/smtp-vault" serve >"$work/console.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$console_port/readyz" 60 || { cat "$work/console.log" >&2; die "console did not start"; }
token=$("$bin/smtp-vault" token create --name e2e --scope credentials:write --scope credentials:read-secret 2>/dev/null)
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
(cd end2end && SMTP_VAULT_BASE_URL="http://localhost:$console_port" SMTP_VAULT_BIN="$bin/smtp-vault" \
  SMTP_VAULT_E2E_TOKEN="$token" SMTP_VAULT_SINK_URL="http://127.0.0.1:$sink_http" SMTP_VAULT_E2E_SMTP_PORT="$SMTP_PORT" \
  SMTP_VAULT_E2E_CA="$CA_FILE" npx playwright test "$@")
