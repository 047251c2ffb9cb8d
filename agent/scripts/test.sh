#!/usr/bin/env bash
# The C agent's whole suite, called by the repository's scripts/test.sh:
#   1. host build with -Wall -Wextra -Werror under AddressSanitizer + UBSan, CTest unit tests;
#   2. libFuzzer harnesses (clang) for every parser of server input, OTTER_FUZZ_SECONDS each;
#   3. the ESP-IDF component's manifest, Kconfig and port signatures (scripts/check_espidf.sh), and
#      the example built with a real ESP-IDF when OTTER_IDF_PATH names one (check_espidf_build.sh);
#   4. cross-compiled sizes against the budget (scripts/size.sh);
#   5. end-to-end: the simulator updates itself from a real otterd (needs OTTERD_BIN, OTTER_BIN).
# Builds go to target/agent/ of the repository.
set -euo pipefail
AGENT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$AGENT/../target/agent"
FUZZ_SECONDS="${OTTER_FUZZ_SECONDS:-20}"
mkdir -p "$OUT"
# Python tools (compote, kconfgen) come from the repository's venv that scripts/setup.sh makes.
[ -d "$AGENT/../.venv/bin" ] && export PATH="$AGENT/../.venv/bin:$PATH"

echo "-- agent: host build (gcc, ASan + UBSan) and unit tests"
cmake -S "$AGENT" -B "$OUT/sanitize" -DOTTER_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$OUT/sanitize" -j"$(nproc)"
(cd "$OUT/sanitize" && ctest --output-on-failure)

echo "-- agent: fuzzing, ${FUZZ_SECONDS} s per harness (clang, libFuzzer + ASan + UBSan)"
CC=clang cmake -S "$AGENT" -B "$OUT/fuzz" -DOTTER_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$OUT/fuzz" -j"$(nproc)" --target fuzz_json fuzz_envelope fuzz_checkin
for h in json envelope checkin; do
  corpus="$OUT/fuzz-corpus/$h"
  mkdir -p "$corpus"
  # The corpus grows across runs on one machine; the committed seeds start it on a fresh one.
  "$OUT/fuzz/fuzz_$h" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "$corpus" "$AGENT/fuzz/seeds/$h" \
    >"$OUT/fuzz-$h.log" 2>&1 || { tail -40 "$OUT/fuzz-$h.log"; echo "fuzz_$h found a crash" >&2; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/fuzz-$h.log" | grep -o '[0-9]*$')
  echo "   fuzz_$h: $runs executions, no crash"
done

echo "-- agent: ESP-IDF component checks (manifest, Kconfig, port against the v5 API)"
bash "$AGENT/scripts/check_espidf.sh"

echo "-- agent: the example built with a real ESP-IDF (OTTER_IDF_PATH; scripts/check_espidf_build.sh)"
bash "$AGENT/scripts/check_espidf_build.sh" "${OTTER_IDF_PATH:-}"

echo "-- agent: sizes (rv32imc and Xtensa lx106, -Os, picolibc)"
bash "$AGENT/scripts/size.sh" --check

if [ -n "${OTTERD_BIN:-}" ] && [ -n "${OTTER_BIN:-}" ]; then
  echo "-- agent: end-to-end against otterd (the simulator built with the sanitizers)"
  SIM_BIN="$OUT/sanitize/otter-agent-sim" python3 "$AGENT/e2e/e2e.py" --trials "${OTTER_POWER_TRIALS:-60}"
else
  echo "-- agent: end-to-end skipped: set OTTERD_BIN and OTTER_BIN (scripts/test.sh does)"
fi
