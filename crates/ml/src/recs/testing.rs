//! What the recommender's tests share: a small simulated brand, its training settings,
//! and tuning customers with seeded random candidates.

use std::collections::HashSet;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::item2vec::Item2VecParams;
use super::{
    Activity, Basket, Candidate, Catalogue, Corpus, FEATURES, ItemId, Recommender, RecsParams,
    TuningCase,
};

/// Noon on day `day` of the brand (day 0: 2026-01-01).
pub(super) fn at(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + Duration::days(day)
}

/// A brand where a group of customers always buys A, then B a week later; others
/// buy staples (milk, bread) every week and browse; a few buy once from "Dupattas".
pub(super) fn brand() -> Corpus {
    let mut catalogue = Catalogue::default();
    let a = catalogue.intern("A", Some("Kurta A"), Some("Kurtas"));
    let b = catalogue.intern("B", Some("Dupatta B"), Some("Dupattas"));
    let milk = catalogue.intern("MILK", Some("Milk"), Some("Dairy"));
    let bread = catalogue.intern("BREAD", Some("Bread"), Some("Bakery"));
    let old = catalogue.intern("OLD", Some("Discontinued"), Some("Dairy"));
    let fillers: Vec<ItemId> = (0..20)
        .map(|i| catalogue.intern(&format!("D{i}"), None, Some("Dupattas")))
        .collect();
    let mut customers = Vec::new();
    for c in 0..40 {
        let mut act = Activity::default();
        let start = c % 7;
        act.baskets.push(Basket {
            at: at(start),
            items: vec![a, fillers[c as usize % 3]],
        });
        act.baskets.push(Basket {
            at: at(start + 7),
            items: vec![b, fillers[c as usize % 3]],
        });
        customers.push(act);
    }
    for c in 0..40 {
        let mut act = Activity::default();
        for w in 0..12 {
            act.baskets.push(Basket {
                at: at(w * 7 + c % 5),
                items: vec![milk, bread, fillers[(c + w) as usize % 20]],
            });
        }
        customers.push(act);
    }
    // Someone bought the discontinued item long ago.
    customers.push(Activity {
        baskets: vec![Basket {
            at: at(-400),
            items: vec![old, milk],
        }],
        views: Vec::new(),
    });
    for a in &mut customers {
        a.sort();
    }
    Corpus {
        catalogue,
        customers,
    }
}

/// Training settings small enough for the brand (every item gets a vector).
pub(super) fn params() -> RecsParams {
    RecsParams {
        item2vec: Item2VecParams {
            min_count: 2,
            epochs: 20,
            ..Item2VecParams::default()
        },
        ..RecsParams::default()
    }
}

/// Tuning customers whose candidates are the brand's items with seeded random
/// features; each buys the items `bought` picks from its candidates.
pub(super) fn synthetic_cases(
    model: &Recommender,
    seed: u64,
    bought: impl Fn(&Candidate) -> bool,
) -> Vec<TuningCase> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..400)
        .map(|_| {
            let candidates: Vec<Candidate> = (0..model.catalogue.len() as ItemId)
                .map(|item| {
                    let mut features = [0.0; FEATURES.len()];
                    features.iter_mut().for_each(|f| *f = rng.random::<f32>());
                    Candidate {
                        item,
                        features,
                        times_bought: rng.random_range(1..10),
                        anchor: None,
                        profile_baskets: 10,
                        days_since_bought: Some(rng.random_range(0.0..60.0)),
                        basket_size: 5.0,
                        baskets_per_week: 1.0,
                        exploration: Default::default(),
                    }
                })
                .collect();
            let truth: HashSet<ItemId> = candidates
                .iter()
                .filter(|c| bought(c))
                .map(|c| c.item)
                .collect();
            TuningCase {
                candidates,
                new: HashSet::new(),
                truth,
            }
        })
        .collect()
}
