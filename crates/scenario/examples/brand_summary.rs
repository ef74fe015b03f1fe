//! Prints a summary of a generated brand: people per archetype, activity counts by
//! kind, orders and revenue. `cargo run -p scenario --example brand_summary -- [customers] [seed]`.

use std::collections::BTreeMap;

use scenario::{ActivityKind, BrandConfig, generate};

fn main() {
    let mut args = std::env::args().skip(1);
    let customers = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let cfg = BrandConfig {
        seed,
        customers,
        ..BrandConfig::default()
    };
    let started = std::time::Instant::now();
    let brand = generate(&cfg);
    let took = started.elapsed();
    let mut people: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &brand.people {
        *people.entry(p.archetype.as_str()).or_default() += 1;
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut revenue = rust_decimal::Decimal::ZERO;
    for a in &brand.activities {
        let name = format!("{:?}", a.kind);
        let name = name.split([' ', '{']).next().unwrap_or_default().to_owned();
        *kinds.entry(name).or_default() += 1;
        if let ActivityKind::OrderPlaced { total, .. } = &a.kind {
            revenue += total;
        }
    }
    println!(
        "{} people, {} products, {} stores, {} activities in {took:?}",
        brand.people.len(),
        brand.catalogue.len(),
        brand.stores.len(),
        brand.activities.len()
    );
    println!("people by archetype: {people:?}");
    println!("activities by kind: {kinds:?}");
    println!("revenue: {revenue} {}", cfg.currency);
}
