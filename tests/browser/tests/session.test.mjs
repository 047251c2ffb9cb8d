// Signing in and out of the dashboard in real Chromium against a real otterd (issue 11):
// sign in, wrong password, lockout, expired session, first-sign-in password change, sign-out,
// a cross-origin form refused, the CSP, and no request leaving the test's servers.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import {
  startServer,
  launchBrowser,
  signIn,
  changePassword,
  signedInAdmin,
  GOOD_PASSWORD,
} from "../lib/harness.mjs";

let server;
let browser;

before(async () => {
  server = await startServer({
    // Small numbers, so that the lockout is reached in a few tries.
    OTTER_DASHBOARD_FAILURES_BEFORE_LOCKOUT: "3",
    OTTER_DASHBOARD_LOCKOUT_S: "600",
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("a new person changes the initial password at the first sign-in, then signs out", async () => {
  const { password } = await server.createPerson("first", "viewer");
  const page = await browser.context.newPage();
  const answer = await page.goto(`${server.url}/ui/people`);
  // Not signed in: the sign-in page, which returns to the page asked for.
  assert.match(page.url(), /\/ui\/sign-in\?next=\/ui\/people/);
  assert.equal(answer.status(), 200);

  await signIn(page, server, "first", password);
  // The one-time password opens nothing but the password change.
  await page.waitForURL(`${server.url}/ui/password`);
  await page.goto(`${server.url}/ui/`);
  assert.equal(page.url(), `${server.url}/ui/password`);
  await page.getByText("one-time initial password").waitFor();

  // A too short password is refused, with the reason, and nothing changes.
  await changePassword(page, password, "short");
  // (the browser's own minlength check keeps the form from being sent)
  assert.equal(page.url(), `${server.url}/ui/password`);

  await changePassword(page, password, GOOD_PASSWORD);
  await page.waitForURL(`${server.url}/ui/`);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  const nav = page.getByRole("navigation", { name: "Main" });
  for (const label of ["Overview", "Releases", "Devices", "Rollouts", "Keys"]) {
    await nav.getByRole("link", { name: label, exact: true }).waitFor();
  }
  // A viewer is not offered the admin sections (the audit log is for admins, as in the API).
  for (const label of ["People", "Tokens", "Audit"]) {
    assert.equal(await nav.getByRole("link", { name: label }).count(), 0, label);
  }

  // The initial password is gone; the new one works.
  const people = await server.api("GET", "/api/v1/people");
  const first = people.body.people.find((p) => p.name === "first");
  assert.equal(first.must_change_password, false);

  await Promise.all([page.waitForURL(/\/ui\/sign-in/), page.getByRole("button", { name: "Sign out" }).click()]);
  await page.getByText("You are signed out.").waitFor();
  await page.goto(`${server.url}/ui/`);
  assert.match(page.url(), /\/ui\/sign-in/);

  const actions = (await server.audit("actor=first")).map((e) => e.action);
  for (const a of ["person.sign_in", "person.password_change", "person.sign_out"]) {
    assert.ok(actions.includes(a), `${a} missing from ${actions}`);
  }
  await page.close();
});

test("a wrong password is refused and recorded; repeated ones lock the person out", async () => {
  const { password } = await server.createPerson("locky", "viewer");
  const page = await browser.context.newPage();
  for (let i = 1; i <= 2; i++) {
    await signIn(page, server, "locky", `wrong-${i}`);
    await page.getByRole("alert").getByText("Wrong name or password.").waitFor();
    assert.match(page.url(), /\/ui\/sign-in/);
    // The name stays filled in; the password does not.
    assert.equal(await page.getByLabel("Name").inputValue(), "locky");
    assert.equal(await page.getByLabel("Password", { exact: true }).inputValue(), "");
  }
  await signIn(page, server, "locky", "wrong-3");
  // Locked now; the page answers as for any wrong password, so that it tells no one which
  // names exist (the audit log and the people list say it).
  await page.getByRole("alert").getByText("Wrong name or password.").waitFor();
  // Locked: even the right password is refused.
  await signIn(page, server, "locky", password);
  await page.getByRole("alert").getByText("Wrong name or password.").waitFor();
  assert.match(page.url(), /\/ui\/sign-in/);

  // An unknown name reads the same as a wrong password.
  await signIn(page, server, "nobody-by-this-name", "whatever-it-is");
  await page.getByRole("alert").getByText("Wrong name or password.").waitFor();

  const failed = await server.audit("action=person.sign_in_failed&target=locky");
  assert.equal(failed.length, 4);
  assert.ok(failed.some((e) => /locked/.test(e.detail)), JSON.stringify(failed));
  const listed = (await server.api("GET", "/api/v1/people")).body.people.find((p) => p.name === "locky");
  assert.ok(listed.locked_until, "the API shows the lockout");
  await page.close();
});

test("a session ends when idle too long, and the page says so", async () => {
  const short = await startServer({ OTTER_DASHBOARD_SESSION_IDLE_S: "2", OTTER_DASHBOARD_SESSION_MAX_S: "60" });
  try {
    const page = await signedInAdmin(browser, short, "idle");
    await page.goto(`${short.url}/ui/people`);
    await page.getByRole("heading", { name: "People" }).waitFor();
    await new Promise((ok) => setTimeout(ok, 3000));
    await page.goto(`${short.url}/ui/people`);
    assert.match(page.url(), /\/ui\/sign-in\?next=\/ui\/people&why=expired/);
    await page.getByText("Your session ended. Sign in again.").waitFor();
    await page.getByLabel("Name").fill("idle");
    await page.getByLabel("Password", { exact: true }).fill(GOOD_PASSWORD);
    await Promise.all([page.waitForURL(`${short.url}/ui/people`), page.getByRole("button", { name: "Sign in" }).click()]);
    await page.close();
    browser.assertOnlyLocalhost();
  } finally {
    await short.stop();
  }
});

test("a form posted from another origin is refused and changes nothing", async () => {
  const page = await signedInAdmin(browser, server, "target");
  // The attacker's page: another port on the same host (so the same site: the SameSite=Strict
  // cookie alone would not stop it), posting the people form to otterd as soon as it loads.
  const evil = createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><title>win a prize</title>
      <form id="f" method="post" action="${server.url}/ui/people">
        <input name="name" value="mallory"><input name="role" value="admin">
        <input name="csrf" value="guessed">
      </form>
      <script>document.getElementById("f").submit()</script>`);
  });
  await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
  const evilUrl = `http://127.0.0.1:${evil.address().port}`;
  try {
    const posted = page.waitForResponse((r) => r.url() === `${server.url}/ui/people` && r.request().method() === "POST");
    await page.goto(evilUrl);
    const resp = await posted;
    assert.equal(resp.status(), 403);
    await page.getByText(/This form was refused/).waitFor();
    const people = (await server.api("GET", "/api/v1/people")).body.people.map((p) => p.name);
    assert.ok(!people.includes("mallory"), `${people}`);
  } finally {
    evil.close();
  }
  // The same form from our own page works.
  await page.goto(`${server.url}/ui/people`);
  await page.getByLabel("Name", { exact: true }).fill("bob");
  await page.getByLabel("Role").selectOption("viewer");
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Add person" }).click()]);
  const initial = await page.locator("#initial-password").textContent();
  assert.ok(initial.length >= 16, initial);
  browser.assertOnlyLocalhost();
  await page.close();
});

test("pages carry the CSP and security headers, and load nothing from elsewhere", async () => {
  const page = await signedInAdmin(browser, server, "headers");
  for (const path of ["/ui/", "/ui/people", "/ui/sign-in"]) {
    const resp = await page.goto(server.url + path);
    const h = resp.headers();
    assert.equal(
      h["content-security-policy"],
      "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    assert.equal(h["x-frame-options"], "DENY");
    assert.equal(h["cache-control"], "no-store");
    assert.equal(h["x-content-type-options"], "nosniff");
  }
  // The session cookie is HttpOnly and SameSite=Strict (Secure is off only where the test says).
  // (All cookies: a URL filter would leave out Secure ones for an http:// URL.)
  const cookies = (await browser.context.cookies()).filter((c) => c.domain === "127.0.0.1");
  const session = cookies.find((c) => c.name.endsWith("otter_session"));
  assert.ok(session, JSON.stringify(cookies));
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.secure, true);
  assert.equal(session.name, "__Host-otter_session");
  // The script and stylesheet are ours and load.
  const js = await page.request.get(`${server.url}/ui/static/otter.js`);
  assert.equal(js.status(), 200);
  browser.assertOnlyLocalhost();
  await page.close();
});

test("a disabled person's session ends at once", async () => {
  const page = await signedInAdmin(browser, server, "soon-gone");
  const r = await server.api("POST", "/api/v1/people/soon-gone/disable");
  assert.equal(r.status, 200, r.text);
  await page.goto(`${server.url}/ui/`);
  assert.match(page.url(), /\/ui\/sign-in/);
  await page.getByLabel("Name").fill("soon-gone");
  await page.getByLabel("Password", { exact: true }).fill(GOOD_PASSWORD);
  await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: "Sign in" }).click()]);
  await page.getByRole("alert").getByText("This account is disabled.").waitFor();
  await page.close();
});
