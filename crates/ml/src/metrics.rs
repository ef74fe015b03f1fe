//! Model quality measures, written out so each can be checked by hand: classification
//! at a threshold, ranking (ROC-AUC, average precision), calibration (Brier),
//! regression errors and the silhouette of a clustering.
//!
//! Conventions: a positive label is `true` (for churn: the customer churned); scores
//! are "higher means more likely positive"; a prediction is positive when its score is
//! at least the threshold. Ties in ROC-AUC count one half, as in the Mann–Whitney U
//! statistic; average precision is the step-wise area used by scikit-learn.

use serde::{Deserialize, Serialize};

/// Counts of a binary classification at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Confusion {
    /// Positives predicted positive.
    pub tp: usize,
    /// Negatives predicted positive.
    pub fp: usize,
    /// Negatives predicted negative.
    pub tn: usize,
    /// Positives predicted negative.
    pub fn_: usize,
}

impl Confusion {
    /// Counts predictions `score >= threshold` against `labels`.
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Self {
        let mut c = Confusion::default();
        for (s, y) in scores.iter().zip(labels) {
            match (*s >= threshold, *y) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// Share of correct predictions.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }

    /// Share of predicted positives that are positive (0 when nothing is predicted
    /// positive).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Share of positives predicted positive.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Area under the ROC curve: the probability that a random positive scores above a
/// random negative (ties count one half). `NaN` when one class is absent.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let n_pos = labels.iter().filter(|y| **y).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over runs of equal scores.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += order[i..=j].iter().filter(|&&k| labels[k]).count() as f64 * avg_rank;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    u / (n_pos as f64 * n_neg as f64)
}

/// Average precision (area under the precision–recall curve, step-wise): the mean of
/// the precision at each distinct threshold weighted by the recall it adds. `NaN`
/// without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let n_pos = labels.iter().filter(|y| **y).count();
    if n_pos == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            if labels[k] { tp += 1 } else { fp += 1 }
        }
        let recall = tp as f64 / n_pos as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
        i = j + 1;
    }
    ap
}

/// Mean squared difference between predicted probabilities and outcomes (0 is
/// perfect, 0.25 is a coin toss).
pub fn brier(probabilities: &[f64], labels: &[bool]) -> f64 {
    mean(
        probabilities
            .iter()
            .zip(labels)
            .map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2)),
    )
}

/// The threshold that maximises F1 on these scores (the highest such threshold on
/// ties), and that F1.
pub fn best_f1_threshold(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let mut candidates: Vec<f64> = scores.to_vec();
    candidates.sort_by(|a, b| b.total_cmp(a));
    candidates.dedup();
    let mut best = (0.5, -1.0);
    for t in candidates {
        let f1 = Confusion::at(scores, labels, t).f1();
        if f1 > best.1 {
            best = (t, f1);
        }
    }
    if best.1 < 0.0 { (0.5, 0.0) } else { best }
}

/// Everything measured of a binary classifier on one test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Share of correct predictions at `threshold`.
    pub accuracy: f64,
    /// Precision at `threshold`.
    pub precision: f64,
    /// Recall at `threshold`.
    pub recall: f64,
    /// F1 at `threshold`.
    pub f1: f64,
    /// Area under the ROC curve.
    pub roc_auc: f64,
    /// Average precision (area under the precision–recall curve).
    pub pr_auc: f64,
    /// Brier score of the probabilities.
    pub brier: f64,
    /// The decision threshold used.
    pub threshold: f64,
    /// Share of positives in the test set.
    pub positive_rate: f64,
    /// Rows evaluated.
    pub rows: usize,
}

impl ClassificationMetrics {
    /// Measures `probabilities` against `labels`, deciding at `threshold`.
    pub fn measure(probabilities: &[f64], labels: &[bool], threshold: f64) -> Self {
        let c = Confusion::at(probabilities, labels, threshold);
        Self {
            accuracy: c.accuracy(),
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            roc_auc: roc_auc(probabilities, labels),
            pr_auc: average_precision(probabilities, labels),
            brier: brier(probabilities, labels),
            threshold,
            positive_rate: ratio(labels.iter().filter(|y| **y).count(), labels.len()),
            rows: labels.len(),
        }
    }
}

/// Everything measured of a regression on one test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination (1 is perfect, 0 is "always the mean").
    pub r2: f64,
    /// Mean absolute percentage error over rows whose actual value is positive
    /// (buyers, for LTV), as a fraction.
    pub mape_buyers: f64,
    /// Rows evaluated.
    pub rows: usize,
}

impl RegressionMetrics {
    /// Measures `predicted` against `actual`.
    pub fn measure(predicted: &[f64], actual: &[f64]) -> Self {
        let mean_actual = mean(actual.iter().copied());
        let ss_res: f64 = predicted
            .iter()
            .zip(actual)
            .map(|(p, y)| (y - p).powi(2))
            .sum();
        let ss_tot: f64 = actual.iter().map(|y| (y - mean_actual).powi(2)).sum();
        Self {
            rmse: (ss_res / actual.len().max(1) as f64).sqrt(),
            mae: mean(predicted.iter().zip(actual).map(|(p, y)| (y - p).abs())),
            r2: if ss_tot > 0.0 {
                1.0 - ss_res / ss_tot
            } else {
                0.0
            },
            mape_buyers: mean(
                predicted
                    .iter()
                    .zip(actual)
                    .filter(|(_, y)| **y > 0.0)
                    .map(|(p, y)| (y - p).abs() / y),
            ),
            rows: actual.len(),
        }
    }
}

/// Mean silhouette of a clustering (Euclidean): for each point, `(b - a) / max(a, b)`
/// with `a` its mean distance to its own cluster and `b` to the nearest other cluster;
/// points alone in their cluster count 0. `NaN` with fewer than two clusters.
pub fn silhouette(points: &[Vec<f64>], labels: &[usize]) -> f64 {
    let k = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l] += 1;
    }
    if sizes.iter().filter(|s| **s > 0).count() < 2 {
        return f64::NAN;
    }
    let dist = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let mut total = 0.0;
    for (i, p) in points.iter().enumerate() {
        let own = labels[i];
        if sizes[own] < 2 {
            continue;
        }
        let mut sums = vec![0.0; k];
        for (j, q) in points.iter().enumerate() {
            if i != j {
                sums[labels[j]] += dist(p, q);
            }
        }
        let a = sums[own] / (sizes[own] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != own && sizes[c] > 0)
            .map(|c| sums[c] / sizes[c] as f64)
            .fold(f64::INFINITY, f64::min);
        let m = a.max(b);
        if m > 0.0 {
            total += (b - a) / m;
        }
    }
    total / points.len() as f64
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn confusion_counts() {
        let c = Confusion::at(&[0.9, 0.6, 0.4, 0.2], &[true, false, true, false], 0.5);
        assert_eq!(
            c,
            Confusion {
                tp: 1,
                fp: 1,
                tn: 1,
                fn_: 1
            }
        );
        assert_eq!(
            (c.accuracy(), c.precision(), c.recall(), c.f1()),
            (0.5, 0.5, 0.5, 0.5)
        );
        let none = Confusion::at(&[0.1], &[true], 0.5);
        assert_eq!(
            (none.precision(), none.recall(), none.f1()),
            (0.0, 0.0, 0.0)
        );
        let c = Confusion::at(&[0.9, 0.8, 0.7, 0.1], &[true, true, false, true], 0.5);
        // tp 2, fp 1, fn 1: precision 2/3, recall 2/3, f1 2/3.
        assert!(close(c.precision(), 2.0 / 3.0) && close(c.f1(), 2.0 / 3.0));
    }

    #[test]
    fn roc_auc_by_hand() {
        // Pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) lose, (0.8 vs both) win: 3/4.
        let labels = [false, false, true, true];
        assert!(close(roc_auc(&[0.1, 0.4, 0.35, 0.8], &labels), 0.75));
        assert!(
            close(roc_auc(&[0.5, 0.5], &[false, true]), 0.5),
            "ties count half"
        );
        assert!(close(roc_auc(&[0.2, 0.9], &[false, true]), 1.0));
        assert!(close(roc_auc(&[0.9, 0.2], &[false, true]), 0.0));
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranked: 0.8 (+) p=1 r=.5; 0.4 (-); 0.35 (+) p=2/3 r=1 → .5·1 + .5·2/3.
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert!(close(ap, 0.5 + 1.0 / 3.0), "{ap}");
        // A tie between a positive and a negative counts as one step with p=1/2.
        assert!(close(average_precision(&[0.5, 0.5], &[true, false]), 0.5));
    }

    #[test]
    fn brier_and_threshold() {
        assert!(close(
            brier(&[0.9, 0.2], &[true, false]),
            (0.01 + 0.04) / 2.0
        ));
        // Best F1 predicts the two highest scores positive: tp 2, fp 0, fn 0.
        let (t, f1) = best_f1_threshold(&[0.9, 0.7, 0.3, 0.1], &[true, true, false, false]);
        assert_eq!((t, f1), (0.7, 1.0));
        let m =
            ClassificationMetrics::measure(&[0.9, 0.7, 0.3, 0.1], &[true, true, false, false], t);
        assert_eq!(
            (m.accuracy, m.roc_auc, m.positive_rate, m.rows),
            (1.0, 1.0, 0.5, 4)
        );
    }

    #[test]
    fn regression_by_hand() {
        // Squared errors .25, .25, 0, 1 → MSE .375; mean actual 2.875, SS_tot 29.1875.
        let m = RegressionMetrics::measure(&[2.5, 0.0, 2.0, 8.0], &[3.0, -0.5, 2.0, 7.0]);
        assert!(close(m.rmse, 0.375_f64.sqrt()));
        assert!(close(m.mae, 0.5));
        assert!(close(m.r2, 1.0 - 1.5 / 29.1875));
        // Positive actuals 3, 2, 7: |.5|/3, 0, 1/7.
        assert!(close(m.mape_buyers, (0.5 / 3.0 + 1.0 / 7.0) / 3.0));
    }

    #[test]
    fn silhouette_by_hand() {
        let points: Vec<Vec<f64>> = [0.0, 1.0, 4.0, 5.0].iter().map(|x| vec![*x]).collect();
        // Outer points: a=1, b=4.5 → 7/9; inner points: a=1, b=3.5 → 5/7.
        let s = silhouette(&points, &[0, 0, 1, 1]);
        assert!(close(s, (2.0 * 7.0 / 9.0 + 2.0 * 5.0 / 7.0) / 4.0), "{s}");
        assert!(silhouette(&points, &[0, 0, 0, 0]).is_nan());
        // A singleton counts 0: only points 0 and 1 contribute.
        let s = silhouette(&points[..3], &[0, 0, 1]);
        assert!(
            close(s, ((4.0 - 1.0) / 4.0 + (3.0 - 1.0) / 3.0) / 3.0),
            "{s}"
        );
    }
}
