"""PlatformIO extra script: sign the firmware .bin and publish it to otterd after a build.

Copy this file next to your platformio.ini, then (examples/platformio/platformio.ini is a whole one):

    [env:esp32c3]
    extra_scripts = post:otter_release.py
    custom_otter_product = thermostat
    custom_otter_channel = beta
    custom_otter_key = release.key

An ordinary `pio run` only builds: the push happens when OTTER_RELEASE=1 is in the environment
(what CI sets on a tag) or `custom_otter_release = yes` is in the env section. The server and the
token come from OTTER_SERVER and OTTER_TOKEN (a publisher token for the product), the private key
from OTTER_KEY (a file path) or custom_otter_key (relative to the project directory). A failed
push fails the build. Needs the `otter` CLI on PATH (or OTTER_CLI=/path/to/otter).
"""

import json
import os
import subprocess

Import("env")  # noqa: F821 -- SCons puts Import() into an extra script's globals

TRUE_WORDS = ("1", "true", "yes", "on")


def _option(env, name, default=""):
    value = env.GetProjectOption(name, default)
    return str(value).strip()


def _enabled(env):
    if os.environ.get("OTTER_RELEASE", "").strip().lower() in TRUE_WORDS:
        return True
    return _option(env, "custom_otter_release", "no").lower() in TRUE_WORDS


def _fail(message):
    print("otter: release failed: " + message)
    return 1


def otter_release(source, target, env):
    """SCons post action: returns 0 when done or skipped, non-zero (a failed build) otherwise."""
    if not _enabled(env):
        print("otter: not releasing (set OTTER_RELEASE=1 or custom_otter_release = yes to push)")
        return 0
    firmware = target[0].get_abspath()
    product = _option(env, "custom_otter_product")
    channel = _option(env, "custom_otter_channel", "beta")
    version = _option(env, "custom_otter_version")
    key = os.environ.get("OTTER_KEY", "").strip() or _option(env, "custom_otter_key")
    if not product:
        return _fail("custom_otter_product is not set in platformio.ini")
    if not key:
        return _fail("no release key: set OTTER_KEY or custom_otter_key")
    key = os.path.join(env.subst("$PROJECT_DIR"), key)
    if not os.path.isfile(key):
        return _fail("the release key %s does not exist" % key)
    for name in ("OTTER_SERVER", "OTTER_TOKEN"):
        if not os.environ.get(name):
            return _fail("%s is not set in the environment" % name)

    cli = os.environ.get("OTTER_CLI") or _option(env, "custom_otter_cli") or "otter"
    command = [cli, "--json", "release", "push", firmware, "--product", product,
               "--channel", channel, "--key", key]
    if version:
        command += ["--version", version]
    print("otter: pushing %s to %s, channel %s" % (firmware, product, channel))
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as err:
        return _fail("cannot run %s: %s" % (cli, err))
    if done.returncode != 0:
        return _fail((done.stderr or done.stdout).strip() or "otter exited %d" % done.returncode)
    release = json.loads(done.stdout)
    existing = " (already published)" if release.get("existing") else ""
    print("otter: release %s, version %s, on %s%s" % (release.get("id"), release.get("version"),
                                                       channel, existing))
    return 0


env.AddPostAction("$BUILD_DIR/${PROGNAME}.bin", otter_release)  # noqa: F821
