//! item2vec: skip-gram with negative sampling over item co-occurrence (Barkan &
//! Koenigstein, 2016). Every item of a basket (or of a browsing session) is the context
//! of every other, regardless of order, so a "window" is the whole set; large sets are
//! sampled down to `context` partners per item.
//!
//! A small implementation rather than a crate: the word2vec crates on crates.io train
//! on text files with threads (not reproducible) and none takes set-shaped contexts. This
//! one splits each pass into a fixed number of shards ([`Item2VecParams::shards`]) that
//! train side by side from the same vectors, each on its own stream of one seeded ChaCha
//! generator, and merges their changes in shard order every [`ROUND_SETS`] sets per
//! shard (a row several shards changed moves by the mean of their changes): the same sets, settings and seed give bit-identical vectors whatever the
//! number of threads and their timing (unlike Hogwild's lock-free sharing).

use std::collections::HashMap;

use rand::{Rng, RngCore, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
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
    /// Subsampling of frequent items, as word2vec's `t` but relative to the catalogue:
    /// with `t = subsample / items` (so `subsample` × the mean item's share), an
    /// occurrence of an item making up a share `f` of all occurrences is kept with
    /// probability `√(t/f) + t/f`: the staples everyone buys stop dominating the updates,
    /// while a small catalogue of similar sellers keeps everything. `0` keeps everything;
    /// models stored before it existed load with `0`.
    #[serde(default)]
    pub subsample: f32,
    /// Shards each pass is split into, trained side by side (one thread each, when
    /// there are threads) from the same vectors, whose changes are then merged in shard
    /// order every [`ROUND_SETS`] sets per shard (a row changed by several shards moves
    /// by the mean of their changes). The vectors depend on this
    /// number, never on the threads or their timing. `1` (the default: on two shared
    /// cores, two shards barely gained when idle and lost under load) trains on one
    /// thread; models stored before it existed load with `1`.
    #[serde(default = "one_shard")]
    pub shards: usize,
    /// Seed of the random generators (one stream for the initial vectors and the
    /// order of the sets, one per shard and round for the rest).
    pub seed: u64,
}

fn one_shard() -> usize {
    1
}

/// Sets a shard passes over between two merges of the shards' changes: enough that a
/// merge (a copy and a sum of the vectors) is cheap next to the training, few enough
/// that a shard's vectors do not drift far from the others' before they meet.
pub const ROUND_SETS: usize = 8192;

impl Default for Item2VecParams {
    fn default() -> Self {
        Self {
            dim: 32,
            epochs: 5,
            negatives: 5,
            context: 5,
            learning_rate: 0.025,
            min_count: 3,
            subsample: 30.0,
            shards: 1,
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

/// Dot product in eight independent lanes (so the compiler can keep it in vector
/// registers; a single running sum would force one addition after another).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The logistic function outside ±[`SIGMOID_MAX`] is taken as 0 or 1, and inside read
/// from a table of [`SIGMOID_STEPS`] values (word2vec's `expTable`): an `exp` per
/// update was a fifth of the training's time.
const SIGMOID_MAX: f32 = 8.0;
const SIGMOID_STEPS: usize = 1024;

fn sigmoid_table() -> Vec<f32> {
    (0..=SIGMOID_STEPS)
        .map(|i| {
            let x = (i as f32 / SIGMOID_STEPS as f32 * 2.0 - 1.0) * SIGMOID_MAX;
            1.0 / (1.0 + (-x).exp())
        })
        .collect()
}

fn sigmoid(table: &[f32], x: f32) -> f32 {
    if x >= SIGMOID_MAX {
        1.0
    } else if x <= -SIGMOID_MAX {
        0.0
    } else {
        let at = (x + SIGMOID_MAX) / (2.0 * SIGMOID_MAX) * SIGMOID_STEPS as f32;
        table[(at + 0.5) as usize]
    }
}

/// Merges the shards' vectors row by row, in shard order: `into` holds the first
/// shard's, `others` the rest, all trained from `start`. A row that k shards changed
/// moves by the mean of their changes (k shards learning the same staple from the same
/// start would otherwise move it k times over), a row one shard changed by all of it.
fn merge(into: &mut [f32], others: &[&[f32]], start: &[f32], dim: usize) {
    for (r, row) in into.chunks_mut(dim).enumerate() {
        let span = r * dim..(r + 1) * dim;
        let base = &start[span.clone()];
        let mut changed = usize::from(*row != *base);
        for other in others {
            let theirs = &other[span.clone()];
            if theirs != base {
                changed += 1;
                for ((x, t), b) in row.iter_mut().zip(theirs).zip(base) {
                    *x += t - b;
                }
            }
        }
        if changed > 1 {
            let k = changed as f32;
            for (x, b) in row.iter_mut().zip(base) {
                *x = b + (*x - b) / k;
            }
        }
    }
}

/// What every pass over the sets reads.
struct Passes<'a> {
    /// The sets, as rows.
    sets: &'a [Vec<u32>],
    /// Per row, its subsampling threshold ([`keep_thresholds`]).
    keep: &'a [u32],
    /// The negative-sampling table ([`negative_table`]).
    table: &'a [u32],
    /// The logistic function's table ([`sigmoid_table`]).
    sigmoid: Vec<f32>,
    p: &'a Item2VecParams,
    dim: usize,
    /// Sets passed over in the whole training (the learning rate falls with the share
    /// done).
    steps: f32,
}

/// The vector length the training loop is compiled for (the default
/// [`Item2VecParams::dim`]): with the length known, every row's dot product and update
/// is a fixed run of vector instructions with no loop or remainder to check. The same
/// operations in the same order as for any other length, so the same vectors.
const COMPILED_DIM: usize = 32;

impl Passes<'_> {
    /// Trains on the sets `order` names, the first being the training's `first`-th
    /// (for the learning rate), drawing from `rng`: [`Passes::pass_with`] compiled for
    /// [`COMPILED_DIM`] when the vectors are that long.
    fn pass(
        &self,
        order: &[usize],
        first: usize,
        input: &mut [f32],
        output: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) {
        if self.dim == COMPILED_DIM {
            self.pass_with::<COMPILED_DIM>(order, first, input, output, rng);
        } else {
            self.pass_with::<0>(order, first, input, output, rng);
        }
    }

    /// [`Passes::pass`] with the vector length `D` known when compiled (`0`: read from
    /// the settings).
    fn pass_with<const D: usize>(
        &self,
        order: &[usize],
        first: usize,
        input: &mut [f32],
        output: &mut [f32],
        rng: &mut ChaCha8Rng,
    ) {
        let (p, dim) = (self.p, if D == 0 { self.dim } else { D });
        let mut grad = vec![0f32; dim];
        let mut partners = Vec::new();
        let mut negatives = Vec::new();
        let mut set = Vec::new();
        for (k, &s) in order.iter().enumerate() {
            let done = (first + k) as f32;
            let lr = (p.learning_rate * (1.0 - done / self.steps)).max(p.learning_rate * 1e-4);
            set.clear();
            set.extend(self.sets[s].iter().copied().filter(|&i| {
                let keep = self.keep[i as usize];
                keep == u32::MAX || rng.next_u32() < keep
            }));
            if set.len() < 2 {
                continue;
            }
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
                // Every negative of this item's partners, drawn up front in the order
                // the updates use them (the same draws as one before each update, so the
                // same vectors): the table reads are independent of each other and of
                // the updates, so their cache misses overlap instead of each stalling
                // one update (training took a third of the time after this and the
                // reads below, on Complete Journey).
                negatives.clear();
                negatives.extend((0..partners.len() * p.negatives).map(|_| {
                    let draw = (u64::from(rng.next_u32()) * self.table.len() as u64) >> 32;
                    self.table[draw as usize]
                }));
                // Read one value of every row the updates will use, so their cache
                // misses overlap here (no update depends on them) instead of each
                // stalling its update: a prefetch without `unsafe`.
                let touched = partners.iter().chain(&negatives).fold(0f32, |acc, &o| {
                    let row = &output[o as usize * dim..(o as usize + 1) * dim];
                    // One value per cache line (16 floats) and the last.
                    acc + row.iter().step_by(16).sum::<f32>() + row[dim - 1]
                });
                std::hint::black_box(touched);
                let t = target as usize * dim;
                for (j, &context) in partners.iter().enumerate() {
                    let drawn = &negatives[j * p.negatives..(j + 1) * p.negatives];
                    grad.iter_mut().for_each(|g| *g = 0.0);
                    for d in 0..=p.negatives {
                        let (o, label) = if d == 0 {
                            (context as usize, 1.0)
                        } else {
                            let o = drawn[d - 1] as usize;
                            if o == context as usize {
                                continue;
                            }
                            (o, 0.0)
                        };
                        let (target_vec, out) =
                            (&input[t..t + dim], &mut output[o * dim..(o + 1) * dim]);
                        let g = (label - sigmoid(&self.sigmoid, dot(target_vec, out))) * lr;
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
}

/// Entries of the negative-sampling table: an item's share of them is its share of
/// count^0.75 (word2vec's unigram table), so a draw is one random index.
const NEGATIVE_TABLE: usize = 1 << 20;

fn negative_table(items: &[ItemId], counts: &HashMap<ItemId, u32>) -> Vec<u32> {
    let weights: Vec<f64> = items
        .iter()
        .map(|i| f64::from(counts[i]).powf(0.75))
        .collect();
    let total: f64 = weights.iter().sum();
    let size = NEGATIVE_TABLE.max(items.len());
    let mut table = Vec::with_capacity(size);
    let mut cumulative = 0.0;
    let mut row = 0usize;
    for slot in 0..size {
        let at = (slot as f64 + 0.5) / size as f64 * total;
        while row + 1 < items.len() && cumulative + weights[row] <= at {
            cumulative += weights[row];
            row += 1;
        }
        table.push(row as u32);
    }
    table
}

/// Per row, the draw (of a uniform `u32`) below which an occurrence is kept;
/// `u32::MAX` always keeps it without a draw (see [`Item2VecParams::subsample`]).
fn keep_thresholds(items: &[ItemId], counts: &HashMap<ItemId, u32>, subsample: f32) -> Vec<u32> {
    let mean: f64 =
        items.iter().map(|i| f64::from(counts[i])).sum::<f64>() / items.len().max(1) as f64;
    items
        .iter()
        .map(|i| {
            if subsample <= 0.0 {
                return u32::MAX;
            }
            let ratio = f64::from(subsample) * mean / f64::from(counts[i]);
            let keep = ratio.sqrt() + ratio;
            if keep >= 1.0 {
                u32::MAX
            } else {
                (keep * f64::from(u32::MAX)) as u32
            }
        })
        .collect()
}

/// A fit's whole state: the unit vectors it serves, and the raw input and output
/// vectors a later fit over more sets continues from ([`fit`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trained {
    /// The unit vectors.
    pub embeddings: Embeddings,
    input: Vec<f32>,
    output: Vec<f32>,
}

/// Learns vectors from item sets (baskets, sessions). Items in fewer than
/// `min_count` sets, and sets left with fewer than two items, are skipped.
pub fn train(sets: &[Vec<ItemId>], p: &Item2VecParams) -> Embeddings {
    fit(sets, None, p).embeddings
}

/// [`train`], or, given `(previous, new)`, its continuation: which items get a vector,
/// the negative-sampling table and the subsampling still count every set, but the
/// passes go over the sets `new` marks only (one flag per set), and the items
/// `previous` knows start from its vectors (the others from random ones). Training on
/// a corpus once and continuing on what was added later costs the new sets' passes
/// instead of everything's.
pub fn fit(
    sets: &[Vec<ItemId>],
    continued: Option<(&Trained, &[bool])>,
    p: &Item2VecParams,
) -> Trained {
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
        .enumerate()
        .filter(|(s, _)| continued.is_none_or(|(_, new)| new[*s]))
        .map(|(_, s)| s.iter().filter_map(|i| row_of.get(i).copied()).collect())
        .filter(|s: &Vec<u32>| s.len() >= 2)
        .collect();
    let (n, dim) = (items.len(), p.dim.max(1));
    if n == 0 || (sets.is_empty() && continued.is_none()) {
        return Trained {
            embeddings: Embeddings::new(dim, Vec::new(), Vec::new()),
            ..Trained::default()
        };
    }
    let table = negative_table(&items, &counts);
    let keep = keep_thresholds(&items, &counts, p.subsample);
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let mut input: Vec<f32> = (0..n * dim)
        .map(|_| (rng.random::<f32>() - 0.5) / dim as f32)
        .collect();
    let mut output = vec![0f32; n * dim];
    if let Some((previous, _)) = continued
        && previous.embeddings.dim == dim
    {
        for (row, &item) in items.iter().enumerate() {
            if let Some(old) = previous.embeddings.row(item) {
                let (to, from) = (row * dim..(row + 1) * dim, old * dim..(old + 1) * dim);
                input[to.clone()].copy_from_slice(&previous.input[from.clone()]);
                output[to].copy_from_slice(&previous.output[from]);
            }
        }
    }
    let corpus = Passes {
        sets: &sets,
        keep: &keep,
        table: &table,
        sigmoid: sigmoid_table(),
        p,
        dim,
        steps: (p.epochs.max(1) * sets.len()).max(1) as f32,
    };
    let shards = p.shards.max(1);
    let mut order: Vec<usize> = (0..sets.len()).collect();
    let mut round = 0u64;
    let mut copies: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let mut start = (Vec::new(), Vec::new());
    for epoch in 0..p.epochs.max(1) {
        order.shuffle(&mut rng);
        for (r, chunk) in order.chunks(ROUND_SETS * shards).enumerate() {
            let first = epoch * sets.len() + r * ROUND_SETS * shards;
            let share = chunk.len().div_ceil(shards);
            let streams = 1 + round * shards as u64;
            round += 1;
            let stream = |shard: usize| {
                let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
                rng.set_stream(streams + shard as u64);
                rng
            };
            if shards == 1 {
                corpus.pass(chunk, first, &mut input, &mut output, &mut stream(0));
                continue;
            }
            // Every shard starts from the same vectors; their changes are merged.
            start.0.clone_from(&input);
            start.1.clone_from(&output);
            copies.resize_with(shards - 1, Default::default);
            for (i, o) in &mut copies {
                i.clone_from(&input);
                o.clone_from(&output);
            }
            let mut work: Vec<(&mut [f32], &mut [f32])> =
                vec![(input.as_mut_slice(), output.as_mut_slice())];
            work.extend(
                copies
                    .iter_mut()
                    .map(|(i, o)| (i.as_mut_slice(), o.as_mut_slice())),
            );
            work.into_par_iter()
                .zip(chunk.par_chunks(share))
                .enumerate()
                .for_each(|(shard, ((input, output), part))| {
                    let first = first + shard * share;
                    corpus.pass(part, first, input, output, &mut stream(shard));
                });
            let others: Vec<&[f32]> = copies.iter().map(|(i, _)| i.as_slice()).collect();
            merge(&mut input, &others, &start.0, dim);
            let others: Vec<&[f32]> = copies.iter().map(|(_, o)| o.as_slice()).collect();
            merge(&mut output, &others, &start.1, dim);
        }
    }
    let mut unit = input.clone();
    for row in unit.chunks_mut(dim) {
        let norm = dot(row, row).sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Trained {
        embeddings: Embeddings::new(dim, items, unit),
        input,
        output,
    }
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
    fn sharded_training_gives_the_same_vectors_on_any_number_of_threads() {
        // Enough sets for several rounds of four shards, with a last, partial round.
        let sets: Vec<Vec<ItemId>> = (0..2 * 4 * ROUND_SETS + 1_000)
            .map(|i| {
                let g = (i % 7) as ItemId * 10;
                vec![
                    g,
                    g + 1 + (i % 3) as ItemId,
                    g + 5,
                    (i % 50) as ItemId + 100,
                ]
            })
            .collect();
        let p = Item2VecParams {
            epochs: 1,
            shards: 4,
            ..Item2VecParams::default()
        };
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| fit(&sets, None, &p))
        };
        let one = on(1);
        for threads in [3, 4] {
            assert!(on(threads) == one, "{threads} threads: other vectors");
        }
        let serial = fit(&sets, None, &Item2VecParams { shards: 1, ..p });
        assert_ne!(serial.embeddings.vectors, one.embeddings.vectors);
        let e = &one.embeddings;
        let r = |i| e.row(i).unwrap();
        let (together, apart) = (e.similarity(r(0), r(5)), e.similarity(r(0), r(15)));
        assert!(together > apart + 0.3, "together {together}, apart {apart}");
    }

    #[test]
    fn the_loop_compiled_for_the_vector_length_gives_the_same_vectors() {
        // Sets larger than `context` too, so partners are drawn.
        let sets: Vec<Vec<u32>> = (0..2_000u32)
            .map(|i| (0..2 + i % 9).map(|j| (i * 7 + j * 13) % 60).collect())
            .collect();
        let items: Vec<ItemId> = (0..60).collect();
        let counts: HashMap<ItemId, u32> = items.iter().map(|&i| (i, 10 + i % 5)).collect();
        let p = Item2VecParams::default();
        assert_eq!(p.dim, COMPILED_DIM);
        let passes = Passes {
            sets: &sets,
            keep: &keep_thresholds(&items, &counts, p.subsample),
            table: &negative_table(&items, &counts),
            sigmoid: sigmoid_table(),
            p: &p,
            dim: p.dim,
            steps: sets.len() as f32,
        };
        let order: Vec<usize> = (0..sets.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let start: Vec<f32> = (0..60 * p.dim).map(|_| rng.random::<f32>() - 0.5).collect();
        let run = |compiled: bool| {
            let (mut input, mut output) = (start.clone(), start.clone());
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            if compiled {
                passes.pass_with::<COMPILED_DIM>(&order, 0, &mut input, &mut output, &mut rng);
            } else {
                passes.pass_with::<0>(&order, 0, &mut input, &mut output, &mut rng);
            }
            (input, output)
        };
        let compiled = run(true);
        assert_ne!(compiled.0, start, "the pass learned nothing");
        assert!(compiled == run(false), "other vectors");
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
    fn a_continued_fit_starts_from_the_previous_vectors_and_learns_the_new_sets() {
        let p = Item2VecParams::default();
        let old = two_worlds();
        let previous = fit(&old, None, &p);
        // Nothing new: the known items keep their vectors exactly.
        let none = vec![false; old.len()];
        let same = fit(&old, Some((&previous, &none)), &p);
        assert_eq!(same.embeddings, previous.embeddings);
        // New sets put a new item 20 with items 0 and 1.
        let mut sets = old.clone();
        sets.extend((0..300).map(|_| vec![0, 1, 20]));
        let new: Vec<bool> = (0..sets.len()).map(|s| s >= old.len()).collect();
        let next = fit(&sets, Some((&previous, &new)), &p);
        assert_eq!(
            next,
            fit(&sets, Some((&previous, &new)), &p),
            "deterministic"
        );
        let e = &next.embeddings;
        let r = |i| e.row(i).unwrap();
        let (near, far) = (e.similarity(r(20), r(0)), e.similarity(r(20), r(11)));
        assert!(near > far, "new item: with 0 {near}, with 11 {far}");
        let (near, far) = (e.similarity(r(0), r(2)), e.similarity(r(0), r(12)));
        assert!(near > far, "kept: with 2 {near}, with 12 {far}");
    }

    #[test]
    fn rare_items_get_no_vector() {
        let mut sets = two_worlds();
        sets.push(vec![0, 99]);
        let e = train(&sets, &Item2VecParams::default());
        assert!(e.row(99).is_none() && e.row(0).is_some());
        assert!(train(&[], &Item2VecParams::default()).is_empty());
    }

    #[test]
    fn staples_are_subsampled_and_rare_items_always_kept() {
        let counts: HashMap<ItemId, u32> = [(0, 100_000), (1, 10)].into();
        let keep = keep_thresholds(&[0, 1], &counts, 0.01);
        assert!(keep[0] < u32::MAX / 10, "a staple is mostly dropped");
        assert_eq!(keep[1], u32::MAX, "a rare item is always kept");
        assert_eq!(keep_thresholds(&[0, 1], &counts, 0.0), [u32::MAX; 2]);
        let table = negative_table(&[0, 1], &counts);
        let rare = table.iter().filter(|&&r| r == 1).count() as f64 / table.len() as f64;
        let expected = 10f64.powf(0.75) / (100_000f64.powf(0.75) + 10f64.powf(0.75));
        assert!((rare - expected).abs() < 1e-4, "{rare} vs {expected}");
    }
}
