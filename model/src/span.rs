//! Constrained decoding of quotes: the answer may only be a contiguous span of one of the given
//! token sequences (the passages), starting at one of the allowed places and ending on an
//! allowed boundary. Within that space the search is exact rather than greedy: every span of
//! the best starts is scored as a whole answer (the log-probability of its tokens and of the
//! turn ending right after them), so a weak model is not led astray by a likely first token
//! that has no good continuation. A span is the only thing that can come out: there is no
//! free token to write.
use std::ops::Range;

use crate::error::Result;
use crate::generate::{Cancel, Session};

/// Where a quote may come from and how its spans are ranked.
pub struct SpanQuery<'a> {
    /// The token sequences to quote from.
    pub sources: &'a [Vec<u32>],
    /// Where a span may start, as `(source, token, limit)`: at that token, growing at most up
    /// to token `limit` (exclusive).
    pub starts: &'a [(usize, usize, usize)],
    /// Whether a span of source `s` may end before token `t` (e.g. on a word boundary).
    pub ends: &'a dyn Fn(usize, usize) -> bool,
    /// Added to the score of every span starting with this token (e.g. minus its prior
    /// log-probability, for pointwise mutual information).
    pub first: &'a dyn Fn(u32) -> f32,
    /// Only the spans of this many starts are scored in full: the starts whose first token
    /// scores best (its log-probability plus `first`).
    pub keep: usize,
    /// The longest span, in tokens.
    pub max_tokens: usize,
    /// Stops the search (with what it has found so far) when cancelled.
    pub cancel: Option<&'a Cancel>,
}

/// A scored span: see [`Session::spans`].
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub source: usize,
    /// Its tokens in the source.
    pub tokens: Range<usize>,
    /// The log-probability of each of its tokens.
    pub logprobs: Vec<f32>,
    /// The log-probability of the turn ending right after it.
    pub stop: f32,
    /// The first token's adjustment (`SpanQuery::first`).
    pub adjust: f32,
    /// Where its start ranked among the starts by first-token score (0 = best).
    pub start_rank: usize,
    /// Its score: the sum of `logprobs`, `stop` and `adjust`.
    pub score: f32,
}

impl Session<'_> {
    /// The best span of `query` as a whole answer after the prompt, or `None` when no start
    /// is allowed. The session is left as it was.
    pub fn best_span(&mut self, query: &SpanQuery<'_>) -> Result<Option<Span>> {
        Ok(self
            .spans(query)?
            .into_iter()
            .reduce(|best, s| if s.score > best.score { s } else { best }))
    }

    /// Every span of `query`'s kept starts that ends on an allowed boundary, scored as a
    /// whole answer after the prompt, in order of start rank and length. The session is left
    /// as it was.
    pub fn spans(&mut self, query: &SpanQuery<'_>) -> Result<Vec<Span>> {
        let logits = self.logits();
        let lse = crate::generate::log_sum_exp(logits);
        let first_score = |&(s, t, _): &(usize, usize, usize)| {
            let tok = query.sources[s][t];
            logits[tok as usize] - lse + (query.first)(tok)
        };
        let mut starts: Vec<(f32, (usize, usize, usize))> = query
            .starts
            .iter()
            .filter(|&&(s, t, limit)| {
                s < query.sources.len() && t < limit.min(query.sources[s].len())
            })
            .map(|st| (first_score(st), *st))
            .collect();
        starts.sort_by(|a, b| b.0.total_cmp(&a.0));
        starts.truncate(query.keep.max(1));
        let mut out = Vec::new();
        for (start_rank, (_, (s, t, limit))) in starts.into_iter().enumerate() {
            if query.cancel.is_some_and(Cancel::is_cancelled) {
                break;
            }
            let end = limit
                .min(query.sources[s].len())
                .min(t + query.max_tokens.max(1));
            let tokens = &query.sources[s][t..end];
            let (lp, stops) = self.score_with_stops(tokens)?;
            let adjust = (query.first)(tokens[0]);
            let mut sum = 0.0;
            for n in 1..=tokens.len() {
                sum += lp[n - 1];
                if !(query.ends)(s, t + n) {
                    continue;
                }
                out.push(Span {
                    source: s,
                    tokens: t..t + n,
                    logprobs: lp[..n].to_vec(),
                    stop: stops[n - 1],
                    adjust,
                    start_rank,
                    score: sum + stops[n - 1] + adjust,
                });
            }
        }
        Ok(out)
    }
}
