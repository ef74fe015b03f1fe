//! The dashboard in headless Chromium against a real fleet: each test starts the
//! services on random ports with a fresh database and stream prefix, seeds what it
//! needs through the front door, and runs its browser specs (`specs/*.test.mjs`).
//!
//! The overview, the Models page and the screenshots also load a generated brand (`ctl
//! demo`: the scenario simulator's customers through the same front door, models
//! trained).
//!
//! Needs the built bundle (`just build-dashboard`), the `ctl` binary, `npm ci` in
//! `dashboard/e2e`, and Chromium; `just test-browser` sees to all four. Tests that need customer data wait
//! (through the API) for the pipeline to have processed it before the browser starts —
//! merged profiles, review items, recommendations scored — so a failure says which
//! part of the pipeline did not deliver.

use dashboard_e2e::{Fleet, brand, browser};

/// Seconds the pipeline gets to turn the seeded events into profiles and review items.
const PIPELINE_SECS: u64 = 60;

/// Seconds the `recommend` model gets, after `ctl demo` trained it, to have scored Asha
/// and her Customer 360 to list the products.
const RECOMMEND_SECS: u64 = 120;

/// The generated brand (`ctl demo`) the overview and the screenshots show: people and
/// months of history, enough for every model to train and pass its gate. With 250
/// people the recommendation model was rejected in some runs (recall@10 0.333 against
/// P-TopFreq's 0.351 on 58 evaluation customers), leaving Asha's card empty.
const GENERATED: (usize, u32) = (500, 10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_deep_links_and_sign_out() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::accounts(&fleet).await.unwrap();
    browser::run_specs(&fleet, &seed, &["auth.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_offered_only_its_actions() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::accounts(&fleet).await.unwrap();
    browser::run_specs(&fleet, &seed, &["roles.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_upload_reaches_100_percent_and_lists_row_errors() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::accounts(&fleet).await.unwrap();
    browser::run_specs(&fleet, &seed, &["csv.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_search_and_customer_360_of_a_merged_customer() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::everything(&fleet).await.unwrap();
    brand::generated(&fleet, GENERATED.0, GENERATED.1)
        .await
        .unwrap();
    let admin = fleet.admin().await.unwrap();
    let star = brand::wait_for_star(&fleet, &admin, PIPELINE_SECS)
        .await
        .unwrap();
    // Her Customer 360 shows her recommended products: wait for the scoring.
    brand::wait_for_recommendations(&fleet, &admin, star.id, RECOMMEND_SECS)
        .await
        .unwrap();
    // The overview first: the Customer 360 specs end by undoing the merge it counts.
    browser::run_specs(&fleet, &seed, &["overview.test.mjs", "models.test.mjs"])
        .await
        .unwrap();
    browser::run_specs(&fleet, &seed, &["customer360.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_review_item_applies_the_merge() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::everything(&fleet).await.unwrap();
    let admin = fleet.admin().await.unwrap();
    brand::wait_for_review(&fleet, &admin, PIPELINE_SECS)
        .await
        .unwrap();
    browser::run_specs(&fleet, &seed, &["review.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_an_audience_shows_its_live_size_and_members() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::everything(&fleet).await.unwrap();
    let admin = fleet.admin().await.unwrap();
    brand::wait_for_star(&fleet, &admin, PIPELINE_SECS)
        .await
        .unwrap();
    browser::run_specs(&fleet, &seed, &["audiences.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_an_automation_previews_dry_runs_and_shows_results() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::everything(&fleet).await.unwrap();
    let admin = fleet.admin().await.unwrap();
    brand::wait_for_star(&fleet, &admin, PIPELINE_SECS)
        .await
        .unwrap();
    browser::run_specs(&fleet, &seed, &["automations.test.mjs"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_of_every_page() {
    let fleet = Fleet::start().await.unwrap();
    let seed = brand::everything(&fleet).await.unwrap();
    brand::generated(&fleet, GENERATED.0, GENERATED.1)
        .await
        .unwrap();
    let admin = fleet.admin().await.unwrap();
    let star = brand::wait_for_star(&fleet, &admin, PIPELINE_SECS)
        .await
        .unwrap();
    brand::wait_for_review(&fleet, &admin, PIPELINE_SECS)
        .await
        .unwrap();
    brand::wait_for_recommendations(&fleet, &admin, star.id, RECOMMEND_SECS)
        .await
        .unwrap();
    browser::run_specs(&fleet, &seed, &["screenshots.test.mjs"])
        .await
        .unwrap();
}
