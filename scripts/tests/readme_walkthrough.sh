#!/usr/bin/env bash
# Acceptance test (issue 8): the README's walkthrough, "From a fresh clone to a device that updates
# itself", followed as written on a fresh clone of this repository. The sh blocks between the
# README's walkthrough markers run unchanged but for two things a test has to choose: the port
# (127.0.0.1:8080 becomes a free port) and the two images under firmware/, which are the real
# MicroPython ESP32 pair from ../shared/firmware/p2-esp32-mpy-st7789-patch when that folder is
# there (CI has it), and images made with `otter dev synth-image` otherwise (said on the output).
# The clone's target/ is this repository's, so `cargo build --bins` only relinks.
# Passes when the device ends in state "success" on the new release.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git clone -q "$REPO" "$work/otter"
ln -s "$REPO/target" "$work/otter/target"
mkdir "$work/otter/firmware"
pair="$REPO/../shared/firmware/p2-esp32-mpy-st7789-patch"
if [ -f "$pair/old.bin" ] && [ -f "$pair/new.bin" ]; then
  cp "$pair/old.bin" "$pair/new.bin" "$work/otter/firmware/"
  echo "readme_walkthrough: with the real MicroPython ESP32 pair ($pair)"
else
  echo "readme_walkthrough: $pair is absent; with synthetic images (otter dev synth-image)"
  cargo build -q --bins --manifest-path "$REPO/Cargo.toml"
  "$REPO/target/debug/otter" dev synth-image --chip esp32 --version 1.0.0 --out "$work/otter/firmware/old.bin" >/dev/null
  "$REPO/target/debug/otter" dev synth-image --chip esp32 --version 1.20.1 --out "$work/otter/firmware/new.bin" >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
blocks=$(awk '/<!-- walkthrough:/{on=1; next} /<!-- walkthrough end -->/{on=0} on && /^```sh/{inb=1; next} on && /^```/{inb=0; next} inb' "$REPO/README.md")
[ -n "$blocks" ] || { echo "FAIL: no walkthrough blocks found in README.md" >&2; exit 1; }
{
  echo 'set -euo pipefail'
  echo 'trap '\''kill $(jobs -p) 2>/dev/null || true'\'' EXIT'
  printf '%s\n' "$blocks" | sed "s/127\.0\.0\.1:8080/127.0.0.1:$port/g"
  cat <<'CHECK'
otter --json device list > devices.json
python3 - <<'PY'
import json
devices = json.load(open("devices.json"))["devices"]
assert len(devices) == 1, devices
d = devices[0]
assert d["hardware_id"] == "24:6f:28:aa:bb:cc", d
assert d["last_state"] == "success", f"the device did not report success: {d}"
print(f"readme_walkthrough: device {d['id']} reports success ({d.get('version') or 'unknown'} running)")
PY
CHECK
} > "$work/walkthrough.sh"

cd "$work/otter"
if ! timeout 900 bash "$work/walkthrough.sh" > "$work/log" 2>&1; then
  echo "FAIL: the README walkthrough did not reach success; its output:" >&2
  tail -n 60 "$work/log" >&2
  exit 1
fi
grep '^readme_walkthrough:' "$work/log"
