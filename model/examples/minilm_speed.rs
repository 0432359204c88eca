//! Embedding throughput of all-MiniLM-L6-v2: cut a text into chunks of about N word-piece
//! tokens, embed them in one call, report tokens per second (median of three runs).
//!
//!     cargo run --release --example minilm_speed -- [--threads 2] [--chunks 64] [--tokens 200] [--batch-tokens 2048] [--runtime engine|candle|both] [FILE]
//!
//! `--runtime both` (the default) times the engine and candle on the same chunks and reports
//! the ratio and the lowest cosine between their vectors.
//!
//! FILE defaults to the SQuAD article $RAG_SHARED/data/squad-v1.1-dev/articles/Black_Death.txt
//! (RAG_SHARED defaults to ../shared); its words are reused from the start when it runs out.
use std::path::PathBuf;
use std::time::Instant;

use rag_model::{MiniLm, MiniLmOptions, MiniLmRuntime};

fn main() -> anyhow::Result<()> {
    let (mut threads, mut chunks, mut tokens, mut file) = (2usize, 64usize, 200usize, None);
    let mut opts = MiniLmOptions::default();
    let mut runtimes = vec![MiniLmRuntime::Engine, MiniLmRuntime::Candle];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> anyhow::Result<usize> {
            Ok(args
                .next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))?
                .parse()?)
        };
        match a.as_str() {
            "--threads" => threads = num()?,
            "--chunks" => chunks = num()?,
            "--tokens" => tokens = num()?,
            "--batch-tokens" => opts.batch_tokens = num()?,
            "--runtime" => {
                runtimes = match args.next().as_deref() {
                    Some("engine") => vec![MiniLmRuntime::Engine],
                    Some("candle") => vec![MiniLmRuntime::Candle],
                    Some("both") => vec![MiniLmRuntime::Engine, MiniLmRuntime::Candle],
                    other => anyhow::bail!("--runtime engine|candle|both, not {other:?}"),
                }
            }
            _ => file = Some(PathBuf::from(a)),
        }
    }
    rag_model::set_threads(threads)?;
    let file = file.unwrap_or_else(|| {
        std::env::var_os("RAG_SHARED")
            .map_or_else(|| PathBuf::from("../shared"), PathBuf::from)
            .join("data/squad-v1.1-dev/articles/Black_Death.txt")
    });
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;

    let home = std::env::var_os("RAG_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/rag"),
        PathBuf::from,
    );
    let dir = home.join("models").join(rag_model::MINILM_DIR);
    let mut results = Vec::new();
    for runtime in runtimes {
        let t = Instant::now();
        let model = MiniLm::load_with(
            &dir,
            MiniLmOptions {
                runtime,
                ..opts.clone()
            },
        )?;
        let load_s = t.elapsed().as_secs_f64();
        results.push(run(&model, &text, chunks, tokens, threads, load_s)?);
    }
    if let [(engine_tps, engine), (candle_tps, candle)] = &results[..] {
        let worst = engine
            .iter()
            .zip(candle)
            .map(|(a, b)| rag_model::cosine(a, b))
            .fold(f32::INFINITY, f32::min);
        println!(
            "engine / candle: {:.2}x; lowest cosine between their vectors {worst:.6}",
            engine_tps / candle_tps
        );
    }
    Ok(())
}

/// Embed `chunks` chunks of about `tokens` tokens three times; print and return tokens per
/// second (the median run) and the vectors.
fn run(
    model: &MiniLm,
    text: &str,
    chunks: usize,
    tokens: usize,
    threads: usize,
    load_s: f64,
) -> anyhow::Result<(f64, Vec<Vec<f32>>)> {
    // Whole words while the chunk holds at most `tokens` tokens ([CLS] and [SEP] included);
    // BERT splits at whitespace, so a chunk's count is the sum of its words' counts.
    let mut words = text.split_whitespace().cycle().peekable();
    let texts: Vec<String> = (0..chunks)
        .map(|_| {
            let (mut chunk, mut n) = (String::new(), 2);
            while let Some(w) = words.peek() {
                let k = model.count_tokens(w) - 2;
                if n + k > tokens && !chunk.is_empty() {
                    break;
                }
                if !chunk.is_empty() {
                    chunk.push(' ');
                }
                chunk.push_str(w);
                n += k;
                words.next();
            }
            chunk
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let total: usize = refs.iter().map(|t| model.encode(t).len()).sum();

    model.embed(&refs[..1])?; // warm-up
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            model.embed(&refs).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    let vectors = model.embed(&refs)?;
    times.sort_by(f64::total_cmp);
    let s = times[1];
    println!(
        "{} on {threads} threads: {chunks} chunks, {total} tokens ({:.0} per chunk) in {s:.3}s = {:.0} tok/s (load {load_s:.2}s; runs {:.3} {:.3} {:.3}s)",
        model.id(),
        total as f64 / chunks as f64,
        total as f64 / s,
        times[0],
        times[1],
        times[2]
    );
    Ok((total as f64 / s, vectors))
}
