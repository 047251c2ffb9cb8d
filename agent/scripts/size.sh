#!/usr/bin/env bash
# Sizes of the portable core, cross-compiled with -Os as it would be for a device:
#   rv32imc (ESP32-C3) with riscv64-unknown-elf-gcc and picolibc,
#   Xtensa lx106 (ESP8266) with xtensa-lx106-elf-gcc and picolibc.
# Prints .text (code and read-only data) / .data / .bss and the worst-case stack of the update
# path (otter_agent_init, otter_agent_poll) from GCC's -fcallgraph-info call graph. Calls through
# the port table are platform code (HTTP client, flash, mbedTLS) and are not counted, as the
# budget says. With --check, fails when the rv32imc build is over budget:
#   .text <= 11 KiB; .data + .bss + worst-case stack <= 5 KiB.
set -euo pipefail
AGENT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$AGENT/../target/agent/size"
CHECK="${1:-}"
rm -rf "$OUT"
mkdir -p "$OUT"
SRCS=(agent codec envelope json)
FLAGS=(-Os -std=c99 -Wall -Wextra -Werror -ffunction-sections -fdata-sections -fstack-usage
       -fcallgraph-info=su -I"$AGENT/include" -I"$AGENT/core")

build() { # name compiler extra-flags...
  local name=$1 cc=$2
  shift 2
  mkdir -p "$OUT/$name"
  for f in "${SRCS[@]}"; do
    (cd "$OUT/$name" && "$cc" "$@" "${FLAGS[@]}" -c "$AGENT/core/$f.c" -o "$f.o")
  done
}
build rv32imc riscv64-unknown-elf-gcc -march=rv32imc -mabi=ilp32 --specs=picolibc.specs
build lx106 xtensa-lx106-elf-gcc -mlongcalls --specs=/usr/lib/xtensa-lx106-elf/picolibc.specs

python3 - "$OUT" "$CHECK" "$AGENT" <<'PY'
import glob, os, re, subprocess, sys
out, check, agent = sys.argv[1], sys.argv[2] == "--check", sys.argv[3]
TEXT_BUDGET, RAM_BUDGET = 11 * 1024, 5 * 1024
SIZE = {"rv32imc": "riscv64-unknown-elf-size", "lx106": "xtensa-lx106-elf-size"}

def stack(d):
    """Worst-case stack from the roots through direct calls (GCC .ci call graphs)."""
    frame, edges = {}, {}
    for ci in glob.glob(f"{d}/*.ci"):
        for line in open(ci):
            m = re.match(r'node: \{ title: "([^"]+)" label: "[^\\]+\\n[^\\]+\\n(\d+) bytes', line)
            if m:
                frame[m.group(1).split(":")[-1]] = int(m.group(2))
            m = re.match(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', line)
            if m:
                edges.setdefault(m.group(1).split(":")[-1], set()).add(m.group(2).split(":")[-1])
    # The only recursion is the JSON scanner's, bounded by OJ_MAX_DEPTH nesting levels: a cycle
    # counts its frames that many times. Any other cycle is an error.
    depth = int(re.search(r"#define OJ_MAX_DEPTH (\d+)", open(f"{agent}/core/otter_internal.h").read()).group(1))
    memo = {}
    def worst(f, seen=()):
        if f in seen:
            cycle = seen[seen.index(f):]
            if not all(c.startswith("scan_") for c in cycle):
                raise SystemExit(f"recursion through {' -> '.join(cycle)}: the stack is unbounded")
            return (depth - 1) * sum(frame.get(c, 0) for c in cycle)
        if f not in memo or any(c.startswith("scan_") for c in seen):
            memo[f] = frame.get(f, 0) + max([worst(c, seen + (f,)) for c in edges.get(f, ())] or [0])
        return memo[f]
    return max(worst("otter_agent_init"), worst("otter_agent_poll"))

rows, failed = [], []
for target in ("rv32imc", "lx106"):
    d = f"{out}/{target}"
    objs = sorted(glob.glob(f"{d}/*.o"))
    total = subprocess.run([SIZE[target], "-t", *objs], capture_output=True, text=True, check=True)
    text, data, bss = map(int, total.stdout.strip().splitlines()[-1].split()[:3])
    st = stack(d)
    ram = data + bss + st
    rows.append((target, text, data, bss, st, ram))
    if target == "rv32imc" and (text > TEXT_BUDGET or ram > RAM_BUDGET):
        failed.append(target)

print("| target (-Os, picolibc) | .text | .data | .bss | worst-case stack | RAM (data+bss+stack) |")
print("|---|---:|---:|---:|---:|---:|")
for t, text, data, bss, st, ram in rows:
    print(f"| {t} | {text} B ({text / 1024:.2f} KiB) | {data} | {bss} | {st} | {ram} B ({ram / 1024:.2f} KiB) |")
print(f"budget (rv32imc): .text <= {TEXT_BUDGET} B, RAM <= {RAM_BUDGET} B")
if check and failed:
    sys.exit(f"size: over budget on {', '.join(failed)}")
PY
