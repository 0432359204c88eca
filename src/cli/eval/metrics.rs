//! Ranking metrics over a ranked list of document ids and the set of relevant ids, as BEIR
//! reports them (binary relevance): nDCG@k, recall@k, MRR@k.
use std::collections::HashSet;

/// nDCG@k with binary gains: DCG = sum over the top k of rel / log2(rank + 1), divided by the
/// DCG of an ideal ranking (all relevant documents first). 0 when nothing is relevant.
pub fn ndcg_at(ranked: &[&str], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, d)| relevant.contains(**d))
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(k))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    dcg / ideal
}

/// Share of the relevant documents found in the top k.
pub fn recall_at(ranked: &[&str], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| relevant.contains(**d))
        .count();
    found as f64 / relevant.len() as f64
}

/// 1 / rank of the first relevant document in the top k, 0 if none.
pub fn mrr_at(ranked: &[&str], relevant: &HashSet<String>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| relevant.contains(*d))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// The value at quantile `q` (0..=1) of `v` by nearest rank; `v` need not be sorted.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// The mean of `v` (NaN when empty).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The mean of `xs`; `None` when there are none.
pub fn mean_of(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn hand_computed() {
        // Relevant: a, c. Ranked: a (1), b, c (3), d.
        let r = rel(&["a", "c"]);
        let ranked = ["a", "b", "c", "d"];
        // DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5; IDCG = 1 + 1/log2(3).
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!(close(ndcg_at(&ranked, &r, 10), 1.5 / idcg));
        // At k = 2 only a counts; the ideal still has two relevant in the top 2.
        assert!(close(ndcg_at(&ranked, &r, 2), 1.0 / idcg));
        assert!(close(recall_at(&ranked, &r, 2), 0.5));
        assert!(close(recall_at(&ranked, &r, 3), 1.0));
        assert!(close(mrr_at(&ranked, &r, 10), 1.0));
        assert!(close(mrr_at(&["b", "c"], &r, 10), 0.5));
        assert!(close(mrr_at(&["b", "c"], &r, 1), 0.0));
        // Perfect ranking: 1.
        assert!(close(ndcg_at(&["c", "a", "x"], &r, 10), 1.0));
        // One relevant document at rank 3: 1/log2(4) = 0.5.
        assert!(close(ndcg_at(&["x", "y", "a"], &rel(&["a"]), 10), 0.5));
        // Nothing relevant or nothing ranked.
        assert_eq!(ndcg_at(&ranked, &rel(&[]), 10), 0.0);
        assert_eq!(ndcg_at(&[], &r, 10), 0.0);
        assert_eq!(recall_at(&[], &r, 10), 0.0);
    }

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 3.0]), 2.0);
    }
}
