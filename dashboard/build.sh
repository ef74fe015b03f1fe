#!/usr/bin/env bash
# Builds the dashboard's release bundle into dashboard/dist/pkg, which the api-gateway
# serves with dashboard/dist/index.html. Called by `just build-dashboard`.
#
# Everything comes from crates.io (and npm for the optional wasm-opt): the wasm32 target
# from rustup, a wasm-bindgen-cli of exactly the wasm-bindgen version in Cargo.lock (the
# workspace pins it with `=`, so the two cannot drift), then cargo's `wasm-release`
# profile. `--install-only` installs the tools and stops (for the bootstrap).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '\033[1mdashboard:\033[0m %s\n' "$*"; }

# The wasm-bindgen version the lock file resolved: the CLI must match it exactly.
bindgen_version="$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$bindgen_version" ] || { echo "wasm-bindgen not found in Cargo.lock" >&2; exit 1; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "installing the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  # Without --locked: one of wasm-bindgen-cli's locked dependencies is not served by the
  # registry mirror, while the current compatible versions are.
  say "installing wasm-bindgen-cli $bindgen_version (about 2.5 minutes, once)"
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi

# wasm-opt from npm's binaryen (Debian's binaryen miscompiles current Rust output).
e2e="$root/dashboard/e2e"
if [ ! -x "$e2e/node_modules/.bin/wasm-opt" ] && command -v npm >/dev/null; then
  say "installing the e2e tools and wasm-opt (npm ci)"
  (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error) || say "npm ci failed: building without wasm-opt"
fi

if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi

say "compiling (cargo --profile wasm-release)"
cargo build -p dashboard --target wasm32-unknown-unknown --profile wasm-release

out="$root/dashboard/dist/pkg"
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  target/wasm32-unknown-unknown/wasm-release/dashboard.wasm

wasm="$out/dashboard_bg.wasm"
raw=$(stat -c %s "$wasm")
if [ -x "$e2e/node_modules/.bin/wasm-opt" ]; then
  say "optimising with wasm-opt -Oz"
  "$e2e/node_modules/.bin/wasm-opt" -Oz \
    --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
fi

# The gateway compresses on the fly; gzip -9 here only measures what travels.
size=$(stat -c %s "$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
say "bundle: dashboard_bg.wasm $((size / 1024)) KiB (before wasm-opt $((raw / 1024)) KiB), gzip $((gz / 1024)) KiB; dashboard.js $(( $(stat -c %s "$out/dashboard.js") / 1024 )) KiB"
say "built into dashboard/dist (served by the api-gateway from DASHBOARD_DIR)"
