// The Models page after the generated brand's training run: each churn and LTV version
// with its metrics beside its baselines', why it is or is not active, and the
// reliability curve of the churn probabilities.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("every model version says why it is or is not active, beside its baselines", async () => {
  await withPage(browser, "models", async (page) => {
    await login(page, seed.users.viewer);
    await page.goto("/models");
    await page.getByRole("heading", { name: "Models" }).waitFor();
    await settled(page);
    for (const task of ["churn", "ltv"]) {
      const rows = page.locator(`section[data-task=${task}] tbody tr`);
      assert.ok((await rows.count()) >= 1, `${task} has a version`);
      for (const row of await rows.all()) {
        const reason = (await row.locator("[data-reason]").textContent()).trim();
        assert.ok(reason.length > 5 && reason !== "—", `${task}: a reason (${reason})`);
      }
      // Exactly one serves (LightGBM or the baseline in its place), and says what it beat.
      const active = page.locator(`section[data-task=${task}] tr[data-status=active]`);
      assert.equal(await active.count(), 1, `${task}: one active version`);
    }
    // LightGBM churn versions are compared with recency and BG/NBD on the same customers.
    const lightgbm = page.locator("section[data-task=churn] tr[data-algorithm=lightgbm]").first();
    const baselines = await lightgbm.locator("[data-baselines]").textContent();
    assert.match(baselines, /Recency only 0\.\d{3}/);
    assert.match(baselines, /BG\/NBD 0\.\d{3}/);
    // The serving LTV version says which forecast it serves (expected or median spend).
    const head = page.locator("section[data-task=ltv] tr[data-status=active] [data-head]");
    assert.match(await head.textContent(), /\((mean|median) spend\)/);
    // The reliability curve: a dot per group of customers, over the diagonal.
    const curve = page.locator('section[data-task=churn] [data-reliability] svg[aria-label^="Reliability"]');
    await curve.waitFor();
    assert.ok((await curve.locator("circle.dot").count()) >= 3, "at least three bins");
    assert.equal(await curve.locator("line.diagonal").count(), 1);
    assert.match(await page.locator("section[data-task=churn] [data-reliability]").textContent(), /Brier score 0\.\d{3} calibrated/);
  });
});

test("the Overview's KPI figures stay on one line at 1440 px", async () => {
  await withPage(browser, "overview-kpis", async (page) => {
    await login(page, seed.users.viewer);
    await page.locator("[data-kpi=revenue]").waitFor();
    await settled(page);
    for (const card of await page.locator(".kpi .kpi-value").all()) {
      const fits = await card.evaluate((el) => el.scrollWidth <= el.clientWidth + 1);
      // One line is less than twice the font size high.
      const oneLine = await card.evaluate((el) => el.getBoundingClientRect().height < 2 * parseFloat(getComputedStyle(el).fontSize));
      assert.ok(fits, `${await card.textContent()} fits its card`);
      assert.ok(oneLine, `${await card.textContent()} is on one line`);
      assert.ok((await card.getAttribute("title")).length > 0, "the exact value is on hover");
    }
  }, { width: 1440, height: 900 });
});
