#!/usr/bin/env bash
# Runs otpgate's whole test suite on a fresh Debian machine: installs what the integration
# tests need (radclient from freeradius-utils) if it is missing, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v radclient >/dev/null 2>&1 || need_packages+=(freeradius-utils)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "installing ${need_packages[*]} (Debian packages the tests need)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

cargo test --all-targets "$@"
