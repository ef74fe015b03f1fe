// Shared helpers of the browser specs: launching Debian's Chromium through
// playwright-core, signing in, waiting for the app, and screenshots.
//
// The Rust harness (dashboard/e2e/tests/browser.rs) starts a fleet and passes
// BASE_URL (the api-gateway, which serves the dashboard), E2E_SEED (a JSON file
// describing the seeded brand) and SCREENSHOT_DIR.
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

export const BASE = process.env.BASE_URL;
assert.ok(BASE, "BASE_URL is not set: run the specs through `just test-browser`");
export const seed = JSON.parse(readFileSync(process.env.E2E_SEED, "utf8"));
export const SCREENSHOTS = process.env.SCREENSHOT_DIR;
const OUTPUT = new URL("../output/", import.meta.url).pathname;

// Flags that keep Chromium from reaching out or needing a sandbox/GPU here.
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** Launches headless Chromium (one per spec file). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
  });
}

/**
 * A fresh browser context (own cookies) and page at the laptop size the screenshots
 * use. Wasm panics, uncaught errors and anything the gateway's Content-Security-Policy
 * blocked are collected in `page.errors`: specs assert there are none.
 */
export async function newPage(browser, viewport = { width: 1366, height: 768 }) {
  const context = await browser.newContext({ viewport, baseURL: BASE });
  // The browser reports what the policy blocks as an event on the document.
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`),
    );
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.on("console", (m) => {
    if (
      m.type() === "error" &&
      /panicked|RuntimeError|unreachable|CSP violation|Content Security Policy/.test(m.text())
    ) {
      page.errors.push(m.text());
    }
  });
  return page;
}

/** Signs in through the login form as `email` and waits to land inside the app. */
export async function login(page, email, { next } = {}) {
  await page.goto(next ? `/login?next=${encodeURIComponent(next)}` : "/login");
  await page.getByLabel("E-mail").fill(email);
  await page.getByLabel("Password").fill(seed.users.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((u) => !u.pathname.startsWith("/login"));
  await page.locator("main.content").waitFor();
}

/** Waits until no loading indicator is left on the page. */
export async function settled(page) {
  await page.waitForFunction(() => document.querySelectorAll(".loading").length === 0);
}

/** Waits until `selector`'s text matches `pattern`; returns the text. */
export async function textMatches(page, selector, pattern, timeout = 15_000) {
  const handle = await page.waitForFunction(
    ([sel, source, flags]) => {
      const el = document.querySelector(sel);
      return el && new RegExp(source, flags).test(el.textContent) ? el.textContent : null;
    },
    [selector, pattern.source, pattern.flags],
    { timeout },
  );
  return handle.jsonValue();
}

/** The exact number in a KPI card (`data-kpi=name`; its title when abbreviated), digits only. */
export async function kpi(page, name) {
  const text = await page.locator(`[data-kpi=${name}] .kpi-value`).getAttribute("title");
  return Number(text.replace(/[^0-9.]/g, ""));
}

/** Saves a screenshot for the README (SCREENSHOT_DIR). */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

/** Saves a screenshot of a failure next to the specs (git-ignored). */
export async function evidence(page, name) {
  mkdirSync(OUTPUT, { recursive: true });
  await page.screenshot({ path: join(OUTPUT, `${name}.png`), fullPage: true }).catch(() => {});
}

/** Asserts the page met no wasm panic or uncaught error. */
export function noErrors(page) {
  assert.deepEqual(page.errors, [], "the app reported errors");
}

/** Runs `body(page)`, keeping a screenshot of the page if it fails. */
export async function withPage(browser, name, body, viewport) {
  const page = await newPage(browser, viewport);
  try {
    await body(page);
    noErrors(page);
  } catch (e) {
    await evidence(page, name);
    throw e;
  } finally {
    await page.context().close();
  }
}
