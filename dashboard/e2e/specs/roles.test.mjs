// Each role is offered what it may do and nothing more: viewers read, analysts also
// send test events and upload files, admins also manage integrations and secrets.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed, settled } from "./helpers.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const shopify = () => `/integrations/${seed.integrations.shopify.id}`;

for (const [role, expected] of [
  ["viewer", { add: 0, test: 0, rotate: 0, reveal: 0, toggle: 0, upload: 0 }],
  ["analyst", { add: 0, test: 1, rotate: 0, reveal: 0, toggle: 0, upload: 1 }],
  ["admin", { add: 1, test: 1, rotate: 1, reveal: 1, toggle: 1, upload: 1 }],
]) {
  test(`the ${role} is offered exactly the ${role}'s actions`, async () => {
    await withPage(browser, `roles-${role}`, async (page) => {
      await login(page, seed.users[role]);
      assert.equal(await page.locator("[data-testid=user-role]").textContent(), role);

      await page.goto("/integrations");
      await page.locator("[data-testid=integrations]").waitFor();
      assert.equal(await page.getByRole("button", { name: "Add integration" }).count(), expected.add);

      await page.goto(shopify());
      await page.locator("[data-testid=integration]").waitFor();
      await settled(page);
      const actions = page.locator("[data-testid=integration]");
      assert.equal(await actions.getByRole("button", { name: "Send test event" }).count(), expected.test);
      assert.equal(await actions.getByRole("button", { name: "Rotate secret" }).count(), expected.rotate);
      assert.equal(await actions.getByRole("button", { name: "Reveal secret" }).count(), expected.reveal);
      assert.equal(await actions.getByRole("button", { name: "Disable" }).count(), expected.toggle);

      await page.goto("/imports");
      await page.getByRole("heading", { name: "CSV upload" }).waitFor();
      await settled(page);
      assert.equal(await page.locator("[data-testid=upload-form]").count(), expected.upload);
    });
  });
}

test("an admin adds an integration and sees its webhook URL and secret once", async () => {
  await withPage(browser, "roles-add-integration", async (page) => {
    await login(page, seed.users.admin);
    await page.goto("/integrations");
    await page.getByRole("button", { name: "Add integration" }).click();
    const form = page.locator("[data-testid=add-integration]");
    await form.getByLabel("Kind").selectOption("pos");
    await form.getByLabel("Name").fill("Mall kiosk");
    await form.getByRole("button", { name: "Create" }).click();
    const panel = page.locator("[data-testid=integration-secret]");
    await panel.waitFor();
    const secret = await panel.locator("[data-testid=secret]").textContent();
    assert.ok(secret.length >= 16, "a generated secret is shown");
    assert.match(await panel.textContent(), /Authorization: Bearer/);
    assert.match(await panel.textContent(), /\/pos\/[0-9a-f-]{36}\/bills/);
    await page.locator("[data-testid=integrations]").getByRole("link", { name: "Mall kiosk" }).waitFor();

    // Shown once: the integration's own page never shows it again unprompted.
    await page.locator("[data-testid=integrations]").getByRole("link", { name: "Mall kiosk" }).click();
    await page.locator("[data-testid=integration]").waitFor();
    assert.equal(await page.getByText(secret).count(), 0);
  });
});

test("an analyst sends a test event and sees it in the delivery log", async () => {
  await withPage(browser, "roles-test-event", async (page) => {
    await login(page, seed.users.analyst);
    await page.goto(shopify());
    await page.getByRole("button", { name: "Send test event" }).click();
    await page.getByRole("status").filter({ hasText: "Test event stored" }).waitFor();
    await page.locator("[data-testid=deliveries] tbody tr").first().waitFor();
  });
});

test("an admin rotates a secret and disables then re-enables an integration", async () => {
  await withPage(browser, "roles-rotate-disable", async (page) => {
    await login(page, seed.users.admin);
    await page.goto(`/integrations/${seed.integrations.pos.id}`);
    await page.locator("[data-testid=integration-actions]").waitFor();

    await page.getByRole("button", { name: "Reveal secret" }).click();
    const before = await page.locator("[data-testid=integration-secret] [data-testid=secret]").textContent();

    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Rotate secret" }).click();
    await page.getByRole("status").filter({ hasText: "New secret issued" }).waitFor();
    const after = await page.locator("[data-testid=integration-secret] [data-testid=secret]").textContent();
    assert.notEqual(after, before, "a new secret is shown");

    await page.getByRole("button", { name: "Disable" }).click();
    await page.locator("[data-testid=integration]").getByText("disabled", { exact: true }).waitFor();
    await page.getByRole("button", { name: "Enable" }).click();
    await page.locator("[data-testid=integration]").getByText("enabled", { exact: true }).waitFor();
  });
});
