//! Measure the abstention threshold: the evidence score (how much of a question's IDF-weighted
//! terms the best retrieved passage holds) of questions the index can answer, beside questions
//! it cannot, and what share of each set a threshold keeps.
//!
//!     cargo run --release --example evidence -- INDEX LABEL=FILE.jsonl[:field] ... [--limit N]
//!
//! e.g. with the SQuAD articles ingested into ./squad-idx:
//!
//!     cargo run --release --example evidence -- squad-idx \
//!         in-corpus=../shared/data/squad-v1.1-dev/questions.jsonl:question \
//!         off-corpus=../shared/data/scifact/queries_test.jsonl:text --limit 300
//!
//! Each JSON line's `field` (default `question`) is one question; the first `limit` lines of a
//! file are taken, spread over the file (every n-th line).
use std::path::PathBuf;

use rag::{Config, Rag};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut limit = 300usize;
    if let Some(i) = args.iter().position(|a| a == "--limit") {
        limit = args.get(i + 1).ok_or("--limit N")?.parse()?;
        args.drain(i..i + 2);
    }
    let index = PathBuf::from(
        args.first()
            .ok_or("usage: evidence INDEX LABEL=FILE[:field] ...")?,
    );
    let home = std::env::var_os("RAG_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/rag"),
        PathBuf::from,
    );
    let rag = Rag::open(&index, Config::new(home))?;
    let thresholds = [0.2f32, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
    println!(
        "{:<12} {:>5} {:>6} {:>6} {:>6} {:>6}   share with evidence >= {:?}",
        "set", "n", "p10", "p25", "p50", "p90", thresholds
    );
    for spec in &args[1..] {
        let (label, rest) = spec.split_once('=').ok_or("LABEL=FILE[:field]")?;
        let (file, field) = rest.rsplit_once(':').unwrap_or((rest, "question"));
        let lines: Vec<String> = std::fs::read_to_string(file)?
            .lines()
            .map(str::to_string)
            .collect();
        let step = (lines.len() / limit.max(1)).max(1);
        let mut scores = Vec::new();
        for line in lines.iter().step_by(step).take(limit) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let q = v[field].as_str().ok_or("no such field")?;
            scores.push(rag.search(q)?.evidence);
        }
        scores.sort_by(f32::total_cmp);
        let pct = |p: f64| scores[((scores.len() - 1) as f64 * p).round() as usize];
        let shares: Vec<String> = thresholds
            .iter()
            .map(|&t| {
                let n = scores.iter().filter(|&&s| s >= t).count();
                format!("{:.2}", n as f64 / scores.len() as f64)
            })
            .collect();
        println!(
            "{label:<12} {:>5} {:>6.2} {:>6.2} {:>6.2} {:>6.2}   [{}]",
            scores.len(),
            pct(0.1),
            pct(0.25),
            pct(0.5),
            pct(0.9),
            shares.join(", ")
        );
    }
    Ok(())
}
