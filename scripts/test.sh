#!/usr/bin/env bash
# Runs every test of the repository: the Rust workspace (unit, property, integration, end-to-end
# with the real binaries), the esptool interop checks, and the C agent's suite (sanitizers, fuzz,
# power-loss, sizes, end-to-end against otterd). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The Python tools (esptool, espsecure, compote, kconfgen) come from the venv setup.sh made.
export PATH="$PWD/.venv/bin:$PATH"

echo "== Scripts: setup.sh installs Python tools into the repository's venv only"
bash scripts/tests/setup_uses_venv.sh
bash scripts/tests/versions_agree.sh

echo "== Rust: build the binaries the end-to-end tests drive"
cargo build --locked --bins

echo "== PlatformIO: the extra script as PlatformIO runs it, pushing to a local otterd; library.json"
.venv/bin/python scripts/tests/platformio_script_test.py

echo "== GitHub Action: its shell steps publish a real image to a local otterd"
python3 scripts/tests/action_steps.py

echo "== GitHub automation: actionlint and the action-metadata schema"
bash scripts/tests/workflow_lint.sh

echo "== Rust: all tests"
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc

echo "== Rust: otterd's integration tests on PostgreSQL with blobs on S3 (one PostgreSQL per test"
echo "   process from Debian's binaries, moto in server mode from .venv)"
OTTER_TEST_DATABASE=postgres OTTER_TEST_BLOBS=s3 cargo test --locked -p otterd --test it

echo "== Dashboard: end-to-end in headless Chromium against a real otterd (tests/browser)"
(cd tests/browser && OTTERD_BIN="$PWD/../../target/debug/otterd" npm test --silent)

echo "== Rust: fuzz targets replay their corpus (stable toolchain)"
if [ -f fuzz/Cargo.toml ]; then
  (cd fuzz && cargo test --locked)
fi

if [ -x agent/scripts/test.sh ]; then
  echo "== Agent (C): unit tests under sanitizers, fuzzing, power loss, sizes, end-to-end"
  OTTERD_BIN="$PWD/target/debug/otterd" OTTER_BIN="$PWD/target/debug/otter" bash agent/scripts/test.sh
fi

echo "== Deployment: Dockerfile (hadolint, its commands run), compose schema, systemd unit, fly.toml"
bash scripts/tests/deploy_files.sh
echo "== Deployment: docs/deploy.md's systemd and nginx paths followed, an image pushed and downloaded"
bash scripts/tests/deploy_paths.sh

echo "== README: the walkthrough on a fresh clone, two images to a device reporting success"
bash scripts/tests/readme_walkthrough.sh

echo "== all tests passed"
