#!/usr/bin/env bash
# Benchmarks otterd on one core against nginx serving the same bytes on the same core, in one run:
#   1. device check-ins per second, one device (SQLite default: each check-in a database write)
#   2. download throughput of a 1.7 MB image
#   3. fleet check-ins: 100,000 enrolled devices, a random one per request, an active staged
#      rollout covering half the fleet; on SQLite, then on PostgreSQL started here
#   4. otterd's resident memory: idle with 100,000 devices, and under 1,000 slow downloads
# The load generator (wrk) runs on the other core. Prints a markdown table and writes
# bench/results.json (each ratio); bench/README.md records the runs. Needs nginx, wrk and
# PostgreSQL's server binaries (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNECTIONS:-32}
DEVICES=${BENCH_DEVICES:-100000}
SLOW=${BENCH_SLOW_DOWNLOADS:-1000}
PG_USER=${BENCH_PG_USER:-otter-test}

for p in nginx wrk; do
  command -v "$p" >/dev/null || command -v "/usr/sbin/$p" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq "$p" >/dev/null; }
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
command -v nginx >/dev/null || PATH="$PATH:/usr/sbin"
cargo build --release --locked --bins -q
cargo build --release --locked -p otterd --example seed_fleet -q
BIN="$PWD/target/release"
WORK=$(mktemp -d)
ROWS="$WORK/rows.jsonl"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/pg/data/postmaster.pid" ] &&
    runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
CHECKIN_BODY='{"version":"1.0.0","security_counter":0,"image_sha256":"0000000000000000000000000000000000000000000000000000000000000000","chip":"esp32"}'

# Starts otterd on core 0 in data directory $1 (more settings in the environment); sets
# OTTERD_PID, OTTER_SERVER, OTTER_TOKEN.
start_otterd() {
  OTTER_POLL_INTERVAL_S=3600 OTTER_MAX_IN_FLIGHT=100000 RUST_LOG=error \
    OTTER_MAX_DOWNLOADS_PER_DEVICE=$CONNS OTTER_MAX_DOWNLOADS=$((CONNS + SLOW + 16)) \
    taskset -c 0 "$BIN/otterd" serve --data-dir "$1" --listen 127.0.0.1:0 >"$1.out" 2>"$1.err" &
  OTTERD_PID=$!
  PIDS+=("$OTTERD_PID")
  for _ in $(seq 300); do grep -q listening "$1.out" 2>/dev/null && break; sleep 0.1; done
  OTTER_SERVER=$(sed -n 's/^otterd listening on //p' "$1.out")
  [ -n "$OTTER_SERVER" ] || { cat "$1.err" >&2; exit 1; }
  export OTTER_SERVER
  export OTTER_TOKEN=$(cat "$1/initial-admin-token")
}

# One product, one signed 1.7 MB release (2.0.0 on stable), one enrolled device; sets
# RELEASE_ID, DEVICE_TOKEN.
provision() {
  "$BIN/otter" keygen --out "$WORK/release.key" >/dev/null 2>&1 || true
  SECRET=$("$BIN/otter" product create bench --chip esp32 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_secret"])')
  "$BIN/otter" product key add bench --pub "$WORK/release.pub.pem" >/dev/null
  [ -f "$WORK/fw.bin" ] || "$BIN/otter" dev synth-image --chip esp32 --version 2.0.0 --size 1700000 --out "$WORK/fw.bin" >/dev/null
  "$BIN/otter" release push "$WORK/fw.bin" --product bench --channel stable --key "$WORK/release.key" --json >"$WORK/release.json"
  RELEASE_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/release.json")
  DEVICE_TOKEN=$(curl -sf -X POST "$OTTER_SERVER/device/v1/enroll" -H 'content-type: application/json' \
    -d "{\"product\":\"bench\",\"enrollment_secret\":\"$SECRET\",\"hardware_id\":\"bench-1\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["device_token"])')
}

# The fleet: $DEVICES devices seeded into database $1 through the Database trait, then a
# rollout of the release to the stable channel, stages 50,100 (the first half of the fleet
# open). Writes the answer of an assigned device to $2 (what nginx serves for the fleet rows).
fleet() {
  "$BIN/examples/seed_fleet" "$1" bench "$DEVICES" "$WORK/tokens.txt" >&2
  "$BIN/otter" rollout create --release "$RELEASE_ID" --channel stable --stages 50,100 \
    --failure-threshold 20% --json >/dev/null
  local t
  while read -r t; do
    curl -sf -X POST "$OTTER_SERVER/device/v1/checkin" -H "authorization: Bearer $t" \
      -H 'content-type: application/json' -d "$CHECKIN_BODY" >"$2"
    grep -q '"update":{' "$2" && return 0
  done <"$WORK/tokens.txt"
  echo "no device of the fleet was offered the rollout's release" >&2
  exit 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# wrk on core 1. Appends {"name", "rps", "bps", "p99_ms", "non2xx"} to $ROWS.
measure() {
  local name=$1
  shift
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" >"$WORK/wrk.out"
  python3 - "$WORK/wrk.out" "$name" >>"$ROWS" <<'PY'
import json, re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", t)
mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(json.dumps({"name": sys.argv[2], "rps": rps, "bps": float(m.group(1)) * mult,
                  "p99_ms": p99ms, "non2xx": int(errs.group(1)) if errs else 0}))
PY
}
record() { python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "value": float(sys.argv[2])}))' "$1" "$2" >>"$ROWS"; }

# --- otterd on SQLite ---------------------------------------------------------------------------
start_otterd "$WORK/data"
provision

# --- nginx on core 0, serving the same bytes as static files ------------------------------------
mkdir -p "$WORK/www" "$WORK/nginx"
curl -sf -X POST "$OTTER_SERVER/device/v1/checkin" -H "authorization: Bearer $DEVICE_TOKEN" \
  -H 'content-type: application/json' -d "$CHECKIN_BODY" >"$WORK/www/checkin.json"
cp "$WORK/fw.bin" "$WORK/www/image.bin"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:18181; root $WORK/www; }
}
NGINX
# nginx's worker runs as an unprivileged user: it must be able to read the files.
chmod 755 "$WORK" && chmod -R a+rX "$WORK/www"
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18181/checkin.json && break; sleep 0.1; done
curl -sf -o /dev/null http://127.0.0.1:18181/image.bin || { echo "nginx does not serve the files" >&2; exit 1; }

cat >"$WORK/checkin.lua" <<LUA
wrk.method = "POST"
wrk.body = '$CHECKIN_BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $DEVICE_TOKEN"
LUA
cat >"$WORK/auth.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $DEVICE_TOKEN"
LUA
# Fleet check-ins: each request from a device picked at random among the seeded tokens.
cat >"$WORK/fleet.lua" <<LUA
local tokens = {}
for line in io.lines("$WORK/tokens.txt") do tokens[#tokens + 1] = line end
math.randomseed(os.time())
local body = '$CHECKIN_BODY'
request = function()
  local t = tokens[math.random(#tokens)]
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. t}, body)
end
LUA

measure checkin_one "$OTTER_SERVER/device/v1/checkin" -s "$WORK/checkin.lua"
measure nginx_checkin http://127.0.0.1:18181/checkin.json
measure download "$OTTER_SERVER/device/v1/releases/$RELEASE_ID/image" -s "$WORK/auth.lua"
measure nginx_download http://127.0.0.1:18181/image.bin

fleet "sqlite://$WORK/data/otter.db" "$WORK/www/fleet.json"
chmod a+r "$WORK/www/fleet.json"
sleep 2
record rss_idle_kib "$(rss_kib "$OTTERD_PID")"
measure fleet_sqlite "$OTTER_SERVER/device/v1/checkin" -s "$WORK/fleet.lua"
measure nginx_fleet http://127.0.0.1:18181/fleet.json
sleep 2
record rss_after_fleet_kib "$(rss_kib "$OTTERD_PID")"
read -r SLOW_OUT < <(python3 bench/slow_downloads.py "${OTTER_SERVER#http://}" "$RELEASE_ID" \
  "$WORK/tokens.txt" "$SLOW" 5 "$OTTERD_PID")
echo "slow downloads: $SLOW_OUT" >&2
record rss_slow_downloads_kib "$(sed 's/.*rss_kib=\([0-9]*\).*/\1/' <<<"$SLOW_OUT")"
record slow_downloads_ok "$(sed 's/.*ok=\([0-9]*\).*/\1/' <<<"$SLOW_OUT")"
kill "$OTTERD_PID"
wait "$OTTERD_PID" 2>/dev/null || true

# --- otterd on PostgreSQL, the server started here (pinned to otterd's core) -------------------
# Debian's server binaries run as an unprivileged user in a temporary directory on a free port;
# synchronous_commit=off matches SQLite's synchronous=NORMAL (a crash of the host may lose the
# last commits, never corrupt the database); the rest are PostgreSQL's defaults.
mkdir -p "$WORK/pg"
chown "$PG_USER:" "$WORK/pg"
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo benchpw >"$WORK/pg/pwfile"
chown "$PG_USER:" "$WORK/pg/pwfile"
runuser -u "$PG_USER" -- "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres -E UTF8 \
  --auth-local=trust --auth-host=scram-sha-256 --pwfile="$WORK/pg/pwfile" >/dev/null
runuser -u "$PG_USER" -- taskset -c 0 "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c synchronous_commit=off" start >/dev/null
runuser -u "$PG_USER" -- psql -X -q -h "$WORK/pg" -p "$PG_PORT" -U postgres -c 'CREATE DATABASE otter'
PG_URL="postgres://postgres:benchpw@127.0.0.1:$PG_PORT/otter"
OTTER_DATABASE_URL="$PG_URL" start_otterd "$WORK/data-pg"
provision
fleet "$PG_URL" "$WORK/www/fleet-pg.json"
chmod a+r "$WORK/www/fleet-pg.json"
measure fleet_postgres "$OTTER_SERVER/device/v1/checkin" -s "$WORK/fleet.lua"
measure nginx_fleet_pg http://127.0.0.1:18181/fleet-pg.json

python3 bench/report.py "$ROWS" "$CONNS" "$DURATION" "$DEVICES" "$SLOW" bench/results.json
