#!/usr/bin/env bash
# Starts the console with demo data on the embedded defaults: installs what is missing, starts
# OpenBao in dev mode (in memory) on 127.0.0.1:8200 and the mail stand-in (mailu-sim + Dovecot),
# runs vault-setup, creates the keyring if there is none, serves the console on
# http://localhost:3000 logged in with AppRole, provisions three demo tenants through the API
# (real passwords set on the stand-in, verified by SMTP login) and prints a one-time enrollment
# link for a platform admin. Ctrl-C stops everything it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/ensure-tools.sh" run
"$ROOT/scripts/build.sh" debug

VAULT_PORT=${VAULT_PORT:-8200}
mkdir -p data
pids=()
cleanup() {
  trap - INT TERM EXIT
  "$ROOT/scripts/mail-standin.sh" stop data/mail-standin >/dev/null 2>&1 || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "stopped"
}
trap cleanup INT TERM EXIT

root_token="demo-root-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
start_openbao "$VAULT_PORT" "$root_token" data/openbao-demo.log
pids+=("$BAO_PID")
export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT"

# The dev Vault is new and empty on every start, so the demo database starts afresh with it.
rm -f data/smtp-vault.db data/smtp-vault.db-wal data/smtp-vault.db-shm
bin=target/debug/smtp-vault
[ -f data/keyring.json ] || "$bin" keys generate
# The backup key lives beside the keyring, outside the backup target (data/backups).
[ -f data/backup.key ] || "$bin" keys generate --backup
say "configuring Vault (mount, policies, AppRole)"
vault_setup "$bin" "$root_token"

say "starting the mail stand-in (mailu-sim + Dovecot)"
rm -rf data/mail-standin
"$ROOT/scripts/mail-standin.sh" start data/mail-standin >/dev/null
# shellcheck disable=SC1091
source data/mail-standin/standin.env
export SMTP_VAULT_SMTP_CA_FILE=$CA_FILE
# The stand-in lives on loopback (and its controls on plain http); production keeps the outbound
# policy strict. Tenants are provisioned as on Mailu 2024.06: the API over https, submission with
# implicit TLS (on a free port here; 465 on a real server).
export SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT=true SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8,::1/128

say "starting the alert sinks (SMTP + Slack webhook stand-in)"
start_alert_sink target/debug/alert-sink data
pids+=("$SINK_PID")
sink_http=$SINK_HTTP_PORT

"$bin" serve &
pids+=("$!")
wait_http "http://127.0.0.1:3000/readyz" 60 || die "the console did not become ready"

token=$("$bin" token create --name demo-provisioner --scope credentials:write --scope credentials:read \
  --scope credentials:read-secret --scope credentials:rotate --scope credentials:reset 2>/dev/null)
for tenant in acme globex initech; do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:3000/api/v1/tenants/$tenant/smtp-credentials/provision" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin@$tenant.example\",\"smtp_host\":\"localhost\",\"smtp_port\":$SMTPS_PORT,\"smtp_tls\":\"implicit\",\"webmail_url\":\"https://mail.$tenant.example/webmail\",\"mailu_api_url\":\"$API_HTTPS_URL\",\"mailu_api_token\":\"$API_TOKEN\"}" \
    || die "provisioning $tenant failed"
done

invite=$("$bin" admin invite --email admin@example.com --role platform_admin 2>/dev/null)

cat >&2 <<MSG

  smtp-vault is running on http://localhost:3000 (Vault: $VAULT_ADDR)
  demo tenants: acme, globex, initech (provisioned on the mail stand-in: SMTP localhost:$SMTPS_PORT, implicit TLS)
  sign in: open this one-time link (24 h) in Chromium or any browser with passkeys,
    $invite
    then sign in later as admin@example.com with that passkey.
  backups: "$bin backup run" writes to data/backups (daily at 02:00 UTC while serving)
  alerts (security@example.com and Slack) land in a local sink: http://127.0.0.1:$sink_http/_sink/messages
  API token (credentials:write/read/read-secret/rotate/reset):
    $token
  try: curl -H "Authorization: Bearer \$TOKEN" http://localhost:3000/api/v1/tenants

  Ctrl-C stops the console, OpenBao and the mail stand-in.
MSG
wait "${pids[@]}"
