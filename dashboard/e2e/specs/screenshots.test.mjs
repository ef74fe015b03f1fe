// Every page at 1366×768 (and the overview at phone width), saved under
// docs/screenshots/ for the README, from a fleet with the seeded brand.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled, screenshot } from "./helpers.mjs";
import { CUSTOMERS_CSV } from "./fixtures.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("every page, for the README", async () => {
  await withPage(browser, "screenshots", async (page) => {
    await page.goto("/login");
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    await screenshot(page, "01-login");

    await login(page, seed.users.admin);
    await page.locator("[data-kpi=profiles]").waitFor();
    await settled(page);
    await screenshot(page, "02-overview");

    await page.goto("/profiles");
    await page.locator("[data-testid=profiles] tbody tr").first().waitFor();
    await settled(page);
    await screenshot(page, "03-profiles");

    await page.getByRole("searchbox").fill(seed.star_phone_typed);
    await page.getByRole("searchbox").press("Enter");
    await page.waitForURL((u) => u.searchParams.has("q"));
    await page.locator("[data-testid=profiles] tbody tr").first().click();
    await page.locator("[data-testid=identifiers] tbody tr").first().waitFor();
    await page.locator("[data-testid=timeline] li").first().waitFor();
    await settled(page);
    await screenshot(page, "04-customer-360");

    await page.goto("/merges/review");
    await page.locator("article[data-review-id]").first().waitFor();
    await settled(page);
    await screenshot(page, "05-review-queue");

    await page.goto("/merges");
    await page.locator("[data-testid=merge-log] tbody tr").first().waitFor();
    await settled(page);
    await screenshot(page, "06-merge-log");

    await page.goto("/integrations");
    await page.locator("[data-testid=integrations] tbody tr").first().waitFor();
    await settled(page);
    await screenshot(page, "07-integrations");

    await page.goto(`/integrations/${seed.integrations.shopify.id}`);
    await page.locator("[data-testid=deliveries] tbody tr").first().waitFor();
    await settled(page);
    await screenshot(page, "08-integration");

    await page.goto("/imports");
    await page.locator("[data-testid=upload-form] input[type=file]").setInputFiles({
      name: "customers.csv",
      mimeType: "text/csv",
      buffer: Buffer.from(CUSTOMERS_CSV),
    });
    await page.locator("[data-testid=preview]").waitFor();
    await page.getByRole("button", { name: "Upload" }).click();
    await page.waitForFunction(
      () => document.querySelector("[data-testid=import-progress]")?.getAttribute("aria-valuenow") === "100",
      null,
      { timeout: 30_000 },
    );
    await page.locator("[data-testid=row-errors]").waitFor();
    await settled(page);
    await screenshot(page, "09-csv-upload");

    await page.goto("/models");
    await page.getByRole("heading", { name: "Models" }).waitFor();
    await settled(page);
    await screenshot(page, "10-models");

    await page.goto("/streams");
    await page.locator("[data-testid=topics] tbody tr").first().waitFor();
    await page.locator("[data-testid=feed] li").first().waitFor({ timeout: 20_000 }).catch(() => {});
    await settled(page);
    await screenshot(page, "11-streams");
  });

  await withPage(browser, "screenshots-phone", async (page) => {
    await login(page, seed.users.admin);
    await page.locator("[data-kpi=profiles]").waitFor();
    await settled(page);
    await screenshot(page, "12-overview-phone");
    await page.getByRole("button", { name: "Menu" }).click();
    await page.locator(".sidebar").waitFor();
    assert.ok(await page.locator(".sidebar").isVisible(), "the menu opens at phone width");
  }, { width: 390, height: 844 });
});
