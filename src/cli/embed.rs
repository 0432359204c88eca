//! `rag embed`: pooled hidden-state vectors of texts, and their cosine similarities.
use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use rag::Config;
use rag_model::{EmbedOptions, Embedder, HiddenLayer, Model, Pooling, WeightFormat};

#[derive(Args)]
pub struct EmbedArgs {
    /// Texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
    /// Pooling: mean or last.
    #[arg(long, default_value = "mean")]
    pooling: Pooling,
    /// Hidden states of this block (0-based) instead of the final normed layer.
    #[arg(long, value_name = "N")]
    layer: Option<usize>,
    /// Weights for the embedding forward: f32 (fast), f16, quantized.
    #[arg(long, default_value = "f32")]
    weights: WeightFormat,
    /// Leave the pooled states as they are, without standardizing their dimensions by the
    /// model's calibration statistics (what `rag ingest --no-standardize` indexes hold).
    #[arg(long)]
    no_standardize: bool,
    /// Print JSON (vectors in full) instead of a summary with cosine similarities.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: EmbedArgs) -> Result<()> {
    let path = config.model_path()?;
    let mut opts = config.model_options();
    opts.format = args.weights;
    let model =
        Arc::new(Model::load(&path, &opts).with_context(|| format!("loading {}", path.display()))?);
    let embedder = Embedder::new(
        model,
        EmbedOptions {
            pooling: args.pooling,
            layer: args.layer.map_or(HiddenLayer::Final, HiddenLayer::After),
            standardize: !args.no_standardize,
            stats_dir: Some(config.home.join(rag::EMBED_STATS_DIR)),
            ..EmbedOptions::default()
        },
    );
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&texts)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<_> = texts
            .iter()
            .zip(&vectors)
            .map(|(t, v)| serde_json::json!({"text": t, "embedding": v}))
            .collect();
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "dimension {}", embedder.dim())?;
    for (i, (t, v)) in texts.iter().zip(&vectors).enumerate() {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
        writeln!(out, "[{i}] [{}, ...] {t}", head.join(", "))?;
    }
    for i in 0..vectors.len() {
        for j in i + 1..vectors.len() {
            let c = rag_model::cosine(&vectors[i], &vectors[j]);
            writeln!(out, "cosine [{i}] [{j}] = {c:.4}")?;
        }
    }
    Ok(())
}
