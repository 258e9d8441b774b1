#!/usr/bin/env bash
# The benchmark in one command: installs what it needs (idempotent), builds the release server,
# stand-in and wasm bundle, starts a throw-away PostgreSQL, then runs examples/bench.rs, which
# starts its own OpenBao (with a file audit device) and mail stand-in and prints every row of
# docs/performance.md. Results: target/bench/bench.{md,json}.
#   scripts/bench.sh                 # every row (about 10 minutes after the build)
#   scripts/bench.sh --load          # 200 signed-in admins revealing for 60 s
#   scripts/bench.sh --only kv,audit # some rows (kv, rotation, reset, backup, audit, memory)
#   scripts/bench.sh --scale 100000  # issue 18: store, list pages, overview, start-up, daily cycle, backup at N tenants
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/ensure-tools.sh" test
"$ROOT/scripts/build.sh" release

work=$(mktemp -d /tmp/smtp-vault-bench.XXXXXX)
chmod 755 "$work"
cleanup() {
  stop_postgres
  rm -rf "$work"
}
trap cleanup EXIT
start_postgres "$work/pg"

say "benchmark"
# MAILU_REALISTIC: the mail stand-in costs what a real Mailu does (bcrypt-like hashing, Dovecot's
# 2 s failure delay; scripts/mail-standin.sh).
BENCH_PG_URL=$PG_URL MAILU_SIM="$ROOT/target/release/mailu-sim" MAILU_REALISTIC=1 \
  cargo run --quiet --release --example bench -- "$@"
