// Destinations: an admin's destination shows its sync status, the connection test
// reports the remote's answer, and a viewer sees the status without the actions.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled, textMatches, BASE } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Creates a REST destination through the API as the signed-in user. */
async function createDestination(page, name) {
  return page.evaluate(async ({ name, base }) => {
    const resp = await fetch(`${base}/api/v1/destinations`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-requested-with": "constintel" },
      body: JSON.stringify({
        name,
        kind: "rest",
        // Nothing listens on the discard port: the connection test must say so.
        config: { url: "http://127.0.0.1:9/constintel", timeout_secs: 2 },
        credentials: { token: "e2e-secret-token" },
      }),
    });
    return { status: resp.status, body: await resp.json() };
  }, { name, base: BASE });
}

test("an admin sees a destination's status and tests its connection", async () => {
  await withPage(browser, "destination-admin", async (page) => {
    await login(page, seed.users.admin, { next: "/destinations" });
    const created = await createDestination(page, "Warehouse");
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.ok(!JSON.stringify(created.body).includes("e2e-secret-token"), "credentials are write-only");
    await page.reload();
    const row = page.locator("[data-testid=destinations] tbody tr", { hasText: "Warehouse" });
    await row.waitFor();
    await row.getByRole("link", { name: "Warehouse" }).click();
    await page.locator("[data-testid=destination]").waitFor();
    await page.getByRole("button", { name: "Test connection" }).click();
    await textMatches(page, "[data-testid=destination-message]", /refused/);
    await page.locator("[data-testid=destination-deliveries] tbody tr").first().waitFor();
    assert.equal(await page.getByRole("button", { name: "Replay dead letters" }).count(), 1);
  });
});

test("a viewer sees destinations without their actions", async () => {
  await withPage(browser, "destination-viewer", async (page) => {
    await login(page, seed.users.viewer, { next: "/destinations" });
    await settled(page);
    const link = page.locator("[data-testid=destinations] a").first();
    if (await link.count()) {
      await link.click();
      await page.locator("[data-testid=destination]").waitFor();
    }
    assert.equal(await page.getByRole("button", { name: "Test connection" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Replay dead letters" }).count(), 0);
  });
});
