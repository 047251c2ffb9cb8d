#!/usr/bin/env bash
# Benchmarks otterd on one core against nginx serving the same bytes on the same core, in one run:
#   1. device check-ins per second (SQLite default: each check-in is a real database write)
#   2. download throughput of a 1.7 MB image
# The load generator (wrk) runs on the other core. Results are ratios to nginx, printed as a
# markdown table; bench/README.md records them. Needs: nginx, wrk (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNECTIONS:-32}

for p in nginx wrk; do
  command -v "$p" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$p" >/dev/null; }
done
command -v nginx >/dev/null || PATH="$PATH:/usr/sbin"
cargo build --release --locked --bins -q
BIN="$PWD/target/release"
WORK=$(mktemp -d)
cleanup() { kill "${OTTERD_PID:-}" "${NGINX_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# --- otterd on core 0, with one product, one 1.7 MB release, one enrolled device ------------
# One device token drives every connection: lift the per-device download limit for it.
OTTER_POLL_INTERVAL_S=3600 OTTER_MAX_IN_FLIGHT=100000 RUST_LOG=error \
  OTTER_MAX_DOWNLOADS_PER_DEVICE=$CONNS OTTER_MAX_DOWNLOADS=$((CONNS + 16)) \
  taskset -c 0 "$BIN/otterd" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/otterd.out" 2>"$WORK/otterd.err" &
OTTERD_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/otterd.out" 2>/dev/null && break; sleep 0.1; done
export OTTER_SERVER=$(sed -n 's/^otterd listening on //p' "$WORK/otterd.out")
export OTTER_TOKEN=$(cat "$WORK/data/initial-admin-token")
"$BIN/otter" keygen --out "$WORK/release.key" >/dev/null
SECRET=$("$BIN/otter" product create bench --chip esp32 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_secret"])')
"$BIN/otter" product key add bench --pub "$WORK/release.pub.pem" >/dev/null
"$BIN/otter" dev synth-image --chip esp32 --version 2.0.0 --size 1700000 --out "$WORK/fw.bin" >/dev/null
"$BIN/otter" release push "$WORK/fw.bin" --product bench --channel stable --key "$WORK/release.key" --json >"$WORK/release.json"
RELEASE_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/release.json")
DEVICE_TOKEN=$(curl -sf -X POST "$OTTER_SERVER/device/v1/enroll" -H 'content-type: application/json' \
  -d "{\"product\":\"bench\",\"enrollment_secret\":\"$SECRET\",\"hardware_id\":\"bench-1\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["device_token"])')
CHECKIN_BODY='{"version":"1.0.0","security_counter":0,"image_sha256":"0000000000000000000000000000000000000000000000000000000000000000","chip":"esp32"}'

# --- nginx on core 0, serving the same bytes as static files ---------------------------------
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
NGINX_PID=$!
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

# wrk on core 1. Prints "requests/s bytes/s".
measure() {
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$@" >"$WORK/wrk.out"
  python3 - "$WORK/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", t)
mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
p99ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, float(m.group(1)) * mult, p99ms, errs.group(1) if errs else 0)
PY
}

read -r O_RPS _ O_P99 O_ERR < <(measure -s "$WORK/checkin.lua" "$OTTER_SERVER/device/v1/checkin")
read -r N_RPS _ N_P99 N_ERR < <(measure http://127.0.0.1:18181/checkin.json)
read -r OD_RPS OD_BPS OD_P99 OD_ERR < <(measure -s "$WORK/auth.lua" "$OTTER_SERVER/device/v1/releases/$RELEASE_ID/image")
read -r ND_RPS ND_BPS ND_P99 ND_ERR < <(measure http://127.0.0.1:18181/image.bin)
if [ "$N_ERR" != 0 ] || [ "$ND_ERR" != 0 ]; then echo "nginx answered non-2xx: $N_ERR $ND_ERR" >&2; exit 1; fi

python3 - "$O_RPS" "$N_RPS" "$O_P99" "$N_P99" "$OD_BPS" "$ND_BPS" "$OD_P99" "$ND_P99" "$O_ERR" "$OD_ERR" "$CONNS" "$DURATION" <<'PY'
import sys
o_rps, n_rps, o_p99, n_p99, od_bps, nd_bps, od_p99, nd_p99 = map(float, sys.argv[1:9])
o_err, od_err, conns, dur = sys.argv[9:13]
mb = 1024 * 1024
print(f"| measurement ({conns} connections, {dur} s, server on 1 core) | otterd | nginx (static file, same bytes) | otterd / nginx |")
print("|---|---|---|---|")
print(f"| device check-ins per second (POST, SQLite write) | {o_rps:,.0f} req/s, p99 {o_p99:.1f} ms | {n_rps:,.0f} req/s, p99 {n_p99:.1f} ms | {o_rps/n_rps:.2f} |")
print(f"| download of a 1.7 MB image | {od_bps/mb:,.0f} MiB/s, p99 {od_p99:.0f} ms | {nd_bps/mb:,.0f} MiB/s, p99 {nd_p99:.0f} ms | {od_bps/nd_bps:.2f} |")
if int(o_err) or int(od_err):
    print(f"\nnon-2xx answers from otterd: check-in {o_err}, download {od_err}")
PY
