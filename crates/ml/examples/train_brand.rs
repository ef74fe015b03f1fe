//! Trains churn, LTV and segments on a simulated brand, in memory, and prints every
//! metric beside its baseline: `cargo run --release -p ml --example train_brand --
//! [customers] [seed] [months]`.

use ml::train::{TrainOptions, train_all};
use scenario::{BrandConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let customers = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let defaults = BrandConfig::default();
    let months = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(defaults.months);
    let cfg = BrandConfig {
        seed,
        customers,
        months,
        ..defaults
    };
    let brand = generate(&cfg);
    let histories = ml::synthetic::histories(&brand);
    let opts = TrainOptions {
        as_of: cfg.end,
        horizon_days: 90,
        seed: 42,
        segments_min: 4,
        segments_max: 8,
    };
    let started = std::time::Instant::now();
    let t = train_all(&histories, &opts)?;
    println!("trained in {:?}", started.elapsed());
    let summary = t.predictive.as_ref().map(|e| &e.summary);
    match summary {
        Ok(s) => {
            println!("churn: {}", serde_json::to_string_pretty(&s.churn)?);
            println!("ltv: {}", serde_json::to_string_pretty(&s.ltv)?);
        }
        Err(e) => println!("churn and LTV: {e}"),
    }
    println!(
        "segments: {}",
        serde_json::to_string_pretty(&t.segment_metrics)?
    );
    Ok(())
}
