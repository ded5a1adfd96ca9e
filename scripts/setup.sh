#!/usr/bin/env bash
# Installs what the tests need outside Cargo, each only when missing:
#   mesa-vulkan-drivers libvulkan1  software Vulkan (lavapipe) for the wgpu tests
#   xvfb xauth                      the app's real-window test
#   chromium                        the browser build's test (headless)
#   wasm32-unknown-unknown          the browser build's target
#   wasm-bindgen-cli                at the version of the wasm-bindgen crate in Cargo.lock
# Needs root (or sudo) for the system packages; everything else goes through rustup and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mesa-vulkan-drivers libvulkan1 xvfb xauth chromium)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: installing ${packages[*]} needs root or sudo" >&2; exit 1; }
    sudo=sudo
  fi
  echo "== installing ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null 2>&1
wb=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$wb" ]; then
  echo "== installing wasm-bindgen-cli $wb"
  cargo install --locked wasm-bindgen-cli --version "$wb" >/dev/null 2>&1 ||
    cargo install wasm-bindgen-cli --version "$wb" >/dev/null
fi
