#!/usr/bin/env bash
# Installs what a fresh machine lacks to build lacquer: cmake (pingora builds zlib-ng with it).
set -euo pipefail
if ! command -v cmake >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq cmake >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
