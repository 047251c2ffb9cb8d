#!/usr/bin/env bash
# Regression test (issue 8, item 29): scripts/setup.sh must never pip-install into the system's
# Python. Debian's own python3 refuses that with "externally-managed-environment"; this test puts
# a python3 first on PATH that behaves the same way (it refuses `pip install` whenever it is not
# running inside a virtual environment) and checks that setup.sh still succeeds and that the
# tools it installs are the repository venv's.
set -euo pipefail
cd "$(dirname "$0")/../.."
real_python=$(command -v python3)
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
cat > "$fake/python3" <<PY
#!/bin/sh
# Stands in for Debian's python3: a global pip install is refused.
case " \$* " in
  *" -m pip install "*)
    if "$real_python" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
      echo "error: externally-managed-environment" >&2; exit 1
    fi;;
esac
exec "$real_python" "\$@"
PY
chmod +x "$fake/python3"
PATH="$fake:$PATH" bash scripts/setup.sh >/dev/null
for tool in esptool espsecure compote; do
  [ -x ".venv/bin/$tool" ] || { echo "FAIL: $tool is not in the repository's .venv" >&2; exit 1; }
done
.venv/bin/python3 -c "import esptool, idf_component_manager, kconfgen" ||
  { echo "FAIL: the venv lacks the PyPI tools" >&2; exit 1; }
echo "setup_uses_venv: ok (setup.sh installs into .venv; a refusing system python3 is never asked to pip install)"
