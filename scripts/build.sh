#!/usr/bin/env bash
# Builds the console without cargo-leptos: the hydrate (wasm) bundle into target/site/pkg, the
# stylesheet and public assets beside it, and the server binary. Installs its tools first
# (scripts/ensure-tools.sh, idempotent). Release bundles go through the pinned wasm-opt only.
# Usage: scripts/build.sh [debug|release]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mode=${1:-debug}
site=target/site
pkg=$site/pkg
case $mode in
  debug) profile=(); wasm_dir=debug; server=(); bindgen=() ;;
  # The name section (function names for stack traces) is half the raw bundle.
  release) profile=(--profile wasm-release); wasm_dir=wasm-release; server=(--release)
    bindgen=(--remove-name-section --remove-producers-section) ;;
  *) die "usage: scripts/build.sh [debug|release]" ;;
esac

"$ROOT/scripts/ensure-tools.sh" run
if [ "$mode" = release ]; then
  binaryen=$(sed -n 's/.*"binaryen": "\([0-9.]*\)".*/\1/p' scripts/wasm-opt/package.json)
  wasm_opt="$TOOLS/binaryen-$binaryen/node_modules/.bin/wasm-opt"
  "$wasm_opt" --version 2>/dev/null | grep -q "version ${binaryen%%.*}\b" \
    || die "wasm-opt from npm binaryen $binaryen is missing at $wasm_opt (scripts/ensure-tools.sh installs it)"
fi

say "building the browser bundle ($mode)"
cargo rustc --quiet --lib --target wasm32-unknown-unknown --no-default-features --features hydrate \
  --crate-type cdylib "${profile[@]}"
mkdir -p "$pkg"
wasm-bindgen --target web --no-typescript "${bindgen[@]}" --out-dir "$pkg" --out-name smtp-vault \
  "target/wasm32-unknown-unknown/$wasm_dir/smtp_vault.wasm"
mv -f "$pkg/smtp-vault_bg.wasm" "$pkg/smtp-vault.wasm"
if [ "$mode" = release ]; then
  # Only the pinned npm binaryen, by its path: another wasm-opt on PATH (Debian's 108) emits a
  # bundle whose hydration fails with `WebAssembly.Table.set(): Argument 1 is invalid`.
  "$wasm_opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int "$pkg/smtp-vault.wasm" -o "$pkg/smtp-vault.wasm"
fi
cp style/main.css "$pkg/smtp-vault.css"
cp -r public/. "$site/"

say "building the server ($mode)"
# The console, and the stand-ins the demo, the journeys and the benchmark start (tools/).
cargo build --quiet --workspace --bins "${server[@]}"
