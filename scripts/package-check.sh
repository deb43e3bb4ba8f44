#!/usr/bin/env bash
# CI: builds the Debian package with cargo-deb, installs it with dpkg -i on this machine,
# checks what postinst made and the installed unit, validates the packaged config, serves a
# Status-Server with it (a copy on a free loopback port with a loopback client), installs it
# again as an upgrade would (the key file stays), then purges the package and checks that
# its files are gone. Needs root (or sudo): it installs a real package.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
command -v radclient >/dev/null 2>&1 || {
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq freeradius-utils >/dev/null
}

fail() { echo "package-check: $*" >&2; exit 1; }

deb=$(cargo deb 2>/dev/null | tail -n 1)
[ -f "$deb" ] || fail "cargo deb made no package"
echo "package-check: installing $deb"
if dpkg-query -W -f '${Status}' otpgate 2>/dev/null | grep -q installed; then
  "${sudo_cmd[@]}" dpkg --purge otpgate >/dev/null
fi
"${sudo_cmd[@]}" dpkg -i "$deb" >/dev/null

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# What postinst made: the user, the state directory, the database and key file, the secret.
getent passwd otpgate >/dev/null || fail "no otpgate user"
expect_mode() {
  local got
  got=$("${sudo_cmd[@]}" stat -c '%a %U:%G' "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
}
expect_mode /var/lib/otpgate "700 otpgate:otpgate"
expect_mode /var/lib/otpgate/otpgate.key "600 otpgate:otpgate"
expect_mode /var/lib/otpgate/otpgate.db "600 otpgate:otpgate"
expect_mode /etc/otpgate/otpgate.toml "640 root:otpgate"
expect_mode /etc/otpgate/nas-example.secret "640 root:otpgate"
[ -f /usr/share/otpgate/dictionaries/dictionary ] || fail "no dictionaries"
[ -f /lib/systemd/system/otpgate.service ] || [ -f /usr/lib/systemd/system/otpgate.service ] ||
  fail "no systemd unit"
/usr/bin/otpgate --help >/dev/null
# The installed unit, with the installed binary (tests/packaging.rs checks the source copy).
if command -v systemd-analyze >/dev/null 2>&1; then
  unit=$(ls /lib/systemd/system/otpgate.service /usr/lib/systemd/system/otpgate.service 2>/dev/null | head -n 1)
  complaints=$(systemd-analyze verify "$unit" 2>&1 | grep otpgate.service || true)
  [ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
fi

as_otpgate=("${sudo_cmd[@]}" runuser -u otpgate --)
(cd / && "${as_otpgate[@]}" /usr/bin/otpgate check-config --config /etc/otpgate/otpgate.toml)

# The packaged config as it is, but on a free loopback port and with its client on loopback.
port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chmod 755 "$work"
"${sudo_cmd[@]}" sed -e "s|^listen = .*|listen = [\"127.0.0.1:$port\"]|" \
  -e 's|^address = "192.0.2.10/32"|address = "127.0.0.1/32"|' \
  /etc/otpgate/otpgate.toml >"$work/otpgate.toml"
grep -q "127.0.0.1:$port" "$work/otpgate.toml" || fail "could not move the listen address"
chmod 644 "$work/otpgate.toml"
(cd / && exec "${as_otpgate[@]}" /usr/bin/otpgate serve --config "$work/otpgate.toml") \
  >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  grep -q "listening udp 127.0.0.1:$port" "$work/serve.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log"; fail "otpgate did not start"; }
  sleep 0.1
done
secret=$("${sudo_cmd[@]}" cat /etc/otpgate/nas-example.secret)
reply=$(echo 'Message-Authenticator=0x00' | radclient -x -t 3 -r 2 "127.0.0.1:$port" status "$secret" 2>&1) ||
  { cat "$work/serve.log"; fail "no answer to Status-Server: $reply"; }
grep -q 'Received Access-Accept' <<<"$reply" || fail "Status-Server not accepted: $reply"
echo "package-check: Status-Server answered by the packaged otpgate on 127.0.0.1:$port"
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=

# Installing again (as an upgrade does) keeps the key file and the database.
key_before=$("${sudo_cmd[@]}" sha256sum /var/lib/otpgate/otpgate.key)
"${sudo_cmd[@]}" dpkg -i "$deb" >/dev/null
[ "$("${sudo_cmd[@]}" sha256sum /var/lib/otpgate/otpgate.key)" = "$key_before" ] ||
  fail "reinstalling replaced the key file"
expect_mode /etc/otpgate/otpgate.toml "640 root:otpgate"

"${sudo_cmd[@]}" dpkg --purge otpgate >/dev/null
for gone in /usr/bin/otpgate /usr/bin/otpgate-bench /usr/share/otpgate /etc/otpgate /var/lib/otpgate \
  /lib/systemd/system/otpgate.service /usr/lib/systemd/system/otpgate.service; do
  [ ! -e "$gone" ] || fail "$gone is still there after dpkg --purge"
done
echo "package-check: installed, served, purged: ok"
