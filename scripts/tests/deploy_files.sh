#!/usr/bin/env bash
# Acceptance test (issue 12, Docker and other ways to run it): the deployment files are valid and
# say what the tests run.
#  - .dockerignore: the build context is Cargo.toml, Cargo.lock and crates/ (with the migrations),
#    and the workspace loads from it alone with --locked (no Docker needed to check that).
#  - Dockerfile: hadolint passes (and fails on a copy whose last USER is root: the lint is live);
#    its build command is the one docs/deploy.md states; its ENTRYPOINT/CMD with its ENV is run
#    here with this repository's otterd (data in a temp dir), the initial admin token appears in
#    the data directory, the HEALTHCHECK command passes against it and fails once it stopped, the
#    documented recovery command makes a working admin token; the paas target's start command
#    runs otterd as uid 10001 on a root-owned data directory (when run as root).
#  - deploy/compose.yaml validates against the Compose specification's schema (a copy with a
#    misspelt key does not), and repeats the Dockerfile's environment and health check.
#  - deploy/otterd.service passes `systemd-analyze verify` without a single warning (a copy with a
#    misspelt directive does not) and has the hardening docs/deploy.md promises.
#  - deploy/fly.toml is the block docs/deploy.md shows, with the volume at the data directory.
# Binaries: $OTTER_BIN_DIR, default target/debug (scripts/test.sh builds them first).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
BIN="${OTTER_BIN_DIR:-$REPO/target/debug}"
[ -x "$BIN/otterd" ] || { echo "FAIL: $BIN/otterd is missing (cargo build --bins)" >&2; exit 1; }
for tool in hadolint check-jsonschema systemd-analyze curl python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/setup.sh)" >&2; exit 1; }
done
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# ---- Dockerfile: lint ----
hadolint Dockerfile || fail "hadolint finds problems in the Dockerfile"
{ cat Dockerfile; echo "USER root"; } > "$work/Dockerfile.bad"
if hadolint "$work/Dockerfile.bad" >/dev/null; then fail "hadolint accepts a Dockerfile whose last USER is root"; fi

# ---- .dockerignore: the build context holds the workspace and nothing else ----
# The files `docker build .` would send (git's files filtered by .dockerignore, Docker's rule: the
# last matching pattern wins, a pattern also matches everything under a matching directory).
context_files() { # dockerignore file
  git ls-files | python3 -c '
import fnmatch, sys
rules = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    rules.append((neg, line.lstrip("!").strip("/")))
for path in sys.stdin.read().split("\n"):
    if not path:
        continue
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for neg, pat in rules:
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            excluded = not neg
    if not excluded:
        print(path)' "$1"
}
context_files .dockerignore > "$work/context.txt"
grep -qx crates/otterd/Cargo.toml "$work/context.txt" || fail "the build context lacks crates/"
grep -q '^crates/otterd/migrations/sqlite/.*\.sql$' "$work/context.txt" || fail "the build context lacks the SQLite migrations"
if grep -Ev '^(Cargo\.toml|Cargo\.lock|crates/.*)$' "$work/context.txt"; then fail "the build context holds more than the workspace (above)"; fi
# The workspace resolves from the context alone, with the locked dependency set.
mkdir "$work/context"
(cd "$REPO" && tar -cf - -T "$work/context.txt") | tar -xf - -C "$work/context"
(cd "$work/context" && cargo metadata --locked --offline --format-version 1 >/dev/null) ||
  fail "the workspace does not load from the build context .dockerignore lets through"
grep -v '^!crates/$' .dockerignore > "$work/dockerignore.bad"
if context_files "$work/dockerignore.bad" | grep -q '^crates/'; then fail "the context check is not live"; fi
echo "deploy_files: the build context is the workspace ($(wc -l < "$work/context.txt") files) and it loads with --locked"

# ---- Dockerfile: the commands in it ----
# Parse into "stage  INSTRUCTION  args" lines (continuations joined, comments dropped).
python3 - Dockerfile > "$work/instructions" <<'PY'
import sys
stage, buf = "", ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if not buf and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        buf += line[:-1] + " "
        continue
    line, buf = buf + line, ""
    word, _, rest = line.strip().partition(" ")
    word = word.upper()
    if word == "FROM":
        parts = rest.split()
        stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else "final"
    print(f"{stage}\t{word}\t{' '.join(rest.split())}")
PY
instr() { awk -F'\t' -v s="$1" -v w="$2" '$1==s && $2==w {print $3}' "$work/instructions"; }

build_cmd=$(instr build RUN)
[ "$build_cmd" = "cargo build --release --locked -p otterd" ] ||
  fail "the Dockerfile's build stage runs '$build_cmd', not cargo build --release --locked -p otterd"
grep -qF "\`$build_cmd\`" docs/deploy.md || fail "docs/deploy.md does not state the build command '$build_cmd'"
grep -qF 'docker build -t otterd .' docs/deploy.md || fail "docs/deploy.md lacks 'docker build -t otterd .'"
[ "$(instr runtime USER)" = "10001:10001" ] || fail "the runtime stage does not run as uid 10001"
[ "$(instr runtime EXPOSE)" = "8080" ] || fail "the runtime stage does not expose 8080"
[ "$(instr runtime VOLUME)" = '["/var/lib/otter"]' ] || fail "the runtime stage has no volume at /var/lib/otter"
[ "$(awk -F'\t' '$1=="final" && $2=="FROM" {print $3}' "$work/instructions")" = "runtime" ] ||
  fail "a plain docker build does not produce the runtime stage"

# The JSON-array forms of ENTRYPOINT, CMD and HEALTHCHECK CMD, as argument lists.
json_args() { python3 -c 'import json,sys; [print(a) for a in json.loads(sys.argv[1])]' "$1"; }
mapfile -t entry < <(json_args "$(instr runtime ENTRYPOINT)")
mapfile -t cmd < <(json_args "$(instr runtime CMD)")
health=$(instr runtime HEALTHCHECK)
mapfile -t check < <(json_args "${health#*CMD }")
[ "${check[*]}" = "curl -fsS -o /dev/null http://127.0.0.1:8080/healthz" ] || fail "unexpected HEALTHCHECK: $health"
eval "$(instr runtime ENV | python3 -c '
import shlex, sys
for kv in shlex.split(sys.stdin.read()):
    k, _, v = kv.partition("=")
    print(f"image_{k}={shlex.quote(v)}")')"
[ "$image_OTTER_DATA_DIR" = /var/lib/otter ] && [ "$image_OTTER_LISTEN" = 0.0.0.0:8080 ] ||
  fail "the image's ENV is not OTTER_DATA_DIR=/var/lib/otter OTTER_LISTEN=0.0.0.0:8080"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data="$work/var-lib-otter"
swap_port() { for a in "$@"; do printf '%s\n' "${a//8080/$port}"; done; }
mapfile -t check_here < <(swap_port "${check[@]}")

# Start the image's command (ENTRYPOINT + CMD) with its environment: the data directory and port
# are this test's, the listen host (0.0.0.0) is the image's.
PATH="$BIN:$PATH" OTTER_DATA_DIR="$data" OTTER_LISTEN="${image_OTTER_LISTEN//8080/$port}" \
  "${entry[@]}" "${cmd[@]}" > "$work/otterd.log" 2>&1 &
pids+=($!); server=$!
for _ in $(seq 100); do grep -q "otterd listening" "$work/otterd.log" && break; sleep 0.1; done
grep -q "otterd listening on http://0.0.0.0:$port" "$work/otterd.log" ||
  { cat "$work/otterd.log" >&2; fail "the image's start command did not start otterd on 0.0.0.0"; }
[ -s "$data/initial-admin-token" ] || fail "no initial-admin-token in the data directory"
"${check_here[@]}" || fail "the HEALTHCHECK command fails against a running otterd"

# The documented recovery command, as `docker exec` would run it (the image's PATH and ENV).
recover=$(grep -o 'docker exec otterd otterd admin create-token[^`]*' docs/deploy.md | head -1)
[ "$recover" = "docker exec otterd otterd admin create-token --data-dir /var/lib/otter --name rescue" ] ||
  fail "docs/deploy.md's recovery command is '$recover'"
read -r -a recover_args <<< "${recover#docker exec otterd }"
rescue=$(PATH="$BIN:$PATH" OTTER_DATA_DIR="$data" "${recover_args[@]/\/var\/lib\/otter/$data}" 2>/dev/null)
curl -fsS -H "Authorization: Bearer $rescue" "http://127.0.0.1:$port/api/v1/tokens" >/dev/null ||
  fail "the recovery token does not work against the running server"
kill "$server"; wait "$server" 2>/dev/null || true
if "${check_here[@]}" 2>/dev/null; then fail "the HEALTHCHECK command passes with otterd stopped"; fi
echo "deploy_files: Dockerfile lints, builds with '$build_cmd', starts, is healthy, recovers"

# ---- Dockerfile: the paas target's start command (root-owned volume, as on Fly.io) ----
if [ "$(id -u)" -eq 0 ]; then
  mapfile -t paas_entry < <(json_args "$(instr paas ENTRYPOINT)")
  mapfile -t paas_cmd < <(json_args "$(instr paas CMD)")
  pdata="$work/paas-data"; install -d -o 0 -g 0 -m 0755 "$pdata"
  # Something a root shell (fly ssh console) made in the volume: otterd must be able to write there.
  install -d -o 0 -g 0 -m 0700 "$pdata/blobs"
  PATH="$BIN:$PATH" OTTER_DATA_DIR="$pdata" OTTER_LISTEN="127.0.0.1:$port" \
    "${paas_entry[@]}" "${paas_cmd[@]}" > "$work/paas.log" 2>&1 &
  pids+=($!); paas=$!
  for _ in $(seq 100); do grep -q "otterd listening" "$work/paas.log" && break; sleep 0.1; done
  grep -q "otterd listening" "$work/paas.log" || { cat "$work/paas.log" >&2; fail "the paas start command did not start otterd"; }
  uid=$(awk '/^Uid:/{print $2}' "/proc/$paas/status")
  [ "$uid" = 10001 ] || fail "the paas target runs otterd as uid $uid, not 10001"
  [ "$(stat -c %u:%a "$pdata")" = "10001:700" ] || fail "the paas target left $pdata as $(stat -c %u:%a "$pdata")"
  [ -z "$(find "$pdata" ! -uid 10001)" ] || fail "the paas target left files not uid 10001's: $(find "$pdata" ! -uid 10001)"
  kill "$paas"; wait "$paas" 2>/dev/null || true
  echo "deploy_files: the paas target hands a root-owned volume (and root's files in it) to uid 10001 and runs otterd as it"
else
  echo "deploy_files: not root, so the paas target's chown to uid 10001 is not tried here"
fi

# ---- compose file ----
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml >/dev/null ||
  fail "deploy/compose.yaml does not validate against the Compose specification"
sed 's/^    healthcheck:/    healthchek:/' deploy/compose.yaml > "$work/compose.bad.yaml"
cmp -s deploy/compose.yaml "$work/compose.bad.yaml" && fail "could not make a broken compose file"
if check-jsonschema --builtin-schema vendor.compose-spec "$work/compose.bad.yaml" >/dev/null 2>&1; then
  fail "a compose file with a misspelt key validates: the schema check is not live"
fi
python3 - "$work/instructions" <<'PY' || fail "deploy/compose.yaml and the Dockerfile disagree"
import json, shlex, sys
from ruamel.yaml import YAML  # comes with check-jsonschema
svc = YAML(typ="safe").load(open("deploy/compose.yaml"))["services"]["otterd"]
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
env = dict(kv.split("=", 1) for r in rows if r[:2] == ["runtime", "ENV"] for kv in shlex.split(r[2]))
health = next(r[2] for r in rows if r[:2] == ["runtime", "HEALTHCHECK"])
for k, v in env.items():
    assert svc["environment"].get(k) == v, f"compose sets {k}={svc['environment'].get(k)}, the image {v}"
assert svc["healthcheck"]["test"] == ["CMD"] + json.loads(health.split("CMD ", 1)[1]), svc["healthcheck"]
assert "otter-data:/var/lib/otter" in svc["volumes"], svc["volumes"]
assert svc["build"] == {"context": "..", "dockerfile": "Dockerfile"}, svc["build"]
PY
echo "deploy_files: compose.yaml validates (a misspelt key does not) and matches the image"

# ---- systemd unit ----
unit=deploy/otterd.service
# verify needs ExecStart's binary to exist: point it at this repository's otterd.
mkdir "$work/unit" "$work/unit-bad"
sed "s#^ExecStart=/usr/local/bin/otterd #ExecStart=$BIN/otterd #" "$unit" > "$work/unit/otterd.service"
grep -q "^ExecStart=$BIN/otterd serve$" "$work/unit/otterd.service" || fail "$unit's ExecStart is not /usr/local/bin/otterd serve"
out=$(systemd-analyze verify "$work/unit/otterd.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns about $unit: $out"
sed 's/^NoNewPrivileges=yes/NoNewPrivilege=yes/' "$work/unit/otterd.service" > "$work/unit-bad/otterd.service"
bad=$(systemd-analyze verify "$work/unit-bad/otterd.service" 2>&1 || true)
[ -n "$bad" ] || fail "systemd-analyze verify says nothing about a misspelt directive: the check is not live"
for line in DynamicUser=yes StateDirectory=otter ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes \
    ProtectHome=yes CapabilityBoundingSet= SystemCallFilter=@system-service LimitNOFILE=65536 \
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" Environment=OTTER_DATA_DIR=/var/lib/otter; do
  grep -qxF "$line" "$unit" || fail "$unit lacks the line '$line'"
done
echo "deploy_files: otterd.service verifies without warnings and is hardened"

# ---- fly.toml ----
python3 - <<'PY' || fail "deploy/fly.toml and docs/deploy.md disagree"
import re, tomllib
doc = re.search(r"```toml\n(app = .*?)```", open("docs/deploy.md").read(), re.S).group(1)
text = open("deploy/fly.toml").read()
assert doc in text, "deploy/fly.toml is not the block docs/deploy.md shows"
fly = tomllib.loads(text)
assert fly["build"]["build-target"] == "paas", fly["build"]
assert fly["mounts"][0]["destination"] == fly["env"]["OTTER_DATA_DIR"] == "/var/lib/otter", fly
assert fly["http_service"]["internal_port"] == 8080 and fly["env"]["OTTER_LISTEN"] == "0.0.0.0:8080", fly
assert fly["http_service"]["checks"][0]["path"] == "/healthz", fly
PY
echo "deploy_files: fly.toml is the documented one, with its volume at /var/lib/otter"
