//! Customer segments: KMeans (`linfa-clustering`) on recency, frequency and monetary
//! value, each log-transformed (`ln(1 + x)`, because spend and order counts are
//! heavily skewed) and standardised. The number of clusters is the one with the best
//! silhouette in a configured range, and each cluster gets a business name from its
//! centroid (Champions, Loyal, At Risk, Hibernating, ...).
//!
//! Naming: every centroid is a point in standardised (recency-good, frequency,
//! monetary) space; each name has a prototype point there, and clusters get distinct
//! names by the assignment with the smallest total squared distance (exhaustive: at
//! most 8 clusters and 8 names). Profiles without any order are not clustered — they
//! are [`PROSPECTS`].
//!
//! Determinism: initial centroids come from k-means++ driven by the ML seed (several
//! restarts, lowest inertia kept) and are handed to linfa as precomputed, so the same
//! data and seed give the same segments. linfa assigns points in parallel on every core.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::features::Features;
use crate::metrics::silhouette;

/// Label of profiles that have never ordered.
pub const PROSPECTS: &str = "Prospects";

/// Restarts of KMeans per k (best inertia kept).
const RESTARTS: u64 = 3;
/// Rows the silhouette is measured on (a seeded sample beyond that: it is O(n²)).
const SILHOUETTE_SAMPLE: usize = 2_000;

/// Business names and their prototypes in (recency goodness, frequency, monetary)
/// z-scores.
const PROTOTYPES: [(&str, [f64; 3]); 8] = [
    ("Champions", [1.0, 1.2, 1.2]),
    ("Loyal", [0.5, 0.8, 0.6]),
    ("Potential Loyalists", [0.8, -0.2, -0.1]),
    ("New Customers", [1.0, -0.9, -0.6]),
    ("At Risk", [-0.6, 0.6, 0.6]),
    ("Can't Lose Them", [-0.9, 1.3, 1.3]),
    ("Hibernating", [-0.6, -0.5, -0.4]),
    ("Lost", [-1.3, -0.9, -0.8]),
];

/// Largest number of clusters (one per business name).
pub const MAX_SEGMENTS: usize = PROTOTYPES.len();

/// Segmentation could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Too few buyers for the requested number of clusters.
    #[error("{rows} buyers are too few to form {k} segments")]
    TooFewRows {
        /// Buyers available.
        rows: usize,
        /// Smallest k asked for.
        k: usize,
    },
    /// The k range is empty or beyond the number of names.
    #[error("segment count range {0}..={1} must lie within 2..={MAX_SEGMENTS}")]
    BadRange(usize, usize),
    /// linfa failed.
    #[error("KMeans: {0}")]
    KMeans(String),
    /// The stored artefact is not a segment model.
    #[error("segment artefact: {0}")]
    Artefact(String),
}

/// A trained segmentation: the scaler, the centroids and their names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentModel {
    /// Means of the log-transformed (recency, frequency, monetary).
    pub mean: [f64; 3],
    /// Their standard deviations.
    pub std: [f64; 3],
    /// Centroids in standardised space.
    pub centroids: Vec<[f64; 3]>,
    /// Business name of each centroid.
    pub names: Vec<String>,
}

/// How good the segmentation is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMetrics {
    /// Clusters chosen.
    pub k: usize,
    /// Mean silhouette at that k (on a sample of at most 2,000 buyers).
    pub silhouette: f64,
    /// Mean squared distance of a buyer to its centroid (standardised space).
    pub inertia: f64,
    /// Silhouette and inertia of every k tried.
    pub tried: Vec<KScore>,
    /// Each segment in the units people read.
    pub segments: Vec<SegmentSummary>,
    /// Buyers clustered.
    pub rows: usize,
}

/// The quality of one k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KScore {
    /// Number of clusters tried.
    pub k: usize,
    /// Mean silhouette.
    pub silhouette: f64,
    /// Mean squared distance to the centroid.
    pub inertia: f64,
}

/// One segment described by its centroid in original units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// Business name.
    pub name: String,
    /// Buyers in it.
    pub size: usize,
    /// Typical days since the last order.
    pub recency_days: f64,
    /// Typical number of orders.
    pub frequency: f64,
    /// Typical net spend.
    pub monetary: f64,
}

/// (recency, frequency, monetary) of a buyer, log-transformed; `None` for a profile
/// that never ordered.
fn log_rfm(f: &Features) -> Option<[f64; 3]> {
    if !f.has_ordered() || !f.recency_days.is_finite() {
        return None;
    }
    Some([
        f64::from(f.recency_days.max(0.0)).ln_1p(),
        f64::from(f.frequency).ln_1p(),
        f64::from(f.monetary_total.max(0.0)).ln_1p(),
    ])
}

impl SegmentModel {
    fn scale(&self, raw: [f64; 3]) -> [f64; 3] {
        [0, 1, 2].map(|i| (raw[i] - self.mean[i]) / self.std[i])
    }

    fn unscale(&self, z: [f64; 3]) -> [f64; 3] {
        [0, 1, 2].map(|i| (z[i] * self.std[i] + self.mean[i]).exp_m1())
    }

    /// The cluster a profile falls in (`None` for prospects) and its name.
    pub fn assign(&self, f: &Features) -> (Option<usize>, &str) {
        match log_rfm(f) {
            None => (None, PROSPECTS),
            Some(raw) => {
                let c = nearest(&self.centroids, &self.scale(raw));
                (Some(c), self.names[c].as_str())
            }
        }
    }

    /// The artefact stored in the registry (JSON).
    pub fn to_artefact(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an artefact written by [`SegmentModel::to_artefact`].
    pub fn from_artefact(text: &str) -> Result<Self, SegmentError> {
        let m: Self =
            serde_json::from_str(text).map_err(|e| SegmentError::Artefact(e.to_string()))?;
        if m.centroids.is_empty() || m.centroids.len() != m.names.len() {
            return Err(SegmentError::Artefact(
                "centroids and names differ in number".into(),
            ));
        }
        Ok(m)
    }
}

fn sq_dist(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

fn nearest(centroids: &[[f64; 3]], p: &[f64; 3]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, c) in centroids.iter().enumerate() {
        let d = sq_dist(c, p);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// Trains segments on the buyers among `profiles`, trying every k in `k_min..=k_max`.
pub fn train(
    profiles: &[Features],
    k_min: usize,
    k_max: usize,
    seed: u64,
) -> Result<(SegmentModel, SegmentMetrics), SegmentError> {
    if k_min < 2 || k_max < k_min || k_max > MAX_SEGMENTS {
        return Err(SegmentError::BadRange(k_min, k_max));
    }
    let raw: Vec<[f64; 3]> = profiles.iter().filter_map(log_rfm).collect();
    if raw.len() < k_min * 10 {
        return Err(SegmentError::TooFewRows {
            rows: raw.len(),
            k: k_min,
        });
    }
    let n = raw.len() as f64;
    let mean = [0, 1, 2].map(|i| raw.iter().map(|r| r[i]).sum::<f64>() / n);
    let std = [0, 1, 2].map(|i| {
        let var = raw.iter().map(|r| (r[i] - mean[i]).powi(2)).sum::<f64>() / n;
        var.sqrt().max(1e-9)
    });
    let scaler = SegmentModel {
        mean,
        std,
        centroids: Vec::new(),
        names: Vec::new(),
    };
    let points: Vec<[f64; 3]> = raw.iter().map(|r| scaler.scale(*r)).collect();
    let records = Array2::from_shape_fn((points.len(), 3), |(i, j)| points[i][j]);
    let dataset = DatasetBase::from(records);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sample: Vec<usize> = if points.len() <= SILHOUETTE_SAMPLE {
        (0..points.len()).collect()
    } else {
        // Partial Fisher–Yates: a seeded sample without replacement.
        let mut idx: Vec<usize> = (0..points.len()).collect();
        for i in 0..SILHOUETTE_SAMPLE {
            let j = rng.random_range(i..idx.len());
            idx.swap(i, j);
        }
        idx.truncate(SILHOUETTE_SAMPLE);
        idx
    };
    let sample_points: Vec<Vec<f64>> = sample.iter().map(|&i| points[i].to_vec()).collect();

    let mut tried = Vec::new();
    let mut best: Option<(KScore, Vec<[f64; 3]>)> = None;
    for k in k_min..=k_max.min(points.len() - 1) {
        let mut fitted: Option<(f64, Vec<[f64; 3]>)> = None;
        for restart in 0..RESTARTS {
            let mut init_rng = ChaCha8Rng::seed_from_u64(seed ^ ((k as u64) << 8) ^ restart);
            let init = kmeans_plus_plus(&points, k, &mut init_rng);
            let init = Array2::from_shape_fn((k, 3), |(i, j)| init[i][j]);
            let model = KMeans::params(k)
                .init_method(KMeansInit::Precomputed(init))
                .n_runs(1)
                .max_n_iterations(300)
                .tolerance(1e-6)
                .fit(&dataset)
                .map_err(|e| SegmentError::KMeans(e.to_string()))?;
            let centroids: Vec<[f64; 3]> = model
                .centroids()
                .rows()
                .into_iter()
                .map(|r| [r[0], r[1], r[2]])
                .collect();
            let inertia = model.inertia();
            if fitted.as_ref().is_none_or(|(best, _)| inertia < *best) {
                fitted = Some((inertia, centroids));
            }
        }
        let Some((inertia, centroids)) = fitted else {
            continue;
        };
        let labels: Vec<usize> = sample
            .iter()
            .map(|&i| nearest(&centroids, &points[i]))
            .collect();
        let score = KScore {
            k,
            silhouette: silhouette(&sample_points, &labels),
            inertia,
        };
        tried.push(score.clone());
        if best
            .as_ref()
            .is_none_or(|(b, _)| score.silhouette > b.silhouette)
        {
            best = Some((score, centroids));
        }
    }
    let (chosen, centroids) = best.ok_or(SegmentError::TooFewRows {
        rows: points.len(),
        k: k_min,
    })?;
    let names = name_clusters(&centroids);
    let model = SegmentModel {
        mean,
        std,
        centroids,
        names,
    };

    let mut sizes = vec![0usize; model.centroids.len()];
    for p in &points {
        sizes[nearest(&model.centroids, p)] += 1;
    }
    let segments = model
        .centroids
        .iter()
        .zip(&model.names)
        .zip(sizes)
        .map(|((c, name), size)| {
            let [r, f, m] = model.unscale(*c);
            SegmentSummary {
                name: name.clone(),
                size,
                recency_days: r,
                frequency: f,
                monetary: m,
            }
        })
        .collect();
    let metrics = SegmentMetrics {
        k: chosen.k,
        silhouette: chosen.silhouette,
        inertia: chosen.inertia,
        tried,
        segments,
        rows: points.len(),
    };
    Ok((model, metrics))
}

/// k-means++ seeding: the first centre uniformly, each next one with probability
/// proportional to its squared distance from the nearest centre so far.
fn kmeans_plus_plus(points: &[[f64; 3]], k: usize, rng: &mut ChaCha8Rng) -> Vec<[f64; 3]> {
    let mut centres = vec![points[rng.random_range(0..points.len())]];
    let mut d2: Vec<f64> = points.iter().map(|p| sq_dist(p, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = d2.iter().sum();
        let next = if total <= 0.0 {
            rng.random_range(0..points.len())
        } else {
            let mut x = rng.random::<f64>() * total;
            let mut chosen = points.len() - 1;
            for (i, d) in d2.iter().enumerate() {
                if x < *d {
                    chosen = i;
                    break;
                }
                x -= d;
            }
            chosen
        };
        let c = points[next];
        for (d, p) in d2.iter_mut().zip(points) {
            *d = d.min(sq_dist(p, &c));
        }
        centres.push(c);
    }
    centres
}

/// Distinct business names for standardised centroids (recency, frequency, monetary):
/// the assignment to prototypes with the least total squared distance.
pub fn name_clusters(centroids: &[[f64; 3]]) -> Vec<String> {
    // Recency is "good" when low: flip it so every axis reads "higher is better".
    let points: Vec<[f64; 3]> = centroids.iter().map(|c| [-c[0], c[1], c[2]]).collect();
    let mut best: (f64, Vec<usize>) = (f64::INFINITY, Vec::new());
    let mut current = Vec::with_capacity(points.len());
    let mut used = [false; PROTOTYPES.len()];
    search(&points, 0, 0.0, &mut current, &mut used, &mut best);
    best.1.iter().map(|&p| PROTOTYPES[p].0.to_owned()).collect()
}

fn search(
    points: &[[f64; 3]],
    i: usize,
    cost: f64,
    current: &mut Vec<usize>,
    used: &mut [bool; PROTOTYPES.len()],
    best: &mut (f64, Vec<usize>),
) {
    if cost >= best.0 {
        return;
    }
    if i == points.len() {
        *best = (cost, current.clone());
        return;
    }
    for p in 0..PROTOTYPES.len() {
        if !used[p] {
            used[p] = true;
            current.push(p);
            search(
                points,
                i + 1,
                cost + sq_dist(&points[i], &PROTOTYPES[p].1),
                current,
                used,
                best,
            );
            current.pop();
            used[p] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buyer(recency: f32, frequency: f32, monetary: f32) -> Features {
        Features {
            recency_days: recency,
            frequency,
            monetary_total: monetary,
            ..Features::default()
        }
    }

    #[test]
    fn names_follow_the_centroids() {
        // (recency z, frequency z, monetary z): recent big spenders, long-gone small ones,
        // recent first-timers, and formerly frequent buyers gone quiet.
        let names = name_clusters(&[
            [-1.0, 1.2, 1.3],
            [1.4, -0.9, -0.8],
            [-1.0, -0.9, -0.6],
            [0.7, 0.7, 0.5],
        ]);
        assert_eq!(names, ["Champions", "Lost", "New Customers", "At Risk"]);
        let all = name_clusters(&PROTOTYPES.map(|(_, p)| [-p[0], p[1], p[2]]));
        assert_eq!(
            all,
            PROTOTYPES.map(|(n, _)| n.to_owned()),
            "each prototype names itself"
        );
    }

    #[test]
    fn finds_obvious_groups_deterministically() {
        let mut profiles = Vec::new();
        for i in 0..300 {
            let j = (i % 10) as f32;
            profiles.push(buyer(5.0 + j, 20.0 + j, 20_000.0 + 100.0 * j)); // champions
            profiles.push(buyer(300.0 + j, 1.0, 500.0 + 10.0 * j)); // lost
            profiles.push(buyer(10.0 + j, 1.0, 700.0 + 10.0 * j)); // new
        }
        profiles.push(Features::default()); // a prospect: not clustered
        let (model, metrics) = train(&profiles, 2, 5, 42).unwrap();
        assert_eq!(metrics.k, 3, "{metrics:?}");
        assert_eq!(metrics.rows, 900);
        assert!(metrics.silhouette > 0.8, "{metrics:?}");
        assert_eq!(metrics.tried.len(), 4);
        let mut names: Vec<&str> = model.names.iter().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["Champions", "Lost", "New Customers"]);
        assert_eq!(model.assign(&buyer(6.0, 25.0, 21_000.0)).1, "Champions");
        assert_eq!(model.assign(&buyer(320.0, 1.0, 450.0)).1, "Lost");
        assert_eq!(model.assign(&Features::default()), (None, PROSPECTS));
        assert!(metrics.segments.iter().all(|s| s.size == 300));
        let champions = metrics
            .segments
            .iter()
            .find(|s| s.name == "Champions")
            .unwrap();
        assert!((champions.frequency - 24.0).abs() < 2.0, "{champions:?}");

        let (again, _) = train(&profiles, 2, 5, 42).unwrap();
        assert_eq!(again, model, "same seed, same segments");
        // JSON keeps floats to within an ulp, not always bit for bit.
        let back = SegmentModel::from_artefact(&model.to_artefact()).unwrap();
        assert_eq!(back.names, model.names);
        let flat = |m: &SegmentModel| -> Vec<f64> {
            m.mean
                .iter()
                .chain(&m.std)
                .chain(m.centroids.iter().flatten())
                .copied()
                .collect()
        };
        assert!(
            flat(&back)
                .iter()
                .zip(flat(&model))
                .all(|(a, b)| (a - b).abs() < 1e-12)
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            train(&[], 1, 3, 0),
            Err(SegmentError::BadRange(1, 3))
        ));
        assert!(matches!(
            train(&[buyer(1.0, 1.0, 1.0)], 2, 3, 0),
            Err(SegmentError::TooFewRows { .. })
        ));
        assert!(SegmentModel::from_artefact("{}").is_err());
    }
}
