//! `rag chat`: the model alone, no retrieval (the closed-book baseline).
use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use rag::Config;
use rag_model::{GenerateParams, Model};

use super::output::Stream;

pub const EXAMPLES: &str = "Examples:
  rag chat \"What is the capital of France?\"
  rag chat --temperature 0.7 --seed 1 \"Write a haiku about rust\"
  rag chat --show-prompt --system \"Answer in French.\" \"Hello\"";

#[derive(Args)]
pub struct ChatArgs {
    /// The message.
    message: String,
    /// System prompt (default: prompts/chat-system.txt).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print the rendered prompt before the answer.
    #[arg(long)]
    show_prompt: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-k when sampling (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p when sampling (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Repeat penalty (1 = off).
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 299_792_458)]
    seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<GenerateParams> {
        anyhow::ensure!(self.temperature >= 0.0, "--temperature must be >= 0");
        anyhow::ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "--top-p must be in (0, 1]"
        );
        anyhow::ensure!(self.repeat_penalty > 0.0, "--repeat-penalty must be > 0");
        Ok(GenerateParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: Some(self.top_p),
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..GenerateParams::default()
        })
    }
}

pub fn run(config: &Config, args: ChatArgs) -> Result<()> {
    let params = args.sampling.params()?;
    let path = config.model_path()?;
    let model = Model::load(&path, &config.model_options())
        .with_context(|| format!("loading {}", path.display()))?;
    let system = args.system.unwrap_or_else(|| {
        include_str!("../../prompts/chat-system.txt")
            .trim()
            .to_string()
    });
    let prompt = model.chat_prompt(&system, &args.message);
    let ids = prompt.encode(model.tokenizer());
    let mut out = std::io::stdout().lock();
    if args.show_prompt && !args.json {
        writeln!(
            out,
            "--- prompt ({} tokens) ---\n{}\n---",
            ids.len(),
            prompt.text()
        )?;
    }
    let mut stream = Stream::new(&mut out, !args.json);
    let gen = model.generate(&ids, &params, &mut |piece| stream.write(piece))?;
    stream.finish()?;
    if args.json {
        let v = serde_json::json!({
            "answer": gen.text,
            "prompt": args.show_prompt.then(|| prompt.text()),
            "prompt_tokens": gen.prompt_tokens,
            "generated_tokens": gen.tokens.len(),
            "stop": gen.stop,
            "timings": {
                "prefill_secs": gen.prefill_secs,
                "decode_secs": gen.decode_secs,
                "prefill_tok_s": gen.prefill_tok_s(),
                "decode_tok_s": gen.decode_tok_s(),
            },
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
    }
    writeln!(out)?;
    drop(out);
    eprintln!(
        "[{} prompt tokens at {:.0} tok/s, {} generated at {:.1} tok/s, stop: {:?}]",
        gen.prompt_tokens,
        gen.prefill_tok_s(),
        gen.tokens.len(),
        gen.decode_tok_s(),
        gen.stop
    );
    Ok(())
}
