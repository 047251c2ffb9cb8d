"""integrations/platformio/otter_release.py, called the way PlatformIO calls it.

PlatformIO runs an extra script with SCons: the file is executed with `Import` among its globals,
`Import("env")` hands it the construction environment, and an action registered with
`env.AddPostAction(target, action)` is called after the target is built as
`action(source=[nodes], target=[nodes], env=env)`; a non-zero return fails the build.
FakeEnv implements exactly the methods the script uses, with PlatformIO's semantics.

The image is the real ESP-IDF hello-world from ../shared/firmware when that folder is there (CI
has it), else one made by `otter dev synth-image` (said on the output). The server is a real
otterd on a free port with a temporary data directory; the product, key and publisher token are
made with the CLI. The binaries come from this repository's target/debug (scripts/test.sh builds
them first), or from OTTER_BIN_DIR.

Also checks agent/library.json, the agent as a PlatformIO library for the ESP-IDF framework.
"""

import configparser
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "integrations", "platformio", "otter_release.py")
EXAMPLE = os.path.join(REPO, "examples", "platformio")
BIN_DIR = os.environ.get("OTTER_BIN_DIR") or os.path.join(REPO, "target", "debug")
OTTER = os.path.join(BIN_DIR, "otter")
OTTERD = os.path.join(BIN_DIR, "otterd")
REAL_IMAGE = os.path.join(REPO, "..", "shared", "firmware", "p1-esp32-idf-hello-world", "new.bin")
PRODUCT = "thermostat"
MISSING = object()


class Node:
    """An SCons file node, as far as the script uses it."""

    def __init__(self, path):
        self.path = path

    def get_abspath(self):
        return os.path.abspath(self.path)

    def __str__(self):
        return self.path


class FakeEnv:
    """PlatformIO's construction environment: GetProjectOption, subst, AddPostAction."""

    def __init__(self, project_dir, options):
        self.options = dict(options)
        self.vars = {
            "PROJECT_DIR": project_dir,
            "PIOENV": "esp32",
            "BUILD_DIR": os.path.join(project_dir, ".pio", "build", "esp32"),
            "PROGNAME": "firmware",
        }
        self.post_actions = []

    def GetProjectOption(self, option, default=MISSING):  # noqa: N802 (PlatformIO's name)
        if option in self.options:
            return self.options[option]
        if default is MISSING:
            raise KeyError("platformio.ini has no option %s in [env:%s]" % (option, self.vars["PIOENV"]))
        return default

    def subst(self, text):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.vars[m.group(1) or m.group(2)], text)

    def AddPostAction(self, target, action):  # noqa: N802
        self.post_actions.append((self.subst(target), action))


def run_extra_script(env):
    """Executes the script file as SCons does: its own globals, with Import() in them."""
    scope = {"__name__": "SCons.Script"}

    def scons_import(*names):
        for name in names:
            scope[name] = {"env": env}[name]

    scope["Import"] = scons_import
    with open(SCRIPT, encoding="utf-8") as f:
        exec(compile(f.read(), SCRIPT, "exec"), scope)  # noqa: S102


def build(env, image):
    """Plays `pio run`: the firmware .bin appears, then the post actions on it run."""
    bin_path = env.subst("$BUILD_DIR/${PROGNAME}.bin")
    elf_path = env.subst("$BUILD_DIR/${PROGNAME}.elf")
    os.makedirs(os.path.dirname(bin_path), exist_ok=True)
    shutil.copyfile(image, bin_path)
    results = []
    for target, action in env.post_actions:
        if target == bin_path:
            results.append(action(source=[Node(elf_path)], target=[Node(bin_path)], env=env))
    return results


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PlatformioScript(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in (OTTER, OTTERD):
            if not os.access(tool, os.X_OK):
                raise RuntimeError("%s is missing: run `cargo build --bins` first" % tool)
        cls.work = tempfile.mkdtemp(prefix="otter-pio-")
        port = free_port()
        cls.server = "http://127.0.0.1:%d" % port
        data = os.path.join(cls.work, "data")
        cls.log = open(os.path.join(cls.work, "otterd.log"), "w")
        cls.otterd = subprocess.Popen(
            [OTTERD, "serve", "--data-dir", data, "--listen", "127.0.0.1:%d" % port],
            stdout=cls.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(cls.server + "/healthz", timeout=2).read()
                break
            except OSError:
                if cls.otterd.poll() is not None or time.time() > deadline:
                    raise RuntimeError("otterd did not start; see %s" % cls.log.name)
                time.sleep(0.2)
        with open(os.path.join(data, "initial-admin-token"), encoding="utf-8") as f:
            cls.admin = {"OTTER_SERVER": cls.server, "OTTER_TOKEN": f.read().strip()}

        cls.project = os.path.join(cls.work, "project")
        os.makedirs(cls.project)
        if os.path.isfile(REAL_IMAGE):
            cls.image = REAL_IMAGE
            print("platformio_script_test: with the real ESP-IDF image %s" % REAL_IMAGE)
        else:
            cls.image = os.path.join(cls.work, "synth.bin")
            cls.otter("dev", "synth-image", "--chip", "esp32", "--version", "1.4.1", "--out", cls.image)
            print("platformio_script_test: %s is absent; with a synthetic image" % REAL_IMAGE)
        cls.otter("keygen", "--out", os.path.join(cls.project, "release.key"))
        cls.otter("keygen", "--out", os.path.join(cls.work, "stranger.key"))
        cls.otter("product", "create", PRODUCT, "--chip", "esp32",
                  "--secret-file", os.path.join(cls.work, "secret"), env=cls.admin)
        cls.otter("product", "key", "add", PRODUCT, "--pub",
                  os.path.join(cls.project, "release.pub.pem"), env=cls.admin)
        token = json.loads(cls.otter("--json", "token", "create", "--role", "publisher",
                                     "--product", PRODUCT, "--name", "ci", env=cls.admin))
        cls.publisher = token["token"]

    @classmethod
    def tearDownClass(cls):
        cls.otterd.terminate()
        cls.otterd.wait(timeout=30)
        cls.log.close()
        shutil.rmtree(cls.work, ignore_errors=True)

    @classmethod
    def otter(cls, *args, env=None):
        done = subprocess.run([OTTER, *args], capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, check=False)
        if done.returncode != 0:
            raise AssertionError("otter %s failed: %s" % (" ".join(args), done.stderr))
        return done.stdout

    def releases(self):
        out = self.otter("--json", "release", "list", "--product", PRODUCT, env=self.admin)
        return json.loads(out)["releases"]

    def build_with(self, options, environ):
        """One `pio run` with these platformio.ini options and this process environment."""
        saved = dict(os.environ)
        for name in ("OTTER_RELEASE", "OTTER_SERVER", "OTTER_TOKEN", "OTTER_KEY", "OTTER_CLI"):
            os.environ.pop(name, None)
        os.environ.update(environ)
        os.environ["PATH"] = BIN_DIR + os.pathsep + saved.get("PATH", "")
        try:
            env = FakeEnv(self.project, options)
            run_extra_script(env)
            self.assertEqual([t for t, _ in env.post_actions],
                             [os.path.join(self.project, ".pio", "build", "esp32", "firmware.bin")],
                             "the script must hook the firmware .bin, once")
            return build(env, self.image)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def ci_environ(self):
        return {"OTTER_RELEASE": "1", "OTTER_SERVER": self.server, "OTTER_TOKEN": self.publisher}

    @staticmethod
    def example_options():
        """The [env:esp32c3] options of examples/platformio/platformio.ini, as PlatformIO reads them."""
        ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
        ini.read(os.path.join(EXAMPLE, "platformio.ini"))
        return dict(ini["env:esp32c3"])

    OPTIONS = example_options.__func__()

    def test_0_example_project_uses_this_script(self):
        self.assertEqual(self.OPTIONS["extra_scripts"].split(), ["post:otter_release.py"])
        self.assertTrue(os.path.samefile(os.path.join(EXAMPLE, "otter_release.py"), SCRIPT))
        self.assertEqual(self.OPTIONS["custom_otter_product"], PRODUCT)
        self.assertEqual(self.OPTIONS["custom_otter_channel"], "beta")
        self.assertEqual(self.OPTIONS["custom_otter_key"], "release.key")
        self.assertNotIn("custom_otter_release", self.OPTIONS, "the example must not push on every build")

    def test_1_ordinary_build_pushes_nothing(self):
        before = self.releases()
        environ = {"OTTER_SERVER": self.server, "OTTER_TOKEN": self.publisher}
        results = self.build_with(self.OPTIONS, environ)
        self.assertTrue(all(r in (0, None) for r in results), results)
        self.assertEqual(self.releases(), before, "a build without OTTER_RELEASE=1 must not push")

    def test_2_failing_push_fails_the_build(self):
        before = self.releases()
        stranger = os.path.join(self.work, "stranger.key")
        cases = {
            "a key the product does not trust": (self.OPTIONS, {**self.ci_environ(), "OTTER_KEY": stranger}),
            "no product": ({k: v for k, v in self.OPTIONS.items() if k != "custom_otter_product"},
                           self.ci_environ()),
            "no token": (self.OPTIONS, {k: v for k, v in self.ci_environ().items() if k != "OTTER_TOKEN"}),
            "a wrong token": (self.OPTIONS, {**self.ci_environ(), "OTTER_TOKEN": "ott_wrong"}),
        }
        for what, (options, environ) in cases.items():
            with self.subTest(what):
                results = self.build_with(options, environ)
                self.assertEqual(len(results), 1)
                self.assertNotIn(results[0], (0, None), "with %s the build must fail" % what)
        self.assertEqual(self.releases(), before)

    def test_3_release_build_publishes_the_bin(self):
        results = self.build_with(self.OPTIONS, self.ci_environ())
        self.assertEqual(results, [0])
        releases = self.releases()
        self.assertEqual(len(releases), 1, releases)
        release = releases[0]
        self.assertEqual(release["channel"], "beta")
        info = json.loads(self.otter("--json", "inspect", self.image))
        self.assertEqual(release["version"], info["app"]["version"])
        with open(self.image, "rb") as f:
            self.assertEqual(release["sha256"], hashlib.sha256(f.read()).hexdigest(), release)


class LibraryJson(unittest.TestCase):
    """agent/library.json: the agent as a PlatformIO library for the ESP-IDF framework."""

    def test_library_json_builds_the_component_sources(self):
        agent = os.path.join(REPO, "agent")
        with open(os.path.join(agent, "library.json"), encoding="utf-8") as f:
            lib = json.load(f)
        for key in ("name", "version", "description", "license", "repository", "frameworks",
                    "platforms", "build"):
            self.assertIn(key, lib)
        self.assertEqual(lib["frameworks"], "espidf")
        self.assertEqual(lib["platforms"], "espressif32")
        with open(os.path.join(agent, "idf_component.yml"), encoding="utf-8") as f:
            component_version = re.search(r'^version:\s*"([^"]+)"', f.read(), re.M).group(1)
        self.assertEqual(lib["version"], component_version, "library.json and idf_component.yml disagree")

        build = lib["build"]
        self.assertTrue(os.path.isdir(os.path.join(agent, build["includeDir"])))
        self.assertTrue(os.path.isdir(os.path.join(agent, build["srcDir"])))
        included = []
        for rule in build["srcFilter"]:
            m = re.fullmatch(r"([+-])<([^>]+)>", rule)
            self.assertIsNotNone(m, "srcFilter rule %r is not +<...> or -<...>" % rule)
            path = m.group(2).rstrip("/*")
            if m.group(1) == "+" and path:
                self.assertTrue(os.path.exists(os.path.join(agent, build["srcDir"], path)),
                                "srcFilter names %s, which does not exist" % path)
                included.append(path)
        for flag in build["flags"]:
            if flag.startswith("-I"):
                self.assertTrue(os.path.isdir(os.path.join(agent, flag[2:].strip())), flag)

        # The same C files as the ESP-IDF component (agent/CMakeLists.txt, SRCS).
        with open(os.path.join(agent, "CMakeLists.txt"), encoding="utf-8") as f:
            srcs = re.search(r"SRCS (.*?)\n\s*INCLUDE_DIRS", f.read(), re.S).group(1).split()
        src_root = os.path.join(agent, build["srcDir"])
        selected = set()
        for path in included:
            full = os.path.join(src_root, path)
            if os.path.isfile(full):
                selected.add(os.path.normpath(path))
            else:
                for name in os.listdir(full):
                    if name.endswith(".c"):
                        selected.add(os.path.normpath(os.path.join(path, name)))
        self.assertEqual(selected, {os.path.relpath(os.path.join(agent, s), src_root) for s in srcs})

    def test_library_build_flags_in_docs_define_every_option_the_sources_use(self):
        """PlatformIO reads no Kconfig of a library: docs/agent.md's build_flags must define each."""
        agent = os.path.join(REPO, "agent")
        used = set()
        for folder in ("core", "port/common", "port/espidf", "include"):
            for name in os.listdir(os.path.join(agent, folder)):
                if name.endswith((".c", ".h")):
                    with open(os.path.join(agent, folder, name), encoding="utf-8") as f:
                        used |= set(re.findall(r"\bCONFIG_OTTER_[A-Z_]+", f.read()))
        # Off when undefined (#if !...), and a file CMake compiles in: neither is a -D.
        used -= {"CONFIG_OTTER_ALLOW_PLAIN_HTTP", "CONFIG_OTTER_TRUSTED_KEYS_FILE"}
        with open(os.path.join(REPO, "docs", "agent.md"), encoding="utf-8") as f:
            doc = f.read()
        block = re.search(r"```ini\nbuild_flags =\n(.*?)```", doc, re.S)
        self.assertIsNotNone(block, "docs/agent.md has no build_flags block for the library")
        defined = set(re.findall(r"-D (CONFIG_OTTER_[A-Z_]+)=", block.group(1)))
        self.assertEqual(used - defined, set(), "options the sources use but the docs do not define")


if __name__ == "__main__":
    unittest.main(verbosity=2)
