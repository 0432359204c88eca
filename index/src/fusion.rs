//! Fusion of ranked lists (reciprocal ranks, or scaled scores), and the options of a hybrid
//! search.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::record::{ChunkRecord, Hit};

/// Options of [`crate::Index::search_hybrid`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Hits returned. Default 10: about what fits a small model's context with room to answer.
    pub k: usize,
    /// Depth of the BM25 list fed to the fusion. Default 50: deep enough that a chunk ranked
    /// well by one retriever only still reaches the top k.
    pub bm25_depth: usize,
    /// Depth of the dense list fed to the fusion. Default 50, as BM25.
    pub dense_depth: usize,
    /// The RRF constant. Default 60, the value of the original paper (Cormack et al., 2009),
    /// which damps the influence of the first ranks.
    pub rrf_k: f64,
    /// Weight of the dense list in the fusion (BM25's is 1). Default 1: the two lists count
    /// alike. Below 1 a weak embedder (an untuned decoder's hidden states) only reorders
    /// BM25's hits instead of dragging them down (docs/EVAL.md).
    #[serde(default = "one")]
    pub dense_weight: f64,
    /// How the two lists combine. Default [`Fusion::Rrf`].
    #[serde(default)]
    pub fusion: Fusion,
}

/// How a hybrid search combines its BM25 and dense lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal ranks ([`rrf_weighted`]): only the ranks count, so neither retriever's score
    /// scale matters. The store's default, needing no knowledge of the retrievers.
    #[default]
    Rrf,
    /// Scaled scores ([`score_weighted`]): how far ahead of the rest of its list a chunk is
    /// counts, not only its rank. What rag's retrieval uses (`src/retrieve.rs`): on SciFact it
    /// beat reciprocal ranks for MiniLM (nDCG@10 0.726 against 0.702) and let an untuned
    /// decoder's weak hidden states reorder BM25's hits only where they are sure (docs/EVAL.md).
    Scores,
}

impl std::str::FromStr for Fusion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rrf" => Ok(Self::Rrf),
            "scores" => Ok(Self::Scores),
            _ => Err(format!("unknown fusion {s:?}: use rrf or scores")),
        }
    }
}

fn one() -> f64 {
    1.0
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            k: 10,
            bm25_depth: 50,
            dense_depth: 50,
            rrf_k: 60.0,
            dense_weight: 1.0,
            fusion: Fusion::Rrf,
        }
    }
}

/// Reciprocal-rank fusion: score(d) = sum over lists of 1 / (rrf_k + rank), rank 1-based.
///
/// Sorted by score, best first. Equal scores go by the rank in the first list (a chunk the
/// first list holds before one it does not), then the second, and so on, then by ascending id:
/// so the order depends only on the input, and two stores that rank alike but number their
/// chunks differently fuse alike. An id repeated within one list counts once, at its best rank.
pub fn rrf(lists: &[Vec<u64>], rrf_k: f64) -> Vec<(u64, f64)> {
    rrf_weighted(lists, &vec![1.0; lists.len()], rrf_k)
}

/// [`rrf`] with a weight per list: score(d) = sum over lists of w / (rrf_k + rank). Ties as
/// in [`rrf`].
///
/// ```
/// use rag_index::rrf_weighted;
/// // Chunk 2 is first in the second list only; at weight 0.5 chunk 1 (second in the first)
/// // passes it.
/// let fused = rrf_weighted(&[vec![3, 1], vec![2, 3]], &[1.0, 0.5], 60.0);
/// assert_eq!(fused.iter().map(|x| x.0).collect::<Vec<_>>(), [3, 1, 2]);
/// ```
pub fn rrf_weighted(lists: &[Vec<u64>], weights: &[f64], rrf_k: f64) -> Vec<(u64, f64)> {
    assert_eq!(lists.len(), weights.len(), "one weight per list");
    // Rank per list (usize::MAX where absent), by id.
    let mut ranks: HashMap<u64, Vec<usize>> = HashMap::new();
    for (l, list) in lists.iter().enumerate() {
        for (i, &id) in list.iter().enumerate() {
            let r = &mut ranks
                .entry(id)
                .or_insert_with(|| vec![usize::MAX; lists.len()])[l];
            *r = (*r).min(i + 1);
        }
    }
    let out: Vec<(u64, f64, Vec<usize>)> = ranks
        .into_iter()
        .map(|(id, r)| {
            // Largest term first: the floating-point sum then depends only on the ranks and
            // weights, not on the order of the lists.
            let mut terms: Vec<f64> = r
                .iter()
                .zip(weights)
                .filter(|(&x, _)| x != usize::MAX)
                .map(|(&x, w)| w / (rrf_k + x as f64))
                .collect();
            terms.sort_unstable_by(|a, b| b.total_cmp(a));
            let score = terms.iter().sum();
            (id, score, r)
        })
        .collect();
    best_first(out)
}

/// Score fusion: each list's scores are scaled to 0..1 over that list (its best 1, its worst 0;
/// every hit 1 where all score alike), and a chunk's fused score is the weighted sum of its
/// scaled scores, 0 for a list that does not hold it.
///
/// Each list is `(id, score)`, best first. Sorted by fused score, best first; ties as in
/// [`rrf_weighted`] (by the rank in the first list, then the second, ..., then by id). An id
/// repeated within one list counts once, at its best rank.
///
/// ```
/// use rag_index::score_weighted;
/// // Chunk 1 is far ahead in the second list; chunk 2 only just ahead in the first.
/// let bm25 = vec![(2, 10.0), (1, 9.9), (3, 0.0)];
/// let dense = vec![(1, 0.9), (2, 0.2), (3, 0.1)];
/// let fused = score_weighted(&[&bm25, &dense], &[1.0, 0.2]);
/// assert_eq!(fused.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3]);
/// ```
pub fn score_weighted(lists: &[&[(u64, f32)]], weights: &[f64]) -> Vec<(u64, f64)> {
    assert_eq!(lists.len(), weights.len(), "one weight per list");
    let mut by_id: HashMap<u64, (Vec<f64>, Vec<usize>)> = HashMap::new();
    for (l, list) in lists.iter().enumerate() {
        let (lo, hi) = list
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(f64::from(x.1)), hi.max(f64::from(x.1)))
            });
        let span = hi - lo;
        for (i, &(id, score)) in list.iter().enumerate() {
            let (terms, ranks) = by_id
                .entry(id)
                .or_insert_with(|| (vec![0.0; lists.len()], vec![usize::MAX; lists.len()]));
            if ranks[l] != usize::MAX {
                continue;
            }
            ranks[l] = i + 1;
            let scaled = if span > 0.0 && span.is_finite() {
                (f64::from(score) - lo) / span
            } else {
                1.0
            };
            terms[l] = weights[l] * scaled;
        }
    }
    let out: Vec<(u64, f64, Vec<usize>)> = by_id
        .into_iter()
        .map(|(id, (mut terms, ranks))| {
            // Largest term first, as in `rrf_weighted`: the sum depends on the values only.
            terms.sort_unstable_by(|a, b| b.total_cmp(a));
            (id, terms.iter().sum(), ranks)
        })
        .collect();
    best_first(out)
}

/// `(id, fused score, rank in each list)` sorted best first: by score, then by the ranks list by
/// list (`usize::MAX` where absent), then by id; the ranks dropped.
fn best_first(mut out: Vec<(u64, f64, Vec<usize>)>) -> Vec<(u64, f64)> {
    out.sort_unstable_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| a.2.cmp(&b.2))
            .then(a.0.cmp(&b.0))
    });
    out.into_iter().map(|(id, score, _)| (id, score)).collect()
}

/// A 1-based rank and the retriever's score, if the retriever found the chunk.
type RankScore = Option<(usize, f32)>;

/// A hit of a hybrid search before its chunk is read: the fused score, and the rank (1-based)
/// and score the chunk had in each list that held it.
pub(crate) struct Fused {
    pub id: u64,
    pub score: f64,
    pub bm25: RankScore,
    pub dense: RankScore,
}

impl Fused {
    /// The hit, with the chunk it names.
    pub fn hit(&self, chunk: ChunkRecord) -> Hit {
        Hit::new(chunk, self.score as f32, self.bm25, self.dense)
    }
}

/// The first `opts.k` of a BM25 list and a dense list, each `(chunk id, score)` best first,
/// fused by `opts.fusion`. Every store fuses through this, so the same two lists give the same
/// hits whichever store ranked them.
pub(crate) fn fuse(bm25: &[(u64, f32)], dense: &[(u64, f32)], opts: &SearchOptions) -> Vec<Fused> {
    let mut by_id: HashMap<u64, (RankScore, RankScore)> = HashMap::new();
    for (rank, &(id, score)) in bm25.iter().enumerate() {
        by_id
            .entry(id)
            .or_default()
            .0
            .get_or_insert((rank + 1, score));
    }
    for (rank, &(id, score)) in dense.iter().enumerate() {
        by_id
            .entry(id)
            .or_default()
            .1
            .get_or_insert((rank + 1, score));
    }
    let ids = |l: &[(u64, f32)]| l.iter().map(|x| x.0).collect::<Vec<u64>>();
    let weights = [1.0, opts.dense_weight];
    match opts.fusion {
        Fusion::Rrf => rrf_weighted(&[ids(bm25), ids(dense)], &weights, opts.rrf_k),
        Fusion::Scores => score_weighted(&[bm25, dense], &weights),
    }
    .into_iter()
    .take(opts.k)
    .map(|(id, score)| {
        let (bm25, dense) = by_id.get(&id).copied().unwrap_or_default();
        Fused {
            id,
            score,
            bm25,
            dense,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Retriever;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rrf_hand_computed() {
        // list A: 1, 2, 3   list B: 3, 1, 4   (k = 60)
        let out = rrf(&[vec![1, 2, 3], vec![3, 1, 4]], 60.0);
        let ids: Vec<u64> = out.iter().map(|x| x.0).collect();
        // 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63
        assert_eq!(ids, vec![1, 3, 2, 4]);
        assert!(close(out[0].1, 1.0 / 61.0 + 1.0 / 62.0));
        assert!(close(out[1].1, 1.0 / 63.0 + 1.0 / 61.0));
        assert!(close(out[2].1, 1.0 / 62.0));
        assert!(close(out[3].1, 1.0 / 63.0));
    }

    #[test]
    fn rrf_ties_by_the_first_list_then_id() {
        // 7 and 5 both get 1/(1+1) + 1/(1+2): a tie, broken by the first list's ranks.
        let out = rrf(&[vec![7, 5], vec![5, 7]], 1.0);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![7, 5]);
        assert!(close(out[0].1, 0.5 + 1.0 / 3.0));
        assert!(close(out[0].1, out[1].1));
        // Found by the first list only beats found by the second only, at the same rank.
        let out = rrf(&[vec![9], vec![3]], 60.0);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![9, 3]);
        // Equal in every list: by id.
        let out = rrf(&[vec![8], vec![8], vec![2], vec![2]], 60.0);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![8, 2]);
    }

    #[test]
    fn rrf_edge_cases() {
        assert!(rrf(&[], 60.0).is_empty());
        assert!(rrf(&[vec![], vec![]], 60.0).is_empty());
        // A duplicate inside one list counts once, at its first (best) rank.
        let out = rrf(&[vec![9, 9, 8]], 60.0);
        assert_eq!(out, vec![(9, 1.0 / 61.0), (8, 1.0 / 63.0)]);
    }

    #[test]
    fn fuse_keeps_each_lists_rank_and_score() {
        let opts = SearchOptions {
            k: 3,
            ..SearchOptions::default()
        };
        let out = fuse(&[(1, 9.0), (2, 8.0)], &[(2, 0.9), (3, 0.8)], &opts);
        assert_eq!(out.iter().map(|f| f.id).collect::<Vec<_>>(), vec![2, 1, 3]);
        assert_eq!(
            (out[0].bm25, out[0].dense),
            (Some((2, 8.0)), Some((1, 0.9)))
        );
        assert_eq!((out[1].bm25, out[1].dense), (Some((1, 9.0)), None));
        assert_eq!((out[2].bm25, out[2].dense), (None, Some((2, 0.8))));
        let chunk = ChunkRecord {
            chunk_id: 3,
            path: "p".into(),
            content_hash: "h".into(),
            title: None,
            heading: None,
            pages: None,
            byte_range: 0..1,
            modified: None,
            text: "t".into(),
        };
        assert_eq!(out[2].hit(chunk.clone()).found_by, Retriever::Dense);
        assert_eq!(out[0].hit(chunk).found_by, Retriever::Both);
        assert!(fuse(&[(1, 1.0)], &[], &SearchOptions { k: 0, ..opts }).is_empty());
    }

    #[test]
    fn rrf_is_deterministic() {
        let lists: Vec<Vec<u64>> = (0..4)
            .map(|l| (0..200u64).map(|i| (i * 7919 + l * 31) % 257).collect())
            .collect();
        let first = rrf(&lists, 60.0);
        for _ in 0..20 {
            assert_eq!(rrf(&lists, 60.0), first);
        }
        // List order can change only how ties are broken, never a score.
        let mut reversed = lists.clone();
        reversed.reverse();
        let scores = |v: Vec<(u64, f64)>| v.into_iter().collect::<HashMap<u64, f64>>();
        assert_eq!(scores(rrf(&reversed, 60.0)), scores(first));
    }

    #[test]
    fn score_fusion_hand_computed() {
        // BM25 8, 6, 4 scale to 1, 0.5, 0; dense 0.9, 0.5 to 1, 0.
        let out = score_weighted(
            &[&[(1, 8.0), (2, 6.0), (3, 4.0)], &[(3, 0.9), (4, 0.5)]],
            &[1.0, 0.3],
        );
        let want = [(1, 1.0), (2, 0.5), (3, 0.3), (4, 0.0)];
        assert_eq!(out.len(), want.len());
        for ((id, score), (wid, wscore)) in out.iter().zip(want) {
            assert_eq!(*id, wid);
            assert!(close(*score, wscore), "{id}: {score} != {wscore}");
        }
        // At a larger weight the dense list's best passes BM25's second.
        let out = score_weighted(
            &[&[(1, 8.0), (2, 6.0), (3, 4.0)], &[(3, 0.9), (4, 0.5)]],
            &[1.0, 0.6],
        );
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 3, 2, 4]);
    }

    #[test]
    fn score_fusion_edge_cases() {
        assert!(score_weighted(&[&[], &[]], &[1.0, 1.0]).is_empty());
        // One hit, or all alike: each is its list's best (1).
        assert_eq!(score_weighted(&[&[(5, 3.0)]], &[0.5]), vec![(5, 0.5)]);
        let out = score_weighted(&[&[(5, 2.0), (6, 2.0)]], &[1.0]);
        assert_eq!(out, vec![(5, 1.0), (6, 1.0)]);
        // A repeat counts once, at its first (best) place.
        let out = score_weighted(&[&[(9, 4.0), (8, 2.0), (9, 0.0)]], &[1.0]);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), [9, 8]);
        assert!(close(out[0].1, 1.0));
        // Equal fused scores: by the first list's rank, then the second's, then by id.
        let out = score_weighted(&[&[(7, 1.0), (5, 0.0)], &[(5, 1.0), (7, 0.0)]], &[1.0, 1.0]);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), [7, 5]);
        // Scores that are not finite do not poison the others.
        let out = score_weighted(&[&[(1, f32::INFINITY), (2, 1.0)]], &[1.0]);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|x| x.1.is_finite()), "{out:?}");
    }

    #[test]
    fn fuse_by_scores_lets_a_confident_dense_hit_up() {
        let bm25 = [(1, 10.0), (2, 9.9), (3, 1.0)];
        let dense = [(2, 0.9), (3, 0.3), (1, 0.2)];
        let opts = |fusion| SearchOptions {
            k: 3,
            dense_weight: 0.2,
            fusion,
            ..SearchOptions::default()
        };
        let ids = |f: Vec<Fused>| f.iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(fuse(&bm25, &dense, &opts(Fusion::Rrf))), [1, 2, 3]);
        assert_eq!(ids(fuse(&bm25, &dense, &opts(Fusion::Scores))), [2, 1, 3]);
    }
}
