//! `rag index`: what an index holds, and copying it into another store without embedding again.
use anyhow::Result;
use clap::Subcommand;
use rag::{Config, Location, Rag};

use super::output;

pub const EXAMPLES: &str = "Examples:
  rag index info
  rag index info --store milvus://127.0.0.1:19530/notes --json
  rag index copy --from .rag --to milvus://127.0.0.1:19530/notes
  rag index copy --from milvus://127.0.0.1:19530/notes --to ./notes-index

`copy` reads each document's chunks and stored vectors and writes them to the target, skipping
documents it already holds with the same content; run it again after an interruption to finish.
The target is created with the source's embedder, or must have been made with it.";

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Where the index is, its embedder and how much it holds.
    #[command(after_help = EXAMPLES)]
    Info {
        /// Index directory (or use --store).
        #[arg(long, default_value = ".rag", value_name = "DIR")]
        index: std::path::PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy an index into another store with its vectors (no embedding): embedded to Milvus,
    /// Milvus to embedded, or between two of either.
    #[command(after_help = EXAMPLES)]
    Copy {
        /// The source: a directory or a milvus://, https:// address.
        #[arg(long, value_name = "DIR|URI")]
        from: String,
        /// The target: a directory or a milvus://, https:// address (--store-token is its
        /// token).
        #[arg(long, value_name = "DIR|URI")]
        to: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// No line per document.
        #[arg(long, short)]
        quiet: bool,
    },
}

pub fn run(config: Config, command: IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Info { index, json } => {
            let rag = Rag::open(&index, config)?;
            let info = rag.info()?;
            if json {
                #[derive(serde::Serialize)]
                struct Out {
                    location: String,
                    embedder: String,
                    dim: usize,
                    documents: usize,
                    chunks: usize,
                }
                return output::json(
                    &mut std::io::stdout().lock(),
                    &Out {
                        location: rag.location().to_string(),
                        embedder: info.embedder,
                        dim: info.dim,
                        documents: info.documents,
                        chunks: info.chunks,
                    },
                );
            }
            println!(
                "{}: {} documents, {} chunks, embedder {} (dim {})",
                rag.location(),
                info.documents,
                info.chunks,
                info.embedder,
                info.dim
            );
            Ok(())
        }
        IndexCommand::Copy {
            from,
            to,
            json,
            quiet,
        } => {
            let token = config.store_token.clone();
            // The token is for a remote store; a source and a target both remote share it.
            let src = Location::parse(&from, token.clone())?;
            let dst = Location::parse(&to, token)?;
            let t0 = std::time::Instant::now();
            let report = rag::copy_index(&src, &dst, &mut |path, chunks| {
                if !quiet && !json {
                    eprintln!("{chunks:>5} chunks  {}", output::display_path(path));
                }
            })?;
            let secs = t0.elapsed().as_secs_f64();
            if json {
                return output::json(&mut std::io::stdout().lock(), &report);
            }
            println!(
                "copied {} documents ({} chunks) from {src} to {dst} in {secs:.1} s; {} were \
                 already there",
                report.copied, report.chunks, report.unchanged
            );
            Ok(())
        }
    }
}
