//! Pairwise precision and recall of a partition of events into profiles against the
//! ground truth of who is who.
//!
//! Every pair of events is a decision: "same person" (both in one profile) or not.
//! Precision is the share of same-profile pairs that are truly one person; recall the
//! share of truly-one-person pairs that share a profile. Both are computed from the
//! contingency table (profile × person) without enumerating pairs.

use std::collections::HashMap;
use std::hash::Hash;

/// Pairwise quality of a partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairwiseQuality {
    /// Events scored.
    pub events: u64,
    /// Distinct profiles.
    pub profiles: u64,
    /// Distinct people.
    pub people: u64,
    /// Pairs placed in one profile.
    pub predicted_pairs: u128,
    /// Pairs that are truly one person.
    pub true_pairs: u128,
    /// Pairs in one profile that are truly one person.
    pub correct_pairs: u128,
}

impl PairwiseQuality {
    /// Correct pairs over predicted pairs (1 when nothing was joined).
    pub fn precision(&self) -> f64 {
        ratio(self.correct_pairs, self.predicted_pairs)
    }

    /// Correct pairs over true pairs (1 when nobody has two events).
    pub fn recall(&self) -> f64 {
        ratio(self.correct_pairs, self.true_pairs)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: u128, b: u128) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

fn pairs(n: u64) -> u128 {
    u128::from(n) * u128::from(n.saturating_sub(1)) / 2
}

/// Scores `(profile, person)` pairs, one per event.
pub fn pairwise<P: Hash + Eq + Clone, T: Hash + Eq + Clone>(
    events: impl IntoIterator<Item = (P, T)>,
) -> PairwiseQuality {
    let mut cells: HashMap<(P, T), u64> = HashMap::new();
    let mut by_profile: HashMap<P, u64> = HashMap::new();
    let mut by_person: HashMap<T, u64> = HashMap::new();
    let mut n = 0;
    for (p, t) in events {
        n += 1;
        *by_profile.entry(p.clone()).or_default() += 1;
        *by_person.entry(t.clone()).or_default() += 1;
        *cells.entry((p, t)).or_default() += 1;
    }
    PairwiseQuality {
        events: n,
        profiles: by_profile.len() as u64,
        people: by_person.len() as u64,
        predicted_pairs: by_profile.values().map(|&c| pairs(c)).sum(),
        true_pairs: by_person.values().map(|&c| pairs(c)).sum(),
        correct_pairs: cells.values().map(|&c| pairs(c)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_split_and_lumped() {
        let truth = [("a", 1), ("a", 1), ("b", 2), ("b", 2), ("b", 2)];
        let q = pairwise(truth);
        assert_eq!((q.precision(), q.recall(), q.f1()), (1.0, 1.0, 1.0));
        // Everything in one profile: recall 1, precision 4 of 10 pairs.
        let q = pairwise(truth.map(|(_, t)| ("x", t)));
        assert_eq!(q.recall(), 1.0);
        assert!((q.precision() - 0.4).abs() < 1e-12);
        // Every event alone: precision 1 (nothing claimed), recall 0.
        let q = pairwise(truth.iter().enumerate().map(|(i, (_, t))| (i, *t)));
        assert_eq!((q.precision(), q.recall()), (1.0, 0.0));
        assert_eq!(q.f1(), 0.0);
        assert_eq!((q.events, q.profiles, q.people), (5, 5, 2));
    }
}
