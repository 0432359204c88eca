//! `rag serve`: the HTTP API (OpenAI-compatible and rag's own) and the web page, over one
//! index and one loaded model.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rag::{Config, Rag, Server, ServerOptions};

use super::ask::RetrievalArgs;
use super::config::IndexArg;

pub const EXAMPLES: &str = "Examples:
  rag serve                                  http://127.0.0.1:8080 over ./.rag
  rag serve --index ~/notes/.rag --addr 127.0.0.1:9000
  RAG_API_KEY=$(openssl rand -hex 16) rag serve --addr 0.0.0.0:8080
  curl -N http://127.0.0.1:8080/api/ask -H 'content-type: application/json' \\
       -d '{\"question\": \"Who designed the bridge?\"}'
  curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
       -d '{\"model\": \"rag\", \"messages\": [{\"role\": \"user\", \"content\": \"Who designed the bridge?\"}]}'

Open the address in a browser to ask, read the cited passages and add documents. Any
OpenAI client works against /v1 (model \"rag\" answers from the documents; the chat model's
own name answers closed book). Listening on anything but loopback needs an API key.";

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    index: IndexArg,
    /// Address to listen on. Anything but loopback needs --api-key (or --no-auth).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    addr: SocketAddr,
    /// The key clients send as `Authorization: Bearer KEY` (the page asks for it once).
    #[arg(long, env = "RAG_API_KEY", hide_env_values = true, value_name = "KEY")]
    api_key: Option<String>,
    /// Serve a non-loopback address without a key (e.g. behind a proxy that authenticates).
    #[arg(long, conflicts_with = "api_key")]
    no_auth: bool,
    /// Answers that may wait for the model; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 8, value_name = "N")]
    queue: usize,
    /// Largest upload request, in MiB.
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    max_upload_mib: usize,
    /// Where uploaded files are kept (default: uploads/ in the index folder).
    #[arg(long, value_name = "DIR")]
    upload_dir: Option<PathBuf>,
    /// The one origin whose pages may call the API (CORS); default none.
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Option<String>,
    #[command(flatten)]
    retrieval: RetrievalArgs,
}

pub fn run(config: Config, args: ServeArgs) -> Result<()> {
    let opts = args.retrieval.options()?;
    let rag = Rag::open(&args.index.index, config)?.with_options(opts);
    let location = rag.location().to_string();
    let server_opts = ServerOptions {
        addr: args.addr,
        api_key: args
            .api_key
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty()),
        no_auth: args.no_auth,
        queue: args.queue,
        max_upload: args.max_upload_mib << 20,
        upload_dir: args.upload_dir,
        cors_origin: args.cors_origin,
        ..ServerOptions::default()
    };
    let auth = server_opts.api_key.is_some();
    let mut server = Server::new(rag, server_opts)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let bound = server.bind().await?;
        eprintln!(
            "rag serve: http://{bound} (index {}{}); Ctrl-C stops it",
            location,
            if auth { ", API key required" } else { "" }
        );
        server.serve().await
    })?;
    Ok(())
}
