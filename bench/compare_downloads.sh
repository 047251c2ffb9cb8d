#!/usr/bin/env bash
# Download throughput of two otterd builds and of nginx's sendfile in one run: the same 1.7 MB
# image, each server in turn on core 0, wrk on core 1, two rounds. Use it to measure a change of
# the download path against the build before it:
#   bash bench/compare_downloads.sh OLD_BIN_DIR NEW_BIN_DIR   (directories holding otterd, otter)
# DUR (seconds per measurement) and CONNS (connections) change the load. Needs nginx and wrk.
set -euo pipefail
OLD=${1:?usage: compare_downloads.sh OLD_BIN_DIR NEW_BIN_DIR}
NEW=${2:?usage: compare_downloads.sh OLD_BIN_DIR NEW_BIN_DIR}
for p in nginx wrk; do
  command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || { apt-get update -qq && apt-get install -y -qq "$p" >/dev/null; }
done
DUR=${DUR:-8}; CONNS=${CONNS:-32}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
start() { # name bindir -> prints server url and device token into $W/$name.*
  local n=$1 b=$2
  OTTER_POLL_INTERVAL_S=3600 OTTER_MAX_IN_FLIGHT=100000 RUST_LOG=error OTTER_MAX_DOWNLOADS_PER_DEVICE=$CONNS OTTER_MAX_DOWNLOADS=$((CONNS+16)) \
    taskset -c 0 $b/otterd serve --data-dir $W/$n --listen 127.0.0.1:0 >$W/$n.out 2>$W/$n.err &
  for _ in $(seq 100); do grep -q listening $W/$n.out 2>/dev/null && break; sleep 0.1; done
  local S=$(sed -n 's/^otterd listening on //p' $W/$n.out) T=$(cat $W/$n/initial-admin-token)
  export OTTER_SERVER=$S OTTER_TOKEN=$T
  SECRET=$($NEW/otter product create bench --chip esp32 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["enrollment_secret"])')
  $NEW/otter product key add bench --pub $W/k.pub.pem >/dev/null
  $NEW/otter release push $W/fw.bin --product bench --channel stable --key $W/k --json > $W/$n.rel
  local R=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' $W/$n.rel)
  local D=$(curl -sf -X POST $S/device/v1/enroll -H 'content-type: application/json' -d "{\"product\":\"bench\",\"enrollment_secret\":\"$SECRET\",\"hardware_id\":\"b1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["device_token"])')
  echo "wrk.headers[\"Authorization\"] = \"Bearer $D\"" > $W/$n.lua
  echo "$S/device/v1/releases/$R/image" > $W/$n.url
}
$NEW/otter keygen --out $W/k >/dev/null
$NEW/otter dev synth-image --chip esp32 --version 2.0.0 --size 1700000 --out $W/fw.bin >/dev/null
start old "$OLD"; start new "$NEW"
mkdir -p $W/www; cp $W/fw.bin $W/www/image.bin; chmod 755 $W; chmod -R a+rX $W/www
cat > $W/nginx.conf <<NG
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/ngerr error;
events { worker_connections 4096; }
http { access_log off; sendfile on; client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W; uwsgi_temp_path $W; scgi_temp_path $W;
  server { listen 127.0.0.1:18182; root $W/www; } }
NG
taskset -c 0 /usr/sbin/nginx -c $W/nginx.conf -p $W &
sleep 1
m() { taskset -c 1 wrk -t1 -c$CONNS -d${DUR}s --latency "$@" | python3 -c '
import re,sys; t=sys.stdin.read(); m=re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)",t); e=re.search(r"Non-2xx or 3xx responses: (\d+)",t)
print(round(float(m.group(1))*{"B":1,"KB":1024,"MB":1024**2,"GB":1024**3}[m.group(2)]/2**20), "MiB/s", "non2xx="+(e.group(1) if e else "0"))'; }
for round in 1 2; do
  echo "round $round old: $(m -s $W/old.lua $(cat $W/old.url))"
  echo "round $round new: $(m -s $W/new.lua $(cat $W/new.url))"
  echo "round $round nginx: $(m http://127.0.0.1:18182/image.bin)"
done
