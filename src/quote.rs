//! Answers grounded by construction: the answer can only be a contiguous span of one passage.
//! The model scores every span of the best starts as a whole answer ([`rag_model::Session::spans`]
//! over the passages' token ids); a span ranker fitted for the model (when there is one)
//! weighs that score with where the span sits (its sentence's match with the question, how
//! near it is to the question's terms, whether it is of the kind the question asks for) and
//! picks the quote, which rag cites itself. While the prompt is read, it also gathers what the
//! answerability decision needs: the prompt's last hidden state, how likely the model finds
//! the "not in the documents" reply, and how the quote's ranking went.
use std::ops::Range;

use std::collections::HashSet;

use rag_index::Store;
use rag_model::{Cancel, Generation, Model, SpanQuery, Tokenizer};

use crate::answerability::{Candidate, Signals, SpanRanker};
use crate::cite;
use crate::error::Result;
use crate::prompt::Prompt;
use crate::prompt::{self, NOT_FOUND};
use crate::retrieve;

/// How quotes are chosen.
///
/// ```
/// let mut opts = rag::AskOptions::default();
/// opts.quote.sentences = 2; // let the model choose between two sentences
/// assert_eq!(opts.quote.tokens, 24);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteOptions {
    /// The longest quote, in tokens. Default 24: SQuAD's answers are a few words; a longer
    /// quote is a sentence, and the sentence is shown beside the answer anyway.
    pub tokens: usize,
    /// A quote starts in one of this many passage sentences: those holding the largest shares
    /// of the question's IDF-weighted terms. Default 1: on the SQuAD 2.0 dev half the quote's
    /// F1 fell from 0.36 to 0.27 with 2 (and 8 starts) when the model's score chose, and
    /// stayed at 0.39 when the span ranker did, for twice the work (docs/EVAL.md).
    pub sentences: usize,
    /// Of the words a quote may start with, the spans of this many are scored in full: those
    /// whose first token the prompt makes most likely above its prior. Default 4.
    pub starts: usize,
    /// How much of a first token's prior (its log-probability with no passages and no
    /// question) is taken off its score: 1 is pointwise mutual information, 0 the plain
    /// likelihood. Default 0.5 (quote F1 0.345 at 0, 0.373 at 0.5, 0.359 at 1).
    pub prior: f32,
    /// Keep every scored span, with its features, in the answer's decision (for fitting a
    /// span ranker; `rag eval qa --fit`). Default false.
    pub candidates: bool,
    /// Let the model read every retrieved passage before it scores spans, not only the ones
    /// a quote may start in. Default false: on the SQuAD 2.0 dev half's fit articles the
    /// quote's F1 rose from 0.417 to 0.447 with one passage read, and a question took 0.53 s
    /// instead of 1.75 s (docs/EVAL.md).
    pub all_passages: bool,
}

impl Default for QuoteOptions {
    fn default() -> Self {
        Self {
            tokens: 24,
            sentences: 1,
            starts: 4,
            prior: 0.5,
            candidates: false,
            all_passages: false,
        }
    }
}

/// A quote the model chose.
pub(crate) struct Quoted {
    /// Index of the quoted passage in the prompt (0-based).
    pub passage: usize,
    /// The quote's bytes in that passage's text.
    pub range: Range<usize>,
    pub signals: Signals,
    pub generation: Generation,
    /// Every span scored, when [`QuoteOptions::candidates`] asks for them.
    pub candidates: Vec<Candidate>,
    /// The rendered prompt the model read (the passages a quote may start in).
    pub read: String,
}

/// Step 4 in quote mode: read the passages a quote may start in (or the whole prompt, with
/// [`QuoteOptions::all_passages`]), score the "not found" reply, and let the model choose a
/// span of the passages. `None` when the prompt has no passage (closed book), no sentence
/// holds a word a quote may start with, or the quote cannot be located in its passage's text.
pub(crate) fn generate(
    model: &Model,
    index: &dyn Store,
    question: &str,
    prompt: &Prompt,
    opts: &QuoteOptions,
    ranker: Option<&SpanRanker>,
    cancel: &Cancel,
) -> Result<Option<Quoted>> {
    if prompt.passages.is_empty() {
        return Ok(None);
    }
    let tokenizer = model.tokenizer();
    let sources: Vec<Vec<u32>> = prompt
        .passages
        .iter()
        .map(|p| tokenizer.encode(&p.text, false, false))
        .collect();
    let offsets: Vec<Vec<usize>> = prompt
        .passages
        .iter()
        .zip(&sources)
        .map(|(p, toks)| token_offsets(tokenizer, toks, &p.text))
        .collect();
    let context = span_starts(index, question, prompt, &offsets, opts.sentences)?;
    let starts: Vec<(usize, usize, usize)> = context
        .starts
        .iter()
        .map(|s| (s.passage, s.token, s.limit))
        .collect();
    if starts.is_empty() {
        // No sentence a quote may start in: nothing for the model to score.
        return Ok(None);
    }
    let not_found = tokenizer.encode(NOT_FOUND, false, false);
    let room = opts.tokens.max(not_found.len());
    // The model reads the passages a quote may start in, not all the retrieved ones: a
    // 135M model picks spans better from one passage than from four, at a third of the
    // prefill (docs/EVAL.md, "One passage read").
    let (read, read_ids) = if opts.all_passages {
        (prompt.text.clone(), prompt.ids.clone())
    } else {
        let mut used: Vec<usize> = starts.iter().map(|s| s.0).collect();
        used.sort_unstable();
        used.dedup();
        let passages: Vec<prompt::Passage> =
            used.iter().map(|&i| prompt.passages[i].clone()).collect();
        let rendered = model.chat_prompt(
            &prompt::quote_system_prompt(),
            &prompt::user_message(&passages, question),
        );
        (rendered.text(), rendered.encode(tokenizer))
    };
    let mut session = model.session(&read_ids, room)?;
    let hidden = session.hidden().to_vec();
    let nf = session.score(&not_found)?;
    let not_found_logprob = nf.iter().sum::<f32>() / nf.len().max(1) as f32;
    let t0 = std::time::Instant::now();
    // The prior of each first token: how likely it starts an answer with neither passages nor
    // question (a small model likes to answer with a digit, say). A span's score is lowered by
    // `quote_prior` times it, so what counts is how much the passages and the question raise
    // the first token's probability.
    let null = model
        .chat_prompt(
            &prompt::quote_system_prompt(),
            &prompt::user_message(&[], ""),
        )
        .encode(tokenizer);
    let null_logits = model.session(&null, 1)?.logits().to_vec();
    let null_lse = log_sum_exp(&null_logits);
    let first = |tok: u32| -opts.prior * (null_logits[tok as usize] - null_lse);
    let ends = |s: usize, t: usize| {
        let text = &prompt.passages[s].text;
        ends_word(text, offsets[s].get(t).copied().unwrap_or(text.len()))
    };
    let query = SpanQuery {
        sources: &sources,
        starts: &starts,
        ends: &ends,
        first: &first,
        keep: opts.starts,
        max_tokens: opts.tokens,
        cancel: Some(cancel),
    };
    let spans = session.spans(&query)?;
    let text_of = |span: &rag_model::Span| -> Range<usize> {
        let text = &prompt.passages[span.source].text;
        let from = offsets[span.source][span.tokens.start];
        let to = offsets[span.source]
            .get(span.tokens.end)
            .copied()
            .unwrap_or(text.len());
        from..to
    };
    let features: Vec<Vec<f32>> = spans
        .iter()
        .map(|span| {
            let null_lp = null_logits[sources[span.source][span.tokens.start] as usize] - null_lse;
            span_features(
                index,
                &context,
                &prompt.passages[span.source].text,
                span,
                text_of(span),
                null_lp,
            )
        })
        .collect();
    let score = |i: usize| match ranker {
        Some(r) => r.score(&features[i]),
        None => spans[i].score,
    };
    let scores: Vec<f32> = (0..spans.len()).map(score).collect();
    let Some(best) = (0..spans.len()).reduce(|b, i| if scores[i] > scores[b] { i } else { b })
    else {
        return Ok(None);
    };
    let top = scores[best];
    let runner_up = (0..spans.len())
        .filter(|&i| i != best)
        .map(|i| scores[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let ranking = [
        top,
        // One span: as clear a win as this much.
        if runner_up.is_finite() {
            top - runner_up
        } else {
            LONE_MARGIN
        },
        1.0 / scores.iter().map(|s| (s - top).exp()).sum::<f32>(),
        (spans.len() as f32).ln(),
    ];
    let span_features = features[best].clone();
    let candidates = if opts.candidates {
        spans
            .iter()
            .zip(&features)
            .map(|(span, f)| Candidate {
                text: prompt.passages[span.source].text[text_of(span)]
                    .trim()
                    .to_string(),
                features: f.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let span = spans
        .into_iter()
        .nth(best)
        .expect("best is an index of spans");
    let passage = span.source;
    let text = &prompt.passages[passage].text;
    // The span's own bytes, not the first place its text occurs: a year or a name often occurs
    // earlier in the passage, and the quote, its sentence and the decision's features must be
    // those of the span the model chose.
    let Some(range) = trimmed(text, text_of(&span)) else {
        return Ok(None);
    };
    let tokens = sources[passage][span.tokens].to_vec();
    let generation = Generation {
        text: tokenizer.decode(&tokens),
        tokens,
        logprobs: span.logprobs.clone(),
        prompt_tokens: read_ids.len(),
        stop: rag_model::StopReason::EndOfTurn,
        prefill_secs: session.prefill_secs(),
        decode_secs: t0.elapsed().as_secs_f64(),
    };
    Ok(Some(Quoted {
        passage,
        range,
        signals: Signals {
            hidden,
            not_found_logprob,
            span_logprobs: span.logprobs,
            span_features,
            ranking,
        },
        generation,
        candidates,
        read,
    }))
}

/// The [`crate::answerability::SPAN_FEATURES`] of `span`, whose bytes in its passage's `text`
/// are `range`; `null_lp` is its first token's log-probability with neither passages nor
/// question.
fn span_features(
    index: &dyn Store,
    context: &SpanContext,
    text: &str,
    span: &rag_model::Span,
    range: Range<usize>,
    null_lp: f32,
) -> Vec<f32> {
    let start = context
        .starts
        .iter()
        .find(|s| s.passage == span.source && s.token == span.tokens.start)
        .expect("a span begins at one of its query's starts");
    let words_of = |r: Range<usize>| -> Vec<&str> {
        text[r]
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let asked = |w: &str| {
        index
            .analyze(w)
            .iter()
            .any(|t| context.question_terms.contains(t))
    };
    let quote = &text[range.clone()];
    let words = words_of(range.clone());
    let n_words = words.len().max(1) as f32;
    let in_question = words.iter().filter(|w| asked(w)).count() as f32;
    let has_number = f32::from(u8::from(
        words.iter().any(|w| AnswerType::Number.accepts(w)),
    ));
    let capitalised = words
        .iter()
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
        .count() as f32
        / n_words;
    let ends_stopword = words
        .last()
        .is_some_and(|w| retrieve::is_stopword(&w.to_lowercase()));
    // How many words lie between the span and the nearest question term on each side, in its
    // sentence (capped at `FAR`: none at all counts as far).
    let sentence = &start.sentence;
    let side = |r: Range<usize>, rev: bool| -> f32 {
        let mut ws = words_of(r);
        if rev {
            ws.reverse();
        }
        ws.iter()
            .position(|w| asked(w))
            .map_or(FAR, |d| (d as f32).min(FAR))
    };
    let left = side(sentence.start.min(range.start)..range.start, true);
    let right = side(range.end..sentence.end.max(range.end), false);
    let before = text[..range.start].trim_end().chars().last();
    let after = text[range.end..].trim_start().chars().next();
    let punct = |c: Option<char>| f32::from(u8::from(c.is_none_or(|c| c.is_ascii_punctuation())));
    let first_word = words.first().copied().unwrap_or("");
    // An amount: money, a share, or a number with its scale.
    let amount = has_number > 0.0
        && (quote.trim_start().starts_with(CURRENCY)
            || quote.contains('%')
            || words.iter().any(|w| {
                matches!(
                    w.to_lowercase().as_str(),
                    "thousand" | "million" | "billion" | "trillion" | "percent"
                )
            }));
    let (number, person) = (
        f32::from(u8::from(context.want == AnswerType::Number)),
        f32::from(u8::from(context.want == AnswerType::Person)),
    );
    let sum: f32 = span.logprobs.iter().sum();
    let n_tokens = span.logprobs.len().max(1) as f32;
    vec![
        span.score,
        sum,
        sum / n_tokens,
        span.logprobs.first().copied().unwrap_or(0.0),
        span.stop,
        null_lp,
        span.start_rank as f32,
        n_tokens,
        n_words,
        start.sentence_rank as f32,
        start.sentence_score,
        in_question / n_words,
        f32::from(u8::from(context.want.accepts(first_word))),
        number,
        person,
        has_number,
        capitalised,
        number * has_number,
        person * capitalised,
        f32::from(u8::from(ends_stopword)),
        left,
        right,
        punct(before),
        punct(after),
        f32::from(u8::from(quote.contains(','))),
        span.source as f32,
        f32::from(u8::from(amount)),
    ]
}

/// The margin of a quote that had no rival span.
const LONE_MARGIN: f32 = 5.0;

/// The distance, in words, that counts as "no question term near".
const FAR: f32 = 10.0;

/// `ln(sum(exp(x)))`, stable.
fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// Whether a span ending at byte `at` of `text` ends on a word boundary.
fn ends_word(text: &str, at: usize) -> bool {
    if at >= text.len() {
        return true;
    }
    if !text.is_char_boundary(at) {
        return false;
    }
    let before = text[..at].chars().last();
    let after = text[at..].chars().next();
    let joined = is_word_char(before) && is_word_char(after);
    let percent = before.is_some_and(|c| c.is_ascii_digit()) && after == Some('%');
    !(joined || percent || inside_number(text, at))
}

/// Whether `word` is a year: four digits from 1000 to 2999.
fn is_year(word: &str) -> bool {
    word.len() == 4
        && word.bytes().all(|b| b.is_ascii_digit())
        && matches!(word.as_bytes()[0], b'1' | b'2')
}

/// Signs that open an amount ("$12.4 billion").
const CURRENCY: &[char] = &['$', '\u{20ac}', '\u{a3}', '\u{a5}'];

/// Whether byte `at` of `text` lies inside a number: after a currency sign, or at a digit
/// that a decimal point or thousands separator joins to digits before it ("41.2", "18,500").
fn inside_number(text: &str, at: usize) -> bool {
    if !text.is_char_boundary(at) {
        return true;
    }
    let mut back = text[..at].chars().rev();
    let (b1, b2) = (back.next(), back.next());
    let next = text[at..].chars().next();
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    (b1.is_some_and(|c| CURRENCY.contains(&c)) && digit(next))
        || (digit(b2) && matches!(b1, Some('.' | ',')) && digit(next))
        || (digit(b1) && matches!(next, Some('.' | ',')) && digit(text[at + 1..].chars().next()))
}

/// The number a currency sign opens (`"$12.4"` gives `"12"`, the word that is checked for
/// the answer's kind); `None` when `rest` does not start with a sign and a digit.
fn number_start(rest: &str) -> Option<&str> {
    let digits = rest.strip_prefix(CURRENCY)?;
    let n = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    (n > 0).then(|| &digits[..n])
}

/// A place a quote may start: token `token` of passage `passage`, running at most to token
/// `limit`, in the sentence at bytes `sentence` that ranked `sentence_rank` with
/// `sentence_score`.
struct Start {
    passage: usize,
    token: usize,
    limit: usize,
    sentence: Range<usize>,
    sentence_rank: usize,
    sentence_score: f32,
}

/// Where quotes may start, and what the question asks for.
struct SpanContext {
    starts: Vec<Start>,
    /// The question's terms, analysed.
    question_terms: HashSet<String>,
    want: AnswerType,
}

/// Where a quote may start: the
/// words of the `sentences` passage sentences that hold the largest shares of the question's
/// IDF-weighted terms, except stopwords and the question's own terms (an answer tells what
/// the question does not), each running at most to its sentence's end.
fn span_starts(
    index: &dyn Store,
    question: &str,
    prompt: &Prompt,
    offsets: &[Vec<usize>],
    sentences: usize,
) -> Result<SpanContext> {
    let weights = retrieve::question_weights(index, question)?;
    let total: f32 = weights.iter().map(|(_, w)| w).sum::<f32>().max(1e-6);
    let question_terms: HashSet<&str> = weights.iter().map(|(t, _)| t.as_str()).collect();
    let q_all = index.analyze(question);
    let q_pairs: HashSet<(&str, &str)> = q_all
        .windows(2)
        .map(|w| (w[0].as_str(), w[1].as_str()))
        .collect();
    // (score, passage, sentence byte range), best first. The score is the share of the
    // question's IDF-weighted terms the sentence (or its passage's headings) holds, plus a
    // little for each pair of
    // consecutive question words it repeats (measured on the SQuAD 2.0 dev half's fit
    // articles: the gold sentence first in 86.2% of answerable questions without, 87.3% with).
    let mut ranked = Vec::new();
    for (i, p) in prompt.passages.iter().enumerate() {
        // A passage's headings say what its sentences are about.
        let heading = p
            .heading
            .as_deref()
            .map(|h| index.analyze(h))
            .unwrap_or_default();
        for r in cite::sentences(&p.text) {
            let all = index.analyze(&p.text[r.clone()]);
            let terms: HashSet<&str> = all.iter().chain(&heading).map(String::as_str).collect();
            let got: f32 = weights
                .iter()
                .filter(|(t, _)| terms.contains(t.as_str()))
                .map(|(_, w)| w)
                .sum();
            let pairs = all
                .windows(2)
                .filter(|w| q_pairs.contains(&(w[0].as_str(), w[1].as_str())))
                .map(|w| (w[0].as_str(), w[1].as_str()))
                .collect::<HashSet<_>>()
                .len();
            let score = got / total + PAIR_BONUS * pairs as f32 / q_pairs.len().max(1) as f32;
            ranked.push((score, i, r));
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let want = AnswerType::of(question);
    let asked = Asked {
        terms: &question_terms,
        want,
        years: years_may_answer(question),
    };
    // Sentences whose every word is in the question (a heading that repeats it, say) hold no
    // answer: the next ones are taken instead.
    let mut starts = Vec::new();
    let mut untyped = Vec::new();
    let mut taken = 0;
    for (score, i, r) in ranked {
        if taken == sentences.max(1) {
            break;
        }
        let (typed, other) = sentence_starts(index, &asked, prompt, offsets, i, r.clone());
        if typed.is_empty() && other.is_empty() {
            continue;
        }
        let start = |(passage, token, limit)| Start {
            passage,
            token,
            limit,
            sentence: r.clone(),
            sentence_rank: taken,
            sentence_score: score,
        };
        starts.extend(typed.into_iter().map(start));
        untyped.extend(other.into_iter().map(start));
        taken += 1;
    }
    let question_terms = question_terms.into_iter().map(str::to_string).collect();
    // No word of the expected kind: any word will do.
    Ok(SpanContext {
        starts: if starts.is_empty() { untyped } else { starts },
        question_terms,
        want,
    })
}

/// The allowed starts in sentence `r` of passage `i`: (of the expected kind, others).
type Starts = Vec<(usize, usize, usize)>;

/// What the question asks, as far as where an answer may start goes.
struct Asked<'a> {
    /// Its terms, analysed: an answer tells what the question does not.
    terms: &'a HashSet<&'a str>,
    want: AnswerType,
    /// Whether a year may start the answer (see [`years_may_answer`]).
    years: bool,
}

/// Whether a year may answer `question`: not when the question names a year and does not ask
/// for a time. "What were net sales in fiscal 2023?" is not answered by the "2022" of the same
/// sentence: of the 113 answerable questions of the SQuAD 2.0 dev half that name a year, 2 are
/// answered by one.
fn years_may_answer(question: &str) -> bool {
    let words: Vec<String> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let names_year = words
        .iter()
        .any(|w| is_year(retrieve::without_fiscal_prefix(w)));
    let asks_time = words.iter().any(|w| w == "when")
        || words.windows(2).any(|w| {
            matches!(w[0].as_str(), "what" | "which")
                && matches!(
                    w[1].as_str(),
                    "year" | "years" | "date" | "decade" | "century"
                )
        });
    !names_year || asks_time
}

fn sentence_starts(
    index: &dyn Store,
    asked: &Asked,
    prompt: &Prompt,
    offsets: &[Vec<usize>],
    i: usize,
    r: Range<usize>,
) -> (Starts, Starts) {
    let (mut starts, mut untyped) = (Vec::new(), Vec::new());
    let text = &prompt.passages[i].text;
    let offsets = &offsets[i];
    let limit = offsets
        .iter()
        .position(|&o| o >= r.end)
        .unwrap_or(offsets.len());
    for (t, &at) in offsets.iter().enumerate().take(limit) {
        // A token may begin inside a character (byte-level vocabularies): not a word start.
        if at < r.start || !text.is_char_boundary(at) {
            continue;
        }
        // A word starts at this token: what follows its leading space is a letter or digit
        // that begins a word.
        let rest = text[at..].trim_start();
        let word_at = text.len() - rest.len();
        let starts_word = word_at == at
            && (at == r.start || !is_word_char(text[..at].chars().last()))
            || word_at > at;
        // An amount starts at its currency sign; nothing starts inside a number.
        let word: String = match number_start(rest) {
            Some(digits) => digits.to_string(),
            None => rest.chars().take_while(|c| c.is_alphanumeric()).collect(),
        };
        if !starts_word
            || inside_number(text, word_at)
            || word.is_empty()
            || retrieve::is_stopword(&word)
            || (!asked.years && is_year(&word))
        {
            continue;
        }
        if index
            .analyze(&word)
            .iter()
            .any(|w| asked.terms.contains(w.as_str()))
        {
            continue;
        }
        if asked.want.accepts(&word) {
            starts.push((i, t, limit));
        } else {
            untyped.push((i, t, limit));
        }
    }
    (starts, untyped)
}

/// What kind of words an answer starts with, from the question's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerType {
    /// "how many", "what year", "when", ...: a number, a number word or a month.
    Number,
    /// "who", "whom", "whose": a name (a capitalised word).
    Person,
    Any,
}

const NUMBER_WORDS: &[&str] = &[
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "hundred",
    "hundreds",
    "thousand",
    "thousands",
    "million",
    "millions",
    "billion",
    "dozen",
    "dozens",
    "several",
    "half",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "spring",
    "summer",
    "autumn",
    "winter",
];

impl AnswerType {
    fn of(question: &str) -> Self {
        let q = question.to_lowercase();
        let words: Vec<&str> = q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let has = |pair: &[&str]| words.windows(pair.len()).any(|w| w == pair);
        let numeric = [
            "many", "much", "long", "old", "far", "often", "large", "big", "tall",
        ]
        .iter()
        .any(|w| has(&["how", w]))
            || [
                "year",
                "years",
                "century",
                "decade",
                "percentage",
                "percent",
                "date",
            ]
            .iter()
            .any(|w| has(&["what", w]) || has(&["which", w]))
            || words.first() == Some(&"when")
            || has(&["in", "what", "year"]);
        if numeric {
            Self::Number
        } else if words.iter().any(|w| matches!(*w, "who" | "whom" | "whose")) {
            Self::Person
        } else {
            Self::Any
        }
    }

    fn accepts(self, word: &str) -> bool {
        match self {
            Self::Number => {
                word.chars().next().is_some_and(|c| c.is_ascii_digit())
                    || NUMBER_WORDS.contains(&word.to_lowercase().as_str())
            }
            Self::Person => word.chars().next().is_some_and(char::is_uppercase),
            Self::Any => true,
        }
    }
}

/// The weight of repeated question word pairs in a sentence's score.
const PAIR_BONUS: f32 = 0.3;

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// The byte offset in `text` where each token of `tokens` (its encoding) starts: the running
/// length of the tokens' bytes, less the space a SentencePiece vocabulary puts before the
/// first word.
fn token_offsets(tokenizer: &Tokenizer, tokens: &[u32], text: &str) -> Vec<usize> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(tokens.len());
    let shift = usize::from(
        tokens
            .first()
            .is_some_and(|&t| tokenizer.token_bytes(t).first() == Some(&b' '))
            && !text.starts_with(' '),
    );
    for &t in tokens {
        out.push(at.saturating_sub(shift).min(text.len()));
        at += tokenizer.token_bytes(t).len();
    }
    out
}

/// `range` of `text` without its leading and trailing white space, and without a full stop
/// that ends a sentence ("in 1998." answers "1998"); `None` when nothing else is left.
fn trimmed(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let inner = &text[range.clone()];
    let start = range.start + (inner.len() - inner.trim_start().len());
    let mut end = range.end - (inner.len() - inner.trim_end().len());
    if start < end && ends_sentence(&text[start..end]) {
        end -= 1;
    }
    (start < end).then_some(start..end)
}

/// Whether `quote` ends with a full stop that belongs to the sentence rather than to its last
/// word: not an ellipsis, an initial ("J."), a dotted abbreviation ("U.S.") or a common
/// abbreviation ("Inc.", "Dr.").
fn ends_sentence(quote: &str) -> bool {
    const ABBREVIATIONS: &[&str] = &[
        "inc", "ltd", "co", "corp", "jr", "sr", "st", "dr", "mr", "mrs", "ms", "no", "vs", "etc",
        "dept", "approx", "fig", "vol", "pp", "ca", "cf", "al",
    ];
    let Some(body) = quote.strip_suffix('.') else {
        return false;
    };
    let word = body.rsplit(char::is_whitespace).next().unwrap_or(body);
    let word = word.trim_start_matches(|c: char| !c.is_alphanumeric());
    let Some(last) = word.chars().last() else {
        return false;
    };
    (last.is_alphanumeric() || matches!(last, ')' | '%' | '"' | '\u{201d}'))
        && word.chars().count() >= 2
        && !word.contains('.')
        && !ABBREVIATIONS.contains(&word.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answerability::SPAN_FEATURES;

    /// The features by name.
    fn named(f: &[f32]) -> std::collections::HashMap<&'static str, f32> {
        SPAN_FEATURES
            .iter()
            .copied()
            .zip(f.iter().copied())
            .collect()
    }

    #[test]
    fn span_features_see_kind_place_and_repetition() {
        let dir = tempfile::tempdir().unwrap();
        let text = "The Kessel Harbour Bridge opened in 1912, after Anna Brandt designed it.";
        let idx = crate::retrieve::small_index(dir.path(), &[text], None);
        let question = "When did the Kessel Harbour Bridge open?";
        let context = SpanContext {
            starts: vec![Start {
                passage: 0,
                token: 3,
                limit: 20,
                sentence: 0..text.len(),
                sentence_rank: 0,
                sentence_score: 0.9,
            }],
            question_terms: idx.analyze(question).into_iter().collect(),
            want: AnswerType::of(question),
        };
        let span = |words: usize| rag_model::Span {
            source: 0,
            tokens: 3..3 + words,
            logprobs: vec![-1.0; words],
            stop: -0.5,
            adjust: 0.25,
            start_rank: 1,
            score: -(words as f32) - 0.25,
        };
        let at = |s: &str| {
            let from = text.find(s).unwrap();
            from..from + s.len()
        };
        let year = named(&span_features(
            &idx,
            &context,
            text,
            &span(1),
            at("1912"),
            -3.0,
        ));
        assert_eq!(year.len(), SPAN_FEATURES.len());
        assert_eq!(year["type_number"], 1.0);
        assert_eq!(year["typed_start"], 1.0);
        assert_eq!(year["has_number"], 1.0);
        assert_eq!(year["number_has_number"], 1.0);
        assert_eq!(year["question_terms_in_span"], 0.0);
        // "in" lies between it and "opened" (the question's "open", stemmed); nothing after it
        // in the sentence is a question term.
        assert_eq!(year["question_term_left"], 1.0);
        assert_eq!(year["question_term_right"], FAR);
        assert_eq!(year["punct_after"], 1.0);
        assert_eq!(year["prior"], -3.0);
        assert_eq!(year["logprob_sum"], -1.0);
        assert_eq!(year["stop"], -0.5);
        assert_eq!(year["sentence_score"], 0.9);
        // A span that repeats the question is not of the kind asked for.
        let name = named(&span_features(
            &idx,
            &context,
            text,
            &span(3),
            at("Kessel Harbour Bridge"),
            -3.0,
        ));
        assert_eq!(name["question_terms_in_span"], 1.0);
        assert_eq!(name["typed_start"], 0.0);
        assert_eq!(name["has_number"], 0.0);
        assert_eq!(name["capitalised"], 1.0);
        assert_eq!(name["question_term_right"], 0.0, "open(ed) follows");
        assert_eq!(name["words"], 3.0);
    }

    #[test]
    fn years_answer_only_questions_that_name_none_or_ask_for_a_time() {
        assert!(!years_may_answer("What were net sales in fiscal 2023?"));
        assert!(!years_may_answer(
            "How much cash was held at the end of FY2023?"
        ));
        assert!(years_may_answer("When did the bridge open?"));
        assert!(years_may_answer("In 1950, which year did the war end?"));
        assert!(years_may_answer("What were net sales?"));
    }

    #[test]
    fn quotes_are_trimmed_in_place() {
        let t = "In 1912 the bridge opened; in 1912 the road did.";
        let second = t.rfind(" 1912").unwrap();
        // The second "1912", not the first occurrence of its text.
        assert_eq!(trimmed(t, second..second + 6), Some(second + 1..second + 5));
        assert_eq!(trimmed(t, 2..3), None, "white space only");
        // A sentence's full stop is left out; an abbreviation's or an initial's is kept.
        let end = t.len();
        assert_eq!(&t[trimmed(t, end - 9..end).unwrap()], "road did");
        for (text, from, want) in [
            ("It opened in 1998.", "1998", "1998"),
            ("Sales rose 8%.", "8%", "8%"),
            ("It was sold to Acme Inc.", "Acme", "Acme Inc."),
            ("Made in the U.S.", "the", "the U.S."),
            ("Written by John J.", "John", "John J."),
            ("And so on...", "so", "so on..."),
            ("Its name is Q.", "Q", "Q."),
        ] {
            let at = text.find(from).unwrap();
            let got = trimmed(text, at..text.len()).map(|r| &text[r]);
            assert_eq!(got, Some(want), "{text}");
        }
    }

    #[test]
    fn spans_neither_start_nor_end_inside_a_number() {
        let t = "Margin was 41.2% and sales $12.4 billion, or 18,500 units.";
        let at = |s: &str| t.find(s).unwrap();
        // Ends: not before the ".2", the "%", the ",500", nor just after the "$".
        assert!(!ends_word(t, at(".2%")));
        assert!(!ends_word(t, at("%")));
        assert!(!ends_word(t, at(",500")));
        assert!(!ends_word(t, at("12.4")));
        assert!(ends_word(t, at("%") + 1));
        assert!(ends_word(t, at(" billion")));
        assert!(ends_word(t, at(", or")));
        // Starts: the "$" opens its amount; digits after a decimal point, a thousands
        // separator or a currency sign continue one.
        assert_eq!(number_start(&t[at("$")..]), Some("12"));
        assert_eq!(number_start("41.2%"), None);
        assert!(inside_number(t, at("2%")));
        assert!(inside_number(t, at("500")));
        assert!(inside_number(t, at("12.4")));
        assert!(!inside_number(t, at("41")));
        assert!(!inside_number(t, at("18,")));
    }
}
