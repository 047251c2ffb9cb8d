#!/usr/bin/env bash
# Builds agent/examples/basic with a real ESP-IDF and its own CMake build:
#
#   bash agent/scripts/check_espidf_build.sh IDF_PATH [TARGET]      (TARGET: esp32c3 by default)
#
# IDF_PATH is an ESP-IDF checkout with its submodules (what `git clone --recursive` gives); the
# IDF_PATH environment variable is used when no argument is given. Without either the check says
# "skipped: no IDF_PATH given" and exits 0. It fetches nothing but Python packages from PyPI.
#
# The toolchain: Espressif's (riscv32-esp-elf-gcc / xtensa-*-elf-gcc on PATH, as after
# `. $IDF_PATH/export.sh`) when present; otherwise, for the RISC-V chips, Debian's
# gcc-riscv64-unknown-elf with libnewlib-dev's headers, wrapped as riscv32-esp-elf-* with
# -march=rv32imc_zicsr_zifencei -mabi=ilp32.
# Python: the interpreter on PATH when it already has ESP-IDF's build modules (kconfgen, ldgen's
# pyparsing, esptool), otherwise a virtual environment made for this ESP-IDF minor version under
# OTTER_IDF_VENV_DIR (default ~/.cache/otter-idf).
#
# Our component (agent/) is compiled with -Wall -Wextra -Werror on top of ESP-IDF's own flags;
# any error or warning in it fails the check. Then every other component is compiled. The app
# is linked when the toolchain can link (Espressif's, with every prebuilt library present);
# otherwise the check stops before linking and says why.
set -euo pipefail

IDF="${1:-${IDF_PATH:-}}"
TARGET="${2:-esp32c3}"
if [ -z "$IDF" ]; then
  echo "check_espidf_build: skipped: no IDF_PATH given (usage: $0 IDF_PATH [TARGET])"
  exit 0
fi
IDF="$(cd "$IDF" && pwd)"
AGENT="$(cd "$(dirname "$0")/.." && pwd)"
EXAMPLE="$AGENT/examples/basic"
fail() { echo "check_espidf_build: FAILED: $*" >&2; exit 1; }
[ -f "$IDF/tools/cmake/project.cmake" ] || fail "$IDF is not an ESP-IDF checkout (no tools/cmake/project.cmake)"

ver_part() { sed -n "s/^set(IDF_VERSION_$1 \([0-9]*\))/\1/p" "$IDF/tools/cmake/version.cmake"; }
IDF_VER="$(ver_part MAJOR).$(ver_part MINOR).$(ver_part PATCH)"
IDF_MINOR="$(ver_part MAJOR).$(ver_part MINOR)"
BUILD="${OTTER_IDF_BUILD_DIR:-$AGENT/../target/agent/idf-build/v$IDF_VER-$TARGET}"
mkdir -p "$BUILD"
BUILD="$(cd "$BUILD" && pwd)"
echo "check_espidf_build: ESP-IDF v$IDF_VER at $IDF, target $TARGET, build in $BUILD"

# Submodules a plain snapshot lacks make the configure step fail obscurely: name them first.
for need in components/mbedtls/mbedtls/include/mbedtls/version.h components/lwip/lwip/src/include/lwip/init.h; do
  [ -f "$IDF/$need" ] || fail "$IDF/$need is missing: the ESP-IDF checkout lacks its submodules (git submodule update --init)"
done

# A snapshot without some submodules: components whose sources are absent are left out (the
# example needs none of them; ESP-IDF refuses to configure with them half there), and prebuilt
# libraries that are absent (components/*/lib) mean nothing can be linked.
absent_src=() absent_blobs=()
while read -r sub; do
  [ -n "$(ls -A "$IDF/$sub" 2>/dev/null)" ] && continue
  comp="${sub#components/}"
  comp="${comp%%/*}"
  case "$sub" in
    */lib | */lib/* | */lib_*) absent_blobs+=("$sub") ;;
    *) case " ${absent_src[*]} " in *" $comp "*) ;; *) absent_src+=("$comp") ;; esac ;;
  esac
done < <(sed -n 's/^[[:space:]]*path = \(components\/.*\)/\1/p' "$IDF/.gitmodules")
COMPONENT_DIRS=""
if [ ${#absent_src[@]} != 0 ]; then
  echo "   left out (sources absent): ${absent_src[*]}"
  mkdir -p "$BUILD/idf-components"
  rm -f "$BUILD/idf-components/"*
  for dir in "$IDF"/components/*/; do
    comp="$(basename "$dir")"
    case " ${absent_src[*]} " in *" $comp "*) continue ;; esac
    ln -s "${dir%/}" "$BUILD/idf-components/$comp"
  done
  COMPONENT_DIRS="$BUILD/idf-components;$EXAMPLE/main;$AGENT"
fi

# --- the toolchain ---------------------------------------------------------------------------
case "$TARGET" in
  esp32c* | esp32h* | esp32p*) prefix=riscv32-esp-elf ;;
  esp32 | esp32s2 | esp32s3) prefix="xtensa-$TARGET-elf" ;;
  *) fail "unknown target $TARGET" ;;
esac
CAN_LINK=1 DEBIAN_TC=0
if [ ${#absent_blobs[@]} != 0 ]; then
  CAN_LINK=0
  echo "   prebuilt libraries absent (no link possible): ${absent_blobs[*]}"
fi
if command -v "$prefix-gcc" >/dev/null; then
  echo "   toolchain: $(command -v "$prefix-gcc") ($("$prefix-gcc" -dumpversion))"
elif [ "$prefix" = riscv32-esp-elf ] && command -v riscv64-unknown-elf-gcc >/dev/null && [ -f /usr/include/newlib/newlib.h ]; then
  # Debian's bare-metal RISC-V GCC, told to build for the ESP32-C/H/P cores. It brings no C library
  # for rv32imc, so it compiles everything but cannot link an app.
  CAN_LINK=0 DEBIAN_TC=1
  TC="$BUILD/toolchain"
  mkdir -p "$TC/bin" "$TC/include"
  # ESP-IDF expects a newlib built with retargetable locks and C99 I/O (Espressif's build of it).
  cat >"$TC/include/newlib.h" <<'EOF'
#include_next <newlib.h>
#ifndef _RETARGETABLE_LOCKING
#define _RETARGETABLE_LOCKING 1
#endif
#ifndef _WANT_IO_C99_FORMATS
#define _WANT_IO_C99_FORMATS 1
#endif
#ifndef _WANT_IO_LONG_LONG
#define _WANT_IO_LONG_LONG 1
#endif
/* newlib 4 names fd_set's member __fds_bits. */
#define fds_bits __fds_bits
EOF
  # Debian's newlib (3.3) declares _global_impure_ptr const; ESP-IDF (newlib 4.x) does not.
  mkdir -p "$TC/include/sys"
  cat >"$TC/include/sys/reent.h" <<'EOF'
#define _global_impure_ptr _global_impure_ptr_newlib3
#include_next <sys/reent.h>
#undef _global_impure_ptr
EOF
  for tool in gcc g++ cpp; do
    # Upstream mbedTLS (a snapshot without Espressif's fork) asks for strict C99, which ESP-IDF's
    # port files added to mbedTLS (inline assembly, static asserts) do not survive: gnu17 instead.
    cat >"$TC/bin/riscv32-esp-elf-$tool" <<EOF
#!/bin/sh
for a; do shift; [ "\$a" = -std=c99 ] && a=-std=gnu17; set -- "\$@" "\$a"; done
exec riscv64-unknown-elf-$tool -march=rv32imc_zicsr_zifencei -mabi=ilp32 "\$@" -isystem "$TC/include" -idirafter /usr/include/newlib
EOF
  done
  for tool in ar ranlib objcopy objdump size nm strip readelf ld as gcc-ar gcc-ranlib gcc-nm addr2line c++filt; do
    ln -sf "$(command -v "riscv64-unknown-elf-$tool")" "$TC/bin/riscv32-esp-elf-$tool"
  done
  chmod +x "$TC/bin/"*
  export PATH="$TC/bin:$PATH"
  echo "   toolchain: Debian's riscv64-unknown-elf-gcc $(riscv64-unknown-elf-gcc -dumpversion) as riscv32-esp-elf-gcc (compile only)"
else
  fail "no $prefix-gcc on PATH (run . \$IDF_PATH/export.sh), nor, for RISC-V chips, Debian's riscv64-unknown-elf-gcc with libnewlib-dev"
fi

# --- Python ----------------------------------------------------------------------------------
# v5.0 runs its own confgen.py (kconfiglib, future); later versions esp-idf-kconfig's kconfgen.
case "$IDF_MINOR" in
  5.0) modules="kconfiglib, future, pyparsing, esptool"
    pins=("kconfiglib==13.7.1" "future" "pyparsing>=3,<3.2" "esptool>=4.5,<5") ;;
  5.1) modules="kconfgen, pyparsing, esptool"
    pins=("esp-idf-kconfig<2" "pyparsing>=3,<3.2" "esptool>=4.7,<5") ;;
  *) modules="kconfgen, pyparsing, esptool"
    pins=("esp-idf-kconfig>=2.5,<3" "pyparsing>=3" "esptool>=4.9,<5") ;;
esac
PY="$(command -v python3 || true)"
if [ -z "$PY" ] || ! "$PY" -c "import $modules" 2>/dev/null; then
  VENV="${OTTER_IDF_VENV_DIR:-$HOME/.cache/otter-idf}/venv-$IDF_MINOR"
  if ! "$VENV/bin/python" -c "import $modules" 2>/dev/null; then
    echo "   python: making $VENV (ESP-IDF v$IDF_MINOR build modules from PyPI)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${pins[@]}" pyelftools pyserial cryptography packaging click setuptools
  fi
  PY="$VENV/bin/python"
fi
echo "   python: $PY"

# --- configure -------------------------------------------------------------------------------
# A throwaway release key and the defaults pointing at it: the check writes nothing into the example.
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl ec -pubout -out "$BUILD/release.pub.pem" 2>/dev/null
printf 'CONFIG_OTTER_TRUSTED_KEYS_FILE="%s"\n' "$BUILD/release.pub.pem" >"$BUILD/sdkconfig.check"
if [ "$DEBIAN_TC" = 1 ]; then
  # Debian's newlib 3.3 has no <dirent.h> for bare metal (Espressif's newlib 4 has): mbedTLS's
  # certificate-directory loader, which needs it, is switched off.
  echo "CONFIG_MBEDTLS_FS_IO=n" >>"$BUILD/sdkconfig.check"
fi
if ! grep -q mbedtls_gcm_context_soft "$IDF/components/mbedtls/mbedtls/include/mbedtls/gcm.h"; then
  # Upstream mbedTLS in place of Espressif's fork: switch off the one option that needs the fork.
  echo "CONFIG_MBEDTLS_GCM_SUPPORT_NON_AES_CIPHER=n" >>"$BUILD/sdkconfig.check"
  echo "   mbedTLS: upstream's, not Espressif's fork (GCM non-AES fallback switched off)"
fi
start=$(date +%s)
cmake_args=(-S "$EXAMPLE" -B "$BUILD" -G Ninja -DIDF_TARGET="$TARGET" -DPYTHON="$PY" -DPYTHON_DEPS_CHECKED=1
  -DSDKCONFIG="$BUILD/sdkconfig" -DSDKCONFIG_DEFAULTS="$EXAMPLE/sdkconfig.defaults;$BUILD/sdkconfig.check"
  -DOTTER_STRICT_WARNINGS=ON)
[ -z "$COMPONENT_DIRS" ] || cmake_args+=("-DCOMPONENT_DIRS=$COMPONENT_DIRS" -DCOMPONENTS=main)
[ "$DEBIAN_TC" = 0 ] || cmake_args+=(-DCMAKE_C_COMPILER_WORKS=1 -DCMAKE_CXX_COMPILER_WORKS=1 -DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY)
rm -f "$BUILD/CMakeCache.txt" "$BUILD/sdkconfig"
if ! IDF_PATH="$IDF" IDF_COMPONENT_MANAGER=0 cmake "${cmake_args[@]}" >"$BUILD/configure.log" 2>&1; then
  tail -40 "$BUILD/configure.log" >&2
  fail "ESP-IDF v$IDF_VER did not configure the example (log: $BUILD/configure.log)"
fi
now=$(date +%s)
echo "   configured in $((now - start)) s"

# --- the partition table ---------------------------------------------------------------------
# ESP-IDF's own gen_esp32part.py checks the example's table (alignment, overlaps, flash size),
# and CONFIG_OTTER_NVS_PARTITION must name a data/nvs partition of three 4 KiB pages at least.
sdk_value() { sed -n "s/^CONFIG_$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$BUILD/sdkconfig"; }
"$PY" "$IDF/components/partition_table/gen_esp32part.py" -q --flash-size "$(sdk_value ESPTOOLPY_FLASHSIZE)" \
  "$EXAMPLE/$(sdk_value PARTITION_TABLE_CUSTOM_FILENAME)" "$BUILD/partitions.bin" ||
  fail "ESP-IDF v$IDF_VER refuses the example's partition table"
nvs_part="$(sdk_value OTTER_NVS_PARTITION)"
"$PY" "$IDF/components/partition_table/gen_esp32part.py" -q "$BUILD/partitions.bin" "$BUILD/partitions.csv"
"$PY" -c '
import sys
units = {"K": 1024, "M": 1048576}
for row in open(sys.argv[1]):
    f = [x.strip() for x in row.split(",")]
    if len(f) > 4 and f[:3] == [sys.argv[2], "data", "nvs"]:
        size = int(f[4][:-1]) * units[f[4][-1]] if f[4][-1] in units else int(f[4], 0)
        sys.exit(0 if size >= 0x3000 else 1)
sys.exit(1)
' "$BUILD/partitions.csv" "$nvs_part" ||
  fail "CONFIG_OTTER_NVS_PARTITION=\"$nvs_part\" is not a data/nvs partition of 0x3000 bytes or more in the example's table"
echo "   partition table: valid for ESP-IDF v$IDF_VER; \"$nvs_part\" (CONFIG_OTTER_NVS_PARTITION) is a data/nvs partition"

# --- our sources, warning-clean --------------------------------------------------------------
# Compiled alone, with the exact commands ESP-IDF generated (compile_commands.json): a failure
# here is ours and nothing else's.
"$PY" -c '
import json, shlex, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].startswith(sys.argv[2] + "/"):
        cmd = e.get("command") or " ".join(shlex.quote(a) for a in e["arguments"])
        print("cd %s && %s" % (shlex.quote(e["directory"]), cmd))
' "$BUILD/compile_commands.json" "$AGENT" >"$BUILD/agent.cmds"
grep -q "port/espidf/otter_port_espidf.c" "$BUILD/agent.cmds" || fail "the example's build does not compile the agent component"
grep "otter_port_espidf.c" "$BUILD/agent.cmds" | grep -q -- "-Wextra .*-Werror" ||
  fail "the agent component is not compiled with -Wall -Wextra -Werror"
: >"$BUILD/agent.log"
# ESP-IDF asks for coloured diagnostics: the log is read without the colour codes. Any warning
# fails the check (ESP-IDF's own flags demote some -Werror classes, e.g. unused variables).
while read -r cmd; do
  sh -c "$cmd" >"$BUILD/agent.one.log" 2>&1 || echo "FAILED: $cmd" >>"$BUILD/agent.log"
  sed 's/\x1b\[[0-9;]*[mK]//g' "$BUILD/agent.one.log" >>"$BUILD/agent.log"
done <"$BUILD/agent.cmds"
if grep -qE ": (fatal error|error|warning):|^FAILED: " "$BUILD/agent.log"; then
  grep -E ": (fatal error|error|warning):" "$BUILD/agent.log" | sed -n 1,40p >&2
  fail "our sources do not compile warning-free against ESP-IDF v$IDF_VER (log: $BUILD/agent.log)"
fi
echo "   our sources: $(wc -l <"$BUILD/agent.cmds") files compiled (component with -Wall -Wextra -Werror), no warning"
objs=$(find "$BUILD/esp-idf/agent" "$BUILD/esp-idf/main" -name '*.obj' | sort)
# shellcheck disable=SC2086
"$prefix-size" $objs | sed "s|$BUILD/esp-idf/||; s|/CMakeFiles/__idf_[a-z]*\.dir||; s/^/     /"

# --- everything else -------------------------------------------------------------------------
libs=$(ninja -C "$BUILD" -t targets all | sed -n 's/^\(esp-idf\/[^:]*\.a\): .*/\1/p' | sort -u)
# shellcheck disable=SC2086
if ! ninja -C "$BUILD" -k 0 $libs >"$BUILD/components.log" 2>&1; then
  sed 's/\x1b\[[0-9;]*[mK]//g' "$BUILD/components.log" | grep -E ": (fatal error|error):" | sed -n 1,10p >&2
  failed=$(grep -c '^FAILED: ' "$BUILD/components.log" || true)
  if [ "$DEBIAN_TC" = 1 ]; then
    # Debian's newlib 3.3 and a snapshot's stand-in submodules are not what Espressif ships:
    # ESP-IDF's own sources are compiled as far as they go, but only ours must be clean.
    echo "   ESP-IDF's own sources: $failed objects did not compile with this stand-in toolchain/snapshot (log: $BUILD/components.log)"
  else
    fail "ESP-IDF's own components did not compile (log: $BUILD/components.log)"
  fi
else
  echo "   every component compiled: $(echo "$libs" | wc -w) libraries"
fi
now=$(date +%s)
echo "   compiled in $((now - start)) s"

if [ "$CAN_LINK" = 1 ]; then
  ninja -C "$BUILD" all >"$BUILD/link.log" 2>&1 || { tail -30 "$BUILD/link.log" >&2; fail "the example did not link (log: $BUILD/link.log)"; }
  app=$(find "$BUILD" -maxdepth 1 -name '*.bin' ! -name 'bootloader*' | sed -n 1p)
  now=$(date +%s)
  echo "   linked: $(basename "$app") $(stat -c %s "$app") bytes, in $((now - start)) s"
else
  echo "   not linked: the toolchain has no C library for $TARGET or prebuilt libraries are absent (see above)"
fi
echo "check_espidf_build: ESP-IDF v$IDF_VER $TARGET: ok"
