# Shared shell functions for the project's scripts (sourced, not run).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${SMTP_VAULT_TOOLS:-/opt/smtp-vault-tools}
export PATH="$TOOLS/bin:$ROOT/end2end/node_modules/.bin:$PATH"

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS: polls until URL answers with 2xx, or fails.
wait_http() {
  local url=$1 deadline=$((SECONDS + ${2:-60}))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# start_openbao PORT TOKEN LOGFILE: a dev-mode OpenBao (in memory) on loopback; sets BAO_PID.
start_openbao() {
  local port=$1 token=$2 log=$3
  if curl -s -o /dev/null "http://127.0.0.1:$port/v1/sys/health" 2>/dev/null; then
    die "port $port is already in use (another Vault/OpenBao?); stop it or set VAULT_PORT"
  fi
  bao server -dev -dev-root-token-id="$token" -dev-no-store-token \
    -dev-listen-address="127.0.0.1:$port" >"$log" 2>&1 &
  BAO_PID=$!
  wait_http "http://127.0.0.1:$port/v1/sys/health" 30 || die "OpenBao did not start; see $log"
}

# start_postgres DIR: a throw-away PostgreSQL cluster in DIR on a free port; sets PG_URL, PG_DIR.
start_postgres() {
  local dir=$1 bin port runas=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || die "PostgreSQL is not installed (scripts/ensure-tools.sh test installs it)"
  port=$(free_port)
  mkdir -p "$dir"
  # PostgreSQL refuses to run as root: use the postgres system user then.
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; runas=(runuser -u postgres --); fi
  "${runas[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >"$dir/initdb.log" 2>&1 || die "initdb failed: $dir/initdb.log"
  "${runas[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null \
    || die "PostgreSQL did not start: $dir/server.log"
  PG_DIR=$dir
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  local bin runas=()
  [ -n "${PG_DIR:-}" ] || return 0
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ "$(id -u)" -eq 0 ]; then runas=(runuser -u postgres --); fi
  "${runas[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
}

# vault_setup BIN ROOT_TOKEN: configures Vault for the console (mount, policies, AppRole) and
# exports the AppRole it prints as VAULT_ROLE_ID and VAULT_SECRET_ID.
vault_setup() {
  local bin=$1 token=$2 out
  out=$(VAULT_TOKEN=$token "$bin" vault-setup 2>/dev/null) || die "vault-setup failed"
  VAULT_ROLE_ID=$(sed -n 's/^VAULT_ROLE_ID=//p' <<<"$out")
  VAULT_SECRET_ID=$(sed -n 's/^VAULT_SECRET_ID=//p' <<<"$out")
  [ -n "$VAULT_ROLE_ID" ] && [ -n "$VAULT_SECRET_ID" ] || die "vault-setup printed no AppRole"
  export VAULT_ROLE_ID VAULT_SECRET_ID
}

# start_alert_sink BIN DIR: the alert sinks (SMTP + Slack-webhook stand-in, tools/alert-sink)
# on free loopback ports; sets SINK_PID, SINK_SMTP_PORT, SINK_HTTP_PORT and exports the console's
# alert settings that point at them.
start_alert_sink() {
  local bin=$1 dir=$2
  mkdir -p "$dir"
  "$bin" >"$dir/alert-sink.out" 2>"$dir/alert-sink.err" &
  SINK_PID=$!
  for _ in $(seq 1 200); do [ "$(wc -l < "$dir/alert-sink.out")" -ge 2 ] && break; sleep 0.05; done
  SINK_SMTP_PORT=$(sed -n 's/^smtp_port=//p' "$dir/alert-sink.out")
  SINK_HTTP_PORT=$(sed -n 's/^http_port=//p' "$dir/alert-sink.out")
  [ -n "$SINK_HTTP_PORT" ] && [ -n "$SINK_SMTP_PORT" ] || die "alert-sink did not start: $dir/alert-sink.err"
  export SMTP_VAULT_ALERT_SMTP_URL="smtp://127.0.0.1:$SINK_SMTP_PORT?tls=none"
  export SMTP_VAULT_ALERT_EMAIL_TO=security@example.com
  export SMTP_VAULT_SLACK_WEBHOOK_URL="http://127.0.0.1:$SINK_HTTP_PORT/slack"
}
