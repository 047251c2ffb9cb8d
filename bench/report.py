"""Turns bench/run.sh's measurements (JSON lines) into the markdown table and results.json.

    python3 bench/report.py ROWS CONNECTIONS DURATION DEVICES SLOW_DOWNLOADS OUT_JSON
"""

import json
import subprocess
import sys
import time

rows_file, conns, dur, devices, slow, out = sys.argv[1:7]
rows = {}
for line in open(rows_file):
    r = json.loads(line)
    rows[r["name"]] = r
for name, r in rows.items():
    if name.startswith("nginx") and r["non2xx"]:
        sys.exit(f"nginx answered non-2xx in {name}: {r['non2xx']}")

MIB = 1024 * 1024
# (key, label, otterd row, nginx row, unit)
PAIRS = [
    ("checkin_one", "check-ins, one device (POST, SQLite write)", "checkin_one", "nginx_checkin", "rps"),
    ("download", "download of a 1.7 MB image", "download", "nginx_download", "bps"),
    ("fleet_sqlite", f"fleet check-ins, {int(devices):,} devices, random device, rollout to half (SQLite)",
     "fleet_sqlite", "nginx_fleet", "rps"),
    ("fleet_postgres", f"fleet check-ins, {int(devices):,} devices, random device, rollout to half (PostgreSQL)",
     "fleet_postgres", "nginx_fleet_pg", "rps"),
]


def show(r, unit):
    if unit == "rps":
        return f"{r['rps']:,.0f} req/s, p99 {r['p99_ms']:.1f} ms"
    return f"{r['bps'] / MIB:,.0f} MiB/s, p99 {r['p99_ms']:.0f} ms"


try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = ""
summary = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "connections": int(conns), "duration_s": int(dur), "devices": int(devices), "results": {}}
print(f"| measurement ({conns} connections, {dur} s, server on 1 core) | otterd | nginx (static file, same bytes) | otterd / nginx |")
print("|---|---|---|---|")
for key, label, o, n, unit in PAIRS:
    if o not in rows or n not in rows:
        continue
    ratio = rows[o][unit] / rows[n][unit]
    print(f"| {label} | {show(rows[o], unit)} | {show(rows[n], unit)} | {ratio:.2f} |")
    summary["results"][key] = {
        "otterd": rows[o][unit], "nginx": rows[n][unit], "unit": "req/s" if unit == "rps" else "bytes/s",
        "otterd_p99_ms": rows[o]["p99_ms"], "nginx_p99_ms": rows[n]["p99_ms"],
        "ratio": round(ratio, 3), "otterd_non2xx": rows[o]["non2xx"],
    }
    if rows[o]["non2xx"]:
        print(f"|   non-2xx answers from otterd in this row: {rows[o]['non2xx']} | | | |")
mem = {k: rows[k]["value"] for k in ("rss_idle_kib", "rss_after_fleet_kib", "rss_slow_downloads_kib", "slow_downloads_ok") if k in rows}
summary["memory"] = mem
print()
if "rss_idle_kib" in mem:
    print(f"otterd RSS: idle with {int(devices):,} devices {mem['rss_idle_kib'] / 1024:.1f} MiB; "
          f"after the fleet run {mem.get('rss_after_fleet_kib', 0) / 1024:.1f} MiB; "
          f"under {slow} slow downloads {mem.get('rss_slow_downloads_kib', 0) / 1024:.1f} MiB "
          f"({int(mem.get('slow_downloads_ok', 0))} answered 200)")
with open(out, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
