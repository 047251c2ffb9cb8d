// The fleet's pages in real Chromium against a real otterd (issue 11): upload a signed release
// through the page (a bad file is refused with the server's reason), look at devices and tag
// one, create a staged rollout with its per-stage preview, watch simulated devices (check-ins
// over HTTP from this test) move through it live, pause it, find the audit entries; a viewer
// sees no buttons and the server refuses its posts. With OTTER_SCREENSHOTS=1 the run writes
// the screenshots of docs/dashboard.md into docs/screenshots/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServer, launchBrowser, signIn, signedInAdmin, screenshot, repo, GOOD_PASSWORD } from "../lib/harness.mjs";

const otterBin = process.env.OTTER_BIN || join(repo, "target/debug/otter");
const CHIP = "esp32c3";
const DEVICES = 40;

let server;
let browser;
let work;
let secret;
let key;
let releases = {};
let devices = [];

/// Runs the otter CLI (signing happens here, on the test's side, as a person's laptop would).
function otter(...args) {
  return execFileSync(otterBin, args, { encoding: "utf8" });
}

/// A signed release file of `version` for product lamp: the bytes `otter sign` writes.
function signedRelease(version) {
  const fw = join(work, `fw-${version}.bin`);
  const out = join(work, `lamp-${version}.otter`);
  otter("dev", "synth-image", "--chip", CHIP, "--version", version, "--size", "300000", "--out", fw);
  otter("sign", fw, "--product", "lamp", "--key", key, "--out", out);
  return out;
}

async function device(path, token, body) {
  const resp = await fetch(server.url + path, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

/// One poll of a simulated device: check in; when offered the update, report progress and
/// success, and run the new image from then on. Returns whether it was offered one.
async function poll(d) {
  const r = await device("/device/v1/checkin", d.token, {
    version: d.version, security_counter: 0, image_sha256: d.sha256, chip: CHIP, partition_size: 1572864,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const u = r.body.update;
  if (!u) return false;
  for (const state of ["downloading", "downloaded", "installing", "success"]) {
    const s = await device("/device/v1/status", d.token, { release_id: u.release_id, state });
    assert.equal(s.status, 204, JSON.stringify(s.body));
  }
  d.version = u.version;
  d.sha256 = u.sha256;
  return true;
}

/// A screenshot for docs/dashboard.md (with OTTER_SCREENSHOTS=1); `phone` adds one at a
/// phone's width.
async function shot(page, name, { phone = false } = {}) {
  await screenshot(page, name);
  if (phone && process.env.OTTER_SCREENSHOTS) {
    const size = page.viewportSize();
    await page.setViewportSize({ width: 390, height: 844 });
    await screenshot(page, `${name}-phone`);
    await page.setViewportSize(size);
  }
}

before(async () => {
  work = await mkdtemp(join(tmpdir(), "otter-pages-"));
  server = await startServer({ OTTER_DASHBOARD_SECURE_COOKIES: "false" });
  browser = await launchBrowser();
  key = join(work, "release.key");
  otter("keygen", "--out", key);
  const p = await server.api("POST", "/api/v1/products", { name: "lamp", chip: CHIP, description: "desk lamps" });
  assert.equal(p.status, 201, p.text);
  secret = p.body.enrollment_secret;
  const pem = await readFile(join(work, "release.pub.pem"), "utf8");
  const k = await server.api("POST", "/api/v1/products/lamp/keys", { public_key_pem: pem, name: "ci" });
  assert.equal(k.status, 201, k.text);
  // 1.0.0 comes through the API, as CI would publish it; the fleet runs it.
  const bytes = await readFile(signedRelease("1.0.0"));
  const resp = await fetch(`${server.url}/api/v1/products/lamp/releases?channel=stable`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.admin}`, "content-type": "application/octet-stream" },
    body: bytes,
  });
  assert.equal(resp.status, 201);
  releases.old = await resp.json();
  for (let i = 0; i < DEVICES; i++) {
    const e = await fetch(`${server.url}/device/v1/enroll`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ product: "lamp", enrollment_secret: secret, hardware_id: `lamp-${String(i).padStart(3, "0")}` }),
    });
    assert.equal(e.status, 201);
    const b = await e.json();
    const d = { id: b.device_id, token: b.device_token, version: "1.0.0", sha256: releases.old.sha256 };
    devices.push(d);
    assert.equal(await poll(d), false);
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test("an admin uploads a signed release through the page; a bad file is refused with the reason", async () => {
  const page = await signedInAdmin(browser, server, "ada");
  await page.getByRole("heading", { name: "Versions running" }).waitFor();
  assert.equal(await page.locator("#devices-total").textContent(), String(DEVICES));
  assert.equal(await page.locator("#devices-seen").textContent(), String(DEVICES));

  await page.goto(`${server.url}/ui/releases`);
  await page.getByRole("link", { name: "Upload a signed release" }).click();
  await page.waitForURL(`${server.url}/ui/releases/upload`);
  // The page asks for a signed file, never for a key.
  assert.equal(await page.locator("input[type=file]").count(), 1);
  assert.equal(await page.getByLabel(/private key/i).count(), 0);

  // A file that is not a signed release: the server's reason, and nothing published.
  const junk = join(work, "junk.otter");
  await writeFile(junk, Buffer.alloc(4096, 7));
  await page.getByLabel("Release file").setInputFiles(junk);
  await page.getByRole("button", { name: "Upload" }).click();
  const error = page.locator("#upload-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.textContent(), /^Refused: .*(bundle|magic|release)/i);
  assert.equal((await server.api("GET", "/api/v1/releases")).body.releases.length, 1);

  // The real thing, with the progress bar; the browser lands on the release's page.
  const file = signedRelease("2.0.0");
  await page.getByLabel("Release file").setInputFiles(file);
  await Promise.all([page.waitForURL(/\/ui\/releases\/rel_/), page.getByRole("button", { name: "Upload" }).click()]);
  assert.equal(await page.locator("#upload-progress").count(), 0);
  const list = (await server.api("GET", "/api/v1/releases?product=lamp")).body.releases;
  releases.new = list.find((r) => r.version === "2.0.0");
  assert.ok(releases.new, "2.0.0 was published");
  assert.equal(page.url(), `${server.url}/ui/releases/${releases.new.id}`);
  assert.equal(await page.locator("#release-sha256").textContent(), releases.new.sha256);
  const facts = await page.locator("#release-facts").textContent();
  for (const want of ["2.0.0", CHIP, "stable", "ada"]) assert.ok(facts.includes(want), `${want} in ${facts}`);
  const keyId = releases.new.signed_by[0];
  assert.ok((await page.locator("#signatures").textContent()).includes(keyId));
  assert.equal(await page.locator("#release-running").textContent(), "0");
  await shot(page, "release");

  // The release list counts the devices running each release.
  await page.goto(`${server.url}/ui/releases`);
  const oldRow = page.locator(`tr[data-release="${releases.old.id}"] td.num`);
  assert.equal(await oldRow.textContent(), String(DEVICES));
  await shot(page, "releases");

  const pushes = await server.audit("action=release.push&actor=ada");
  assert.ok(pushes.some((e) => e.target === releases.new.id), JSON.stringify(pushes));
  assert.ok(pushes.some((e) => (e.detail || "").startsWith("refused:")), JSON.stringify(pushes));
  await page.close();
});

test("devices: search, filter, page and tag one on its page", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/ui/devices`);
  if (page.url().includes("sign-in")) {
    await signIn(page, server, "ada", GOOD_PASSWORD);
    await page.goto(`${server.url}/ui/devices`);
  }
  assert.equal(await page.locator("#devices tbody tr").count(), DEVICES);
  await page.getByLabel("Search", { exact: true }).fill("lamp-007");
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Show devices" }).click()]);
  assert.equal(await page.locator("#devices tbody tr").count(), 1);
  await page.getByRole("link", { name: "lamp-007" }).click();
  await page.waitForURL(/\/ui\/devices\/dev_/);
  assert.ok((await page.locator("#device-facts").textContent()).includes("1.0.0"));
  await page.getByLabel(/Add tags/).fill("lab, site:berlin");
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Add", exact: true }).click()]);
  const tags = await page.locator("#device-tags").textContent();
  assert.ok(tags.includes("lab") && tags.includes("site:berlin"), tags);
  // A bad tag: the reason on the page, nothing changed.
  await page.getByLabel(/Add tags/).fill("Bad Tag!");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.getByRole("alert").waitFor();
  assert.match(await page.getByRole("alert").textContent(), /tag/);
  await shot(page, "device");

  await page.goto(`${server.url}/ui/devices?tag=lab`);
  assert.equal(await page.locator("#devices tbody tr").count(), 1);
  await page.goto(`${server.url}/ui/devices?version=2.0.0`);
  await page.locator("#no-devices").waitFor();
  await page.goto(`${server.url}/ui/devices?filter=version%3C2.0.0&seen=%3C1h`);
  assert.equal(await page.locator("#devices tbody tr").count(), DEVICES);
  await page.goto(`${server.url}/ui/devices?filter=colour%3Dred`);
  assert.match(await page.getByRole("alert").textContent(), /unknown field/);
  await page.goto(`${server.url}/ui/devices`);
  await shot(page, "devices");
  const tagged = await server.audit("action=device.tag&actor=ada");
  assert.equal(tagged.length >= 1, true);
  await page.close();
});

test("a staged rollout: preview, create, devices move through it live, pause, audit", async () => {
  const page = await browser.context.newPage();
  await page.goto(`${server.url}/ui/rollouts/new?release_id=${releases.new.id}`);
  if (page.url().includes("sign-in")) {
    await signIn(page, server, "ada", GOOD_PASSWORD);
    await page.goto(`${server.url}/ui/rollouts/new?release_id=${releases.new.id}`);
  }
  await page.getByLabel("Stages").fill("25,100");
  await page.getByLabel(/Failure threshold/).fill("50%");
  // The preview follows the form: two stages whose devices add up to the fleet.
  await page.waitForFunction(() => document.querySelectorAll("#preview-table tbody tr").length === 2
    && document.querySelector("#r-preview-id").value !== "");
  const cells = await page.locator("#preview-table tbody tr td.num").allTextContents();
  const [first, firstTotal, second, total] = cells.map(Number);
  assert.equal(first, firstTotal);
  assert.equal(first + second, total);
  assert.equal(total, DEVICES);
  assert.match(await page.locator("#preview-status").textContent(), new RegExp(`^${DEVICES} devices`));
  await shot(page, "rollout-new");
  const previewId = await page.locator("#r-preview-id").inputValue();
  await Promise.all([page.waitForURL(/\/ui\/rollouts\/ro_/), page.getByRole("button", { name: "Create rollout" }).click()]);
  const id = page.url().split("/").pop();
  assert.equal(id, previewId, "the rollout has the id its preview counted with");
  await page.locator("#rollout-state", { hasText: "running" }).waitFor();

  // Devices check in over HTTP; the page follows without a reload.
  const marker = await page.evaluate(() => (window.__noReload = 1));
  let offered = 0;
  for (const d of devices) offered += (await poll(d)) ? 1 : 0;
  assert.equal(offered, first, "stage 1 offers the update to the devices the preview counted");
  await page.waitForFunction(
    (n) => document.querySelector('tr[data-stage="1"] td[data-state="success"]')?.textContent === String(n),
    first,
    { timeout: 15_000 },
  );
  assert.equal(await page.evaluate(() => window.__noReload), marker, "the page was not reloaded");
  assert.match(await page.locator('tr[data-stage="1"] [data-field=summary]').textContent(), new RegExp(`^${first} succeeded`));
  await shot(page, "rollout", { phone: true });

  // Open stage 2 by hand, then pause with confirmation: a dismissed dialog changes nothing.
  page.once("dialog", (d) => d.accept());
  await Promise.all([page.waitForEvent("load"), page.getByRole("button", { name: "Open next stage" }).click()]);
  await page.locator("#rollout-stage", { hasText: "2" }).waitFor();
  page.once("dialog", (d) => d.dismiss());
  await page.getByRole("button", { name: "Pause" }).click();
  assert.equal((await server.api("GET", `/api/v1/rollouts/${id}`)).body.state, "running");
  await page.getByLabel("Reason to pause").fill("checking the lab devices");
  page.once("dialog", (d) => d.accept());
  await Promise.all([page.waitForEvent("load"), page.getByRole("button", { name: "Pause" }).click()]);
  await page.locator("#rollout-state", { hasText: "paused" }).waitFor();
  assert.equal((await server.api("GET", `/api/v1/rollouts/${id}`)).body.state, "paused");
  assert.ok(await page.getByRole("button", { name: "Resume" }).isVisible());
  assert.ok(!(await page.getByRole("button", { name: "Pause" }).isVisible()));
  // Paused: no device is assigned meanwhile.
  for (const d of devices.slice(0, 5)) await poll(d);

  // The audit log shows what the person did, and the filter narrows it.
  await page.goto(`${server.url}/ui/audit?target=${id}`);
  const actions = await page.locator("#audit tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.action));
  for (const a of ["rollout.create", "rollout.advance", "rollout.pause"]) {
    assert.ok(actions.includes(a), `${a} in ${actions}`);
  }
  assert.ok((await page.locator("#audit").textContent()).includes("checking the lab devices"));
  await shot(page, "audit");
  await page.goto(`${server.url}/ui/audit?action=rollout.pause`);
  assert.equal(await page.locator("#audit tbody tr").count(), 1);

  // A device reports a failure with its reason: the overview lists it.
  const failing = devices[DEVICES - 1];
  const f = await device("/device/v1/status", failing.token, {
    release_id: releases.new.id, state: "failure", reason: "flash write failed at 0x110000",
  });
  assert.equal(f.status, 204, JSON.stringify(f.body));
  await page.goto(`${server.url}/ui/`);
  await page.locator("#rollouts-in-progress", { hasText: id }).waitFor();
  assert.ok((await page.locator("#failures").textContent()).includes("flash write failed at 0x110000"));
  await shot(page, "overview", { phone: true });
  browser.assertOnlyLocalhost();
  await page.close();
});

test("a viewer sees no buttons, and the server refuses the viewer's posts", async () => {
  const { password } = await server.createPerson("vera", "viewer");
  const page = await browser.context.newPage();
  await signIn(page, server, "vera", password, { newPassword: GOOD_PASSWORD });
  const rollouts = (await server.api("GET", "/api/v1/rollouts")).body.rollouts;
  const id = rollouts[0].id;
  const before = (await server.api("GET", `/api/v1/rollouts/${id}`)).body;

  await page.goto(`${server.url}/ui/rollouts/${id}`);
  await page.locator("#rollout-state").waitFor();
  assert.equal(await page.locator("#rollout-actions").count(), 0);
  assert.equal(await page.getByRole("button", { name: /Pause|Resume|Abort|Open next stage/ }).count(), 0);
  await page.goto(`${server.url}/ui/rollouts`);
  assert.equal(await page.getByRole("link", { name: "New rollout" }).count(), 0);
  await page.goto(`${server.url}/ui/releases/${releases.new.id}`);
  assert.equal(await page.getByRole("link", { name: /Roll out/ }).count(), 0);
  await page.goto(`${server.url}/ui/releases`);
  assert.equal(await page.getByRole("link", { name: /Upload/ }).count(), 0);
  const dev = devices[0];
  await page.goto(`${server.url}/ui/devices/${dev.id}`);
  assert.equal(await page.locator("form").filter({ hasText: "Add" }).count(), 0);
  assert.equal((await page.goto(`${server.url}/ui/releases/upload`)).status(), 403);
  assert.equal((await page.goto(`${server.url}/ui/rollouts/new`)).status(), 403);
  assert.equal((await page.goto(`${server.url}/ui/tokens`)).status(), 403);
  assert.equal((await page.goto(`${server.url}/ui/audit`)).status(), 403);
  await page.getByText("The audit log is for admins").waitFor();

  // Posts with the viewer's own valid session and CSRF token: refused by the server.
  await page.goto(`${server.url}/ui/`);
  const statuses = await page.evaluate(async ({ id, device }) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const post = async (path, fields) => {
      const body = new URLSearchParams({ csrf, ...fields });
      const r = await fetch(path, { method: "POST", body, redirect: "manual" });
      return r.status;
    };
    return [
      await post(`/ui/rollouts/${id}/pause`, { reason: "viewer" }),
      await post(`/ui/rollouts/${id}/abort`, {}),
      await post(`/ui/devices/${device}/tags`, { tags: "viewer" }),
      await post("/ui/rollouts", { release_id: "x", kind: "channel", target: "stable", stages: "100" }),
      await post("/ui/tokens", { name: "v", role: "admin" }),
    ];
  }, { id, device: dev.id });
  assert.deepEqual(statuses, [403, 403, 403, 403, 403]);
  const after = (await server.api("GET", `/api/v1/rollouts/${id}`)).body;
  assert.equal(after.state, before.state);
  assert.equal(after.updated_at, before.updated_at);
  const tags = (await server.api("GET", `/api/v1/devices/${dev.id}`)).body;
  assert.ok(!JSON.stringify(tags).includes("\"viewer\""));
  const refused = await server.audit("actor=vera");
  assert.ok(refused.some((e) => e.action === "rollout.pause" && (e.detail || "").startsWith("refused")), JSON.stringify(refused));
  await page.close();
});

test("keys and tokens: a token is shown once; the keys page lists the release key", async () => {
  const page = await browser.context.newPage();
  await signIn(page, server, "ada", GOOD_PASSWORD);
  await page.goto(`${server.url}/ui/keys`);
  assert.ok((await page.locator("#keys").textContent()).includes(releases.new.signed_by[0]));
  await page.goto(`${server.url}/ui/tokens`);
  await page.getByLabel("Name", { exact: true }).fill("ci-lamp");
  await page.getByLabel("Role", { exact: true }).selectOption("publisher");
  await page.getByLabel(/^Products/).fill("lamp");
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Create token" }).click()]);
  const token = await page.locator("#token-secret").textContent();
  assert.match(token, /^ott_/);
  const who = await server.api("GET", "/api/v1/whoami", undefined, token);
  assert.equal(who.body.name, "ci-lamp");
  await page.goto(`${server.url}/ui/tokens`);
  assert.ok(!(await page.content()).includes(token), "the secret is shown only once");
  await shot(page, "tokens");
  await page.close();
});

test("the fleet's pages fit a phone: no sideways scrolling, wide tables scroll in their box", async () => {
  const page = await browser.context.newPage();
  await signIn(page, server, "ada", GOOD_PASSWORD);
  await page.setViewportSize({ width: 375, height: 740 });
  const rollout = (await server.api("GET", "/api/v1/rollouts")).body.rollouts[0].id;
  for (const path of [
    "/ui/", "/ui/releases", `/ui/releases/${releases.new.id}`, "/ui/releases/upload", "/ui/devices",
    `/ui/devices/${devices[0].id}`, "/ui/rollouts", "/ui/rollouts/new", `/ui/rollouts/${rollout}`,
    "/ui/keys", "/ui/tokens", "/ui/audit",
  ]) {
    const answer = await page.goto(server.url + path);
    assert.equal(answer.status(), 200, path);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    assert.equal(wide, false, `${path} scrolls sideways on a phone`);
  }
  await page.close();
});

test("without JavaScript the pages still work: a plain upload form, Preview and Create buttons", async () => {
  const { chromium } = await import("playwright-core");
  const { chromiumBin, CHROMIUM_FLAGS } = await import("../lib/harness.mjs");
  const plain = await chromium.launch({ executablePath: chromiumBin, headless: true, args: CHROMIUM_FLAGS });
  try {
    const context = await plain.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    await signIn(page, server, "ada", GOOD_PASSWORD);
    // The multipart form, posted by the browser itself: it lands on the release's page.
    await page.goto(`${server.url}/ui/releases/upload`);
    await page.getByLabel("Release file").setInputFiles(signedRelease("2.1.0"));
    await Promise.all([page.waitForURL(/\/ui\/releases\/rel_/), page.getByRole("button", { name: "Upload" }).click()]);
    assert.equal(await page.getByRole("heading", { name: "lamp 2.1.0" }).count(), 1);
    const id = page.url().split("/").pop();
    // A refused file: the form again, with the server's reason, and a 4xx status.
    await page.goto(`${server.url}/ui/releases/upload`);
    const junk = join(work, "junk2.otter");
    await writeFile(junk, Buffer.alloc(100, 1));
    await page.getByLabel("Release file").setInputFiles(junk);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/ui/releases/upload") && r.request().method() === "POST"),
      page.getByRole("button", { name: "Upload" }).click(),
    ]);
    assert.ok(answer.status() >= 400 && answer.status() < 500, String(answer.status()));
    await page.locator("#upload-error").waitFor({ state: "visible" });

    // Preview by the button, then create: the server-rendered preview carries the id.
    await page.goto(`${server.url}/ui/rollouts/new?release_id=${id}`);
    await page.getByLabel("Value", { exact: false }).fill("lab");
    await page.getByLabel("Devices by").selectOption("tag");
    await page.getByLabel("Stages").fill("100");
    await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Preview" }).click()]);
    await page.waitForURL(`${server.url}/ui/rollouts/new`);
    assert.equal(await page.locator("#preview-table tbody tr").count(), 1);
    assert.equal(await page.locator("#preview-table tbody td.num").first().textContent(), "1");
    const previewId = await page.locator("#r-preview-id").inputValue();
    assert.match(previewId, /^ro_/);
    await Promise.all([page.waitForURL(/\/ui\/rollouts\/ro_/), page.getByRole("button", { name: "Create rollout" }).click()]);
    assert.equal(page.url(), `${server.url}/ui/rollouts/${previewId}`);
    assert.equal(await page.locator("#rollout-state").textContent(), "running");
    await context.close();
  } finally {
    await plain.close();
  }
});
