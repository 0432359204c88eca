//! Ingest the demo corpus and ask it a question with the library API, on the default model.
//!
//!     cargo run --release --example ask                      # the demo question
//!     cargo run --release --example ask -- "Who led the first lantern procession?"
//!
//! The index goes to a temporary directory. Needs the default model
//! (`scripts/fetch-models.sh`).
use std::io::Write;
use std::path::PathBuf;

use rag::{Config, Rag};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Who designed the Kessel Harbour Bridge?".to_string());
    // The cache folder the fetch script fills: $RAG_HOME, else ~/.cache/rag.
    let home = std::env::var_os("RAG_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/rag"),
        PathBuf::from,
    );
    let config = Config::new(home);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/corpus");
    let dir = std::env::temp_dir().join(format!("rag-example-{}", std::process::id()));

    let rag = Rag::open(&dir, config)?;
    let report = rag.ingest(&[corpus])?;
    println!(
        "indexed {} files ({} chunks) in {:.1}s",
        report.indexed, report.chunks, report.seconds
    );

    println!("Q: {question}");
    print!("A: ");
    let answer = rag.ask_streaming(&question, &mut |piece| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    })?;
    println!();
    for c in &answer.citations {
        println!("[{}] {}", c.n, c.path);
    }
    if answer.abstained {
        println!("(abstained: {:?})", answer.abstain_reason);
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
