#!/usr/bin/env bash
# Runs otpgate's whole test suite on a fresh Debian machine: installs what the integration
# tests need if it is missing (Debian's freeradius-utils for radclient, freeradius as a
# proxy, tshark; systemd for systemd-analyze; pamtester, libpam-radius-auth and eapoltest
# for the NAS recipes; radsecproxy and openssl for the RadSec tests; postgresql, whose
# initdb and pg_ctl the PostgreSQL tests start a cluster of their own with; slapd and
# ldap-utils, for the directory tests' own OpenLDAP; Python 3 with the packages of
# tests/peers/requirements.txt for the SMTP, XML-RPC, modem and pyrad peers; Node.js and npm
# with tests/peers/node's radius package, for node-radius as a NAS), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v radclient >/dev/null 2>&1 || need_packages+=(freeradius-utils)
command -v freeradius >/dev/null 2>&1 || need_packages+=(freeradius)
command -v tshark >/dev/null 2>&1 || need_packages+=(tshark)
command -v systemd-analyze >/dev/null 2>&1 || need_packages+=(systemd)
# The NAS recipes (tests/nas_recipes.rs): pam_radius_auth driven by pamtester, eapol_test.
command -v pamtester >/dev/null 2>&1 || need_packages+=(pamtester)
compgen -G '/lib/*/security/pam_radius_auth.so' >/dev/null ||
  compgen -G '/usr/lib/*/security/pam_radius_auth.so' >/dev/null || need_packages+=(libpam-radius-auth)
command -v eapol_test >/dev/null 2>&1 || need_packages+=(eapoltest)
command -v radsecproxy >/dev/null 2>&1 || need_packages+=(radsecproxy)
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
command -v python3 >/dev/null 2>&1 || need_packages+=(python3 python3-pip)
# node-radius as a NAS (tests/nas_recipes.rs): Node.js and npm, then the radius package.
command -v node >/dev/null 2>&1 || need_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || need_packages+=(npm)
command -v promtool >/dev/null 2>&1 || need_packages+=(prometheus)  # tests/metrics.rs: promtool check metrics
# Debian keeps initdb off PATH, under /usr/lib/postgresql/VERSION/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_packages+=(postgresql)
# slapd for the directory tests (they start their own; none need run as a service).
[ -x /usr/sbin/slapd ] || need_packages+=(slapd)
command -v ldapmodify >/dev/null 2>&1 || need_packages+=(ldap-utils)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "installing ${need_packages[*]} (Debian packages the tests need)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if ! python3 -c 'import aiosmtpd, gsmmodem, pyrad' >/dev/null 2>&1; then
  echo "installing the Python packages of tests/peers/requirements.txt"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r tests/peers/requirements.txt
fi

if [ ! -d tests/peers/node/node_modules/radius ]; then
  echo "installing the npm packages of tests/peers/node/package-lock.json"
  (cd tests/peers/node && npm ci --silent --no-audit --no-fund)
fi

# Keep the output to close with one line that counts every test of every target.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log" | tee "${OTPGATE_TEST_SUMMARY:-/dev/null}"
