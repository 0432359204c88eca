//! `rag eval pages`: whether retrieval finds the right document, and the right page of it, for
//! questions about long PDFs (a form's instructions, a legal summary, a technical manual, a
//! paper), each question written by hand with the page(s) that answer it.
//!
//! The built-in set (`pdf-questions.jsonl`, 43 questions) is over `$RAG_SHARED/data/pdf-samples`:
//! the IRS instructions for Form 1040-NR (50 pages, tax tables included), the Copyright
//! Office's DMCA summary (18 pages), an IBM Redpaper sample (18 pages), a NAACL paper (8 pages)
//! and a five-page essay. A hit counts for its document when its path ends with the question's
//! file, and for the page when its page range also meets one of the question's pages.
//!
//! With `--ask` each question is also asked as `rag ask` asks it: whether it is answered, and
//! whether the answer cites a passage on one of the question's pages (the set has pages, not
//! answers: the answers themselves are in `--json`, to read).
use std::path::{Path, PathBuf};
use std::time::Instant;

use rag::{AbstainReason, Answer, Error, Hit, Mode, Rag, Result, RetrieveOptions};
use serde::{Deserialize, Serialize};

use super::metrics::mean;

/// The built-in questions: one JSON object a line, `{"question", "file", "pages"}`, `file`
/// relative to the documents' folder, `pages` counted from 1.
pub const BUILT_IN: &str = include_str!("pdf-questions.jsonl");

/// One question and where its answer is.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PageQuestion {
    pub question: String,
    /// The document, relative to the documents' folder (`/`-separated).
    pub file: String,
    /// The pages (from 1) that answer it.
    pub pages: Vec<u32>,
}

/// Parse a question file (JSON lines; blank lines allowed). `origin` names it in errors.
pub fn parse_questions(text: &str, origin: &str) -> Result<Vec<PageQuestion>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: PageQuestion = serde_json::from_str(line).map_err(|e| {
            Error::InvalidOption(format!(
                "{origin}, line {}: {e} (expected {{\"question\": \"...\", \"file\": \
                 \"sub/doc.pdf\", \"pages\": [3]}})",
                i + 1
            ))
        })?;
        if q.pages.is_empty() || q.pages.contains(&0) {
            return Err(Error::InvalidOption(format!(
                "{origin}, line {}: \"pages\" must list pages counted from 1",
                i + 1
            )));
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(Error::InvalidOption(format!("{origin}: no questions")));
    }
    Ok(out)
}

/// Check that every question's file is in `docs`, so a typo is not scored as a miss.
pub fn check_files(questions: &[PageQuestion], docs: &Path) -> Result<()> {
    for q in questions {
        let p = docs.join(&q.file);
        if !p.is_file() {
            return Err(Error::InvalidOption(format!(
                "{}: the file of question \"{}\" is not there (set --docs to the folder the \
                 questions' paths are relative to)",
                p.display(),
                q.question
            )));
        }
    }
    Ok(())
}

/// The scores of one retrieval mode.
#[derive(Debug, Clone, Serialize)]
pub struct PageScores {
    pub mode: String,
    pub doc_at_1: f64,
    pub doc_at_4: f64,
    pub doc_at_10: f64,
    pub page_at_1: f64,
    pub page_at_4: f64,
    pub page_at_10: f64,
    /// Mean reciprocal rank of the first hit on a right page (0 beyond 10).
    pub page_mrr_at_10: f64,
}

/// Where one question's first right document and first right page ranked (from 1), per mode.
#[derive(Debug, Clone, Serialize)]
pub struct PageRun {
    pub question: String,
    pub file: String,
    pub pages: Vec<u32>,
    /// Per mode, in the report's order.
    pub doc_rank: Vec<Option<usize>>,
    pub page_rank: Vec<Option<usize>>,
    /// Whether `rag ask` would turn the question away at the evidence gate.
    pub gated: bool,
    pub evidence: f32,
    /// What `rag ask` answered (`--ask`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked: Option<PageAnswer>,
}

/// One question's answer from `rag ask` (`--ask`).
#[derive(Debug, Clone, Serialize)]
pub struct PageAnswer {
    pub answer: String,
    pub abstained: bool,
    pub abstain_reason: Option<AbstainReason>,
    /// Each cited passage: its file and page range (PDFs).
    pub cited: Vec<CitedPassage>,
    /// Whether a cited passage is in the question's file, on one of its pages.
    pub cited_page: bool,
    pub secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CitedPassage {
    pub path: String,
    pub pages: Option<(u32, u32)>,
}

/// How `rag ask` did on the set (`--ask`). Every question is answerable from its pages.
#[derive(Debug, Clone, Serialize)]
pub struct AskScores {
    /// Share of questions answered (not turned away).
    pub answered: f64,
    /// Share of questions answered with a citation of a passage on one of their pages.
    pub answered_cited_page: f64,
    /// Share of the answered ones that cite no passage on the question's pages (other pages,
    /// or none at all).
    pub answered_elsewhere: f64,
    pub secs_per_question: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PagesReport {
    pub questions: usize,
    pub documents: usize,
    pub chunks: usize,
    pub embedder: String,
    pub modes: Vec<PageScores>,
    /// Share of questions `rag ask` would turn away at the evidence gate (all are answerable).
    pub gated: f64,
    /// `rag ask`'s answers, scored (`--ask`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked: Option<AskScores>,
    pub runs: Vec<PageRun>,
}

const PAGE_MODES: [Mode; 3] = [Mode::Bm25, Mode::Dense, Mode::Hybrid];

/// Run every question through BM25, HNSW and hybrid retrieval (top 10) and through the
/// evidence gate of `rag ask`'s defaults, searching only files of the questions' types: the
/// built-in folder also holds each PDF's reference text (`.groundtruth.md`, `.pdfminer-ref.txt`),
/// the same words without pages, which would otherwise take the top places. Where `ask`, each
/// question is also asked with those options (the model loaded on the first), and `progress`
/// hears each question done.
pub fn eval_pages(
    rag: &Rag,
    questions: &[PageQuestion],
    ask_them: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PagesReport> {
    let info = rag.info()?;
    let types = questions
        .iter()
        .filter_map(|q| Path::new(&q.file).extension())
        .map(|e| e.to_string_lossy().into_owned());
    let filter = rag_index::Filter::default().with_file_types(types);
    let mut ask = rag.options().clone();
    ask.retrieve.filter = filter.clone();
    let mut runs = Vec::new();
    for q in questions {
        let mut doc_rank = Vec::new();
        let mut page_rank = Vec::new();
        for mode in PAGE_MODES {
            let opts = RetrieveOptions {
                k: 10,
                mode,
                filter: filter.clone(),
                ..RetrieveOptions::default()
            };
            let hits = rag.retrieve(&q.question, &opts)?.hits;
            let (d, p) = ranks(&hits, &q.file, &q.pages);
            doc_rank.push(d);
            page_rank.push(p);
        }
        let search = rag.search_with(&q.question, &ask)?;
        let asked = if ask_them {
            let t = Instant::now();
            let answer = rag.ask_with(&q.question, &ask)?;
            Some(page_answer(&answer, q, t.elapsed().as_secs_f64()))
        } else {
            None
        };
        runs.push(PageRun {
            question: q.question.clone(),
            file: q.file.clone(),
            pages: q.pages.clone(),
            doc_rank,
            page_rank,
            gated: search.abstains,
            evidence: search.evidence,
            asked,
        });
        progress(runs.len(), questions.len());
    }
    let share = |f: &dyn Fn(&PageRun) -> bool| {
        mean(&runs.iter().map(|r| f(r) as u8 as f64).collect::<Vec<_>>())
    };
    let modes = PAGE_MODES
        .iter()
        .enumerate()
        .map(|(m, mode)| {
            let within = |r: Option<usize>, k: usize| r.is_some_and(|r| r <= k);
            PageScores {
                mode: mode.name().to_string(),
                doc_at_1: share(&|r| within(r.doc_rank[m], 1)),
                doc_at_4: share(&|r| within(r.doc_rank[m], 4)),
                doc_at_10: share(&|r| within(r.doc_rank[m], 10)),
                page_at_1: share(&|r| within(r.page_rank[m], 1)),
                page_at_4: share(&|r| within(r.page_rank[m], 4)),
                page_at_10: share(&|r| within(r.page_rank[m], 10)),
                page_mrr_at_10: mean(
                    &runs
                        .iter()
                        .map(|r| r.page_rank[m].map_or(0.0, |k| 1.0 / k as f64))
                        .collect::<Vec<_>>(),
                ),
            }
        })
        .collect();
    let asked = ask_them.then(|| {
        let answered = |r: &PageRun| r.asked.as_ref().is_some_and(|a| !a.abstained);
        let on_page = |r: &PageRun| answered(r) && r.asked.as_ref().is_some_and(|a| a.cited_page);
        let n_answered = runs.iter().filter(|r| answered(r)).count();
        AskScores {
            answered: share(&answered),
            answered_cited_page: share(&on_page),
            answered_elsewhere: if n_answered == 0 {
                0.0
            } else {
                runs.iter().filter(|r| answered(r) && !on_page(r)).count() as f64
                    / n_answered as f64
            },
            secs_per_question: mean(
                &runs
                    .iter()
                    .filter_map(|r| r.asked.as_ref().map(|a| a.secs))
                    .collect::<Vec<_>>(),
            ),
        }
    });
    Ok(PagesReport {
        questions: runs.len(),
        documents: info.documents,
        chunks: info.chunks,
        embedder: info.embedder.clone(),
        modes,
        gated: share(&|r| r.gated),
        asked,
        runs,
    })
}

/// `answer` to `q`, with whether it cites a passage on one of `q`'s pages.
fn page_answer(answer: &Answer, q: &PageQuestion, secs: f64) -> PageAnswer {
    let cited: Vec<CitedPassage> = answer
        .citations
        .iter()
        .map(|c| CitedPassage {
            path: c.path.clone(),
            pages: c.pages,
        })
        .collect();
    let cited_page = !answer.abstained
        && cited
            .iter()
            .any(|c| in_file(&c.path, &q.file) && on_pages(c.pages, &q.pages));
    PageAnswer {
        answer: answer.answer.clone(),
        abstained: answer.abstained,
        abstain_reason: answer.abstain_reason,
        cited,
        cited_page,
        secs,
    }
}

/// Whether `path` (as indexed) is the question's `file` (relative to the documents' folder).
fn in_file(path: &str, file: &str) -> bool {
    let p = path.replace('\\', "/");
    p == file || p.ends_with(&format!("/{file}"))
}

/// Whether a passage's page range meets one of `pages`.
fn on_pages(range: Option<(u32, u32)>, pages: &[u32]) -> bool {
    range.is_some_and(|(a, b)| pages.iter().any(|&p| a <= p && p <= b))
}

/// The rank (from 1) of the first hit in `file`, and of the first one in `file` whose pages
/// meet `pages`.
fn ranks(hits: &[Hit], file: &str, pages: &[u32]) -> (Option<usize>, Option<usize>) {
    let doc = hits
        .iter()
        .position(|h| in_file(&h.chunk.path, file))
        .map(|i| i + 1);
    let page = hits
        .iter()
        .position(|h| in_file(&h.chunk.path, file) && on_pages(h.chunk.pages, pages))
        .map(|i| i + 1);
    (doc, page)
}

impl PagesReport {
    /// A plain-text table, then each question that no mode found on its page.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} questions over {} documents ({} chunks); embedder {}\n\n",
            self.questions, self.documents, self.chunks, self.embedder
        );
        s += &format!(
            "{:<8} {:>6} {:>6} {:>7} {:>7} {:>7} {:>8} {:>8}\n",
            "mode", "doc@1", "doc@4", "doc@10", "page@1", "page@4", "page@10", "MRR@10"
        );
        for m in &self.modes {
            s += &format!(
                "{:<8} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>7.3} {:>8.3} {:>8.3}\n",
                m.mode,
                m.doc_at_1,
                m.doc_at_4,
                m.doc_at_10,
                m.page_at_1,
                m.page_at_4,
                m.page_at_10,
                m.page_mrr_at_10
            );
        }
        s += &format!(
            "\nturned away by `rag ask`'s evidence gate: {:.3} (every question is answerable)\n",
            self.gated
        );
        if let Some(a) = &self.asked {
            s += &format!(
                "asked as `rag ask` does: answered {:.3}, answered citing a right page {:.3}; \
                 {:.3} of the answers cite none of its pages; {:.2} s a question\n",
                a.answered, a.answered_cited_page, a.answered_elsewhere, a.secs_per_question
            );
        }
        let missed: Vec<&PageRun> = self
            .runs
            .iter()
            .filter(|r| r.page_rank.iter().all(Option::is_none))
            .collect();
        if !missed.is_empty() {
            s += &format!(
                "\nno mode found the page in its top 10 ({}):\n",
                missed.len()
            );
            for r in missed {
                let pages: Vec<String> = r.pages.iter().map(u32::to_string).collect();
                s += &format!("  {} p. {}: {}\n", r.file, pages.join(","), r.question);
            }
        }
        s
    }
}

/// The default documents' folder of the built-in set.
pub fn default_docs(shared: &Path) -> PathBuf {
    shared.join("data/pdf-samples")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_set_parses() {
        let qs = parse_questions(BUILT_IN, "built-in").unwrap();
        assert_eq!(qs.len(), 43);
        assert!(qs.iter().all(|q| q.file.ends_with(".pdf")));
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse_questions("{\"question\": \"q\", \"file\": \"a.pdf\"}\n", "q.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("q.jsonl, line 1"), "{e}");
        let e = parse_questions(
            "\n{\"question\": \"q\", \"file\": \"a.pdf\", \"pages\": [0]}",
            "q.jsonl",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2") && e.contains("from 1"), "{e}");
    }
}
