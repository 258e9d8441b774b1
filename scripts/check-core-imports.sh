#!/usr/bin/env bash
# Fails if the service core (src/core) uses a web crate: it must stay callable from the CLI and
# the scheduler without the web stack (ARCHITECTURE §5 rule 1).
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='(^|[^a-z_])(leptos|leptos_axum|leptos_router|leptos_meta|axum|tower|tower_http|tower_sessions|http)::'
if hits=$(grep -rnE "$pattern" src/core); then
  echo "src/core must not import web crates:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "src/core imports no web crate"
