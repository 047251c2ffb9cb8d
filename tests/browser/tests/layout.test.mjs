// The dashboard's frame on a phone and a laptop, and by keyboard (issue 11): the skip link,
// labelled fields, visible focus, no sideways scrolling on a narrow screen.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, signedInAdmin, screenshot } from "../lib/harness.mjs";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/// Whether the page is wider than its viewport (it would scroll sideways).
async function overflows(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
}

test("the sign-in page and the frame fit a phone and a laptop", async () => {
  const page = await signedInAdmin(browser, server, "ada");
  await server.createPerson("vic", "viewer");
  for (const [w, h, kind] of [[375, 740, "phone"], [1280, 800, "laptop"]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.goto(`${server.url}/ui/people`);
    assert.equal(await overflows(page), false, `people page overflows a ${kind}`);
    // The nav stays reachable: every entry is in the page, and the sign-out button shows.
    await page.getByRole("button", { name: "Sign out" }).waitFor({ state: "visible" });
    await screenshot(page, `people-${kind}`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.context().clearCookies();
  for (const [w, h, kind] of [[375, 740, "phone"], [1280, 800, "laptop"]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.goto(`${server.url}/ui/sign-in`);
    assert.equal(await overflows(page), false, `sign-in page overflows a ${kind}`);
    await screenshot(page, `sign-in-${kind}`);
  }
  await page.close();
});

test("keyboard users skip to the content, see where focus is, and every field has a label", async () => {
  const page = await signedInAdmin(browser, server, "kay");
  await page.goto(`${server.url}/ui/people`);
  // The first Tab lands on the skip link, which is then shown, and leads to the content.
  await page.keyboard.press("Tab");
  const skip = page.getByRole("link", { name: "Skip to content" });
  assert.equal(await skip.evaluate((el) => el === document.activeElement), true);
  const box = await skip.boundingBox();
  assert.ok(box && box.x >= 0 && box.width > 0, "the focused skip link is on screen");
  const outline = await skip.evaluate((el) => getComputedStyle(el).outlineStyle);
  assert.notEqual(outline, "none", "focus is visible");
  await page.keyboard.press("Enter");
  assert.match(page.url(), /#main$/);
  // Every form field is labelled (the accessible name is not empty).
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      .map((el) => el.outerHTML),
  );
  assert.deepEqual(unlabelled, []);
  // The current section is marked for screen readers.
  const current = page.getByRole("navigation", { name: "Main" }).locator('[aria-current="page"]');
  assert.equal(await current.textContent(), "People");
  // The page's language is declared.
  assert.equal(await page.getAttribute("html", "lang"), "en");
  browser.assertOnlyLocalhost();
  await page.close();
});
