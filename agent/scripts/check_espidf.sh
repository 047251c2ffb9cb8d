#!/usr/bin/env bash
# What can be checked of the ESP-IDF side on this host (the real build is the GitHub workflow
# .github/workflows/agent-esp-idf.yml, in Espressif's container):
#   - idf_component.yml with Espressif's idf-component-manager (compote manifest lint);
#   - Kconfig with esp-idf-kconfig's style checker, and kconfgen turns it into sdkconfig.h;
#   - the port compiles (-Wall -Wextra -Werror) against that sdkconfig.h and transcribed ESP-IDF
#     v5.0 and v5.5 API declarations (port/espidf/signatures, NOT ESP-IDF headers), with and
#     without compiled-in keys; every CONFIG_ symbol it uses must come from the Kconfig;
#   - the port's state storage in a dedicated NVS partition, run against a fake NVS
#     (tests/test_espidf_nvs.c).
set -euo pipefail
AGENT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$AGENT/../target/agent/espidf-check"
rm -rf "$OUT"
mkdir -p "$OUT"

command -v compote >/dev/null && python3 -c "import kconfgen" 2>/dev/null ||
  { echo "check_espidf: idf-component-manager and esp-idf-kconfig are missing: run scripts/setup.sh" >&2; exit 2; }

# The files the example's sdkconfig.defaults names (the release key) belong in the project's
# repository: git must not ignore them.
if git -C "$AGENT" rev-parse --git-dir >/dev/null 2>&1; then
  for f in $(sed -n 's/^CONFIG_OTTER_TRUSTED_KEYS_FILE="\(.*\)"/\1/p' "$AGENT/examples/basic/sdkconfig.defaults"); do
    if git -C "$AGENT/examples/basic" check-ignore -q "$f"; then
      echo "check_espidf: examples/basic/$f (named in sdkconfig.defaults) is ignored by git" >&2
      exit 1
    fi
  done
  echo "   examples/basic: the release key sdkconfig.defaults names is not ignored by git"
fi
compote -W manifest lint "$AGENT/idf_component.yml"
# ESP-IDF v6 ships mbedTLS 4, which has no mbedtls/ecdsa.h (issue 8, item 21): while the mbedTLS
# glue includes it, the manifest must not let the component manager pick the agent for v6.
if grep -q 'mbedtls/ecdsa.h' "$AGENT"/port/common/*.c; then
  python3 - "$AGENT/idf_component.yml" <<'PY' || exit 1
import sys, yaml
from idf_component_tools.semver import SimpleSpec, Version
spec = yaml.safe_load(open(sys.argv[1]))["dependencies"]["idf"]
spec = spec["version"] if isinstance(spec, dict) else spec
ok, bad = SimpleSpec(spec).match(Version("5.0.0")), SimpleSpec(spec).match(Version("6.0.0"))
if not ok or bad:
    sys.exit(f"check_espidf: idf_component.yml allows idf {spec!r}: the mbedTLS glue builds on 5.x only (>=5.0,<6.0)")
print(f"   idf_component.yml: idf {spec} (v6 excluded: its mbedTLS has no mbedtls/ecdsa.h)")
PY
fi
echo "   idf_component.yml: valid (idf-component-manager)"
python3 -m kconfcheck "$AGENT/Kconfig" >/dev/null
# The symbols ESP-IDF itself defines, which the component's Kconfig and port rely on.
cat >"$OUT/Kconfig" <<KCONFIG
mainmenu "Otter component check"
config IDF_TARGET
    string
    default "esp32c3"
config IDF_FIRMWARE_CHIP_ID
    hex
    default 0x0005
config MBEDTLS_CERTIFICATE_BUNDLE
    bool
    default y
source "$AGENT/Kconfig"
KCONFIG
python3 -m kconfgen --kconfig "$OUT/Kconfig" --config /dev/null --output header "$OUT/sdkconfig.h" >/dev/null 2>&1
echo "   Kconfig: style ok, sdkconfig.h generated (esp-idf-kconfig)"

# Before and after esp_ota_resume (v5.3.3+, v5.4.2+, v5.5+).
# The port resumes a download across reboots (esp_ota_resume) on every version that has it.
for version in "5 0 0:no" "5 3 2:no" "5 3 3:yes" "5 4 1:no" "5 4 2:yes" "5 5 0:yes"; do
  expect="${version#*:}"
  set -- ${version%:*}
  calls=$(gcc -E -DOTTER_CHECK_IDF_MAJOR="$1" -DOTTER_CHECK_IDF_MINOR="$2" -DOTTER_CHECK_IDF_PATCH="$3" \
    -DOTTER_KCONFIG_KEYS=0 -I"$OUT" -I"$AGENT/port/espidf/signatures" -I"$AGENT/include" -I"$AGENT/port/espidf" \
    -I"$AGENT/port/common" "$AGENT/port/espidf/otter_port_espidf.c" | grep -c "esp_ota_resume(part" || true)
  if { [ "$expect" = yes ] && [ "$calls" = 0 ]; } || { [ "$expect" = no ] && [ "$calls" != 0 ]; }; then
    echo "check_espidf: v$1.$2.$3: esp_ota_resume used: expected $expect, found $calls call(s)" >&2
    exit 1
  fi
done
echo "   ESP-IDF port: resumes across reboots on v5.3.3+, v5.4.2+ and v5.5+ (esp_ota_resume), not before"

for version in "5 0 0" "5 4 1" "5 4 2" "5 5 0"; do
  set -- $version
  for keys in 0 1; do
    gcc -std=gnu99 -fsyntax-only -Wall -Wextra -Werror -DOTTER_CHECK_IDF_MAJOR="$1" -DOTTER_CHECK_IDF_MINOR="$2" \
      -DOTTER_CHECK_IDF_PATCH="$3" \
      -DOTTER_KCONFIG_KEYS="$keys" -I"$OUT" -I"$AGENT/port/espidf/signatures" -I"$AGENT/include" \
      -I"$AGENT/port/espidf" -I"$AGENT/port/common" "$AGENT/port/espidf/otter_port_espidf.c"
  done
  echo "   ESP-IDF port: compiles against the v$1.$2.$3 API declarations, with and without Kconfig keys"
done

# The port's state with a dedicated NVS partition, run on the host against a fake NVS (the port's
# source and the transcribed declarations; tests/test_espidf_nvs.c says what it guards).
mkdir -p "$OUT/nvs"
echo 'CONFIG_OTTER_NVS_PARTITION="otter_nvs"' >"$OUT/nvs/sdkconfig"
python3 -m kconfgen --kconfig "$OUT/Kconfig" --config "$OUT/nvs/sdkconfig" --output header "$OUT/nvs/sdkconfig.h" \
  >/dev/null 2>&1
gcc -std=gnu99 -Wall -Wextra -Werror -g -fsanitize=address,undefined -DOTTER_CHECK_IDF_MAJOR=5 \
  -DOTTER_CHECK_IDF_MINOR=5 -DOTTER_CHECK_IDF_PATCH=0 -DOTTER_KCONFIG_KEYS=0 -I"$OUT/nvs" \
  -I"$AGENT/port/espidf/signatures" -I"$AGENT/include" -I"$AGENT/port/espidf" -I"$AGENT/port/common" \
  -I"$AGENT/tests" -I"$AGENT/port/espidf" -no-pie -Wl,--unresolved-symbols=ignore-all \
  "$AGENT/tests/test_espidf_nvs.c" -o "$OUT/nvs/test_espidf_nvs"
"$OUT/nvs/test_espidf_nvs" >"$OUT/nvs/test.log" 2>&1 || { cat "$OUT/nvs/test.log" >&2; echo "check_espidf: test_espidf_nvs failed" >&2; exit 1; }
echo "   ESP-IDF port: a dedicated NVS partition (fake NVS): $(grep -c '^ok ' "$OUT/nvs/test.log") tests pass"
