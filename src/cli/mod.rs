//! The command line: the clap definition of `rag` and its subcommands, one module each. Every
//! module turns its flags into library calls and prints the result; only this layer reads the
//! environment ([`config`]) and names flags (in help and in [`hint`]).
mod ask;
mod bench;
mod chat;
mod config;
mod embed;
mod eval;
mod index;
mod ingest;
mod model;
mod output;
mod search;
mod serve;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use output::is_broken_pipe;

#[derive(Parser)]
#[command(
    name = "rag",
    version,
    about = "Answer questions over a private folder of documents, offline.",
    after_help = "Examples:
  rag ingest ./docs                       index a folder (txt, md, html, pdf, docx, pptx, xlsx, csv, epub) into ./.rag
  rag ask \"When was the bridge built?\"    a grounded answer with cited sources
  rag search \"When was the bridge built?\" the passages `rag ask` would be given
  rag model info                          describe the default model
  rag chat \"What is the capital of France?\"
  rag --model llama-2-7b-chat.Q4_K_M.gguf chat \"Hello\"
  rag embed \"first sentence\" \"second sentence\" --json
  rag serve                               a web page and an OpenAI-compatible API on :8080
  rag bench model                         throughput, with llama.cpp for comparison

The default model (SmolLM2-135M-Instruct, Q4_1) is fetched by scripts/fetch-models.sh into
$RAG_HOME/models (RAG_HOME defaults to ~/.cache/rag)."
)]
pub struct Cli {
    #[command(flatten)]
    global: config::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a model.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Chat with the model, without retrieval (the closed-book baseline).
    #[command(after_help = chat::EXAMPLES)]
    Chat(chat::ChatArgs),
    /// Index files and folders (txt, md, html, pdf, docx, pptx, xlsx, csv, epub) for search and
    /// questions.
    #[command(after_help = ingest::EXAMPLES)]
    Ingest(ingest::IngestArgs),
    /// Answer a question from the indexed documents, citing the passages used.
    #[command(after_help = ask::EXAMPLES)]
    Ask(ask::AskArgs),
    /// The passages `rag ask` would put in the prompt for a question (no generation).
    #[command(after_help = search::EXAMPLES)]
    Search(search::SearchArgs),
    /// Serve the web page and the HTTP API (OpenAI-compatible and rag's own).
    #[command(after_help = serve::EXAMPLES)]
    Serve(serve::ServeArgs),
    /// Measure retrieval and answer quality on evaluation sets.
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Print embeddings of texts (unit vectors from pooled hidden states).
    Embed(embed::EmbedArgs),
    /// Look at an index, or copy it into another store (an embedded index into Milvus, say)
    /// without embedding again.
    Index {
        #[command(subcommand)]
        command: index::IndexCommand,
    },
    /// Measure throughput.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let config = config::resolve(&cli.global)?;
    let ok = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Model { command } => ok(model::run(&config, command)),
        Command::Chat(args) => ok(chat::run(&config, args)),
        Command::Ingest(args) => ingest::run(config, args),
        Command::Ask(args) => ok(ask::run(config, args)),
        Command::Search(args) => ok(search::run(config, args)),
        Command::Serve(args) => ok(serve::run(config, args)),
        Command::Embed(args) => ok(embed::run(&config, args)),
        Command::Eval { command } => ok(eval::run(config, command)),
        Command::Index { command } => ok(index::run(config, command)),
        Command::Bench { command } => ok(bench::run(config, command)),
    }
}

/// What to do about `err` on this command line, when the library's own message cannot say it
/// in terms of flags.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    use rag_index::IndexError;
    use rag_model::ModelError;
    // The library wraps the store's and the runtime's errors transparently: look inside.
    let (mut lib, mut index, mut model) = (None, None, None);
    for e in err.chain() {
        if let Some(l) = e.downcast_ref::<rag::Error>() {
            match l {
                rag::Error::Index(i) => index = Some(i),
                rag::Error::Model(m) => model = Some(m),
                other => lib = Some(other),
            }
        }
        index = index.or_else(|| e.downcast_ref::<IndexError>());
        model = model.or_else(|| e.downcast_ref::<ModelError>());
    }
    Some(match (lib, index, model) {
        (Some(rag::Error::DefaultModelMissing { what, .. }), _, _) if what.contains("MiniLM") => {
            "or build the index with the Llama embedder instead: rag ingest --embedder llama"
        }
        (Some(rag::Error::DefaultModelMissing { what, .. }), _, _) if what.contains("embedding") => {
            "or pass --embed-model PATH (RAG_EMBED_MODEL) to a Llama-architecture GGUF"
        }
        (Some(rag::Error::DefaultModelMissing { .. }), _, _) => {
            "or pass --model PATH (RAG_MODEL) to a Llama-architecture GGUF"
        }
        (Some(rag::Error::InvalidOption(m)), _, _) if m.contains("answer budget") => {
            "choose --max-tokens below the context length (--context raises it up to the model's)"
        }
        (Some(rag::Error::InvalidOption(m)), _, _) if m.contains("answerability file") => {
            "fit it again for this model: rag eval qa --set squad2 --split fit --fit"
        }
        (Some(rag::Error::EmptyIndex { .. }), _, _) | (_, Some(IndexError::NotFound { .. }), _) => {
            "run `rag ingest PATH` with the same --index (or --store) first"
        }
        (_, Some(IndexError::Remote { doing, .. }), _) if doing.starts_with("connecting") || doing.starts_with("checking") => {
            "check that the server in --store (RAG_STORE) is running and reachable, and --store-token if it needs one"
        }
        (_, Some(IndexError::BadAddress { .. }), _) => {
            "write --store as milvus://HOST:PORT/COLLECTION, or https://ENDPOINT/COLLECTION for Zilliz Cloud"
        }
        (_, Some(IndexError::EmbedderMismatch { .. }), _) => {
            "re-ingest with --reindex to rebuild the index with the embedder now configured, or pass the --embed-model / --embedder that built it"
        }
        (_, Some(IndexError::Corrupt { .. } | IndexError::FormatVersion { .. }), _) => {
            "rebuild it with `rag ingest --reindex PATH`"
        }
        (_, _, Some(ModelError::PromptTooLong { .. })) => {
            "ask a shorter question, lower --max-tokens or -k, or raise --context"
        }
        (_, _, Some(ModelError::ModelNotFound { .. } | ModelError::NotGguf { .. })) => {
            "pass --model PATH to a Llama-architecture GGUF (scripts/fetch-models.sh fetches the default one)"
        }
        _ => return None,
    })
}
