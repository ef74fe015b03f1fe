//! Approximate nearest neighbours over item vectors: an HNSW graph
//! (`instant-distance`, the role FAISS plays in the brief), with exact search beside it
//! to measure the graph's recall.
//!
//! Vectors are unit length, so the distance is `1 − cosine`. The graph is rebuilt from
//! the vectors when a model is loaded (a few hundred milliseconds for tens of thousands
//! of items) rather than stored: the vectors are the artefact.

use instant_distance::{Builder, HnswMap, Search};
use rand::{SeedableRng, seq::index::sample};
use rand_chacha::ChaCha8Rng;

use super::item2vec::{Embeddings, dot};

/// One unit vector as an HNSW point.
#[derive(Debug, Clone)]
struct UnitVector(Vec<f32>);

impl instant_distance::Point for UnitVector {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Breadth of the graph search, when building and when querying.
const EF_CONSTRUCTION: usize = 100;
const EF_SEARCH: usize = 64;

/// An HNSW index over the rows of an [`Embeddings`].
pub struct Index {
    map: Option<HnswMap<UnitVector, u32>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("built", &self.map.is_some())
            .finish()
    }
}

impl Index {
    /// Builds the graph over every row (layer assignment seeded).
    pub fn build(embeddings: &Embeddings, seed: u64) -> Self {
        if embeddings.is_empty() {
            return Self { map: None };
        }
        let points = (0..embeddings.len())
            .map(|r| UnitVector(embeddings.vector(r).to_vec()))
            .collect();
        let rows = (0..embeddings.len() as u32).collect();
        let map = Builder::default()
            .ef_construction(EF_CONSTRUCTION)
            .ef_search(EF_SEARCH)
            .seed(seed)
            .build(points, rows);
        Self { map: Some(map) }
    }

    /// The `k` rows nearest to `row` (itself left out), with their cosine similarity,
    /// most similar first.
    pub fn nearest(&self, embeddings: &Embeddings, row: usize, k: usize) -> Vec<(usize, f32)> {
        let Some(map) = &self.map else {
            return Vec::new();
        };
        search_row(map, embeddings, row, k, &mut Search::default())
    }
}

fn search_row(
    map: &HnswMap<UnitVector, u32>,
    embeddings: &Embeddings,
    row: usize,
    k: usize,
    search: &mut Search,
) -> Vec<(usize, f32)> {
    let query = UnitVector(embeddings.vector(row).to_vec());
    map.search(&query, search)
        .filter(|hit| *hit.value as usize != row)
        .take(k)
        .map(|hit| (*hit.value as usize, 1.0 - hit.distance))
        .collect()
}

impl Index {
    /// The `k` nearest rows of each of `rows` (as [`Index::nearest`]), searched on all
    /// cores: each search is independent, so the result does not depend on the thread
    /// count.
    pub fn nearest_of(
        &self,
        embeddings: &Embeddings,
        rows: &[usize],
        k: usize,
    ) -> Vec<Vec<(usize, f32)>> {
        use rayon::prelude::*;
        let Some(map) = &self.map else {
            return vec![Vec::new(); rows.len()];
        };
        rows.par_iter()
            .map_init(Search::default, |search, &row| {
                search_row(map, embeddings, row, k, search)
            })
            .collect()
    }
}

/// The `k` rows nearest to `row` by brute force (itself left out), most similar first.
pub fn exact_nearest(embeddings: &Embeddings, row: usize, k: usize) -> Vec<(usize, f32)> {
    let mut all: Vec<(usize, f32)> = (0..embeddings.len())
        .filter(|&r| r != row)
        .map(|r| (r, embeddings.similarity(row, r)))
        .collect();
    let k = k.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    all.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    all.truncate(k);
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all
}

/// Recall@k of the index against exact search, averaged over up to `queries` rows
/// drawn with `seed`: the share of each row's true `k` nearest that the index returns.
pub fn recall_at_k(
    embeddings: &Embeddings,
    index: &Index,
    k: usize,
    queries: usize,
    seed: u64,
) -> f64 {
    let n = embeddings.len();
    if n < 2 {
        return f64::NAN;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = sample(&mut rng, n, queries.min(n));
    let (mut found, mut wanted) = (0usize, 0usize);
    for row in rows.iter() {
        let truth = exact_nearest(embeddings, row, k);
        let got: Vec<usize> = index
            .nearest(embeddings, row, k)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        wanted += truth.len();
        found += truth.iter().filter(|(r, _)| got.contains(r)).count();
    }
    found as f64 / wanted.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::super::item2vec::{Item2VecParams, train};
    use super::*;

    #[test]
    fn the_graph_finds_what_exact_search_finds() {
        // 60 clusters of 8 items bought together: enough rows for the graph to matter.
        let sets: Vec<Vec<u32>> = (0..3000u32)
            .map(|i| {
                let c = i % 60;
                (0..5).map(|j| c * 8 + (i / 60 + j) % 8).collect()
            })
            .collect();
        let e = train(&sets, &Item2VecParams::default());
        assert_eq!(e.len(), 480);
        let index = Index::build(&e, 1);
        let recall = recall_at_k(&e, &index, 10, 200, 3);
        assert!(recall >= 0.95, "recall@10 {recall}");
        let row = e.row(0).unwrap();
        let near = index.nearest(&e, row, 5);
        assert_eq!(near.len(), 5);
        assert!(near.iter().all(|(r, _)| *r != row));
        assert!(near.windows(2).all(|w| w[0].1 >= w[1].1));
        // The nearest neighbours of item 0 are its own cluster (items 1..8).
        assert!(near.iter().all(|(r, _)| e.items[*r] < 8), "{near:?}");
    }
}
