#!/usr/bin/env python3
"""Runs the shell steps of action.yml (the composite GitHub Action) here, the way a runner would,
against a real otterd, and publishes a real image (issue 12).

What stands in for GitHub:
  - `${{ inputs.X }}` (the test's inputs, then the action's defaults), `${{ github.X }}`,
    `${{ runner.X }}`, `${{ env.X }}` and `${{ steps.ID.outputs.Y }}` are substituted into `env:`
    and `run:`; any `${{` left over fails the test;
  - each `run:` goes to a file run with `bash --noprofile --norc -eo pipefail FILE` (GitHub's
    `shell: bash`) with GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH, RUNNER_TEMP, GITHUB_ACTION_PATH,
    GITHUB_REF_NAME and GITHUB_REF_TYPE set;
  - skipped: the `uses: actions/cache` step and the step with id `install` (the pinned
    `cargo install --locked`); instead the repository's own build of `otter` is on PATH. Any other
    skipped step fails the test. The install step's script runs on its own with a stand-in
    `cargo` that records its arguments (a real build would take minutes).

Binaries: $OTTER_BIN_DIR, else target/debug of this repository (scripts/test.sh builds them).
Image: ../shared/firmware/p1-esp32-idf-hello-world/new.bin when present, else `otter dev
synth-image`.

Asserts: outputs release-id and version are the release's, the release is on the server, the key
was written 0600 in a 0700 directory and is gone afterwards (also when a step fails), the key's
PEM never appears in the steps' output, and require-tag-version refuses a mismatched tag without
publishing anything.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("OTTER_BIN_DIR") or os.path.join(REPO, "target", "debug")
OTTER = os.path.join(BIN, "otter")
OTTERD = os.path.join(BIN, "otterd")
REAL_IMAGE = os.path.join(REPO, "..", "shared", "firmware", "p1-esp32-idf-hello-world", "new.bin")
SKIPPED_STEP_IDS = {"cli-cache", "install"}
EXPR = re.compile(r"\$\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def otter(*args, env):
    out = subprocess.run([OTTER, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"otter {' '.join(args)}: {out.stderr}")
    return out.stdout


def parse_kv_file(path):
    """GITHUB_OUTPUT / GITHUB_ENV syntax: NAME=value lines and NAME<<DELIM ... DELIM blocks."""
    result = {}
    if not os.path.exists(path):
        return result
    lines = open(path).read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            result[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            result[name] = value
        i += 1
    return result


def substitute(text, ctx):
    def one(m):
        path = m.group(1).split(".")
        node = ctx
        for part in path:
            if not isinstance(node, dict) or part not in node:
                fail(f"the test has no value for ${{{{ {m.group(1)} }}}} (in {text!r})")
            node = node[part]
        return str(node)

    out = EXPR.sub(one, str(text))
    if "${{" in out:
        fail(f"an expression the test does not substitute is left in: {out!r}")
    return out


def run_action(action, inputs, github, base_env, workdir):
    """Runs the composite action's steps; returns (ok, combined output, action outputs)."""
    for name, spec in action["inputs"].items():
        if name not in inputs:
            if spec.get("required") and "default" not in spec:
                fail(f"the test gives no value for the required input {name}")
            inputs[name] = spec.get("default", "")
    unknown = set(inputs) - set(action["inputs"])
    if unknown:
        fail(f"the test passes inputs the action does not declare: {unknown}")

    runner_temp = os.path.join(workdir, "runner-temp")
    os.makedirs(runner_temp, exist_ok=True)
    env = dict(base_env)
    env.update(RUNNER_TEMP=runner_temp, GITHUB_ACTION_PATH=REPO, GITHUB_WORKSPACE=workdir,
               GITHUB_REF_NAME=github["ref_name"], GITHUB_REF_TYPE=github["ref_type"])
    ctx = {"inputs": inputs, "github": github, "runner": {"os": "Linux", "arch": "X64", "temp": runner_temp},
           "env": env, "steps": {}}
    log = []
    skipped = set()
    for n, step in enumerate(action["runs"]["steps"]):
        sid = step.get("id", f"step{n}")
        if "uses" in step or sid == "install":
            if sid not in SKIPPED_STEP_IDS:
                fail(f"step {sid} ({step.get('name')}) would be skipped, but only {SKIPPED_STEP_IDS} may be")
            skipped.add(sid)
            continue
        if step.get("shell") != "bash":
            fail(f"step {sid} does not use shell: bash")
        if "if" in step:
            fail(f"step {sid} has an if: the test does not evaluate conditions")
        files = {k: os.path.join(workdir, f"{sid}.{k}") for k in ("output", "env", "path")}
        for f in files.values():
            open(f, "w").close()
        step_env = dict(env)
        for k, v in (step.get("env") or {}).items():
            step_env[k] = substitute(v, ctx)
        step_env.update(GITHUB_OUTPUT=files["output"], GITHUB_ENV=files["env"], GITHUB_PATH=files["path"])
        script = os.path.join(workdir, f"{sid}.sh")
        with open(script, "w") as f:
            f.write(substitute(step["run"], ctx))
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", script], cwd=workdir,
                              env=step_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log.append(proc.stdout)
        ctx["steps"][sid] = {"outputs": parse_kv_file(files["output"])}
        env.update(parse_kv_file(files["env"]))
        for p in open(files["path"]).read().split():
            env["PATH"] = p + os.pathsep + env["PATH"]
        if proc.returncode != 0:
            return False, "".join(log), {}
    if skipped != SKIPPED_STEP_IDS:
        fail(f"expected to replace steps {SKIPPED_STEP_IDS}, found {skipped}")
    if not re.fullmatch(r"[0-9a-f]{32}", ctx["steps"]["cli-key"]["outputs"].get("key", "")):
        fail(f"the cli-key step gave no cache key: {ctx['steps']['cli-key']}")
    outputs = {name: substitute(spec["value"], ctx) for name, spec in action["outputs"].items()}
    return True, "".join(log), outputs


def check_install_step(action, workdir):
    """The install step the main run replaces, run with a stand-in `cargo` (no 5-minute build):
    it must be a `cargo install --locked` of this source, put its bin on GITHUB_PATH, and not
    build again when the cached binary is there."""
    step = next(s for s in action["runs"]["steps"] if s.get("id") == "install")
    home = os.path.join(workdir, "home")
    stub = os.path.join(workdir, "stub")
    os.makedirs(stub)
    calls = os.path.join(workdir, "cargo-calls")
    with open(os.path.join(stub, "cargo"), "w") as f:
        f.write(f"""#!/bin/bash
echo "$*" >> {calls}
root=; while [ $# -gt 0 ]; do [ "$1" = --root ] && root=$2; shift; done
mkdir -p "$root/bin" && printf '#!/bin/sh\necho otter-stub\n' > "$root/bin/otter" && chmod +x "$root/bin/otter"
""")
    os.chmod(os.path.join(stub, "cargo"), 0o755)
    script = os.path.join(workdir, "install.sh")
    with open(script, "w") as f:
        f.write(substitute(step["run"], {"github": {"action_path": REPO}}))
    for attempt in (1, 2):
        gh_path = os.path.join(workdir, f"path{attempt}")
        open(gh_path, "w").close()
        env = dict(os.environ, HOME=home, PATH=stub + os.pathsep + os.environ["PATH"],
                   GITHUB_ACTION_PATH=REPO, GITHUB_PATH=gh_path)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", script], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            fail("the install step failed with a stand-in cargo:\n" + proc.stdout)
        if open(gh_path).read().split() != [os.path.join(home, ".otter-cli", "bin")]:
            fail(f"the install step did not put ~/.otter-cli/bin on GITHUB_PATH: {open(gh_path).read()!r}")
    made = open(calls).read().splitlines()
    want = f"install --locked --quiet --root {home}/.otter-cli --path {REPO}/crates/otter-cli"
    if made != [want]:
        fail(f"the install step ran cargo as {made}, expected once: cargo {want}")
    print("action_steps: the install step is `cargo " + want.replace(REPO, "<action>").replace(home, "~")
          + "`, once (the cached binary is reused)")


def main():
    for b in (OTTER, OTTERD):
        if not os.access(b, os.X_OK):
            fail(f"{b} is missing: run `cargo build --bins` or set OTTER_BIN_DIR")
    action = yaml.safe_load(open(os.path.join(REPO, "action.yml")))
    if action["runs"]["using"] != "composite":
        fail("action.yml is not a composite action")

    work = tempfile.mkdtemp(prefix="action-steps.")
    server = None
    try:
        port = free_port()
        data = os.path.join(work, "data")
        server = subprocess.Popen([OTTERD, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                                  stdout=open(os.path.join(work, "otterd.log"), "w"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    fail("otterd exited: " + open(os.path.join(work, "otterd.log")).read())
                time.sleep(0.1)
        else:
            fail("otterd did not answer /healthz")
        admin = dict(os.environ, OTTER_SERVER=url, OTTER_TOKEN=open(os.path.join(data, "initial-admin-token")).read().strip())

        # The operator's side: a key, a product, a publisher token for CI.
        key = os.path.join(work, "release.key")
        otter("keygen", "--out", key, env=admin)
        otter("product", "create", "hello", "--chip", "esp32", "--secret-file", os.path.join(work, "s.secret"), env=admin)
        otter("product", "key", "add", "hello", "--pub", os.path.join(work, "release.pub.pem"), env=admin)
        ci_token = json.loads(otter("token", "create", "--role", "publisher", "--product", "hello", "--name", "ci", "--json", env=admin))["token"]
        pem = open(key).read()

        ws = os.path.join(work, "workspace")
        os.makedirs(os.path.join(ws, "build"))
        image = os.path.join(ws, "build", "app.bin")
        if os.path.exists(REAL_IMAGE):
            shutil.copy(REAL_IMAGE, image)
            print(f"action_steps: with the real ESP-IDF image {os.path.normpath(REAL_IMAGE)}")
        else:
            print(f"action_steps: {os.path.normpath(REAL_IMAGE)} is absent; with an image from otter dev synth-image")
            otter("dev", "synth-image", "--chip", "esp32", "--version", "v1.2.3", "--out", image, env=admin)
        version = json.loads(otter("inspect", image, "--json", env=admin))["app"]["version"]
        assert version, "the image has no version"

        # A stand-in `otter` first on PATH records how the key file it is given looks, then runs
        # the real one (the repository's build replaces the install step).
        shim = os.path.join(work, "shim")
        os.makedirs(shim)
        keylog = os.path.join(work, "keylog")
        with open(os.path.join(shim, "otter"), "w") as f:
            f.write(f"""#!/bin/bash
prev=
for a in "$@"; do
  if [ "$prev" = --key ]; then echo "$a $(stat -c %a "$a") $(stat -c %a "$(dirname "$a")")" >> {keylog}; fi
  prev=$a
done
exec {OTTER} "$@"
""")
        os.chmod(os.path.join(shim, "otter"), 0o755)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTTER_", "GITHUB_"))}
        base_env["PATH"] = shim + os.pathsep + base_env["PATH"]

        inputs = {"server": url, "token": ci_token, "signing-key": pem, "product": "hello",
                  "firmware": "build/app.bin", "channel": "beta", "require-tag-version": "true"}
        # The tag carries a "v" exactly when the image's version does not: both sides lose it.
        tag = version[1:] if version.startswith("v") else "v" + version
        github = {"ref_name": tag, "ref_type": "tag", "action_path": REPO, "workspace": ws}

        def check_key_handling(out, run_dir, what):
            body = "".join(l for l in pem.splitlines() if "-----" not in l)
            for line in pem.splitlines():
                if "-----" not in line and len(line) > 8 and line in out:
                    fail(f"{what}: a line of the key's PEM appears in the steps' output")
            if body[:40] in out.replace("\n", "") or "PRIVATE KEY" in out:
                fail(f"{what}: the key's PEM appears in the steps' output")
            left = os.listdir(os.path.join(run_dir, "runner-temp"))
            if left:
                fail(f"{what}: the action left {left} in RUNNER_TEMP (the key's directory must be removed)")

        os.makedirs(os.path.join(work, "install"))
        check_install_step(action, os.path.join(work, "install"))

        # 1. A tag push whose tag is the image's version publishes it.
        run1 = os.path.join(work, "run1")
        os.makedirs(run1)
        ok, out, outputs = run_action(action, dict(inputs), dict(github), base_env, ws)
        shutil.move(os.path.join(ws, "runner-temp"), os.path.join(run1, "runner-temp"))
        if not ok:
            fail("the action failed on a matching tag; its output:\n" + out)
        check_key_handling(out, run1, "a successful run")
        records = open(keylog).read().split()
        if len(records) != 3 or records[1] != "600" or records[2] != "700":
            fail(f"the key file was not 0600 in a 0700 directory: {records}")
        if os.path.exists(records[0]) or os.path.exists(os.path.dirname(records[0])):
            fail(f"the key file {records[0]} (or its directory) is still there")
        if not outputs.get("release-id", "").startswith("rel_"):
            fail(f"output release-id is missing or wrong: {outputs}")
        if outputs.get("version") != version:
            fail(f"output version is {outputs.get('version')!r}, the image's is {version!r}")
        releases = json.loads(otter("release", "list", "--product", "hello", "--json", env=admin))["releases"]
        if [(r["id"], r["version"], r["channel"]) for r in releases] != [(outputs["release-id"], version, "beta")]:
            fail(f"the server's releases are not the one the action reported: {releases}")
        if any(os.path.exists(os.path.join(ws, f)) for f in ("release.json", "release.key")):
            fail("the action left files in the workspace")
        print(f"action_steps: published {outputs['release-id']} version {version} for tag {tag}; "
              "key 0600 in a 0700 dir, removed, never printed")

        # 2. A tag that is not the image's version: the step fails, says why, publishes nothing,
        #    and still removes the key.
        os.remove(keylog)
        run2 = os.path.join(work, "run2")
        os.makedirs(run2)
        github2 = dict(github, ref_name="v9.9.9")
        ok, out, _ = run_action(action, dict(inputs, channel="stable"), github2, base_env, ws)
        shutil.move(os.path.join(ws, "runner-temp"), os.path.join(run2, "runner-temp"))
        if ok:
            fail("the action succeeded although the tag v9.9.9 is not the image's version")
        if f"the release version '{version}' is not the tag 'v9.9.9'" not in out:
            fail("the mismatch was refused without the expected message; output:\n" + out)
        check_key_handling(out, run2, "a failed run")
        if os.path.exists(keylog):
            fail("otter was called with the key although the tag did not match")
        after = json.loads(otter("release", "list", "--product", "hello", "--json", env=admin))["releases"]
        if len(after) != 1:
            fail(f"a mismatched tag published something: {after}")
        print("action_steps: tag v9.9.9 refused with a clear message, nothing published, key removed")

        # 3. Not a tag run, no tag input: require-tag-version refuses too.
        ok, out, _ = run_action(action, dict(inputs), dict(github, ref_name="main", ref_type="branch"), base_env, ws)
        if ok or "not started by a tag" not in out:
            fail("require-tag-version on a branch run did not fail clearly; output:\n" + out)
        print("action_steps: ok")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
