#!/usr/bin/env bash
# Builds the browser app into web/dist/: a static folder any static server can serve.
#   needs: rustup target add wasm32-unknown-unknown
#          cargo install wasm-bindgen-cli --version "$(the wasm-bindgen version in Cargo.lock)" --locked
#   usage: web/build.sh [--debug]        then e.g. python3 -m http.server -d web/dist 8080
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=--release
if [ "${1:-}" = "--debug" ]; then profile=debug; flag=; fi
target_dir="${CARGO_TARGET_DIR:-target}"
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "wasm-bindgen $want is needed (found: ${have:-none}): cargo install wasm-bindgen-cli --version $want --locked" >&2
  exit 1
fi
cargo build -p longalign-app --bin longalign-app --target wasm32-unknown-unknown $flag --locked
rm -rf web/dist
mkdir -p web/dist
wasm-bindgen --target web --no-typescript --out-dir web/dist --out-name longalign_app \
  "$target_dir/wasm32-unknown-unknown/$profile/longalign-app.wasm"
cp web/index.html web/worker.js web/dist/
echo "built web/dist ($(du -sh web/dist | cut -f1)); serve it with any static server"
