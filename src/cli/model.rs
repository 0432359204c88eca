//! `rag model info`: what a GGUF holds, read from its header.
use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use rag::Config;
use rag_model::{Model, ModelInfo};

use super::output;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Architecture, sizes, quantization, tokenizer, chat template and context length.
    #[command(after_help = "Examples:
  rag model info
  rag model info --model llama-2-7b-chat.Q4_K_M.gguf --json")]
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, command: ModelCommand) -> Result<()> {
    let ModelCommand::Info { json } = command;
    let info = Model::inspect(&config.model_path()?)?;
    let mut out = std::io::stdout().lock();
    if json {
        output::json(&mut out, &info)
    } else {
        Ok(write!(out, "{}", format_info(&info))?)
    }
}

fn format_info(i: &ModelInfo) -> String {
    let types: Vec<String> = i
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} {:.1}M", *n as f64 / 1e6))
        .collect();
    format!(
        "file            {}\n\
         name            {}\n\
         architecture    {}\n\
         parameters      {:.1}M ({:.1} MB on disk)\n\
         quantization    {} ({})\n\
         layers          {}\n\
         embedding       {}\n\
         feed-forward    {}\n\
         heads           {} (kv {})\n\
         context length  {}\n\
         rope base       {}\n\
         tokenizer       {}{}\n\
         vocabulary      {}\n\
         chat template   {}\n",
        i.path.display(),
        i.name.as_deref().unwrap_or("-"),
        i.architecture,
        i.parameters as f64 / 1e6,
        i.file_size as f64 / 1e6,
        i.quantization,
        types.join(", "),
        i.layers,
        i.embedding_length,
        i.feed_forward_length,
        i.heads,
        i.kv_heads,
        i.context_length,
        i.rope_freq_base,
        i.tokenizer,
        i.tokenizer_pre
            .as_deref()
            .map(|p| format!(", pre-tokenizer {p}"))
            .unwrap_or_default(),
        i.vocab_size,
        i.template,
    )
}
