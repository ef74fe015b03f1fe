//! item2vec: skip-gram with negative sampling over item co-occurrence (Barkan &
//! Koenigstein, 2016). Every item of a basket (or of a browsing session) is the context
//! of every other, regardless of order, so a "window" is the whole set; large sets are
//! sampled down to `context` partners per item.
//!
//! A small implementation rather than a crate: the word2vec crates on crates.io train
//! on text files with threads (not reproducible) and none takes set-shaped contexts. This
//! one is single-threaded and driven by one seeded ChaCha generator, so the same
//! sequences and seed give bit-identical vectors.

use std::collections::HashMap;

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ItemId;

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Item2VecParams {
    /// Vector length.
    pub dim: usize,
    /// Passes over the sequences.
    pub epochs: usize,
    /// Negative samples per positive pair.
    pub negatives: usize,
    /// Context partners drawn per item from a set larger than this.
    pub context: usize,
    /// Starting learning rate (decays linearly to 0.01 % of it).
    pub learning_rate: f32,
    /// Items seen in fewer sequences get no vector.
    pub min_count: u32,
    /// Seed of the one random generator.
    pub seed: u64,
}

impl Default for Item2VecParams {
    fn default() -> Self {
        Self {
            dim: 32,
            epochs: 5,
            negatives: 5,
            context: 5,
            learning_rate: 0.025,
            min_count: 3,
            seed: 42,
        }
    }
}

/// Unit-length item vectors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// Vector length.
    pub dim: usize,
    /// The item of each row.
    pub items: Vec<ItemId>,
    /// Row-major vectors, each of length one (cosine similarity is a dot product).
    pub vectors: Vec<f32>,
    #[serde(skip)]
    rows: HashMap<ItemId, usize>,
}

impl Embeddings {
    fn new(dim: usize, items: Vec<ItemId>, vectors: Vec<f32>) -> Self {
        let mut e = Self {
            dim,
            items,
            vectors,
            rows: HashMap::new(),
        };
        e.reindex();
        e
    }

    /// Rebuilds the item → row lookup (after deserialising).
    pub fn reindex(&mut self) {
        self.rows = self
            .items
            .iter()
            .enumerate()
            .map(|(row, &item)| (item, row))
            .collect();
    }

    /// Number of items with a vector.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item has a vector.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The row of an item, if it has a vector.
    pub fn row(&self, item: ItemId) -> Option<usize> {
        self.rows.get(&item).copied()
    }

    /// The vector of a row.
    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// Cosine similarity of two rows.
    pub fn similarity(&self, a: usize, b: usize) -> f32 {
        dot(self.vector(a), self.vector(b))
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f32) -> f32 {
    if x > 8.0 {
        1.0
    } else if x < -8.0 {
        0.0
    } else {
        1.0 / (1.0 + (-x).exp())
    }
}

/// Learns vectors from item sets (baskets, sessions). Items in fewer than
/// `min_count` sets, and sets left with fewer than two items, are skipped.
pub fn train(sets: &[Vec<ItemId>], p: &Item2VecParams) -> Embeddings {
    let mut counts: HashMap<ItemId, u32> = HashMap::new();
    for set in sets {
        for &item in set {
            *counts.entry(item).or_default() += 1;
        }
    }
    let mut items: Vec<ItemId> = counts
        .iter()
        .filter(|(_, c)| **c >= p.min_count)
        .map(|(i, _)| *i)
        .collect();
    items.sort_unstable();
    let row_of: HashMap<ItemId, u32> = items
        .iter()
        .enumerate()
        .map(|(r, &i)| (i, r as u32))
        .collect();
    let sets: Vec<Vec<u32>> = sets
        .iter()
        .map(|s| s.iter().filter_map(|i| row_of.get(i).copied()).collect())
        .filter(|s: &Vec<u32>| s.len() >= 2)
        .collect();
    let (n, dim) = (items.len(), p.dim.max(1));
    if n == 0 || sets.is_empty() {
        return Embeddings::new(dim, Vec::new(), Vec::new());
    }
    // Negatives are drawn in proportion to count^0.75 (word2vec's unigram table).
    let mut cumulative = Vec::with_capacity(n);
    let mut total = 0.0f64;
    for item in &items {
        total += f64::from(counts[item]).powf(0.75);
        cumulative.push(total);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let mut input: Vec<f32> = (0..n * dim)
        .map(|_| (rng.random::<f32>() - 0.5) / dim as f32)
        .collect();
    let mut output = vec![0f32; n * dim];
    let mut order: Vec<usize> = (0..sets.len()).collect();
    let steps = (p.epochs.max(1) * sets.len()) as f32;
    let mut done = 0f32;
    let mut grad = vec![0f32; dim];
    let mut partners = Vec::new();
    for _ in 0..p.epochs.max(1) {
        order.shuffle(&mut rng);
        for &s in &order {
            let lr = (p.learning_rate * (1.0 - done / steps)).max(p.learning_rate * 1e-4);
            done += 1.0;
            let set = &sets[s];
            for (pos, &target) in set.iter().enumerate() {
                partners.clear();
                if set.len() - 1 <= p.context {
                    partners.extend(
                        set.iter()
                            .enumerate()
                            .filter(|(q, _)| *q != pos)
                            .map(|(_, &c)| c),
                    );
                } else {
                    while partners.len() < p.context {
                        let q = rng.random_range(0..set.len());
                        if q != pos {
                            partners.push(set[q]);
                        }
                    }
                }
                let t = target as usize * dim;
                for &context in &partners {
                    grad.iter_mut().for_each(|g| *g = 0.0);
                    for d in 0..=p.negatives {
                        let (o, label) = if d == 0 {
                            (context as usize, 1.0)
                        } else {
                            let x = rng.random::<f64>() * total;
                            let o = cumulative.partition_point(|&c| c <= x).min(n - 1);
                            if o == context as usize {
                                continue;
                            }
                            (o, 0.0)
                        };
                        let (target_vec, out) =
                            (&input[t..t + dim], &mut output[o * dim..(o + 1) * dim]);
                        let g = (label - sigmoid(dot(target_vec, out))) * lr;
                        for ((acc, w), x) in grad.iter_mut().zip(out.iter_mut()).zip(target_vec) {
                            *acc += g * *w;
                            *w += g * x;
                        }
                    }
                    for (x, acc) in input[t..t + dim].iter_mut().zip(&grad) {
                        *x += acc;
                    }
                }
            }
        }
    }
    for row in input.chunks_mut(dim) {
        let norm = dot(row, row).sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Embeddings::new(dim, items, input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two disjoint groups of items that are only ever bought together.
    fn two_worlds() -> Vec<Vec<ItemId>> {
        (0..300)
            .map(|i| {
                if i % 2 == 0 {
                    vec![0, 1, 2, 3]
                } else {
                    vec![10, 11, 12, 13]
                }
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_vectors_and_another_seed_does_not() {
        let p = Item2VecParams::default();
        let a = train(&two_worlds(), &p);
        assert_eq!(a, train(&two_worlds(), &p));
        let b = train(&two_worlds(), &Item2VecParams { seed: 7, ..p });
        assert_ne!(a.vectors, b.vectors);
    }

    #[test]
    fn items_bought_together_are_closer_than_items_never_together() {
        let e = train(&two_worlds(), &Item2VecParams::default());
        let r = |i| e.row(i).unwrap();
        let together = e.similarity(r(0), r(1));
        let apart = e.similarity(r(0), r(11));
        assert!(together > apart + 0.3, "together {together}, apart {apart}");
        for row in 0..e.len() {
            assert!((e.similarity(row, row) - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn rare_items_get_no_vector() {
        let mut sets = two_worlds();
        sets.push(vec![0, 99]);
        let e = train(&sets, &Item2VecParams::default());
        assert!(e.row(99).is_none() && e.row(0).is_some());
        assert!(train(&[], &Item2VecParams::default()).is_empty());
    }
}
