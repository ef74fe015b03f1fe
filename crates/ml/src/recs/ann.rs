//! Approximate nearest neighbours over item vectors: an HNSW graph
//! (`instant-distance`, the role FAISS plays in the brief), with exact search beside it
//! to measure the graph's recall (and to serve a model that needs the neighbours of a
//! few items only, where building a graph would cost more than searching everything).
//!
//! Vectors are unit length, so the distance is `1 − cosine`. An index covers a chosen
//! set of rows (the items that can still be recommended) while any row can be a query.
//! The graph is rebuilt from the vectors when a model is loaded rather than stored: the
//! vectors are the artefact.

use instant_distance::{Builder, HnswMap, Search};
use rand::{SeedableRng, seq::index::sample};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::item2vec::{Embeddings, dot};

/// One unit vector as an HNSW point.
#[derive(Debug, Clone)]
struct UnitVector(Vec<f32>);

impl instant_distance::Point for UnitVector {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Breadth of the search that links each inserted item while the graph is built (40
/// before: 24 halves the build, the graph's recall@10 on Complete Journey going from
/// 0.995 to 0.989, with the same recommendations' quality; docs/ml.md).
pub const EF_CONSTRUCTION: usize = 24;
/// Breadth of a query's graph search.
pub const EF_SEARCH: usize = 64;

/// An HNSW index over some rows of an [`Embeddings`].
pub struct Index {
    map: Option<HnswMap<UnitVector, u32>>,
    /// The rows in the graph, ascending.
    rows: Vec<usize>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("built", &self.map.is_some())
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl Index {
    /// Builds the graph over every row (layer assignment seeded).
    pub fn build(embeddings: &Embeddings, seed: u64) -> Self {
        Self::build_over(embeddings, (0..embeddings.len()).collect(), seed)
    }

    /// Builds the graph over the given rows only (the others can still be queries, and
    /// are never found).
    pub fn build_over(embeddings: &Embeddings, mut rows: Vec<usize>, seed: u64) -> Self {
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            return Self { map: None, rows };
        }
        let points = rows
            .iter()
            .map(|&r| UnitVector(embeddings.vector(r).to_vec()))
            .collect();
        let values = rows.iter().map(|&r| r as u32).collect();
        // `instant-distance` inserts a layer's points in parallel, so with more than one
        // thread the graph (and every neighbour list read from it) depends on thread
        // timing. One thread keeps the model a function of its seed and data.
        let build = || {
            Builder::default()
                .ef_construction(EF_CONSTRUCTION)
                .ef_search(EF_SEARCH)
                .seed(seed)
                .build(points, values)
        };
        let map = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
            Ok(pool) => pool.install(build),
            Err(_) => build(),
        };
        Self {
            map: Some(map),
            rows,
        }
    }

    /// The rows in the graph, ascending.
    pub fn rows(&self) -> &[usize] {
        &self.rows
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

/// The `k` rows nearest to `row` among `among` by brute force (itself left out), most
/// similar first (equal similarities by row, so the result is fully determined).
pub fn exact_nearest(
    embeddings: &Embeddings,
    among: &[usize],
    row: usize,
    k: usize,
) -> Vec<(usize, f32)> {
    let query = embeddings.vector(row);
    let mut best = Best::new(k);
    for &r in among {
        if r != row {
            best.offer(r, dot(query, embeddings.vector(r)));
        }
    }
    best.into_sorted()
}

/// [`exact_nearest`] for each of `rows`, on all cores: each search is independent and
/// fully determined, so the result does not depend on the thread count. The vectors
/// searched are first copied side by side, so a search streams through memory.
pub fn exact_nearest_of(
    embeddings: &Embeddings,
    among: &[usize],
    rows: &[usize],
    k: usize,
) -> Vec<Vec<(usize, f32)>> {
    let dim = embeddings.dim;
    let packed: Vec<f32> = among
        .iter()
        .flat_map(|&r| embeddings.vector(r).iter().copied())
        .collect();
    rows.par_iter()
        .map(|&row| {
            let query = embeddings.vector(row);
            let mut best = Best::new(k);
            for (&r, v) in among.iter().zip(packed.chunks_exact(dim.max(1))) {
                if r != row {
                    best.offer(r, dot(query, v));
                }
            }
            best.into_sorted()
        })
        .collect()
}

/// The `k` best (row, similarity) pairs offered so far: higher similarity first, then
/// lower row.
struct Best {
    k: usize,
    /// Kept sorted best first.
    kept: Vec<(usize, f32)>,
}

impl Best {
    fn new(k: usize) -> Self {
        Self {
            k,
            kept: Vec::with_capacity(k + 1),
        }
    }

    fn better(a: &(usize, f32), b: &(usize, f32)) -> std::cmp::Ordering {
        b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
    }

    fn offer(&mut self, row: usize, similarity: f32) {
        if self.k == 0 {
            return;
        }
        let pair = (row, similarity);
        if self.kept.len() == self.k
            && Self::better(&pair, &self.kept[self.k - 1]) != std::cmp::Ordering::Less
        {
            return;
        }
        let at = self
            .kept
            .partition_point(|kept| Self::better(kept, &pair) == std::cmp::Ordering::Less);
        self.kept.insert(at, pair);
        self.kept.truncate(self.k);
    }

    fn into_sorted(self) -> Vec<(usize, f32)> {
        self.kept
    }
}

/// Recall@k of the index against exact search over the same rows, averaged over up to
/// `queries` rows drawn with `seed`: the share of each row's true `k` nearest that the
/// index returns.
pub fn recall_at_k(
    embeddings: &Embeddings,
    index: &Index,
    k: usize,
    queries: usize,
    seed: u64,
) -> f64 {
    let n = embeddings.len();
    if n < 2 || index.rows.is_empty() {
        return f64::NAN;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = sample(&mut rng, n, queries.min(n));
    let (mut found, mut wanted) = (0usize, 0usize);
    for row in rows.iter() {
        let truth = exact_nearest(embeddings, &index.rows, row, k);
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

    fn clusters() -> Embeddings {
        let sets: Vec<Vec<u32>> = (0..3000u32)
            .map(|i| {
                let c = i % 60;
                (0..5).map(|j| c * 8 + (i / 60 + j) % 8).collect()
            })
            .collect();
        train(&sets, &Item2VecParams::default())
    }

    #[test]
    fn a_graph_over_some_rows_finds_only_them_and_answers_any_row() {
        let e = clusters();
        // Every third row is indexed; the others are only queries.
        let indexed: Vec<usize> = (0..e.len()).filter(|r| r % 3 == 0).collect();
        let index = Index::build_over(&e, indexed.clone(), 1);
        assert_eq!(index.rows(), indexed.as_slice());
        for row in [0, 1, 2, 100, 479] {
            let near = index.nearest(&e, row, 10);
            assert_eq!(near.len(), 10, "row {row}");
            assert!(
                near.iter().all(|(r, _)| r % 3 == 0 && *r != row),
                "{near:?}"
            );
        }
        let recall = recall_at_k(&e, &index, 10, 200, 3);
        assert!(recall >= 0.95, "recall@10 {recall}");
        let empty = Index::build_over(&e, Vec::new(), 1);
        assert!(empty.nearest(&e, 0, 5).is_empty());
        assert!(recall_at_k(&e, &empty, 10, 20, 3).is_nan());
    }

    /// `n` seeded random unit vectors of length 16 (more points than `clusters`, so a
    /// layer's inserts run long enough to race on several threads).
    fn random_unit_vectors(n: usize) -> Embeddings {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let dim = 16;
        let mut e = Embeddings::default();
        e.dim = dim;
        e.items = (0..n as u32).collect();
        for _ in 0..n {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            e.vectors.extend(v.iter().map(|x| x / norm));
        }
        e.reindex();
        e
    }

    #[test]
    fn the_graph_is_the_same_whatever_the_thread_timing() {
        let e = random_unit_vectors(20_000);
        let sample: Vec<usize> = (0..e.len()).step_by(13).collect();
        let neighbours = |index: &Index| -> Vec<Vec<(usize, f32)>> {
            sample.iter().map(|&r| index.nearest(&e, r, 10)).collect()
        };
        let first = neighbours(&Index::build(&e, 7));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for round in 0..2 {
            let again = pool.install(|| Index::build(&e, 7));
            assert!(neighbours(&again) == first, "round {round}: another graph");
        }
    }

    #[test]
    fn exact_search_in_bulk_is_sorting_everything_on_any_number_of_threads() {
        let e = clusters();
        let among: Vec<usize> = (0..e.len()).filter(|r| r % 2 == 1).collect();
        let queries: Vec<usize> = (0..e.len()).step_by(7).collect();
        let bulk = exact_nearest_of(&e, &among, &queries, 20);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| exact_nearest_of(&e, &among, &queries, 20));
        assert_eq!(bulk, one);
        for (&row, got) in queries.iter().zip(&bulk) {
            let mut all: Vec<(usize, f32)> = among
                .iter()
                .filter(|&&r| r != row)
                .map(|&r| (r, e.similarity(row, r)))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(20);
            assert_eq!(got, &all, "row {row}");
            assert_eq!(got, &exact_nearest(&e, &among, row, 20));
        }
        assert!(exact_nearest(&e, &among, 0, 0).is_empty());
    }
}
