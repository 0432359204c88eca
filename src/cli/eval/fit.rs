//! Fitting the answerability decision (`rag eval qa --set squad2 --split fit --fit`): from the
//! quotes of a run, a logistic regression over the standardised features, stacked on a linear
//! probe of the prompt's last hidden state. The probe's input to the combination is
//! out-of-fold (each question scored by a probe that did not see it), so the combination
//! learns how far to trust it on unseen questions. The threshold is the one that best
//! balances answering the answerable questions against turning away the others.
use rag::answerability::{
    sigmoid, Fitted, ModelKey, Probe, SpanRanker, FEATURES, FITTED_VERSION, SPAN_FEATURES,
};

use super::qa::{curve, QaItem};

/// A logistic regression: weights over standardised inputs, a bias.
struct Logistic {
    mean: Vec<f32>,
    scale: Vec<f32>,
    weights: Vec<f32>,
    bias: f32,
}

impl Logistic {
    /// Fit on rows `x` and labels `y` (1 = answerable) with L2 penalty `l2` by gradient
    /// descent (full batch, fixed step; the loss is convex).
    fn fit(x: &[Vec<f32>], y: &[f32], l2: f32, steps: usize) -> Self {
        let d = x.first().map_or(0, Vec::len);
        let n = x.len().max(1) as f32;
        let (mean, scale) = moments(x.iter(), d);
        let z = standardise(x, &mean, &scale);
        let mut w = vec![0f32; d];
        let mut b = 0f32;
        let lr = 0.5;
        for _ in 0..steps {
            let mut gw = vec![0f32; d];
            let mut gb = 0f32;
            for (r, &t) in z.iter().zip(y) {
                let p = sigmoid(b + r.iter().zip(&w).map(|(a, c)| a * c).sum::<f32>());
                let e = (p - t) / n;
                gb += e;
                for (g, a) in gw.iter_mut().zip(r) {
                    *g += e * a;
                }
            }
            for (wi, g) in w.iter_mut().zip(&gw) {
                *wi -= lr * (g + l2 * *wi);
            }
            b -= lr * gb;
        }
        Self {
            mean,
            scale,
            weights: w,
            bias: b,
        }
    }

    fn logit(&self, r: &[f32]) -> f32 {
        self.bias
            + r.iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.weights)
                .map(|(((v, m), s), w)| w * (v - m) / s)
                .sum::<f32>()
    }
}

/// What [`fit`] made, with in-sample figures for the log.
pub struct FitReport {
    pub fitted: Fitted,
    pub questions: usize,
    /// Area under the ROC curve of answerable against unanswerable: features alone, the
    /// out-of-fold probe alone, and the combination.
    pub auc_features: f64,
    pub auc_probe: f64,
    pub auc_combined: f64,
}

/// Fit the decision for `model` on `items` (a quote-mode run; questions without a decision,
/// turned away by retrieval, are left out).
pub fn fit(items: &[QaItem], model: ModelKey, fitted_on: String) -> Option<FitReport> {
    let rows: Vec<&QaItem> = items
        .iter()
        .filter(|i| i.retrieval.decision.is_some())
        .collect();
    if rows.len() < 20
        || rows.iter().all(|i| i.is_impossible)
        || rows.iter().all(|i| !i.is_impossible)
    {
        return None;
    }
    let y: Vec<f32> = rows
        .iter()
        .map(|i| if i.is_impossible { 0.0 } else { 1.0 })
        .collect();
    let decision = |i: &QaItem| i.retrieval.decision.clone().expect("filtered");
    let x: Vec<Vec<f32>> = rows
        .iter()
        .map(|i| {
            let d = decision(i);
            FEATURES
                .iter()
                .map(|f| d.features.get(*f).copied().unwrap_or(0.0))
                .collect()
        })
        .collect();
    let h: Vec<Vec<f32>> = rows.iter().map(|i| decision(i).hidden).collect();
    let probe_dim = h.first().map_or(0, Vec::len);
    let with_probe = probe_dim > 0 && h.iter().all(|v| v.len() == probe_dim);
    // The probe's out-of-fold scores: five folds, by position.
    let folds = 5;
    let mut oof = vec![0f32; rows.len()];
    if with_probe {
        for f in 0..folds {
            let (train, test): (Vec<usize>, Vec<usize>) =
                (0..rows.len()).partition(|i| i % folds != f);
            let p = Logistic::fit(
                &train.iter().map(|&i| h[i].clone()).collect::<Vec<_>>(),
                &train.iter().map(|&i| y[i]).collect::<Vec<_>>(),
                PROBE_L2,
                PROBE_STEPS,
            );
            for &i in &test {
                oof[i] = p.logit(&h[i]);
            }
        }
    }
    let features_only = Logistic::fit(&x, &y, FEATURES_L2, FEATURE_STEPS);
    let stacked: Vec<Vec<f32>> = x
        .iter()
        .zip(&oof)
        .map(|(r, &p)| {
            let mut r = r.clone();
            r.push(p);
            r
        })
        .collect();
    let combined = Logistic::fit(&stacked, &y, FEATURES_L2, FEATURE_STEPS);
    let probe = with_probe.then(|| Logistic::fit(&h, &y, PROBE_L2, PROBE_STEPS));
    let n = FEATURES.len();
    let (mean, scale, weights, bias, probe_weight) = if with_probe {
        // The probe's score enters standardised by its own mean and scale.
        let (pm, ps, pw) = (combined.mean[n], combined.scale[n], combined.weights[n]);
        (
            combined.mean[..n].to_vec(),
            combined.scale[..n].to_vec(),
            combined.weights[..n].to_vec(),
            combined.bias - pw * pm / ps,
            Some(pw / ps),
        )
    } else {
        (
            features_only.mean.clone(),
            features_only.scale.clone(),
            features_only.weights.clone(),
            features_only.bias,
            None,
        )
    };
    let mut fitted = Fitted {
        version: FITTED_VERSION,
        model,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        mean,
        scale,
        weights,
        bias,
        probe_weight,
        probe: probe.map(|p| Probe {
            mean: p.mean,
            scale: p.scale,
            weights: p.weights,
            bias: p.bias,
        }),
        threshold: 0.5,
        fitted_on,
        spans: None,
    };
    // The threshold: the best balance of answering the answerable questions and turning away
    // the others (the largest sum of the two shares) over the run, with each question's
    // probability as the fitted decision gives it (out-of-fold for the probe). SQuAD 2.0's F1
    // would pick abstaining on almost everything, as the quotes of a small model are often
    // wrong even when the answer is there.
    let mut rescored: Vec<QaItem> = items.to_vec();
    let mut k = 0;
    for it in rescored.iter_mut() {
        if let Some(d) = it.retrieval.decision.as_mut() {
            let r = &stacked[k];
            d.answerable = sigmoid(if with_probe {
                combined.logit(r)
            } else {
                features_only.logit(&x[k])
            });
            k += 1;
        }
    }
    let thresholds: Vec<f32> = (1..100).map(|i| i as f32 / 100.0).collect();
    if let Some(best) = curve(&rescored, &thresholds).into_iter().max_by(|a, b| {
        (a.answered_answerable + a.abstained_unanswerable)
            .total_cmp(&(b.answered_answerable + b.abstained_unanswerable))
    }) {
        fitted.threshold = best.threshold;
    }
    let labels: Vec<bool> = y.iter().map(|&v| v > 0.5).collect();
    let auc = |s: &[f32]| auc(s, &labels);
    Some(FitReport {
        questions: rows.len(),
        auc_features: auc(&x.iter().map(|r| features_only.logit(r)).collect::<Vec<_>>()),
        auc_probe: if with_probe { auc(&oof) } else { 0.5 },
        auc_combined: auc(&stacked
            .iter()
            .map(|r| if with_probe { combined.logit(r) } else { 0.0 })
            .collect::<Vec<_>>()),
        fitted,
    })
}

/// Fit the span ranker on the spans of a run's answerable questions: a linear score over the
/// standardised [`SPAN_FEATURES`], trained so that a softmax over each question's spans puts
/// its mass on the spans with the best F1 against the gold answers (listwise, full-batch
/// gradient descent; the loss is convex). Questions none of whose spans overlaps a gold answer
/// teach nothing and are left out. `None` when fewer than 20 questions remain.
pub fn fit_spans(items: &[QaItem]) -> Option<SpanRanker> {
    let d = SPAN_FEATURES.len();
    let lists: Vec<(Vec<Vec<f32>>, Vec<f64>)> = items
        .iter()
        .filter(|i| !i.is_impossible)
        .filter_map(|i| i.retrieval.decision.as_ref())
        .filter(|r| !r.spans.is_empty() && r.spans.iter().all(|s| s.features.len() == d))
        .map(|r| {
            (
                r.spans.iter().map(|s| s.features.clone()).collect(),
                r.spans.iter().map(|s| s.f1).collect(),
            )
        })
        .collect();
    let (mean, scale, weights) = fit_lists(&lists, d)?;
    Some(SpanRanker {
        features: SPAN_FEATURES.iter().map(|f| f.to_string()).collect(),
        mean,
        scale,
        weights,
    })
}

/// The listwise fit of [`fit_spans`] on `(features of each span, F1 of each span)` per
/// question, `d` features: (mean, scale, weights).
fn fit_lists(
    lists: &[(Vec<Vec<f32>>, Vec<f64>)],
    d: usize,
) -> Option<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    // The target of each question: its best spans, equally.
    let lists: Vec<(&Vec<Vec<f32>>, Vec<f32>)> = lists
        .iter()
        .filter_map(|(x, f1)| {
            let best = f1.iter().copied().fold(0.0, f64::max);
            if best <= 0.0 {
                return None;
            }
            let count = f1.iter().filter(|&&v| v == best).count() as f32;
            Some((
                x,
                f1.iter()
                    .map(|&v| if v == best { 1.0 / count } else { 0.0 })
                    .collect(),
            ))
        })
        .collect();
    if lists.len() < 20 {
        return None;
    }
    let (mean, scale) = moments(lists.iter().flat_map(|(x, _)| x.iter()), d);
    let lists: Vec<(Vec<Vec<f32>>, Vec<f32>)> = lists
        .into_iter()
        .map(|(x, t)| (standardise(x, &mean, &scale), t))
        .collect();
    let mut w = vec![0f32; d];
    let q = lists.len() as f32;
    for _ in 0..SPAN_STEPS {
        let mut g = vec![0f32; d];
        for (z, t) in &lists {
            let s: Vec<f32> = z
                .iter()
                .map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum())
                .collect();
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = s.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            for ((r, p), t) in z.iter().zip(&e).zip(t) {
                let err = (p / sum - t) / q;
                for (gi, a) in g.iter_mut().zip(r) {
                    *gi += err * a;
                }
            }
        }
        for (wi, gi) in w.iter_mut().zip(&g) {
            *wi -= SPAN_LR * (gi + SPAN_L2 * *wi);
        }
    }
    Some((mean, scale, w))
}

/// The mean and standard deviation (at least 1e-6) of each of the `d` columns of `rows`.
fn moments<'a>(rows: impl Iterator<Item = &'a Vec<f32>> + Clone, d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = rows.clone().count().max(1) as f32;
    let mut mean = vec![0f32; d];
    for r in rows.clone() {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    let mut scale = vec![0f32; d];
    for r in rows {
        for ((s, v), m) in scale.iter_mut().zip(r).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    let scale = scale.iter().map(|s| s.sqrt().max(1e-6)).collect();
    (mean, scale)
}

/// `rows` with each column less its mean, over its scale.
fn standardise(rows: &[Vec<f32>], mean: &[f32], scale: &[f32]) -> Vec<Vec<f32>> {
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(mean)
                .zip(scale)
                .map(|((v, m), s)| (v - m) / s)
                .collect()
        })
        .collect()
}

/// The span ranker's step size, L2 penalty and steps.
const SPAN_LR: f32 = 0.5;
const SPAN_L2: f32 = 1e-1;
const SPAN_STEPS: usize = 600;

/// L2 penalties and steps: the features are few, the probe's inputs many (576 for SmolLM2).
const FEATURES_L2: f32 = 1e-3;
const FEATURE_STEPS: usize = 800;
const PROBE_L2: f32 = 3e-2;
const PROBE_STEPS: usize = 400;

/// The area under the ROC curve of `scores` for `labels` (ties count half).
pub fn auc(scores: &[f32], labels: &[bool]) -> f64 {
    let pos: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|(_, &l)| !l)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return 0.5;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_the_share_of_ordered_pairs() {
        assert_eq!(auc(&[0.9, 0.8, 0.1], &[true, true, false]), 1.0);
        assert_eq!(auc(&[0.1, 0.8, 0.9], &[true, true, false]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), 0.5);
    }

    #[test]
    fn logistic_regression_separates_a_separable_set() {
        // y = 1 when the first input is large; the second is noise.
        let x: Vec<Vec<f32>> = (0..40)
            .map(|i| vec![i as f32, ((i * 7) % 5) as f32])
            .collect();
        let y: Vec<f32> = (0..40).map(|i| if i >= 20 { 1.0 } else { 0.0 }).collect();
        let m = Logistic::fit(&x, &y, 1e-3, 500);
        assert!(m.weights[0] > 1.0 && m.weights[1].abs() < m.weights[0] / 4.0);
        let correct = x
            .iter()
            .zip(&y)
            .filter(|(r, &t)| (m.logit(r) > 0.0) == (t > 0.5))
            .count();
        assert!(correct >= 38, "{correct}");
    }

    #[test]
    fn span_ranker_learns_which_feature_marks_the_best_span() {
        // 40 questions of 6 spans: the best span (F1 1) has the largest second feature; the
        // first feature is noise, and the third is large on a wrong span.
        let lists: Vec<(Vec<Vec<f32>>, Vec<f64>)> = (0..40)
            .map(|q| {
                let best = q % 6;
                let x = (0..6)
                    .map(|i| {
                        vec![
                            ((q * 7 + i * 3) % 5) as f32,
                            if i == best { 2.0 } else { (i % 3) as f32 * 0.5 },
                            if i == (best + 1) % 6 { 3.0 } else { 0.0 },
                        ]
                    })
                    .collect();
                let f1 = (0..6).map(|i| if i == best { 1.0 } else { 0.1 }).collect();
                (x, f1)
            })
            .collect();
        let (mean, scale, w) = fit_lists(&lists, 3).unwrap();
        assert!(w[1] > w[0].abs() && w[1] > w[2], "{w:?}");
        let score = |r: &[f32]| -> f32 {
            r.iter()
                .zip(&mean)
                .zip(&scale)
                .zip(&w)
                .map(|(((v, m), s), w)| w * (v - m) / s)
                .sum()
        };
        for (x, f1) in &lists {
            let pick = (0..x.len())
                .max_by(|&a, &b| score(&x[a]).total_cmp(&score(&x[b])))
                .unwrap();
            assert_eq!(f1[pick], 1.0);
        }
        // Questions whose spans all miss teach nothing; too few questions fit nothing.
        let misses = vec![(vec![vec![0.0; 3]; 2], vec![0.0; 2]); 30];
        assert!(fit_lists(&misses, 3).is_none());
        assert!(fit_lists(&lists[..10], 3).is_none());
    }
}
