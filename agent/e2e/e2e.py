#!/usr/bin/env python3
"""End-to-end tests: otter-agent-sim updates itself from a running otterd that the otter CLI
pushed to. Python standard library only.

    OTTERD_BIN=... OTTER_BIN=... SIM_BIN=... python3 agent/e2e/e2e.py [-k NAME] [--trials N]

Each test gets its own product (and so its own releases and devices) on one server. Refusals that
an honest otterd never lets reach a device (a downgrade, another chip, an expired manifest, an
oversize image) are served by `HostileServer`, a proxy in front of otterd that replaces the
offered envelope: exactly what a compromised server could do. The agent's reports still reach the
real otterd, where the tests read them back.
"""

import argparse
import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

OTTERD = os.path.abspath(os.environ.get("OTTERD_BIN", "target/debug/otterd"))
OTTER = os.path.abspath(os.environ.get("OTTER_BIN", "target/debug/otter"))
SIM = os.path.abspath(os.environ.get("SIM_BIN", "target/agent/otter-agent-sim"))

IMAGE_SIZE = 300_000  # a little over one 256 KiB download chunk
REAL_FIRMWARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "firmware")
CHIP_IDS = {"esp32": 0, "esp32c3": 5, "esp32s3": 9}


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Server:
    """otterd on a free port with a temporary data directory."""

    def __init__(self, work, env=None):
        self.work = work
        self.data = os.path.join(work, "data")
        self.log = open(os.path.join(work, "otterd.log"), "w")
        self.proc = subprocess.Popen(
            [OTTERD, "serve", "--listen", "127.0.0.1:0", "--data-dir", self.data],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "RUST_LOG": "warn", **(env or {})})
        line = self.proc.stdout.readline().strip()
        check(line.startswith("otterd listening on "), f"otterd did not start: {line!r}")
        self.url = line.removeprefix("otterd listening on ")
        with open(os.path.join(self.data, "initial-admin-token")) as f:
            self.admin = f.read().strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.log.close()

    def otter(self, *args, ok=True):
        env = {**os.environ, "OTTER_SERVER": self.url, "OTTER_TOKEN": self.admin}
        p = subprocess.run([OTTER, "--json", *args], cwd=self.work, env=env, capture_output=True, text=True)
        if ok and p.returncode != 0:
            raise Failure(f"otter {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None


class Product:
    """A product with its release key, base image 1.0.0 and helpers to push and to run devices."""

    def __init__(self, server, name, chip="esp32c3"):
        self.s, self.name, self.chip = server, name, chip
        self.dir = os.path.join(server.work, name)
        os.makedirs(self.dir)
        self.key = self.path("release.key")
        self.pub = self.path("release.pub.pem")
        server.otter("keygen", "--out", self.key)
        self.secret = server.otter("product", "create", name, "--chip", chip)["enrollment_secret"]
        server.otter("product", "key", "add", name, "--pub", self.pub)
        self.base = self.image("1.0.0", seed=1)
        self.devices = 0

    def path(self, name):
        return os.path.join(self.dir, name)

    def image(self, version, seed, chip=None, size=IMAGE_SIZE):
        out = self.path(f"fw-{chip or self.chip}-{version}-{size}.bin")
        if not os.path.exists(out):
            self.s.otter("dev", "synth-image", "--chip", chip or self.chip, "--version", version,
                         "--size", str(size), "--seed", str(seed), "--out", out)
        return out

    def push(self, version, counter=1, seed=2, channel="stable"):
        fw = self.image(version, seed)
        r = self.s.otter("release", "push", fw, "--product", self.name, "--key", self.key,
                         "--security-counter", str(counter), "--channel", channel)
        return r["id"]

    def sign(self, fw, counter=1, extra=()):
        """A release.otter signed with this product's key, not pushed; returns its envelope."""
        out = fw + f".{counter}.otter"
        self.s.otter("sign", fw, "--key", self.key, "--product", self.name,
                     "--security-counter", str(counter), "--out", out, "--force", *extra)
        raw = open(out, "rb").read()
        check(raw[:4] == b"OTRB", f"{out} is a release file")
        n = int.from_bytes(raw[8:12], "little")
        return raw[12:12 + n]

    def device(self, **kw):
        self.devices += 1
        return Device(self, f"{self.name}-hw{self.devices}", **kw)


class Device:
    def __init__(self, product, hardware_id, slot_size=1 << 20, image=None, server_url=None, key=None):
        self.p, self.hw = product, hardware_id
        self.dir = product.path(hardware_id)
        self.server_url = server_url or product.s.url
        self.key = key or product.pub
        out = subprocess.run([SIM, "init", "--dir", self.dir, "--image", image or product.base,
                              "--slot-size", str(slot_size)], capture_output=True, text=True)
        check(out.returncode == 0, f"sim init: {out.stderr}")

    def run(self, *extra, until=None, polls=12, timeout=120):
        args = [SIM, "run", "--dir", self.dir, "--server", self.server_url, "--product", self.p.name,
                "--secret", self.p.secret, "--hardware-id", self.hw, "--chip", self.p.chip,
                "--chip-id", str(CHIP_IDS[self.p.chip]), "--key", self.key, "--max-polls", str(polls),
                "--quiet", *extra]
        if until:
            args += ["--until-version", until]
        env = {k: v for k, v in os.environ.items() if k != "OTTER_SIM_BOOTS"}
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        self.last_stderr = p.stderr
        result = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
        return p.returncode, result

    def status(self):
        p = subprocess.run([SIM, "status", "--dir", self.dir], capture_output=True, text=True)
        check(p.returncode == 0, f"sim status: {p.stderr}")
        return json.loads(p.stdout)

    def history(self):
        devices = self.p.s.otter("device", "list", "--product", self.p.name)["devices"]
        mine = [d for d in devices if d["hardware_id"] == self.hw]
        check(len(mine) == 1, f"device {self.hw} enrolled once, found {len(mine)}")
        return self.p.s.otter("device", "show", mine[0]["id"])["history"]

    def reports(self, state):
        return [h for h in self.history() if h["state"] == state]


class HostileServer:
    """A proxy to otterd that swaps the envelope of every offered update for `envelope`, and can
    invent an offer when otterd has none (`offer_release_id`)."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlparse(upstream)
        self.envelope = None
        self.offer_release_id = None
        # An image offset whose byte the proxy flips in what it passes on (a server that serves
        # bytes other than the signed image: otterd itself refuses to, see docs/security.md).
        self.tamper_at = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.forward()

            def do_POST(self):
                self.forward()

            def forward(self):
                if "/image" in self.path and proxy.intercept_image(self):
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if "/image" in self.path and r.status in (200, 206) and proxy.tamper_at is not None:
                    start = 0
                    content_range = r.getheader("Content-Range")
                    if content_range:
                        start = int(content_range.split()[1].split("-")[0])
                    if start <= proxy.tamper_at < start + len(data):
                        data = bytearray(data)
                        data[proxy.tamper_at - start] ^= 0xFF
                        data = bytes(data)
                if self.path == "/device/v1/checkin" and r.status == 200 and proxy.envelope is not None:
                    answer = json.loads(data)
                    if answer["update"] is None and proxy.offer_release_id:
                        rid = proxy.offer_release_id
                        answer["update"] = {"release_id": rid, "download_url": f"/device/v1/releases/{rid}/image"}
                    if answer["update"] is not None:
                        answer["update"]["envelope"] = base64.b64encode(proxy.envelope).decode()
                    data = json.dumps(answer).encode()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def intercept_image(self, handler):
        """A subclass may answer an image request itself; True when it did."""
        return False

    def stop(self):
        self.httpd.shutdown()


def blob_path(server, sha256_hex):
    for root, _, files in os.walk(os.path.join(server.data, "blobs")):
        for f in files:
            if f.startswith(sha256_hex):
                return os.path.join(root, f)
    raise Failure(f"no blob for {sha256_hex} under {server.data}/blobs")


# ----------------------------------------------------------------------------------------------
# The tests. Each takes the server and the options.


def test_happy_path(s, opts):
    p = Product(s, "happy")
    rid = p.push("2.0.0", counter=2)
    d = p.device()
    rc, res = d.run(until="2.0.0")
    check(rc == 0 and res["version"] == "2.0.0", f"updated to 2.0.0: rc {rc} {res} {d.last_stderr}")
    check(res["slot"] == 1 and res["boots"] == 1, f"one reboot into slot 1: {res}")
    states = [h["state"] for h in reversed(d.history()) if h["release_id"] == rid]
    for st in ["downloading", "downloaded", "installing", "rebooting", "success"]:
        check(st in states, f"{st} reported: {states}")
    check(states.index("success") > states.index("rebooting"), f"order: {states}")
    # Idle afterwards; nothing downloaded again.
    rc, res = d.run()
    check(rc == 0 and res["result"] == "idle" and res["version"] == "2.0.0", f"idle: {res}")
    check(len(d.reports("success")) == 1, "success reported once")


def test_download_cut_and_resumed(s, opts):
    p = Product(s, "resume")
    p.push("2.0.0")
    d = p.device()
    rc, _ = d.run("--cut-download-at", "150000", until="2.0.0")
    check(rc == 137, f"power cut at byte 150000 of the download: rc {rc}")
    st = d.status()
    check(st["valid"] and st["version"] == "1.0.0", f"still boots 1.0.0: {st}")
    rc, res = d.run(until="2.0.0")
    check(rc == 0 and res["version"] == "2.0.0", f"resumed and updated: {rc} {res}")
    starts = [h["progress_bytes"] for h in d.reports("downloading")]
    check(any(b and 0 < b <= 150000 for b in starts), f"a download resumed mid-way: {starts}")


def test_dropped_connection_resumes(s, opts):
    """A connection dropped by the network (not a power cut): the next poll resumes with Range."""
    p = Product(s, "drop")
    p.push("2.0.0")
    hostile = DroppingProxy(s.url, drop_after=100_000)
    try:
        d = p.device(server_url=hostile.url)
        rc, res = d.run(until="2.0.0")
        check(rc == 0 and res["version"] == "2.0.0", f"updated through drops: {rc} {res}")
        # Chunks start at multiples of 256 KiB; a range below the first boundary is the resume.
        check(hostile.dropped and any(0 < r < 262144 for r in hostile.ranges),
              f"resumed with Range after the drop at 100000: {hostile.ranges}")
    finally:
        hostile.stop()


class DroppingProxy(HostileServer):
    """Forwards everything; the first image download is cut after `drop_after` body bytes."""

    def __init__(self, upstream, drop_after):
        self.ranges = []
        self.dropped = False
        self.drop_after = drop_after
        super().__init__(upstream)

    def intercept_image(self, h):
        rng = h.headers.get("Range")
        self.ranges.append(int(rng.split("=")[1].split("-")[0]) if rng else 0)
        if self.dropped:
            return False
        self.dropped = True
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        conn.request("GET", h.path, headers={"Authorization": h.headers["Authorization"]})
        r = conn.getresponse()
        h.send_response(r.status)
        h.send_header("Content-Length", r.getheader("Content-Length"))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(r.read(self.drop_after))
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True
        return True


class RangeIgnoringProxy(DroppingProxy):
    """Cuts the first image download after `drop_after` bytes; afterwards answers every image
    request as a cache or proxy that ignores Range would: 200 and the whole image."""

    def intercept_image(self, h):
        if not self.dropped:
            return super().intercept_image(h)
        rng = h.headers.get("Range")
        self.ranges.append(int(rng.split("=")[1].split("-")[0]) if rng else 0)
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        conn.request("GET", h.path, headers={"Authorization": h.headers["Authorization"]})  # no Range
        r = conn.getresponse()
        data = r.read()
        h.send_response(r.status)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        return True


def test_proxy_ignoring_range_restarts_the_download(s, opts):
    """A proxy that ignores Range answers a resume with the whole image (200): the agent starts a
    new write session and writes from the first byte, never out of order (the simulator refuses a
    write that is not where the session is, as esp_ota_write does)."""
    p = Product(s, "norange")
    p.push("2.0.0")
    proxy = RangeIgnoringProxy(s.url, drop_after=100_007)
    try:
        d = p.device(server_url=proxy.url)
        rc, res = d.run(until="2.0.0")
        check(rc == 0 and res["version"] == "2.0.0", f"updated through the proxy: {rc} {res} {d.last_stderr[-600:]}")
        check(proxy.dropped and any(r > 0 for r in proxy.ranges), f"a resume was asked for: {proxy.ranges}")
        check(not d.reports("failure"), f"no failure on the way: {d.reports('failure')}")
        check(len(d.reports("success")) == 1, "success reported")
    finally:
        proxy.stop()


def test_flash_encryption_same_boot_resume(s, opts):
    """With flash encryption, esp_ota_write keeps a partial 16-byte block in RAM. A download cut at
    a byte that is not a multiple of 16 and resumed in the same boot must re-hash only what is on
    flash: no hash mismatch, and the resume starts at the last whole block."""
    p = Product(s, "encrypted")
    p.push("2.0.0")
    proxy = DroppingProxy(s.url, drop_after=100_007)
    try:
        d = p.device(server_url=proxy.url)
        rc, res = d.run("--flash-encryption", until="2.0.0")
        check(rc == 0 and res["version"] == "2.0.0", f"updated: {rc} {res} {d.last_stderr[-600:]}")
        check(res["boots"] == 1, f"resumed in the same boot (one reboot, into 2.0.0): {res}")
        check(100_000 in proxy.ranges, f"resumed at the last whole 16-byte block, 100000: {proxy.ranges}")
        check(not d.reports("failure"), f"no hash mismatch: {d.reports('failure')}")
    finally:
        proxy.stop()


def test_damaged_update_record_keeps_the_device(s, opts):
    """The agent's update record is damaged (a flipped bit): the device keeps its identity (no
    second enrolment, which otterd would refuse with 409) and its security counter."""
    p = Product(s, "records")
    p.push("2.0.0", counter=2)
    d = p.device()
    rc, res = d.run(until="2.0.0")
    check(rc == 0, f"updated: {rc} {res}")
    path = os.path.join(d.dir, "agent-update")
    raw = bytearray(open(path, "rb").read())
    raw[5] ^= 0x55
    open(path, "wb").write(bytes(raw))
    rc, res = d.run()
    check(rc == 0 and res["result"] == "idle" and res["version"] == "2.0.0",
          f"still works after the damage: {rc} {res} {d.last_stderr[-600:]}")
    devices = [x for x in p.s.otter("device", "list", "--product", p.name)["devices"] if x["hardware_id"] == d.hw]
    check(len(devices) == 1, f"one device: {devices}")
    shown = p.s.otter("device", "show", devices[0]["id"])
    check(shown.get("security_counter", shown.get("device", {}).get("security_counter")) == 2,
          f"the check-in after the damage still carries counter 2: {shown}")


def test_simulator_cli(s, opts):
    """otter-agent-sim explains itself: --help, errors that name the option or the cause, a default
    slot that fits real images, --chip and --chip-id that must agree."""
    h = subprocess.run([SIM, "--help"], capture_output=True, text=True)
    check(h.returncode == 0, f"--help exits 0: {h.returncode}")
    for word in ("--slot-size", "--max-polls", "--time-scale", "--flash-encryption", "exit codes", "137"):
        check(word in h.stdout, f"--help mentions {word}: {h.stdout}")
    p = Product(s, "cli")
    work = p.path("cli")

    def sim(*args):
        return subprocess.run([SIM, *args], capture_output=True, text=True)
    for bogus in (["--bogus", "1"], ["--bogus"]):
        r = sim("init", "--dir", work, "--image", p.base, *bogus)
        check(r.returncode == 2 and "unknown option '--bogus'" in r.stderr,
              f"an unknown option is named: {r.returncode} {r.stderr}")
    r = sim("init", "--dir", work, "--image")
    check(r.returncode == 2 and "--image needs a value" in r.stderr, f"a missing value is named: {r.stderr}")
    r = sim("init", "--dir", work, "--image", p.base, "--slot-size", "lots")
    check(r.returncode == 2 and "--slot-size" in r.stderr and "'lots'" in r.stderr, f"a bad number is named: {r.stderr}")
    # The default slot holds a real 1.75 MB image (MicroPython ESP32) or one of that size.
    real = os.path.join(REAL_FIRMWARE, "p2-esp32-mpy-st7789-patch", "old.bin")
    big = real if os.path.exists(real) else p.image("1.0.0", seed=1, size=1_752_656)
    print(f"    default slot size checked with {'the real image ' + real if big == real else 'a synthetic image'}")
    r = sim("init", "--dir", p.path("big"), "--image", big)
    check(r.returncode == 0, f"the default slot holds {os.path.getsize(big)} bytes: {r.stderr}")
    r = sim("init", "--dir", p.path("small"), "--image", big, "--slot-size", "0x100000")
    check(r.returncode == 2 and "do not fit" in r.stderr and "1048576" in r.stderr, f"too big is explained: {r.stderr}")
    d = p.device()
    base = ["run", "--dir", d.dir, "--product", p.name, "--hardware-id", d.hw, "--key", p.pub, "--max-polls", "2"]
    r = sim(*base, "--server", s.url, "--secret", p.secret, "--chip", "esp32c3", "--chip-id", "9")
    check(r.returncode == 2 and "esp32c3" in r.stderr and "9" in r.stderr, f"--chip and --chip-id disagree: {r.stderr}")
    r = sim(*base, "--server", s.url, "--secret", p.secret)
    check(r.returncode == 2 and "--chip is required" in r.stderr, f"a missing option is named: {r.stderr}")
    # A wrong port and a wrong secret fail differently, and say so.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    r = sim(*base, "--server", dead, "--secret", p.secret, "--chip", "esp32c3")
    port_err = json.loads(r.stdout.strip().splitlines()[-1])["last_error"]
    check(r.returncode == 3 and "cannot connect" in port_err, f"wrong port: {r.returncode} {port_err}")
    check("cannot connect" in r.stderr, f"wrong port, on stderr: {r.stderr[-400:]}")
    r = sim(*base, "--server", s.url, "--secret", "ote_wrong", "--chip", "esp32c3")
    secret_err = json.loads(r.stdout.strip().splitlines()[-1])["last_error"]
    check(r.returncode == 3 and "/device/v1/enroll" in secret_err and "HTTP 4" in secret_err,
          f"wrong secret: {r.returncode} {secret_err}")
    # --chip alone is enough for a known chip.
    r = sim(*base, "--server", s.url, "--secret", p.secret, "--chip", "esp32c3")
    check(r.returncode == 0 and json.loads(r.stdout)["result"] == "idle", f"--chip alone: {r.returncode} {r.stderr[-400:]}")


def power_cut_trial(p, label, *cut_args, always=()):
    d = p.device()
    rc, _ = d.run(*cut_args, *always, until="2.0.0")
    check(rc in (0, 137), f"{label}: rc {rc}: {d.last_stderr[-400:]}")
    st = d.status()
    check(st["valid"], f"{label}: no valid image in the boot slot after the cut: {st}")
    check(st["version"] in ("1.0.0", "2.0.0"), f"{label}: {st}")
    rc, res = d.run(*always, until="2.0.0")
    check(rc == 0 and res and res["version"] == "2.0.0",
          f"{label}: after the cut the device ends on 2.0.0: rc {rc} {res} {d.last_stderr[-600:]}")
    # Reports are delivered at least once: a cut after the server took one but before the device
    # stored that it did repeats it.
    check(1 <= len(d.reports("success")) <= 2, f"{label}: success reported: {d.history()}")
    return rc


def test_power_cuts(s, opts):
    """Power cuts at every persistent write that is not a slot write (agent state, otadata, across
    both boots), at a sample of slot writes, and at random bytes of downloads and flash writes."""
    p = Product(s, "power")
    p.push("2.0.0")
    # A traced run lists the persistent writes of a whole update, in order.
    log = p.path("writes.log")
    d = p.device()
    os.environ["OTTER_SIM_WRITE_LOG"] = log
    try:
        rc, res = d.run(until="2.0.0")
    finally:
        del os.environ["OTTER_SIM_WRITE_LOG"]
    check(rc == 0, f"traced run: {rc} {res}")
    kinds = open(log).read().split()
    rng = random.Random(opts.seed)
    count = {k: kinds.count(k) for k in ("state", "otadata", "slot")}
    # Every state save and otadata update; a sample of slot writes (how many there are depends on
    # how TCP splits the download, so counting them per kind keeps each cut where it says).
    points = [("state", i) for i in range(count["state"])] + [("otadata", i) for i in range(count["otadata"])]
    points += [("slot", i) for i in sorted(rng.sample(range(count["slot"]), min(count["slot"], opts.trials // 3)))]
    print(f"    persistent writes in one update: {count}; cutting before {len(points)} of them", flush=True)
    for kind, i in points:
        power_cut_trial(p, f"cut before {kind} write {i}", "--cut-at-write", f"{kind}:{i}")
    for _ in range(opts.trials // 3):
        at = rng.randrange(0, IMAGE_SIZE)
        power_cut_trial(p, f"cut at download byte {at}", "--cut-download-at", str(at))
    for _ in range(opts.trials // 3):
        at = rng.randrange(0, IMAGE_SIZE)
        power_cut_trial(p, f"cut at flash byte {at}", "--cut-flash-at", str(at))
    # With flash encryption a cut also loses the partial 16-byte block the write session held.
    encrypted = max(2, opts.trials // 6)
    for _ in range(encrypted):
        at = rng.randrange(0, IMAGE_SIZE)
        power_cut_trial(p, f"cut at flash byte {at}, flash encryption", "--cut-flash-at", str(at),
                        always=("--flash-encryption",))
    print(f"    {len(points) + 2 * (opts.trials // 3) + encrypted} power-cut trials, every one bootable and ending on 2.0.0")


class Cdn:
    """A CDN in front of otterd's blob store: `GET /fw/images/<sha256>` answers the stored image,
    with `Range` as a CDN does, to anyone. Records each request and whether it carried a token."""

    def __init__(self):
        self.server = None
        self.paths = []
        self.authorized = []
        cdn = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                cdn.paths.append(self.path)
                if self.headers.get("Authorization"):
                    cdn.authorized.append(self.path)
                sha = self.path.rsplit("/", 1)[-1]
                if not self.path.startswith("/fw/images/") or len(sha) != 64:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = open(blob_path(cdn.server, sha), "rb").read()
                rng = self.headers.get("Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()


def test_cdn_download_url_is_followed_without_the_token(s, opts):
    """`[downloads] redirect` set to a CDN base URL: the agent's check-in says it follows URLs of
    up to 199 bytes, otterd hands it `<base>/images/<sha256>`, and the simulator downloads the
    image from the CDN (resuming by Range across its chunks), verifies it and reports success;
    its device token never reaches the CDN."""
    cdn = Cdn()
    work = os.path.join(s.work, "cdn-server")
    os.makedirs(work)
    cdn.server = Server(work, env={"OTTER_DOWNLOAD_REDIRECT": cdn.url + "/fw"})
    try:
        p = Product(cdn.server, "cdn")
        rid = p.push("2.0.0", counter=2)
        d = p.device()
        rc, res = d.run(until="2.0.0")
        check(rc == 0 and res["version"] == "2.0.0", f"updated from the CDN: rc {rc} {res} {d.last_stderr}")
        check(len(cdn.paths) >= 2 and all(x.startswith("/fw/images/") for x in cdn.paths),
              f"the image came from the CDN, in ranged chunks: {cdn.paths}")
        check(not cdn.authorized, f"the device token went to the CDN: {cdn.authorized}")
        states = [h["state"] for h in d.history() if h["release_id"] == rid]
        check("success" in states, f"success reported to otterd: {states}")
    finally:
        cdn.server.stop()
        cdn.stop()


def test_self_test_failure_rolls_back(s, opts):
    """A release whose self-test fails is rolled back, tried once more when the old image is back
    on the server, and given up after the second failure."""
    p = Product(s, "selftest")
    rid = p.push("2.0.0")
    d = p.device()
    rc, res = d.run("--fail-self-test", "2.0.0")
    check(rc == 0 and res["version"] == "1.0.0" and res["slot"] == 0, f"back on 1.0.0: {rc} {res} {d.last_stderr}")
    st = d.status()
    check(st["state"][1] == 4, f"slot 1 marked invalid in otadata: {st}")
    rolled = sorted(d.reports("rolled_back"), key=lambda h: "given up" in h["reason"])
    check(len(rolled) == 2 and all(r["release_id"] == rid and "self-test" in r["reason"] for r in rolled),
          f"rolled_back reported twice with its reason: {rolled}")
    check("one more try" in rolled[0]["reason"] and "given up" in rolled[1]["reason"], f"then given up: {rolled}")
    # The release is not tried a third time.
    rc, res = d.run()
    check(rc == 0 and res["version"] == "1.0.0", f"stays on 1.0.0: {res}")
    check(len(d.reports("downloaded")) == 2, f"downloaded twice: {d.history()}")


def test_self_test_failing_once_is_retried_and_kept(s, opts):
    """The self-test of a good release fails once (say, Wi-Fi was down during its first boot): the
    release is installed again once the old image reaches the server, and kept."""
    p = Product(s, "selftestonce")
    rid = p.push("2.0.0")
    d = p.device()
    rc, res = d.run("--fail-self-test-once", "2.0.0", until="2.0.0")
    check(rc == 0 and res["version"] == "2.0.0", f"updated on the second try: {rc} {res} {d.last_stderr[-600:]}")
    rolled = d.reports("rolled_back")
    check(len(rolled) == 1 and rolled[0]["release_id"] == rid and "one more try" in rolled[0]["reason"],
          f"one rollback reported: {rolled}")
    check(len(d.reports("success")) == 1, f"success reported: {d.history()}")


def test_untrusted_key_refused(s, opts):
    p = Product(s, "untrusted")
    p.push("2.0.0")
    other = p.path("other.key")
    s.otter("keygen", "--out", other)
    d = p.device(key=p.path("other.pub.pem"))
    rc, res = d.run()
    check(rc == 0 and res["version"] == "1.0.0", f"not updated: {rc} {res}")
    refused = d.reports("refused")
    check(len(refused) == 1 and "no trusted key" in refused[0]["reason"], f"refusal reported: {refused}")
    check(not d.reports("downloading"), "nothing downloaded")


def test_tampered_blob_is_not_served(s, opts):
    # Storage altered behind otterd's back: otterd refuses to serve the blob (a range of a blob
    # whose whole hash does not match is a 500), so the device never gets the image.
    p = Product(s, "tamper")
    p.push("2.0.0")
    sha = hashlib.sha256(open(p.image("2.0.0", 2), "rb").read()).hexdigest()
    blob = blob_path(s, sha)
    os.chmod(blob, 0o600)
    with open(blob, "r+b") as f:
        f.seek(270_000)  # in the second download chunk, which is a ranged request
        b = f.read(1)
        f.seek(270_000)
        f.write(bytes([b[0] ^ 0xFF]))
    d = p.device()
    rc, res = d.run(polls=8)
    check(res and res["version"] == "1.0.0", f"not updated: {rc} {res}")
    check(d.status()["version"] == "1.0.0" and d.status()["boot_slot"] == 0, "never activated")
    check(not d.reports("success"), f"no success reported: {d.reports('success')}")
    # The device never held the altered image whole: its own hash check never had to refuse it.
    mismatches = [f for f in d.reports("failure") if "hash mismatch" in (f["reason"] or "")]
    check(not mismatches, f"otterd served the altered bytes: {mismatches}")


def test_tampered_bytes_from_the_server_refused(s, opts):
    # A server that does pass on altered bytes (compromised, or a proxy in between): the agent's
    # own check of the whole image against the signed hash refuses them.
    p = Product(s, "tamperproxy")
    p.push("2.0.0")
    hostile = HostileServer(s.url)
    hostile.tamper_at = 270_000  # in the second download chunk, which is a ranged request
    try:
        d = p.device(server_url=hostile.url)
        rc, res = d.run(polls=8)
    finally:
        hostile.stop()
    check(res and res["version"] == "1.0.0", f"not updated: {rc} {res}")
    check(d.status()["version"] == "1.0.0" and d.status()["boot_slot"] == 0, "never activated")
    failures = d.reports("failure")
    check(failures and all("hash mismatch" in f["reason"] for f in failures), f"hash mismatch reported: {failures}")
    check(len(failures) <= 3, f"at most three attempts: {len(failures)}")


def hostile_refusal(s, name, make_envelope, expect, slot_size=1 << 20, chip="esp32c3", before=None):
    p = Product(s, name, chip)
    rid = p.push("2.0.0", counter=2)
    hostile = HostileServer(s.url)
    try:
        d = p.device(server_url=hostile.url, slot_size=slot_size)
        if before:
            before(p, d)
        hostile.envelope = make_envelope(p)
        hostile.offer_release_id = rid
        rc, res = d.run(polls=4)
        refused = d.reports("refused")
        check(refused and expect in refused[-1]["reason"], f"{name}: refusal '{expect}' reported: {refused} {d.last_stderr}")
        check(res and res["result"] == "idle", f"{name}: idle after refusing: {rc} {res}")
        return d
    finally:
        hostile.stop()


def test_hostile_downgrade_refused(s, opts):
    def update_first(p, d):
        rc, res = d.run(until="2.0.0")  # through the proxy, envelope untouched: counter 2 stored
        check(rc == 0, f"first update: {rc} {res}")
    d = hostile_refusal(s, "downgrade", lambda p: p.sign(p.image("1.5.0", 5), counter=1),
                        "downgrade: counter 1 < 2", before=update_first)
    check(d.status()["version"] == "2.0.0", "still on 2.0.0")


def test_hostile_other_chip_refused(s, opts):
    hostile_refusal(s, "chip", lambda p: p.sign(p.image("2.0.0", 2, chip="esp32s3"), counter=2),
                    "chip: the manifest is for chip id 9, this device is 5")


def test_hostile_expired_refused(s, opts):
    def expired(p):
        env = p.sign(p.image("2.0.0", 2), counter=2, extra=("--expires-at", str(int(time.time()) + 1)))
        time.sleep(2.1)
        return env
    hostile_refusal(s, "expired", expired, "expired")


def test_hostile_oversize_refused(s, opts):
    hostile_refusal(s, "oversize", lambda p: p.sign(p.image("2.0.0", 2, size=400_000), counter=2),
                    "oversize: image of", slot_size=320 * 1024)


def test_server_down_backs_off(s, opts):
    p = Product(s, "down")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    d = p.device(server_url=dead)
    rc, res = d.run(polls=6)
    check(rc == 3 and res["result"] == "polls exhausted", f"gave up after its polls: {rc} {res}")
    check(d.status()["version"] == "1.0.0" and d.status()["valid"], "a device never online keeps its image")
    expected = sum(5000 * 2 ** i for i in range(6))
    check(0.75 * expected <= res["slept_ms"] <= 1.25 * expected,
          f"exponential backoff with jitter: slept {res['slept_ms']} ms, expected about {expected}")
    # Then the server comes back: the same device enrols and updates.
    p.push("2.0.0")
    d.server_url = s.url
    rc, res = d.run(until="2.0.0")
    check(rc == 0 and res["version"] == "2.0.0", f"updates once the server is reachable: {rc} {res}")


def test_overloaded_server_retry_after_is_obeyed(s, opts):
    """otterd sheds load with 429 and Retry-After; the agent waits that long, not its own 5 s."""
    class Busy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            body = b'{"error":"overloaded","message":"try later"}'
            self.send_response(429)
            self.send_header("Retry-After", "100")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        p = Product(s, "busy")
        d = p.device(server_url=f"http://127.0.0.1:{httpd.server_address[1]}")
        rc, res = d.run(polls=3)
        check(rc == 3 and res["version"] == "1.0.0", f"kept its image, gave up after its polls: {rc} {res}")
        check(res["slept_ms"] == 3 * 100_000, f"waited Retry-After (100 s) each time: {res}")
    finally:
        httpd.shutdown()


def test_restart_after_switch_before_confirmation(s, opts):
    """Restarted after the switch, before confirmation: the new image booted once (pending
    verification) and lost power before confirming. The bootloader rolls back; the agent reports
    it and tries the release once more (a power cut proves nothing about the image)."""
    p = Product(s, "restart")
    p.push("2.0.0")
    d = p.device()
    log = p.path("writes.log")
    os.environ["OTTER_SIM_WRITE_LOG"] = log
    try:
        d.run(until="2.0.0")
    finally:
        del os.environ["OTTER_SIM_WRITE_LOG"]
    kinds = open(log).read().split()
    # otadata writes: first boot's bootloader, the slot erase... activation, the second boot's
    # bootloader (NEW -> PENDING_VERIFY), the confirmation. Cut before the confirmation: the
    # bootloader then sees PENDING_VERIFY twice and rolls back, as ESP-IDF's does for an image
    # that never confirmed.
    confirm = kinds.count("otadata") - 1
    check(confirm >= 3, f"otadata writes in an update: {kinds}")
    d2 = p.device()
    rc, _ = d2.run("--cut-at-write", f"otadata:{confirm}", until="2.0.0")
    check(rc == 137, f"cut before confirmation: {rc}")
    check(d2.status()["state"][1] == 3, f"new image pending verification: {d2.status()}")
    rc, res = d2.run(until="2.0.0")
    rolled = d2.reports("rolled_back")
    check(rolled and "not confirmed" in rolled[0]["reason"], f"the bootloader's rollback is reported: {rolled}")
    check(rc == 0 and res["version"] == "2.0.0", f"tried once more, and confirmed: {rc} {res}")
    check(len(d2.reports("success")) == 1, "success reported")


def test_rollout_pauses_on_failures_then_a_fixed_release_completes(s, opts):
    """Issue 9 with the real agent: a staged rollout of a release whose self-test fails pauses
    itself once more than one device rolled back; the devices left are not assigned; after an
    abort, a rollout of the fixed release completes with every device on it."""
    p = Product(s, "rollout")
    bad = p.push("2.0.0", seed=3)
    devices = [p.device() for _ in range(3)]
    r = s.otter("rollout", "create", "--release", bad, "--channel", "stable", "--stages", "100",
                "--failure-threshold", "1", "--min-finished", "2")
    for d in devices[:2]:
        rc, res = d.run("--fail-self-test", "2.0.0")
        check(rc == 0 and res["version"] == "1.0.0", f"rolled back to 1.0.0: {rc} {res} {d.last_stderr[-400:]}")
    shown = s.otter("rollout", "show", r["id"])
    check(shown["state"] == "paused", f"paused: {shown}")
    check(shown["pause_reason"] == "stage 1: 2 of 2 finished devices failed (more than 1)", f"reason: {shown}")
    check(shown["progress"][0]["counts"]["rolled_back"] == 2, f"counts: {shown['progress']}")
    rc, res = devices[2].run(polls=2)
    check(rc == 0 and res["result"] == "idle" and res["version"] == "1.0.0", f"not assigned while paused: {res}")

    s.otter("rollout", "abort", r["id"], "--reason", "self-test fails")
    fixed = p.push("2.0.1", seed=4)
    r = s.otter("rollout", "create", "--release", fixed, "--channel", "stable", "--stages", "50,100",
                "--failure-threshold", "20%", "--auto-advance")
    for _ in range(2):  # the second stage opens once every device of the first succeeded
        for d in devices:
            d.run(until="2.0.1", polls=3)
    for d in devices:
        rc, res = d.run(polls=1)
        check(rc == 0 and res["version"] == "2.0.1", f"on the fixed release: {res} {d.last_stderr[-400:]}")
    shown = s.otter("rollout", "show", r["id"])
    check(shown["state"] == "completed", f"completed: {shown}")
    check(sum(st["counts"]["success"] for st in shown["progress"]) == 3, f"three successes: {shown['progress']}")


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", help="run tests whose name contains this")
    ap.add_argument("--trials", type=int, default=30, help="random power-cut trials (split in three kinds)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("OTTER_E2E_SEED", time.time())))
    opts = ap.parse_args()
    for b in (OTTERD, OTTER, SIM):
        if not os.access(b, os.X_OK):
            sys.exit(f"e2e: {b} is missing: build it first (agent/scripts/test.sh does)")
    print(f"agent e2e: seed {opts.seed} (OTTER_E2E_SEED={opts.seed} repeats this run)")
    work = tempfile.mkdtemp(prefix="otter-agent-e2e-")
    server = Server(work)
    failed = []
    try:
        for t in TESTS:
            if opts.k and opts.k not in t.__name__:
                continue
            start = time.time()
            try:
                t(server, opts)
                print(f"ok   {t.__name__} ({time.time() - start:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure, then go on
                failed.append(t.__name__)
                print(f"FAIL {t.__name__}: {e}", flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc()
    finally:
        server.stop()
    if failed:
        print(f"agent e2e: {len(failed)} failed: {', '.join(failed)}; work directory kept: {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("agent e2e: all passed")


if __name__ == "__main__":
    main()
