// Signing in and out, deep links, and the login page's answers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("a visitor is sent to sign in and brought back to the page they asked for", async () => {
  await withPage(browser, "auth-redirect", async (page) => {
    await page.goto("/profiles?q=asha");
    await page.waitForURL((u) => u.pathname === "/login");
    assert.equal(new URL(page.url()).searchParams.get("next"), "/profiles?q=asha");

    await page.getByLabel("E-mail").fill(seed.users.admin);
    await page.getByLabel("Password").fill("not the password at all");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "Wrong e-mail or password." }).waitFor();

    await page.getByLabel("Password").fill(seed.users.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL((u) => u.pathname === "/profiles" && u.searchParams.get("q") === "asha");
    assert.equal(await page.getByRole("searchbox").inputValue(), "asha");
    assert.equal(await page.locator("[data-testid=user-name]").textContent(), seed.users.admin);
  });
});

test("a deep link survives a reload, and unknown pages say so", async () => {
  await withPage(browser, "auth-deep-link", async (page) => {
    await login(page, seed.users.admin);
    await page.goto("/models?task=churn");
    await page.getByRole("heading", { name: "Models" }).waitFor();
    await page.reload();
    await page.getByRole("heading", { name: "Models" }).waitFor();
    await settled(page);
    assert.equal(await page.locator(".nav-link[aria-current=page]").textContent(), "Models");
    assert.equal(await page.locator(".segmented a[aria-current=page]").textContent(), "Churn");

    await page.goto("/no/such/page");
    await page.getByRole("heading", { name: "Page not found" }).waitFor();
  });
});

test("signing out ends the session on the server", async () => {
  await withPage(browser, "auth-logout", async (page) => {
    await login(page, seed.users.analyst);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((u) => u.pathname === "/login");
    const me = await page.evaluate(async () => (await fetch("/api/v1/auth/me")).status);
    assert.equal(me, 401, "the session cookie no longer works");
    await page.goto("/");
    await page.waitForURL((u) => u.pathname === "/login");
  });
});
