// Automations: an analyst builds one (trigger, wait, conditions, a WhatsApp message),
// previews the message rendered for a real member through the dry run, saves it,
// enables it, dry-runs it and opens its results; a viewer may only look.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

let automationUrl;

test("an analyst builds an automation, previews it for members, saves and enables it", async () => {
  await withPage(browser, "automation-build", async (page) => {
    await login(page, seed.users.analyst, { next: "/automations" });
    await page.getByRole("link", { name: "New automation" }).click();
    await page.waitForURL((u) => u.pathname === "/automations/new");
    const builder = page.locator("[data-testid=automation-builder]");
    await builder.locator("[data-testid=name]").fill("WhatsApp follow-up");
    // Whoever wrote to the brand on WhatsApp, without a wait, if they consented.
    await builder.locator("[data-testid=event-type]").selectOption("message_received");
    await builder.locator("[data-testid=wait]").selectOption("none");
    await builder.locator("[data-testid=conditions]").fill('{"consent": "whatsapp"}');
    await builder.locator("[data-testid=body]").fill("Hi {{first_name}}, thanks for your message!");

    // A wrong condition is refused before anything is sent to the server.
    await builder.locator("[data-testid=conditions]").fill('{"all": [');
    await builder.locator("[data-testid=preview]").click();
    await builder.locator("[data-testid=preview-result] .notice").waitFor();
    assert.match(await builder.locator("[data-testid=preview-result]").textContent(), /Not a rule yet/);
    await builder.locator("[data-testid=conditions]").fill('{"consent": "whatsapp"}');

    // The preview renders the message for the seeded customer who wrote on WhatsApp.
    await builder.locator("[data-testid=preview]").click();
    const rows = builder.locator("[data-testid=dry-run] tbody tr");
    await rows.first().waitFor({ timeout: 20_000 });
    const rendered = builder.locator("[data-testid=rendered]");
    await rendered.first().waitFor();
    const text = await rendered.first().textContent();
    assert.match(text, /Hi \S+, thanks for your message!/);
    assert.doesNotMatch(text, /\{\{/, "placeholders filled in");
    assert.match(text, /whatsapp:\+91/);

    await builder.getByRole("button", { name: "Save (disabled)" }).click();
    await page.waitForURL((u) => /^\/automations\/[0-9a-f-]{36}$/.test(u.pathname));
    automationUrl = new URL(page.url()).pathname;
    assert.equal(await page.locator("[data-testid=automation-name]").textContent(), "WhatsApp follow-up");
    assert.equal((await page.locator("[data-testid=state]").textContent()).trim(), "disabled");
    await page.locator("[data-testid=switch]").click();
    await page.locator("[data-testid=state] .badge.ok").waitFor();

    // In the list, with its switch.
    await page.getByRole("link", { name: "← Automations" }).click();
    const row = page.locator("[data-testid=automations] tbody tr", { hasText: "WhatsApp follow-up" });
    await row.waitFor();
    assert.match(await row.locator("[data-testid=state]").textContent(), /enabled/);
    await row.getByRole("button", { name: "Disable" }).click();
    await row.locator("[data-testid=state]", { hasText: "disabled" }).waitFor();
    await row.getByRole("button", { name: "Enable" }).click();
    await row.locator("[data-testid=state]", { hasText: "enabled" }).waitFor();
  });
});

test("its dry run shows who would get what, and its results page the funnel", async () => {
  assert.ok(automationUrl, "the build test saved one");
  await withPage(browser, "automation-results", async (page) => {
    await login(page, seed.users.analyst, { next: automationUrl });
    await page.locator("[data-testid=dry-run-button]").click();
    const rows = page.locator("[data-testid=dry-run] tbody tr");
    await rows.first().waitFor({ timeout: 20_000 });
    assert.match(await page.locator("[data-testid=candidates]").textContent(), /people match the trigger now/);

    await page.getByRole("link", { name: "Results" }).click();
    await page.waitForURL((u) => u.pathname === `${automationUrl}/results`);
    await page.locator("[data-testid=results]").waitFor();
    for (const name of ["sent", "delivered", "read", "failed", "suppressed", "capped", "held_out"]) {
      await page.locator(`[data-kpi=${name}]`).waitFor();
    }
    await page.locator("[data-testid=funnel]").waitFor();
    const conversions = await page.locator("[data-testid=conversions]").textContent();
    assert.match(conversions, /Messaged/);
    assert.match(conversions, /Control \(held out\)/);
    await settled(page);
  });
});

test("a viewer sees automations but cannot build or switch one", async () => {
  assert.ok(automationUrl);
  await withPage(browser, "automation-viewer", async (page) => {
    await login(page, seed.users.viewer, { next: "/automations" });
    await page.locator("[data-testid=automations] tbody tr").first().waitFor();
    await settled(page);
    assert.equal(await page.getByRole("link", { name: "New automation" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /^(Enable|Disable)$/ }).count(), 0);
  });
});
