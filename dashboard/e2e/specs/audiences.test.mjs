// Audiences: an analyst builds one with its size shown live, sees the server's reason
// when the rule is wrong, saves it and finds its members; a viewer may only look.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled, kpi, textMatches } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("an analyst builds an audience with its live size and finds its members", async () => {
  await withPage(browser, "audience-build", async (page) => {
    await login(page, seed.users.analyst, { next: "/audiences" });
    await page.getByRole("button", { name: "New audience" }).click();
    const builder = page.locator("[data-testid=audience-builder]");
    await builder.getByLabel("Name").fill("Reachable by e-mail");
    await builder.getByRole("button", { name: "Has an e-mail" }).click();
    await page.locator("[data-kpi=audience-size]").waitFor({ timeout: 15_000 });
    const size = await kpi(page, "audience-size");
    assert.ok(size > 0, `customers with an e-mail (${size})`);

    // A wrong rule: the server says where and why, nothing is sized.
    await builder.locator("[data-testid=rule]").fill('{"all": []}');
    await textMatches(page, "[data-testid=rule-problem]", /needs at least one rule/);
    await builder.locator("[data-testid=rule]").fill('{"has_identifier": "email"}');
    await page.locator("[data-kpi=audience-size]").waitFor();
    assert.equal(await kpi(page, "audience-size"), size, "the same rule, the same size");

    await builder.getByRole("button", { name: "Save audience" }).click();
    const row = page.locator("[data-testid=audiences] tbody tr", { hasText: "Reachable by e-mail" });
    await row.waitFor();
    assert.equal(Number((await row.locator("[data-testid=member-count]").textContent()).replace(/[^0-9]/g, "")), size);
    await row.getByRole("link", { name: "Reachable by e-mail" }).click();
    await page.locator("[data-testid=audience-members] tbody tr").first().waitFor();
    assert.equal(await kpi(page, "members"), size);
    assert.equal(await page.locator("[data-testid=export]").count(), 0, "the export is for admins");
  });
});

test("a viewer sees audiences but cannot build one", async () => {
  await withPage(browser, "audience-viewer", async (page) => {
    await login(page, seed.users.viewer, { next: "/audiences" });
    await settled(page);
    assert.equal(await page.getByRole("button", { name: "New audience" }).count(), 0);
  });
});
