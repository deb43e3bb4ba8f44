#!/usr/bin/env bash
# otpgate's benchmark, in one run on one machine: otpgate and FreeRADIUS 3.2 side by side.
# Builds release binaries, enrolls bench users through the CLI (CSV import), starts the
# servers on loopback, drives them with otpgate-bench and prints one table. Nothing here is a
# test: it prints figures. Quick mode for CI: BENCH_QUICK=1 (a few seconds per step).
#
#   bench/run.sh                 # full run (several minutes)
#   BENCH_QUICK=1 bench/run.sh   # smoke run
#   BENCH_ONLY="status default" bench/run.sh   # some sections: status default cheap open isolation flood pg radsec directory
#   BENCH_METRICS=1 bench/run.sh  # with [metrics] on, scraped once a second as Prometheus would
#   BENCH_ONLY=pg BENCH_PG_POOL=2 bench/run.sh  # the PostgreSQL nodes with another database_pool
#   BENCH_OTPGATE=/tmp/otpgate-old bench/run.sh  # another build of the server
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:-0}
seconds=${BENCH_SECONDS:-$([ "$quick" = 1 ] && echo 2 || echo 10)}
growth=${BENCH_GROWTH:-$([ "$quick" = 1 ] && echo "1000" || echo "1000 100000 1000000")}
open_challenges=${BENCH_OPEN_CHALLENGES:-$([ "$quick" = 1 ] && echo 2000 || echo 100000)}
flood_seconds=${BENCH_FLOOD_SECONDS:-$([ "$quick" = 1 ] && echo 3 || echo "$seconds")}
# The flood section's PIN queue: empty keeps the default; e.g. 100000 shows the flood
# without the bound.
flood_pin_queue=${BENCH_FLOOD_PIN_QUEUE:-}
# The PIN queue ([limits] pin_queue, jobs per core) of every section but the flood, which
# keeps the default (16). The closed-loop sections keep up to 64 PIN requests of one client
# in flight (64 workers) and, unlike a NAS, do not retransmit: with the default 16 per core
# (32 queued on 2 cores) the rest would be dropped as overloaded and each would cost its
# worker a reply timeout. 64 per core holds them all on any number of cores.
bench_pin_queue=${BENCH_PIN_QUEUE:-64}
secret=bench-shared-secret-0123456789
metrics=${BENCH_METRICS:-0}
# [server] database_pool of the PostgreSQL nodes; empty: the default.
pg_pool=${BENCH_PG_POOL:-}

command -v freeradius >/dev/null || { echo "needs Debian's freeradius (apt-get install freeradius)"; exit 1; }
cargo build --release --bins --quiet
# BENCH_OTPGATE: another build of the server (an older commit's, to compare in turns).
otpgate=${BENCH_OTPGATE:-$PWD/target/release/otpgate}
bench=$PWD/target/release/otpgate-bench
work=$(mktemp -d)
pids=()
cleanup() { [ -n "${BENCH_KEEP:-}" ] && { echo "kept $work"; for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; return; };  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
capture_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# write_config DIR PORT MEMORY ITERATIONS [PIN_QUEUE] [SECOND_CLIENT_ADDRESS]
# Every SMS cap is off and a PIN request may re-send its open challenge's SMS at once: the
# bench measures the server, not the limits. PIN_QUEUE "" keeps the default.
write_config() {
  local pin_queue="pin_queue = ${5-$bench_pin_queue}" second=""
  [ -z "${5-$bench_pin_queue}" ] && pin_queue="# pin_queue: the default"
  [ -n "${6:-}" ] && second="[[client]]
name = \"legit\"
address = \"$6/32\"
secret = \"$secret\"
"
  cat > "$1/otpgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$2"]
database = "$1/otpgate.db"
key_file = "$1/otpgate.key"
dictionaries = "$PWD/dictionaries"
max_in_flight = 4096

[[client]]
name = "bench"
address = "127.0.0.1/32"
secret = "$secret"

$second
$([ "$metrics" = 1 ] && printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
[limits]
resend_interval = "0s"
per_token_hour = 0
per_token_day = 0
per_phone_hour = 0
per_client_minute = 0
global_minute = 0
global_day = 0
$pin_queue

[pin]
memory_kib = $3
iterations = $4
parallelism = 1

[sms]
default_chain = ["capture"]
reply_within = "2s"

[gateway.capture]
type = "http"
url = "http://127.0.0.1:$capture_port/sms"
method = "POST"
timeout = "30s"
options = { to = "{phone}", text = "{otp}" }

[gateway.stall]
type = "http"
url = "http://127.0.0.1:$capture_port/stall"
method = "POST"
timeout = "30s"
options = { to = "{phone}", text = "{otp}" }
EOF
}

# enroll DIR COUNT [GATEWAY_FROM]
enroll() {
  local extra=()
  [ -n "${3:-}" ] && extra=(--gateway-from "$3" --gateway stall)
  "$bench" users --count "$2" --users-csv "$1/users.csv" --tokens-csv "$1/tokens.csv" "${extra[@]}"
  "$otpgate" --config "$1/otpgate.toml" user import "$1/users.csv" >/dev/null
  "$otpgate" --config "$1/otpgate.toml" token import "$1/tokens.csv" >/dev/null
  rm -f "$1/tokens.csv"
}

# start DIR -> sets otpgate_pid; waits for the port
start() {
  : > "$1/otpgate.log"
  "$otpgate" --config "$1/otpgate.toml" serve 2>"$1/otpgate.log" &
  otpgate_pid=$!
  pids+=("$otpgate_pid")
  for _ in $(seq 100); do grep -q "listening udp" "$1/otpgate.log" && break; sleep 0.05; done
  grep -q "listening udp" "$1/otpgate.log" || { cat "$1/otpgate.log"; exit 1; }
  [ "$metrics" = 1 ] || return 0
  local endpoint
  endpoint=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$1/otpgate.toml" | tail -1)
  # A scrape a second, as Prometheus would, until the server stops.
  ( while kill -0 "$otpgate_pid" 2>/dev/null; do curl -sf "http://$endpoint/metrics" >/dev/null || true; sleep 1; done ) &
  pids+=("$!")
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# dropped_overloaded DIR -> requests the stopped server dropped as overloaded (its last log
# line, "stopped stats=replies=N dropped overloaded=M ..."); 0 if none.
dropped_overloaded() {
  local n
  n=$(grep -o ' stopped stats=.*' "$1/otpgate.log" | grep -o 'overloaded=[0-9]*' | cut -d= -f2 | tail -1) || true
  echo "${n:-0}"
}

# json FILE KEY -> value (python, to keep the script free of jq)
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); k=sys.argv[2].split('.');
for p in k: d=d[int(p)] if isinstance(d,list) else d[p]
print(round(d,3) if isinstance(d,float) else d)" "$1" "$2"; }
step() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); s=[x for x in d['steps'] if x['step']==sys.argv[2]][0]; print(round(s[sys.argv[3]],2))" "$1" "$2" "$3"; }
ratio() { python3 -c "import sys; print(round(float(sys.argv[1])/float(sys.argv[2]),2))" "$1" "$2"; }

# BENCH_ONLY picks sections by name (default: all of them).
only=${BENCH_ONLY:-status default cheap open isolation flood pg radsec directory}
wanted() { [[ " $only " == *" $1 "* ]]; }

results=()
row() { results+=("$(printf '%-58s %14s  %s' "$1" "$2" "${3:-}")"); }

# freeradius_status DIR PORT CLIENTS LISTEN STATUS_ARGS...: FreeRADIUS 3.2 with a minimal
# radiusd.conf in DIR that answers Status-Server on PORT (CLIENTS: its client section;
# LISTEN: more lines for its listen section); sets fr_pid once it answers, checked with
# `otpgate-bench status STATUS_ARGS`.
freeradius_status() {
  local fr=$1 port=$2 clients=$3 listen=$4; shift 4
  cat > "$fr/radiusd.conf" <<CONF
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
raddbdir = $fr
confdir = $fr
logdir = $fr
run_dir = $fr
db_dir = $fr
libdir = /usr/lib/freeradius
name = freeradius
pidfile = $fr/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no
log {
    destination = files
    file = $fr/radius.log
}
security {
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}
$clients
thread pool {
    start_servers = 4
    max_servers = 32
    min_spare_servers = 2
    max_spare_servers = 8
}
modules {
    always ok {
        rcode = ok
    }
}
server default {
    listen {
        type = auth
        ipaddr = 127.0.0.1
        port = $port
$listen
    }
    authorize {
        Autz-Type Status-Server {
            ok
        }
    }
    authenticate {
    }
}
CONF
  freeradius -f -n radiusd -d "$fr" &
  fr_pid=$!; pids+=("$fr_pid")
  for _ in $(seq 100); do
    "$bench" status --server "127.0.0.1:$port" "$@" --concurrency 1 --duration 200ms --timeout 100ms --json 2>/dev/null | grep -q '"completed":[1-9]' && break
    sleep 0.1
  done
}

# ---- Status-Server: otpgate vs FreeRADIUS ------------------------------------------------
if wanted status; then
dir=$work/status; mkdir -p "$dir"; port=$(free_port)
write_config "$dir" "$port" 8 1
start "$dir"
"$bench" status --server "127.0.0.1:$port" --secret "$secret" --concurrency 64 --duration "${seconds}s" --pid "$otpgate_pid" --json > "$dir/otpgate-status.json"
stop "$otpgate_pid"

fr=$work/freeradius; mkdir -p "$fr"; fr_port=$(free_port)
freeradius_status "$fr" "$fr_port" "client bench {
    ipaddr = 127.0.0.1
    secret = $secret
}" "" --secret "$secret"
"$bench" status --server "127.0.0.1:$fr_port" --secret "$secret" --concurrency 64 --duration "${seconds}s" --pid "$fr_pid" --json > "$dir/freeradius-status.json"
stop "$fr_pid"
o=$(json "$dir/otpgate-status.json" ops_per_second); f=$(json "$dir/freeradius-status.json" ops_per_second)
row "Status-Server replies/s, otpgate" "$o"
row "Status-Server replies/s, FreeRADIUS 3.2" "$f" "($(json "$dir/freeradius-status.json" replies_without_message_authenticator) replies without Message-Authenticator)"
row "  ratio otpgate / FreeRADIUS (target >= 1.5)" "$(ratio "$o" "$f")"

fi

# ---- Full flows with the default PIN hash ------------------------------------------------
if wanted default; then
dir=$work/default; mkdir -p "$dir"; port=$(free_port)
write_config "$dir" "$port" 19456 2
users=$([ "$quick" = 1 ] && echo 64 || echo 400)
enroll "$dir" "$users"
start "$dir"
# Argon2 is timed just before and just after the flow run, and the bound uses both, so that
# a neighbour's load on this shared machine in either moment does not decide the ratio.
argon2_count=$([ "$quick" = 1 ] && echo 10 || echo 40)
"$bench" argon2 --memory-kib 19456 --iterations 2 --count "$argon2_count" > "$dir/argon2.json"
"$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users "$users" --capture "127.0.0.1:$capture_port" \
  --concurrency 32 --duration "${seconds}s" --timeout 20s --pid "$otpgate_pid" --json > "$dir/flow.json"
flows=$(json "$dir/flow.json" ops_per_second)
"$bench" argon2 --memory-kib 19456 --iterations 2 --count "$argon2_count" > "$dir/argon2-after.json"
mean() { python3 -c "import sys; print((float(sys.argv[1]) + float(sys.argv[2])) / 2)" "$1" "$2"; }
verify_ms=$(mean "$(json "$dir/argon2.json" verify_ms)" "$(json "$dir/argon2-after.json" verify_ms)")
bound=$(python3 -c "print($(json "$dir/argon2.json" cores) * 1000 / $verify_ms)")
parallel=$(mean "$(json "$dir/argon2.json" parallel_per_second)" "$(json "$dir/argon2-after.json" parallel_per_second)")
fresh=$(mean "$(json "$dir/argon2.json" parallel_fresh_memory_per_second)" "$(json "$dir/argon2-after.json" parallel_fresh_memory_per_second)")
"$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users "$users" --capture "127.0.0.1:$capture_port" \
  --concurrency 32 --duration "${seconds}s" --timeout 20s --rate "$(python3 -c "print($flows/2)")" --json > "$dir/flow-half.json"
stop "$otpgate_pid"
row "Argon2id (19456 KiB, 2 it.) one verification, ms" "$(python3 -c "print(round($verify_ms,2))")" "(before $(json "$dir/argon2.json" verify_ms), after $(json "$dir/argon2-after.json" verify_ms))"
row "Argon2-bound limit, flows/s (cores / verification)" "$(python3 -c "print(round($bound,1))")"
row "Full flows/s, default PIN hash" "$flows" "errors $(json "$dir/flow.json" errors), timeouts $(json "$dir/flow.json" timeouts), dropped overloaded $(dropped_overloaded "$dir")"
row "  ratio to the Argon2 bound (target >= 0.85)" "$(ratio "$flows" "$bound")"
row "  server CPU per flow outside the Argon2 threads, ms" "$(json "$dir/flow.json" server_cpu_ms_per_op_outside_argon2)"
row "Argon2 verifications/s on all cores at once (measured)" "$(python3 -c "print(round($parallel,1))")" "ratio to the bound $(ratio "$parallel" "$bound")"
row "  flows/s over that measured parallel capacity" "$(ratio "$flows" "$parallel")"
row "  same, memory mapped afresh for each verification" "$(python3 -c "print(round($fresh,1))")"
row "  answer step p99 at half that rate, ms (target < 5)" "$(step "$dir/flow-half.json" answer p99_ms)"
row "  PIN step p50 / p99 at half rate, ms" "$(step "$dir/flow-half.json" "first reply" p50_ms) / $(step "$dir/flow-half.json" "first reply" p99_ms)"

fi

# ---- Engine cost with a cheap PIN hash, and growth -----------------------------------------
if wanted cheap; then
first_answer_p50=""
for count in $growth; do
  dir=$work/cheap-$count; mkdir -p "$dir"; port=$(free_port)
  write_config "$dir" "$port" 8 1
  enroll "$dir" "$count"
  start "$dir"
  flow_users=$((count < 2000 ? count : 2000))
  first=$(( count > flow_users ? count - flow_users : 0 ))
  "$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users "$flow_users" --first-user "$first" \
    --capture "127.0.0.1:$capture_port" --concurrency 64 --duration "${seconds}s" --pid "$otpgate_pid" --json > "$dir/flow.json"
  stop "$otpgate_pid"
  label="$count tokens"
  row "Full flows/s, cheap hash (8 KiB, 1 it.), $label" "$(json "$dir/flow.json" ops_per_second)" "errors $(json "$dir/flow.json" errors), timeouts $(json "$dir/flow.json" timeouts), dropped overloaded $(dropped_overloaded "$dir")"
  row "  server CPU per flow, ms (target <= 0.5)" "$(json "$dir/flow.json" server_cpu_ms_per_op)"
  row "  answer step p50 / p99, ms" "$(step "$dir/flow.json" answer p50_ms) / $(step "$dir/flow.json" answer p99_ms)"
  row "  server peak RSS, MiB" "$(json "$dir/flow.json" server_peak_rss_mib)"
  p50=$(step "$dir/flow.json" answer p50_ms)
  if [ -z "$first_answer_p50" ]; then first_answer_p50=$p50; else
    row "  answer p50 vs the first size (target <= 1.5)" "$(ratio "$p50" "$first_answer_p50")"
  fi
done

fi

# ---- Open challenges and RSS -------------------------------------------------------------
if wanted open; then
dir=$work/open; mkdir -p "$dir"; port=$(free_port)
write_config "$dir" "$port" 8 1
enroll "$dir" "$open_challenges"
start "$dir"
"$bench" challenges --server "127.0.0.1:$port" --secret "$secret" --users "$open_challenges" --capture "127.0.0.1:$capture_port" \
  --concurrency 64 --duration 600s --pid "$otpgate_pid" --json > "$dir/challenges.json"
stop "$otpgate_pid"
row "Open challenges created" "$(json "$dir/challenges.json" completed)" "errors $(json "$dir/challenges.json" errors), timeouts $(json "$dir/challenges.json" timeouts), dropped overloaded $(dropped_overloaded "$dir")"
row "  server peak RSS, MiB (target <= 64 at 100k)" "$(json "$dir/challenges.json" server_peak_rss_mib)"

fi

# ---- Isolation: a gateway that never answers for some users --------------------------------
if wanted isolation; then
dir=$work/isolation; mkdir -p "$dir"; port=$(free_port)
write_config "$dir" "$port" 8 1
enroll "$dir" 2000 1000
start "$dir"
"$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users 1000 --capture "127.0.0.1:$capture_port" \
  --concurrency 16 --duration "${seconds}s" --rate 200 --json > "$dir/alone.json"
"$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users 1000 --capture "127.0.0.1:$capture_port" \
  --concurrency 16 --duration "${seconds}s" --rate 200 --stalled-users 1000 --stalled-first 1000 --stalled-rate 50 \
  --timeout 10s --json > "$dir/beside.json"
stop "$otpgate_pid"
alone=$(step "$dir/alone.json" total p99_ms); beside=$(step "$dir/beside.json" total p99_ms)
row "Isolation: flow p99 alone, ms" "$alone"
row "  flow p99 beside users whose gateway hangs, ms" "$beside" "ratio $(ratio "$beside" "$alone") (target <= 2)"
row "  lost (timeouts + errors) of those flows" "$(( $(json "$dir/beside.json" timeouts) + $(json "$dir/beside.json" errors) ))" "dropped overloaded $(dropped_overloaded "$dir")"
row "  stalled users still got their challenge" "$(json "$dir/beside.json" stalled_challenges)"
fi

# ---- Flood: one client floods with unknown-user PINs, a user logs in from another ---------
if wanted flood; then
dir=$work/flood; mkdir -p "$dir"; port=$(free_port)
# The default Argon2 cost and the default PIN queue; the user logs in from 127.0.0.2.
write_config "$dir" "$port" 19456 2 "$flood_pin_queue" 127.0.0.2
enroll "$dir" 2
start "$dir"
"$bench" argon2 --memory-kib 19456 --iterations 2 --count "$([ "$quick" = 1 ] && echo 10 || echo 20)" > "$dir/argon2.json"
"$bench" flood --server "127.0.0.1:$port" --secret "$secret" --capture "127.0.0.1:$capture_port" \
  --flood-from 127.0.0.1 --legit-from 127.0.0.2 --factor 10 --duration "${flood_seconds}s" \
  --capacity-duration "$([ "$quick" = 1 ] && echo 1s || echo 3s)" --pid "$otpgate_pid" --json > "$dir/flood.json"
stop "$otpgate_pid"
overloaded=$(dropped_overloaded "$dir")
row "Flood: PIN checks/s, unknown users, closed loop (capacity)" "$(json "$dir/flood.json" capacity_per_second)" "two-core Argon2 alone $(json "$dir/argon2.json" parallel_per_second)/s"
row "  flood from 127.0.0.1, requests/s (10 x capacity)" "$(json "$dir/flood.json" flood_rate)" "for $(json "$dir/flood.json" flood_seconds) s, $(json "$dir/flood.json" served_per_second) PIN checks/s served meanwhile, dropped overloaded $overloaded"
row "  legit PIN step answered within 3 tries 2 s apart" "$(json "$dir/flood.json" legit_pin_ok)/$(json "$dir/flood.json" legit_pin_steps)" "rate $(json "$dir/flood.json" legit_pin_success_rate), after 1/2/3 sends $(json "$dir/flood.json" legit_pin_after_sends)"
row "  legit PIN step p50 / p99 during the flood, ms" "$(json "$dir/flood.json" legit_pin_p50_ms) / $(json "$dir/flood.json" legit_pin_p99_ms)" "(before the flood p50 $(json "$dir/flood.json" before_pin_p50_ms))"
row "  answer step p99 during the flood, ms" "$(json "$dir/flood.json" answer_p99_ms)" "p50 $(json "$dir/flood.json" answer_p50_ms), max $(json "$dir/flood.json" answer_max_ms)"
row "  answers dropped (of answers sent)" "$(json "$dir/flood.json" legit_answers_dropped)" "of $(( $(json "$dir/flood.json" legit_answers) + $(json "$dir/flood.json" legit_answers_dropped) + $(json "$dir/flood.json" legit_answers_rejected) )), rejected $(json "$dir/flood.json" legit_answers_rejected), SMS missing $(json "$dir/flood.json" legit_sms_missing), errors $(json "$dir/flood.json" legit_errors)"
row "  seconds to recover after the flood (127.0.0.1's PIN)" "$(json "$dir/flood.json" recovery_seconds)" "answered within $(json "$dir/flood.json" recovered_within_ms) ms"
row "  server RSS during the flood, max MiB" "$(json "$dir/flood.json" server_rss_max_mib)"
fi

# ---- PostgreSQL: one node, then two nodes with step 1 and step 2 on different nodes -------
# A cluster of the bench's own (initdb + pg_ctl; as the postgres or nobody user when run as
# root), with PostgreSQL's durable defaults (fsync, synchronous_commit on): the figures are
# what a production database costs. The cheap PIN hash, as in "cheap", so that the store is
# what is measured; the SQLite figure of the same run and user count stands beside them.
if wanted pg; then
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "the pg section needs Debian's postgresql (apt-get install postgresql)"; exit 1; }
# Outside $work (0700), which the database's user could not enter.
pg_dir=$(mktemp -d /tmp/otpgate-bench-pg.XXXXXX)
run_pg=()
if [ "$(id -u)" -eq 0 ]; then
  pg_user=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
  chown "$pg_user" "$pg_dir"; run_pg=(runuser -u "$pg_user" --)
fi
(cd "$pg_dir" && "${run_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U otpgate --auth=trust -E UTF8 --no-instructions >/dev/null)
pg_port=$(free_tcp_port)
(cd "$pg_dir" && "${run_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -o \
  "-p $pg_port -c listen_addresses=127.0.0.1 -k $pg_dir -c max_connections=100 -c shared_preload_libraries=pg_stat_statements" start >/dev/null)
stop_pg() {
  [ -d "$pg_dir" ] || return 0
  (cd "$pg_dir" && "${run_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null) || true
  rm -rf "$pg_dir"
}
postmaster=$(head -1 "$pg_dir/data/postmaster.pid")
trap 'stop_pg; cleanup' EXIT
psql_pg() { "$pg_bin/psql" -X -A -t -q -h 127.0.0.1 -p "$pg_port" -U otpgate -d "$1" -c "$2"; }
pg_users=2000
# Statements on the reply path per flow: every statement but the audit rows (queued off the
# reply path), purges, breaker records and advisory locks (pg_stat_statements counts
# top-level statements: one per round trip).
reply_statements() { psql_pg "$1" "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE 'INSERT INTO audit%'
    AND query NOT LIKE 'DELETE FROM%' AND query NOT LIKE '%gateway_state%' AND query NOT LIKE '%advisory%'"; }
# pg_config DIR PORT DB NODE: the bench config of DIR on database DB as node NODE
pg_config() {
  write_config "$1" "$2" 8 1
  sed -i "s|^database = .*|database = \"postgres://otpgate@127.0.0.1:$pg_port/$3\"\nnode_name = \"$4\"|" "$1/otpgate.toml"
  [ -z "$pg_pool" ] || sed -i "s|^node_name = .*|&\ndatabase_pool = $pg_pool|" "$1/otpgate.toml"
}
flow_run() { # OUT SERVER [ANSWER_SERVER] -- PIDS...
  local out=$1 server=$2 answer=$3; shift 3
  local pid_args=() extra=()
  for p in "$@"; do pid_args+=(--pid "$p"); done
  [ -n "$answer" ] && extra=(--answer-server "$answer")
  "$bench" flow --server "$server" "${extra[@]}" --secret "$secret" --users "$pg_users" \
    --capture "127.0.0.1:$capture_port" --concurrency 64 --duration "${seconds}s" "${pid_args[@]}" \
    --database-pid "$postmaster" --json > "$out"
}

# SQLite, the baseline of this run.
dir=$work/pg-sqlite; mkdir -p "$dir"; port=$(free_port)
write_config "$dir" "$port" 8 1
enroll "$dir" "$pg_users"
start "$dir"
flow_run "$dir/flow.json" "127.0.0.1:$port" "" "$otpgate_pid"
stop "$otpgate_pid"
sqlite_rate=$(json "$dir/flow.json" ops_per_second)
row "Full flows/s, cheap hash, SQLite ($pg_users tokens), baseline" "$sqlite_rate" "errors $(json "$dir/flow.json" errors), CPU/flow $(json "$dir/flow.json" server_cpu_ms_per_op) ms"

# One node on PostgreSQL.
"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U otpgate one
psql_pg one "CREATE EXTENSION pg_stat_statements"
dir=$work/pg-one; mkdir -p "$dir"; port=$(free_port)
pg_config "$dir" "$port" one node-1
enroll "$dir" "$pg_users"
start "$dir"
psql_pg one "SELECT pg_stat_statements_reset()" >/dev/null
flow_run "$dir/flow.json" "127.0.0.1:$port" "" "$otpgate_pid"
statements=$(reply_statements one)
stop "$otpgate_pid"
completed=$(json "$dir/flow.json" completed)
row "Full flows/s, cheap hash, PostgreSQL, one node (target >= 2000)" "$(json "$dir/flow.json" ops_per_second)" "errors $(json "$dir/flow.json" errors), timeouts $(json "$dir/flow.json" timeouts); vs SQLite $(ratio "$(json "$dir/flow.json" ops_per_second)" "$sqlite_rate")"
row "  otpgate CPU per flow, ms / PostgreSQL CPU per flow, ms" "$(json "$dir/flow.json" server_cpu_ms_per_op) / $(json "$dir/flow.json" database_cpu_ms_per_op)"
row "  reply-path round trips per flow (target <= 3: PIN 2, answer 1)" "$(ratio "$statements" "$completed")" "$statements statements for $completed flows (pg_stat_statements)"
row "  PIN step p50 / answer step p50, ms" "$(step "$dir/flow.json" "first reply" p50_ms) / $(step "$dir/flow.json" answer p50_ms)"
# PostgreSQL's cost of one statement on this machine: pgbench runs the cheapest transaction
# that locks or writes a row (one row, by index) with the same durable settings. A flow alone
# would commit three such transactions (three times this); under load the store threads put
# the logins, starts and answers that queued beside each other in one statement, so a flow
# pays a share of one (the round trips per flow above).
pg_cpu_ticks() { { awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat"
  for p in $(pgrep -P "$postmaster"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done; } | awk '{s += $1} END {print s}'; }
printf '\\set i random(0, %d)\nUPDATE tokens SET pending = pending WHERE user_name = %s || lpad(:i::text, 6, %s);\n' \
  "$((pg_users - 1))" "'bench-'" "'0'" > "$work/one_row.sql"
ticks_before=$(pg_cpu_ticks)
one_row=$("$pg_bin/pgbench" -n -M prepared -c 8 -j 1 -T "$seconds" -h 127.0.0.1 -p "$pg_port" -U otpgate -f "$work/one_row.sql" one 2>&1)
sleep 0.3
ticks_after=$(pg_cpu_ticks)
one_row_txns=$(echo "$one_row" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
one_row_us=$(python3 -c "import sys; print(round((int(sys.argv[2]) - int(sys.argv[1])) * 1e6 / int(sys.argv[4]) / int(sys.argv[3]), 1))" "$ticks_before" "$ticks_after" "$one_row_txns" "$(getconf CLK_TCK)")
row "  PostgreSQL CPU per one-row write transaction (pgbench), us; x3, ms" "$one_row_us" "$(python3 -c "import sys; print(round(3 * float(sys.argv[1]) / 1000, 2))" "$one_row_us") ms: three statements of a flow alone, against the flow's $(json "$dir/flow.json" database_cpu_ms_per_op) ms in batches"

# Two nodes on one database: the PIN step on node 1, the answer on node 2.
"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U otpgate two
dir1=$work/pg-node1; dir2=$work/pg-node2; mkdir -p "$dir1" "$dir2"; port1=$(free_port); port2=$(free_port)
pg_config "$dir1" "$port1" two node-1
pg_config "$dir2" "$port2" two node-2
enroll "$dir1" "$pg_users"
cp "$dir1/otpgate.key" "$dir2/otpgate.key"
start "$dir1"; pid1=$otpgate_pid
start "$dir2"; pid2=$otpgate_pid
flow_run "$dir1/flow.json" "127.0.0.1:$port1" "127.0.0.1:$port2" "$pid1" "$pid2"
stop "$pid1"; stop "$pid2"
row "Full flows/s, PostgreSQL, two nodes, step 1 on node 1, step 2 on node 2" "$(json "$dir1/flow.json" ops_per_second)" "errors $(json "$dir1/flow.json" errors), timeouts $(json "$dir1/flow.json" timeouts); vs SQLite $(ratio "$(json "$dir1/flow.json" ops_per_second)" "$sqlite_rate")"
row "  otpgate CPU per flow (both nodes), ms / PostgreSQL, ms" "$(json "$dir1/flow.json" server_cpu_ms_per_op) / $(json "$dir1/flow.json" database_cpu_ms_per_op)"
stop_pg
fi

# ---- RadSec: Status-Server over TLS, otpgate vs FreeRADIUS; full flows over TLS vs UDP ----
if wanted radsec; then
dir=$work/radsec; mkdir -p "$dir"; port=$(free_port); tls_port=$(free_port)
# A test CA, the server's certificate (localhost, 127.0.0.1) and the bench NAS's, made with
# the README's openssl commands.
make_certificate() { # NAME SUBJECT_ALT_NAMES
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
    -keyout "$dir/$1.key" -out "$dir/$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" > "$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 30 -extfile "$dir/$1.ext" -out "$dir/$1.pem" 2>/dev/null
  chmod 600 "$dir/$1.key"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=bench CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
make_certificate localhost "DNS:localhost,IP:127.0.0.1"
make_certificate nas1.example.org "DNS:nas1.example.org"
tls=(--tls --cert "$dir/nas1.example.org.pem" --key "$dir/nas1.example.org.key" --ca "$dir/ca.pem")
write_config "$dir" "$port" 8 1
cat >> "$dir/otpgate.toml" <<TOML

[radsec]
listen = ["127.0.0.1:$tls_port"]
cert_file = "$dir/localhost.pem"
key_file = "$dir/localhost.key"
client_ca_file = "$dir/ca.pem"

[[client]]
name = "bench-radsec"
tls_names = ["nas1.example.org"]
TOML
users=$([ "$quick" = 1 ] && echo 200 || echo 1000)
enroll "$dir" "$users"
start "$dir"
"$bench" status --server "127.0.0.1:$tls_port" --secret radsec "${tls[@]}" --concurrency 64 --duration "${seconds}s" --pid "$otpgate_pid" --json > "$dir/otpgate-status.json"
"$bench" status --server "127.0.0.1:$tls_port" --secret radsec "${tls[@]}" --alpn radius/1.1 --concurrency 64 --duration "${seconds}s" --json > "$dir/otpgate-status-1.1.json"
"$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users "$users" --capture "127.0.0.1:$capture_port" \
  --concurrency 64 --duration "${seconds}s" --json > "$dir/flow-udp.json"
"$bench" flow --server "127.0.0.1:$tls_port" --secret radsec "${tls[@]}" --users "$users" --capture "127.0.0.1:$capture_port" \
  --concurrency 64 --duration "${seconds}s" --json > "$dir/flow-tls.json"
"$bench" flow --server "127.0.0.1:$tls_port" --secret radsec "${tls[@]}" --alpn radius/1.1 --users "$users" \
  --capture "127.0.0.1:$capture_port" --concurrency 64 --duration "${seconds}s" --json > "$dir/flow-1.1.json"
stop "$otpgate_pid"

fr=$work/freeradius-radsec; mkdir -p "$fr"; fr_port=$(free_port)
freeradius_status "$fr" "$fr_port" "clients radsec {
    client bench {
        ipaddr = 127.0.0.1
        proto = tls
        secret = radsec
        # The default is 16 connections per client; the bench opens one per worker.
        limit {
            max_connections = 256
            lifetime = 0
            idle_timeout = 0
        }
    }
}" "        proto = tcp
        clients = radsec
        limit {
            max_connections = 256
            lifetime = 0
            idle_timeout = 0
        }
        tls {
            certificate_file = $dir/localhost.pem
            private_key_file = $dir/localhost.key
            ca_file = $dir/ca.pem
            require_client_cert = yes
            fragment_size = 8192
            check_crl = no
            tls_min_version = \"1.2\"
        }" --secret radsec "${tls[@]}"
"$bench" status --server "127.0.0.1:$fr_port" --secret radsec "${tls[@]}" --concurrency 64 --duration "${seconds}s" --pid "$fr_pid" --json > "$dir/freeradius-status.json"
stop "$fr_pid"
o=$(json "$dir/otpgate-status.json" ops_per_second); f=$(json "$dir/freeradius-status.json" ops_per_second)
row "RadSec Status-Server replies/s, otpgate" "$o" "errors $(json "$dir/otpgate-status.json" errors), timeouts $(json "$dir/otpgate-status.json" timeouts)"
row "  same over RADIUS/1.1" "$(json "$dir/otpgate-status-1.1.json" ops_per_second)"
row "RadSec Status-Server replies/s, FreeRADIUS 3.2" "$f" "errors $(json "$dir/freeradius-status.json" errors), timeouts $(json "$dir/freeradius-status.json" timeouts)"
row "  ratio otpgate / FreeRADIUS (target >= 1.5)" "$(ratio "$o" "$f")"
u=$(json "$dir/flow-udp.json" ops_per_second); t=$(json "$dir/flow-tls.json" ops_per_second)
row "Full flows/s, cheap hash, UDP" "$u" "errors $(json "$dir/flow-udp.json" errors), timeouts $(json "$dir/flow-udp.json" timeouts)"
row "Full flows/s, cheap hash, RadSec" "$t" "errors $(json "$dir/flow-tls.json" errors), timeouts $(json "$dir/flow-tls.json" timeouts)"
row "  ratio RadSec / UDP (target >= 0.8)" "$(ratio "$t" "$u")"
row "Full flows/s, cheap hash, RADIUS/1.1" "$(json "$dir/flow-1.1.json" ops_per_second)" "errors $(json "$dir/flow-1.1.json" errors), timeouts $(json "$dir/flow-1.1.json" timeouts)"
fi

# ---- Full flows with the directory password (first_factor = "directory") -----------------
# slapd of its own on loopback (plain ldap:// with allow_insecure: connections are pooled,
# so TLS would be a per-connection cost), the bench users with their PIN as directory
# password and their phone as mobile; tokens enrolled as in the other sections. slapd's CPU
# per flow is the directory's share.
if wanted directory; then
if [ ! -x /usr/sbin/slapd ] || ! command -v ldapadd >/dev/null; then
  row "Full flows/s, first_factor = directory" "skipped" "(needs Debian's slapd and ldap-utils)"
else
dir=$work/directory; mkdir -p "$dir/ldap/data"; port=$(free_port); ldap_port=$(free_port)
cat > "$dir/ldap/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $dir/ldap/slapd.pid
database mdb
suffix "dc=bench,dc=org"
rootdn "cn=admin,dc=bench,dc=org"
rootpw admin-secret
directory $dir/ldap/data
maxsize 104857600
EOF
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  ldap_user=$(id -u openldap >/dev/null 2>&1 && echo openldap || echo nobody)
  # slapd drops root before it opens its files: it must be able to pass through to them.
  chown -R "$ldap_user" "$dir/ldap"; chmod o+x "$work" "$dir"; run_as=(-u "$ldap_user")
fi
/usr/sbin/slapd -d 0 -h "ldap://127.0.0.1:$ldap_port/" -f "$dir/ldap/slapd.conf" "${run_as[@]}" 2>"$dir/slapd.log" &
slapd_pid=$!; pids+=("$slapd_pid")
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $ldap_port), 0.1)" 2>/dev/null && break
  sleep 0.05
done
users=$([ "$quick" = 1 ] && echo 64 || echo 400)
python3 -c '
import sys
print("dn: dc=bench,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: bench\ndc: bench\n")
print("dn: ou=people,dc=bench,dc=org\nobjectClass: organizationalUnit\nou: people\n")
print("dn: cn=otpgate,dc=bench,dc=org\nobjectClass: person\ncn: otpgate\nsn: service\nuserPassword: service-secret\n")
for i in range(int(sys.argv[1])):
    print(f"dn: uid=bench-{i:06},ou=people,dc=bench,dc=org\nobjectClass: inetOrgPerson\nuid: bench-{i:06}\n"
          f"cn: bench {i}\nsn: bench\nmobile: +49150{i:08}\nuserPassword: 4711\n")
' "$users" > "$dir/users.ldif"
ldapadd -x -H "ldap://127.0.0.1:$ldap_port" -D "cn=admin,dc=bench,dc=org" -w admin-secret -f "$dir/users.ldif" >/dev/null
echo service-secret > "$dir/ldap-password"
write_config "$dir" "$port" 8 1
sed -i 's/^name = "bench"$/name = "bench"\nfirst_factor = "directory"/' "$dir/otpgate.toml"
cat >> "$dir/otpgate.toml" <<EOF

[directory]
urls = ["ldap://127.0.0.1:$ldap_port"]
starttls = false
allow_insecure = true
bind_dn = "cn=otpgate,dc=bench,dc=org"
bind_password_file = "$dir/ldap-password"
base_dn = "ou=people,dc=bench,dc=org"
pool_size = 16
EOF
enroll "$dir" "$users"
start "$dir"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
slapd_before=$(cpu_ticks "$slapd_pid")
"$bench" flow --server "127.0.0.1:$port" --secret "$secret" --users "$users" --capture "127.0.0.1:$capture_port" \
  --concurrency 32 --duration "${seconds}s" --timeout 20s --pid "$otpgate_pid" --json > "$dir/flow.json"
slapd_after=$(cpu_ticks "$slapd_pid")
stop "$otpgate_pid"; stop "$slapd_pid"
directory_flows=$(json "$dir/flow.json" ops_per_second)
slapd_ms=$(python3 -c "print(round(($slapd_after - $slapd_before) * 1000 / $(getconf CLK_TCK) / max(1, $(json "$dir/flow.json" completed)), 3))")
otpgate_ms=$(json "$dir/flow.json" server_cpu_ms_per_op)
row "Full flows/s, first_factor = directory (local slapd)" "$directory_flows" "errors $(json "$dir/flow.json" errors), timeouts $(json "$dir/flow.json" timeouts), dropped overloaded $(dropped_overloaded "$dir")"
if [ -n "${flows:-}" ]; then
  row "  ratio to full flows/s with the default PIN hash" "$(ratio "$directory_flows" "$flows")" "(PIN: $flows flows/s in this run)"
fi
row "  CPU per flow, ms: otpgate / slapd" "$otpgate_ms / $slapd_ms" "the directory's share $(python3 -c "print(round($slapd_ms / max(0.001, $slapd_ms + $otpgate_ms), 2))")"
row "  password step p50 / p99, ms" "$(step "$dir/flow.json" "first reply" p50_ms) / $(step "$dir/flow.json" "first reply" p99_ms)"
fi
fi

echo
echo "otpgate benchmark ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), ${seconds}s per step)"
printf '%s\n' "${results[@]}"
