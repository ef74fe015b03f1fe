//! Identity quality on the scenario generator's data, with the pure engine (the same
//! code the resolver runs): pairwise precision and recall against the ground truth, with
//! every guard on and with the guards off.

use identity::engine::Constraints;
use identity::memory::MemoryResolver;
use identity::model::ProfileIds;
use identity::quality::{PairwiseQuality, pairwise};
use identity::{Engine, Guards, Observation, Policy};
use scenario::identity::{IdentityConfig, generate};

fn score(customers: usize, guards: Guards) -> (PairwiseQuality, MemoryResolver) {
    let s = generate(&IdentityConfig::with_customers(customers));
    let engine = Engine::new(
        Policy::default().with_guards(guards),
        ProfileIds::TIME_ORDERED,
    );
    let m = MemoryResolver::rebuild(
        engine,
        Constraints::default(),
        s.events.iter().map(Observation::of).collect(),
    );
    let q = pairwise(
        s.events
            .iter()
            .map(|e| (m.assignment()[&e.event_id], s.truth[&e.event_id])),
    );
    eprintln!(
        "{customers} people, {} events, guards {guards:?}: precision {:.4} recall {:.4} f1 {:.4}, {} profiles for {} people, {} merges, {} review items, {} suspects",
        q.events,
        q.precision(),
        q.recall(),
        q.f1(),
        q.profiles,
        q.people,
        m.merges.len(),
        m.reviews.len(),
        m.suspects().len()
    );
    (q, m)
}

#[test]
fn the_guards_meet_the_quality_goals() {
    let people = std::env::var("PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (with, _) = score(people, Guards::ALL);
    let (without, _) = score(people, Guards::NONE);
    assert!(with.precision() >= 0.995, "precision {}", with.precision());
    assert!(with.recall() >= 0.97, "recall {}", with.recall());
    assert!(
        without.precision() < with.precision(),
        "the guards buy precision"
    );
}

/// Prints where precision is lost: profiles holding several people, with the
/// identifiers that tie them.
#[test]
#[ignore = "diagnostics for tuning; run with --ignored --nocapture"]
fn diagnose() {
    use std::collections::{BTreeMap, HashMap};
    let customers: usize = std::env::var("PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let s = generate(&IdentityConfig::with_customers(customers));
    let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
    let m = MemoryResolver::rebuild(
        engine,
        Constraints::default(),
        s.events.iter().map(Observation::of).collect(),
    );
    let mut by_profile: HashMap<uuid::Uuid, BTreeMap<u32, usize>> = HashMap::new();
    for e in &s.events {
        *by_profile
            .entry(m.assignment()[&e.event_id])
            .or_default()
            .entry(s.truth[&e.event_id])
            .or_default() += 1;
    }
    let mut bad: Vec<(u64, uuid::Uuid, BTreeMap<u32, usize>)> = by_profile
        .into_iter()
        .filter(|(_, people)| people.len() > 1)
        .map(|(p, people)| {
            let total: u64 = people.values().map(|&c| c as u64).sum();
            let own: u64 = people
                .values()
                .map(|&c| (c as u64) * (c as u64 - 1) / 2)
                .sum();
            (total * (total - 1) / 2 - own, p, people)
        })
        .collect();
    bad.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (false_pairs, p, people) in bad.iter().take(12) {
        eprintln!("profile {p}: {false_pairs} false pairs, people {people:?}");
        let ids = &m.graph.profiles[p].identifiers;
        for person in people.keys() {
            let ident = &s.identities[*person as usize];
            eprintln!(
                "   person {person} {} household {:?} loyalty {:?} phones {:?}",
                ident.first_name,
                ident.household.as_ref().map(|h| h.leader),
                ident.loyalty_id,
                ident.phones
            );
        }
        eprintln!(
            "   holds {:?}",
            ids.iter().map(|i| i.to_string()).collect::<Vec<_>>()
        );
    }
}

/// Prints where recall is lost: people split over several profiles, with the
/// identifiers of the smaller pieces.
#[test]
#[ignore = "diagnostics for tuning; run with --ignored --nocapture"]
fn diagnose_recall() {
    use std::collections::{BTreeMap, HashMap};
    let customers: usize = std::env::var("PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let s = generate(&IdentityConfig::with_customers(customers));
    let engine = Engine::new(Policy::default(), ProfileIds::TIME_ORDERED);
    let m = MemoryResolver::rebuild(
        engine,
        Constraints::default(),
        s.events.iter().map(Observation::of).collect(),
    );
    let mut by_person: HashMap<u32, BTreeMap<uuid::Uuid, Vec<&domain::NormalizedEvent>>> =
        HashMap::new();
    for e in &s.events {
        by_person
            .entry(s.truth[&e.event_id])
            .or_default()
            .entry(m.assignment()[&e.event_id])
            .or_default()
            .push(e);
    }
    let mut lost: Vec<(u64, u32)> = by_person
        .iter()
        .map(|(p, parts)| {
            let total: u64 = parts.values().map(|v| v.len() as u64).sum();
            let kept: u64 = parts
                .values()
                .map(|v| (v.len() as u64) * (v.len() as u64 - 1) / 2)
                .sum();
            (total * total.saturating_sub(1) / 2 - kept, *p)
        })
        .collect();
    lost.sort_by(|a, b| b.cmp(a));
    let all_lost: u64 = lost.iter().map(|l| l.0).sum();
    eprintln!(
        "lost pairs {all_lost}; suspects {:?}",
        m.suspects()
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
    );
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for (_, person) in &lost {
        let parts = &by_person[person];
        let main = parts.values().map(Vec::len).max().unwrap_or(0);
        for evs in parts.values().filter(|v| v.len() < main) {
            for e in evs {
                let kinds: Vec<&str> = e.identifiers.iter().map(|i| i.kind.as_str()).collect();
                *why.entry(format!("{}/{} {:?}", e.channel, e.event_type, kinds))
                    .or_default() += 1;
            }
        }
    }
    let mut why: Vec<_> = why.into_iter().collect();
    why.sort_by_key(|w| std::cmp::Reverse(w.1));
    for (k, n) in why.iter().take(25) {
        eprintln!("  {n:6} events in minor pieces: {k}");
    }
    for (n, person) in lost.iter().take(8) {
        let ident = &s.identities[*person as usize];
        eprintln!(
            "person {person} {} lost {n}: pieces {:?} household {:?}",
            ident.first_name,
            by_person[person].values().map(Vec::len).collect::<Vec<_>>(),
            ident.household.as_ref().map(|h| h.leader)
        );
        for (p, evs) in &by_person[person] {
            let holds: Vec<String> = m
                .graph
                .profiles
                .get(p)
                .map(|n| {
                    n.identifiers
                        .iter()
                        .filter(|i| !i.is_order_reference())
                        .map(|i| i.to_string())
                        .collect()
                })
                .unwrap_or_default();
            eprintln!("    {} events, holds {:?}", evs.len(), holds);
        }
    }
}
