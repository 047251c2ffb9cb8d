#!/usr/bin/env bash
# Measures the dashboard at 100,000 devices (issue 11): the device table (first page, filtered,
# deep in the keyset order), the rollout view and its live JSON, the rollout preview and the
# overview, each as the time otterd takes to answer (curl's time_total over loopback, median
# and p95 of BENCH_REPEAT requests). The fleet is seeded straight into SQLite (devices, tags,
# events, one rollout with a deployment per device), so seeding takes seconds, not hours.
# Prints a markdown table; bench/README.md ("Dashboard at 100,000 devices") records it.
# BENCH_PROFILE=release measures a release build (default: the debug build the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${BENCH_DEVICES:-100000}
REPEAT=${BENCH_REPEAT:-20}
PROFILE=${BENCH_PROFILE:-debug}

command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3 >/dev/null; }
if [ "$PROFILE" = release ]; then cargo build --release --bins -q; BIN="$PWD/target/release"
else cargo build --bins -q; BIN="$PWD/target/debug"; fi
WORK=$(mktemp -d)
cleanup() { kill "${OTTERD_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

OTTER_POLL_INTERVAL_S=3600 OTTER_MAX_IN_FLIGHT=100000 RUST_LOG=error \
  OTTER_DASHBOARD_SECURE_COOKIES=false \
  "$BIN/otterd" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 >"$WORK/otterd.out" 2>"$WORK/otterd.err" &
OTTERD_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/otterd.out" 2>/dev/null && break; sleep 0.1; done
export OTTER_SERVER=$(sed -n 's/^otterd listening on //p' "$WORK/otterd.out")
export OTTER_TOKEN=$(cat "$WORK/data/initial-admin-token")
DB="$WORK/data/otter.db"
[ -f "$DB" ] || DB=$(ls "$WORK"/data/*.db | head -1)

"$BIN/otter" keygen --out "$WORK/release.key" >/dev/null
"$BIN/otter" product create fleet --chip esp32 --json >/dev/null
"$BIN/otter" product key add fleet --pub "$WORK/release.pub.pem" >/dev/null
for v in 1.0.0 2.0.0; do
  "$BIN/otter" dev synth-image --chip esp32 --version $v --size 200000 --out "$WORK/fw-$v.bin" >/dev/null
  "$BIN/otter" release push "$WORK/fw-$v.bin" --product fleet --channel stable --key "$WORK/release.key" --json >"$WORK/rel-$v.json"
done
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
OLD_SHA=$(json "$WORK/rel-1.0.0.json" sha256)
NEW_ID=$(json "$WORK/rel-2.0.0.json" id)
NOW=$(date +%s)

# --- the fleet: devices (10 % on 2.0.0, 2 % failed), tags (1 % lab, 20 % site:berlin), events
sqlite3 "$DB" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $DEVICES)
INSERT INTO devices (id, product_id, hardware_id, channel, token_hash, chip, version,
    security_counter, image_sha256, partition_size, last_state, last_reason, enrolled_at, last_seen_at)
SELECT printf('dev_%032x', i), (SELECT id FROM products WHERE name = 'fleet'), printf('hw-%06d', i),
    'stable', printf('%064x', i), 'esp32', CASE WHEN i % 10 = 0 THEN '2.0.0' ELSE '1.0.0' END, 0,
    '$OLD_SHA', 1572864, CASE WHEN i % 50 = 0 THEN 'failure' ELSE 'success' END,
    CASE WHEN i % 50 = 0 THEN 'bench: planted failure' END,
    $NOW - 8640000 + i, $NOW - (i * 7) % 10800
FROM n;
INSERT INTO device_tags (device_id, tag) SELECT id, 'lab' FROM devices WHERE CAST(substr(hardware_id, 4) AS INTEGER) % 100 = 0;
INSERT INTO device_tags (device_id, tag) SELECT id, 'site:berlin' FROM devices WHERE CAST(substr(hardware_id, 4) AS INTEGER) % 5 = 1;
INSERT INTO device_events (device_id, at, release_id, state, reason)
SELECT id, last_seen_at, NULL, 'failure', 'bench: planted failure' FROM devices WHERE last_state = 'failure';
COMMIT;
SQL

# --- one rollout of 2.0.0 to the channel, with a deployment for every device ------------------
ROLLOUT=$(curl -sf -X POST "$OTTER_SERVER/api/v1/rollouts" -H "authorization: Bearer $OTTER_TOKEN" \
  -H 'content-type: application/json' \
  -d "{\"release_id\":\"$NEW_ID\",\"channel\":\"stable\",\"stages\":\"10,50,100\",\"failure_threshold\":\"50%\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
sqlite3 "$DB" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
INSERT INTO deployments (rollout_id, device_id, release_id, stage, state, active, reason, assigned_at, updated_at, finished_at)
SELECT '$ROLLOUT', id, '$NEW_ID', CAST(substr(hardware_id, 4) AS INTEGER) % 3,
  CASE CAST(substr(hardware_id, 4) AS INTEGER) % 7 WHEN 0 THEN 'downloading' WHEN 1 THEN 'failure' ELSE 'success' END,
  CAST(substr(hardware_id, 4) AS INTEGER) % 7 = 0, NULL, $NOW - 3600, $NOW - 60,
  CASE WHEN CAST(substr(hardware_id, 4) AS INTEGER) % 7 = 0 THEN NULL ELSE $NOW - 60 END
FROM devices;
SQL
# Pause it, so its thresholds are not judged against the planted figures during the run.
curl -sf -o /dev/null -X POST "$OTTER_SERVER/api/v1/rollouts/$ROLLOUT/pause" -H "authorization: Bearer $OTTER_TOKEN"

# --- a signed-in session for the pages -----------------------------------------------------------
# A person made through the API, with a session written beside the server's own (its cookie
# value is random; the database keeps its SHA-256 only, as for any session).
curl -sf -o /dev/null -X POST "$OTTER_SERVER/api/v1/people" -H "authorization: Bearer $OTTER_TOKEN" \
  -H 'content-type: application/json' -d '{"name":"bench","role":"admin"}'
SESSION=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
SESSION_HASH=$(printf '%s' "$SESSION" | sha256sum | cut -d' ' -f1)
sqlite3 "$DB" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
UPDATE people SET must_change_password = FALSE WHERE name = 'bench';
INSERT INTO sessions (id_hash, person_id, csrf, created_at, last_seen_at, expires_at)
SELECT '$SESSION_HASH', id, 'bench-csrf', $NOW, $NOW + 100000, $NOW + 100000 FROM people WHERE name = 'bench';
SQL
COOKIE="otter_session=$SESSION"

# A cursor deep in the table: after the device enrolled at position DEVICES/2.
DEEP=$(python3 -c 'import base64,sys; print(base64.urlsafe_b64encode(("devices\x1f%d\x1fdev_%032x" % (int(sys.argv[1]) - 8640000 + int(sys.argv[2]) // 2, int(sys.argv[2]) // 2)).encode()).decode().rstrip("="))' "$NOW" "$DEVICES")

# time_total of REPEAT requests: "median p95" in milliseconds; stops on any answer but 200.
measure() {
  local auth=("$@")
  : >"$WORK/times"
  for _ in $(seq "$REPEAT"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "${auth[@]}" >>"$WORK/times"
  done
  python3 - "$WORK/times" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
bad = [r for r in rows if r[0] != "200"]
if bad:
    sys.exit(f"answered {bad[0][0]}, not 200")
t = sorted(float(r[1]) * 1000 for r in rows)
print(f"{t[len(t) // 2]:.1f} {t[min(len(t) - 1, int(len(t) * 0.95))]:.1f}")
PY
}
API=(-H "authorization: Bearer $OTTER_TOKEN")
UI=(-H "cookie: $COOKIE")
echo "| what ($DEVICES devices, $PROFILE build) | median ms | p95 ms |"
echo "|---|---:|---:|"
row() { local name=$1; shift; read -r med p95 < <(measure "$@"); echo "| $name | $med | $p95 |"; }
row "API device list, first page of 50" "${API[@]}" "$OTTER_SERVER/api/v1/devices?limit=50"
row "API device list, tag=lab (1 %)" "${API[@]}" "$OTTER_SERVER/api/v1/devices?limit=50&tag=lab"
row "API device list, page at device 50,000" "${API[@]}" "$OTTER_SERVER/api/v1/devices?limit=50&cursor=$DEEP"
row "API rollout (per-stage counts over $DEVICES deployments)" "${API[@]}" "$OTTER_SERVER/api/v1/rollouts/$ROLLOUT"
row "API rollout preview, channel (all devices)" "${API[@]}" "$OTTER_SERVER/api/v1/rollouts/preview?release_id=$NEW_ID&channel=stable&stages=10,50,100"
row "API rollout preview, tag=lab (1 %)" "${API[@]}" "$OTTER_SERVER/api/v1/rollouts/preview?release_id=$NEW_ID&tag=lab&stages=10,50,100"
if [ -n "$COOKIE" ]; then
  row "page: overview" "${UI[@]}" "$OTTER_SERVER/ui/"
  row "page: devices, first page" "${UI[@]}" "$OTTER_SERVER/ui/devices"
  row "page: devices, tag=site:berlin, version=2.0.0" "${UI[@]}" "$OTTER_SERVER/ui/devices?tag=site:berlin&version=2.0.0"
  row "page: devices, seen within 1 h" "${UI[@]}" "$OTTER_SERVER/ui/devices?seen=%3C1h"
  row "page: devices, at device 50,000" "${UI[@]}" "$OTTER_SERVER/ui/devices?cursor=$DEEP"
  row "page: rollout view" "${UI[@]}" "$OTTER_SERVER/ui/rollouts/$ROLLOUT"
  row "live view JSON (polled every 2 s)" "${UI[@]}" "$OTTER_SERVER/ui/rollouts/$ROLLOUT/progress.json"
  row "page: release (devices running it)" "${UI[@]}" "$OTTER_SERVER/ui/releases/$NEW_ID"
fi
