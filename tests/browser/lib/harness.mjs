// The browser tests' fixtures: a real otterd in a temporary directory, Debian's Chromium driven
// by playwright-core, and helpers to sign in. Pages tests import from here.
//
//   const server = await startServer({ OTTER_DASHBOARD_SESSION_IDLE_S: "2" });
//   const browser = await launchBrowser();           // fresh --user-data-dir, request log
//   const page = await browser.context.newPage();
//   const { password } = await server.createPerson("ada", "admin");
//   await signIn(page, server, "ada", password, { newPassword: "..." });
//   ...
//   browser.assertOnlyLocalRequests(server);  await browser.close();  await server.stop();
//
// otterd: $OTTERD_BIN, else target/debug/otterd of the repository (scripts/test.sh builds it).
// Chromium: $CHROMIUM_BIN, else /usr/bin/chromium (scripts/setup.sh installs Debian's).

import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../..");
export const otterdBin = process.env.OTTERD_BIN || join(repo, "target/debug/otterd");
export const chromiumBin = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/// The flags Chromium runs with: headless, no network of its own (no QUIC, no background
/// fetches, no component updates, no sync), so that every request it makes is the test's.
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/// A good password for people the tests create.
export const GOOD_PASSWORD = "correct horse battery staple";

/// Starts otterd on 127.0.0.1 (a free port) with a fresh data directory; `env` adds OTTER_*
/// settings. Resolves once it prints its listening line.
export async function startServer(env = {}) {
  const dir = await mkdtemp(join(tmpdir(), "otter-browser-"));
  const dataDir = join(dir, "data");
  const child = spawn(
    otterdBin,
    ["serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"],
    {
      env: {
        PATH: process.env.PATH,
        OTTER_LOG_FORMAT: "text",
        RUST_LOG: process.env.RUST_LOG || "warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  const url = await new Promise((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error(`otterd did not start in 30 s:\n${stderr}`)), 30_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/otterd listening on (http:\/\/[0-9.:]+)/);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`otterd exited with ${code}:\n${stderr}`));
    });
  });
  const admin = (await readFile(join(dataDir, "initial-admin-token"), "utf8")).trim();

  /// Calls the management API with the admin token (or `token`); resolves to {status, body}.
  async function api(method, path, body, token = admin) {
    const resp = await fetch(url + path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: resp.status, body: json, text };
  }

  return {
    url,
    dataDir,
    admin,
    api,
    /// Adds a person through the API; resolves to {person, password} (the initial password).
    async createPerson(name, role = "admin", products = []) {
      const r = await api("POST", "/api/v1/people", { name, role, products });
      assert.equal(r.status, 201, r.text);
      return { person: r.body.person, password: r.body.initial_password };
    },
    /// The audit entries matching `query` (e.g. "action=person.sign_in"), newest first.
    async audit(query = "") {
      const r = await api("GET", `/api/v1/audit?${query}`);
      assert.equal(r.status, 200, r.text);
      return r.body.entries;
    },
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((ok) => child.on("exit", ok));
        child.kill("SIGTERM");
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/// Launches Chromium with a fresh profile. `requests` logs the URL of every request any page
/// of the context makes.
export async function launchBrowser() {
  const profile = await mkdtemp(join(tmpdir(), "otter-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumBin,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  const requests = [];
  context.on("request", (r) => requests.push(r.url()));
  return {
    context,
    requests,
    /// Fails if any request of the browser so far went anywhere but this machine
    /// (127.0.0.1, localhost, ::1): no CDN, font, analytics or browser service.
    assertOnlyLocalhost() {
      const local = ["127.0.0.1", "localhost", "[::1]"];
      const elsewhere = requests.filter((u) => {
        if (u.startsWith("data:") || u.startsWith("blob:") || u === "about:blank") return false;
        return !local.includes(new URL(u).hostname);
      });
      assert.deepEqual(elsewhere, [], "requests left this machine");
      assert.ok(requests.length > 0, "no request was logged at all");
    },
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/// Signs in through the form. With `newPassword`, also changes a one-time initial password
/// (the page it lands on first) to it. Resolves once the browser is on the page it ends on.
/// Cookies are per host, not per port: the browser's earlier sessions (also those of other
/// servers of the run on 127.0.0.1) are cleared first.
export async function signIn(page, server, name, password, { newPassword } = {}) {
  await page.context().clearCookies();
  await page.goto(`${server.url}/ui/sign-in`);
  await page.getByLabel("Name").fill(name);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Sign in" }).click()]);
  if (newPassword) {
    await page.waitForURL(`${server.url}/ui/password`);
    await changePassword(page, password, newPassword);
  }
}

/// Fills and sends the password change form of the page shown.
export async function changePassword(page, current, next) {
  await page.getByLabel("Current password").fill(current);
  await page.getByLabel(/^New password \(/).fill(next);
  await page.getByLabel("New password again").fill(next);
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Change password" }).click()]);
}

/// A new admin, signed in with their own password; resolves to the page.
export async function signedInAdmin(browser, server, name = "ada") {
  const { password } = await server.createPerson(name, "admin");
  const page = await browser.context.newPage();
  await signIn(page, server, name, password, { newPassword: GOOD_PASSWORD });
  await page.waitForURL(`${server.url}/ui/`);
  return page;
}

/// With OTTER_SCREENSHOTS=1 (or a directory), saves a full-page screenshot of `page` as
/// docs/screenshots/NAME.png (or DIR/NAME.png), for docs/dashboard.md. Otherwise does nothing,
/// so that a test run leaves the repository as it was.
export async function screenshot(page, name) {
  const want = process.env.OTTER_SCREENSHOTS;
  if (!want || want === "0") return;
  const dir = want === "1" ? join(repo, "docs/screenshots") : want;
  await mkdir(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}
