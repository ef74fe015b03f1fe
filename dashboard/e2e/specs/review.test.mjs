// The review queue: a viewer may look, an analyst approves and sees the merge applied.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("a viewer sees the review item but is offered no decision", async () => {
  await withPage(browser, "review-viewer", async (page) => {
    await login(page, seed.users.viewer, { next: "/merges/review" });
    await page.locator("article[data-review-id]").first().waitFor();
    await settled(page);
    assert.equal(await page.locator("[data-testid=review-actions]").count(), 0);
    assert.equal(await page.getByRole("button", { name: /Approve/ }).count(), 0);
    assert.equal(await page.locator("input[type=checkbox]").count(), 0);
  });
});

test("an analyst approves a review item and sees it applied", async () => {
  await withPage(browser, "review-approve", async (page) => {
    await login(page, seed.users.analyst, { next: "/merges/review" });
    const item = page.locator("article[data-review-id]").first();
    await item.waitFor();
    const candidates = await item.locator("[data-candidate-id]").count();
    assert.ok(candidates >= 2, `candidates side by side (${candidates})`);
    assert.match(await item.textContent(), /vikram/i);
    assert.equal(await item.locator("[data-testid=review-status]").getAttribute("data-status"), "pending");

    await item.getByRole("button", { name: "Approve (merge all)" }).click();
    await item.locator('[data-testid=review-status][data-status="applied"]').waitFor({ timeout: 30_000 });
    await item.locator("[data-testid=review-applied]").waitFor();
    assert.equal(await item.locator("[data-testid=review-actions]").count(), 0, "no decision left to take");

    // The merge is in the log, and the profile now holds every identifier.
    await page.getByRole("link", { name: "Merge log" }).click();
    await page.locator("[data-testid=merge-log] tbody tr").first().waitFor();
    await page.goto(`/profiles?q=${encodeURIComponent("vikram.nair@example.in")}`);
    await page.locator("[data-testid=profiles] tbody tr").first().click();
    const ids = page.locator("[data-testid=identifiers] tbody tr");
    await ids.first().waitFor();
    const kinds = new Set(await ids.evaluateAll((rows) => rows.map((r) => r.dataset.kind)));
    for (const k of ["email", "phone", "loyalty_id", "customer_id"]) assert.ok(kinds.has(k), `merged ${k}`);
  });
});
