//! Runs browser specs (`specs/*.test.mjs`) against a fleet with Node's test runner.
//!
//! The specs drive Debian's Chromium through playwright-core (installed by `npm ci`
//! in `dashboard/e2e`). They learn where the fleet is and who may sign in from the
//! environment: `BASE_URL`, `E2E_SEED` (a JSON file: [`crate::brand::Seed`]) and
//! `SCREENSHOT_DIR`. One browser runs at a time, so parallel tests do not starve each
//! other of the machine's cores.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use tokio::sync::Mutex;

use crate::brand::Seed;
use crate::fleet::{Fleet, repo_root};

/// Serialises browser runs across the tests of one process.
static BROWSER: Mutex<()> = Mutex::const_new(());

/// Where the specs and their npm packages live.
pub fn e2e_dir() -> PathBuf {
    repo_root().join("dashboard/e2e")
}

/// Where screenshots of the pages go (linked from the README).
pub fn screenshot_dir() -> PathBuf {
    repo_root().join("docs/screenshots")
}

/// Runs the spec files `specs` (names under `specs/`) against `fleet`; fails when any
/// test in them fails (their report is printed as they run).
pub async fn run_specs(fleet: &Fleet, seed: &Seed, specs: &[&str]) -> anyhow::Result<()> {
    let dir = e2e_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        bail!(
            "playwright-core is not installed: run `npm ci` in {} (`just test-browser` does)",
            dir.display()
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        bail!("no Chromium at {chromium}: `apt-get install chromium` (or set CHROMIUM)");
    }
    let seed_file =
        std::env::temp_dir().join(format!("constintel-e2e-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&seed_file, serde_json::to_vec_pretty(seed)?)
        .with_context(|| format!("writing {}", seed_file.display()))?;
    let paths: Vec<String> = specs.iter().map(|s| format!("specs/{s}")).collect();

    let _one_at_a_time = BROWSER.lock().await;
    let status = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-concurrency=1")
        .arg("--test-reporter=spec")
        .args(&paths)
        .current_dir(&dir)
        .env("BASE_URL", &fleet.gateway)
        .env("E2E_SEED", &seed_file)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .status()
        .await
        .context("running node (is Node.js 20 or later installed?)")?;
    let _ = std::fs::remove_file(&seed_file);
    if !status.success() {
        bail!("browser specs {specs:?} failed ({status}); their report is above");
    }
    Ok(())
}
