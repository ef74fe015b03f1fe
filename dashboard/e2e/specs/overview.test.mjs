// The overview shows the seeded brand: non-zero KPIs and the charts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled, kpi } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("the overview shows non-zero KPIs and charts for the period", async () => {
  await withPage(browser, "overview", async (page) => {
    await login(page, seed.users.viewer);
    await page.locator("[data-kpi=profiles]").waitFor();
    await settled(page);
    for (const name of ["profiles", "new_profiles", "orders", "revenue", "merges"]) {
      assert.ok((await kpi(page, name)) > 0, `${name} is not zero`);
    }
    await page.locator('svg[aria-label="Events per minute"]').waitFor();
    const revenue = page.locator('svg[aria-label="Revenue per day"]');
    await revenue.waitFor();
    assert.ok((await revenue.locator("rect").count()) >= 1, "revenue per day has bars");
    assert.ok(await page.locator('[aria-label="Revenue per category"] .hbar-row').count() >= 3);

    await page.getByRole("link", { name: "Last 7 days" }).click();
    await page.waitForURL((u) => u.searchParams.get("period") === "7d");
    await settled(page);
    assert.ok((await kpi(page, "orders")) > 0);
  });
});
