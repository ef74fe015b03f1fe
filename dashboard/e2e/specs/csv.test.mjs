// CSV upload: preview, column mapping, progress to 100 % from the server's progress
// stream, then the rows that were refused and why.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, withPage, login, seed } from "./helpers.mjs";
import { CUSTOMERS_CSV } from "./fixtures.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test("an analyst uploads customers and watches the import reach 100 % with its row errors", async () => {
  await withPage(browser, "csv-upload", async (page) => {
    await login(page, seed.users.analyst);
    await page.goto("/imports");
    const form = page.locator("[data-testid=upload-form]");
    await form.locator("input[type=file]").setInputFiles({
      name: "customers.csv",
      mimeType: "text/csv",
      buffer: Buffer.from(CUSTOMERS_CSV),
    });
    await page.getByRole("heading", { name: "Preview — 7 data rows" }).waitFor();
    assert.equal(await page.locator("[data-testid=preview] tbody tr").count(), 5, "the first five rows");
    // The mapping is guessed from the headers.
    const mapping = page.locator("[data-testid=mapping]");
    assert.equal(await mapping.locator('select[data-column="Mobile"]').inputValue(), "phone");
    assert.equal(await mapping.locator('select[data-column="E-mail"]').inputValue(), "email");
    assert.equal(await mapping.locator('select[data-column="Name"]').inputValue(), "name");
    assert.equal(await mapping.locator('select[data-column="City"]').inputValue(), "city");

    await form.getByRole("button", { name: "Upload" }).click();
    await page.waitForURL((u) => u.pathname === "/imports" && u.searchParams.has("import"));
    const bar = page.locator("[data-testid=import-progress]");
    await bar.waitFor();
    await page.waitForFunction(
      () => document.querySelector("[data-testid=import-progress]")?.getAttribute("aria-valuenow") === "100",
      null,
      { timeout: 30_000 },
    );
    assert.equal(await page.locator("[data-testid=import-percent]").textContent(), "100 %");
    assert.equal(await page.locator("[data-testid=imported-rows]").textContent(), "5");
    assert.equal(await page.locator("[data-testid=error-rows]").textContent(), "2");

    const errors = page.locator("[data-testid=row-errors] tbody tr");
    await errors.first().waitFor();
    assert.equal(await errors.count(), 2);
    const lines = await errors.locator("td:first-child").allTextContents();
    assert.deepEqual(lines, ["4", "7"]);
    for (const reason of await errors.locator("td:nth-child(2)").allTextContents()) {
      assert.ok(reason.trim().length > 5, `a reason is given: ${reason}`);
    }
    // The import is in the list of recent imports.
    await page.locator("[data-testid=imports]").getByRole("link", { name: "customers.csv" }).first().waitFor();
  });
});
