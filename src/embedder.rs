//! Which embedder serves an index: the one it was built with for queries, the configured one for
//! a new index. Whether an existing index accepts it is decided in one place, the index's
//! manifest ([`rag_index::Manifest::check_embedder`]).
use rag_model::{
    llama_format_of_id, standardized_of_id, variant_of_id, EmbedOptions, EmbedderKind,
    MiniLmRuntime, TextEmbedder, WeightFormat, DEFAULT_EMBEDDER,
};

use crate::config::{Config, EMBED_STATS_DIR};
use crate::error::Result;

/// What an embedder is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbedderUse {
    /// Writing an index: the kind `config.embedder` names wins (a mismatch with an existing
    /// index is then refused by the writer, with the fix).
    Ingest,
    /// Embedding queries: the kind the index was built with wins, whatever is configured.
    Query,
    /// Rebuilding an index from scratch (`--reindex`): as [`EmbedderUse::Ingest`], but the
    /// embedder runs as for a new index (rag's engine; for MiniLM the configured runtime),
    /// whatever made the old vectors.
    Rebuild,
}

/// Whether `e` runs as a new index's embedder would (so a rebuild can keep it).
pub(crate) fn as_for_new(config: &Config, e: &TextEmbedder) -> bool {
    let minilm = config.minilm_runtime.unwrap_or(MiniLmRuntime::Engine);
    e.minilm_runtime().is_none_or(|r| r == minilm)
        && e.llama_format()
            .is_none_or(|f| f == WeightFormat::Quantized)
        && (e.kind() != EmbedderKind::Llama
            || standardized_of_id(&e.id()) == config.embed_standardize.unwrap_or(true))
}

/// The embedder for an index built by `index_id` (`None`: no index yet). For
/// [`EmbedderUse::Ingest`]: the kind `config.embedder` names, else the index's own, else
/// [`DEFAULT_EMBEDDER`]; for [`EmbedderUse::Query`] the index's own comes first. It runs as
/// the index's vectors were made (candle's f32 BERT or dense f32 Llama weights for an index
/// built before rag's engine); a new or rebuilt index gets the engine (for MiniLM, the
/// configured runtime, by default the engine).
pub(crate) fn load(
    config: &Config,
    index_id: Option<String>,
    usage: EmbedderUse,
) -> Result<TextEmbedder> {
    let of_index = index_id.as_deref().map(EmbedderKind::of_id);
    let kind = match usage {
        EmbedderUse::Ingest | EmbedderUse::Rebuild => config.embedder.or(of_index),
        EmbedderUse::Query => of_index.or(config.embedder),
    }
    .unwrap_or(DEFAULT_EMBEDDER);
    Ok(match kind {
        EmbedderKind::Llama => {
            // Pooling and layer: for queries as the index was built; for ingest as asked, else
            // as the index was built, else the defaults.
            let mut embed = EmbedOptions::default();
            let from_index = index_id
                .as_deref()
                .filter(|id| EmbedderKind::of_id(id) == EmbedderKind::Llama)
                .and_then(variant_of_id);
            if let Some((pooling, layer)) = from_index {
                embed.pooling = pooling;
                embed.layer = layer;
                // Standardized as the index's vectors are; a rebuild is standardized as a new
                // index would be.
                if usage != EmbedderUse::Rebuild {
                    embed.standardize = index_id.as_deref().is_some_and(standardized_of_id);
                }
            }
            if usage != EmbedderUse::Query || from_index.is_none() {
                if let Some(p) = config.embed_pooling {
                    embed.pooling = p;
                }
                if let Some(l) = config.embed_layer {
                    embed.layer = l;
                }
                if let Some(z) = config.embed_standardize {
                    embed.standardize = z;
                }
            }
            embed.stats_dir = Some(config.home.join(EMBED_STATS_DIR));
            // The weights that made a Llama index's vectors embed its queries and new files:
            // candle's dense f32 for one made before the engine; the engine's quantized ones
            // for a new or rebuilt index.
            let format = as_made(
                index_id.as_deref(),
                usage,
                EmbedderKind::Llama,
                llama_format_of_id,
                WeightFormat::Quantized,
            );
            TextEmbedder::llama(
                &config.embed_model_path()?,
                &config.model_options(),
                embed,
                format,
            )?
        }
        EmbedderKind::MiniLm => {
            // The runtime that made a MiniLM index's vectors embeds its queries and its new
            // files (the two runtimes' vectors agree to a cosine of 0.999, not to the bit);
            // a new or rebuilt index gets the configured one, by default the engine.
            let runtime = as_made(
                index_id.as_deref(),
                usage,
                EmbedderKind::MiniLm,
                MiniLmRuntime::of_id,
                config.minilm_runtime.unwrap_or(MiniLmRuntime::Engine),
            );
            TextEmbedder::minilm_on(&config.minilm_path()?, runtime)?
        }
    })
}

/// How the vectors of an existing index of `kind` were made, read from its id by `of_id`,
/// unless `usage` rebuilds it or there is no such index: then `fresh`, as for a new one.
fn as_made<T>(
    index_id: Option<&str>,
    usage: EmbedderUse,
    kind: EmbedderKind,
    of_id: impl Fn(&str) -> T,
    fresh: T,
) -> T {
    match index_id {
        Some(id) if usage != EmbedderUse::Rebuild && EmbedderKind::of_id(id) == kind => of_id(id),
        _ => fresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MiniLM index is served by the runtime that made its vectors; a new or rebuilt one by
    /// the engine. Skips (printing why) without the fetched model.
    #[test]
    fn minilm_runtime_follows_the_index() {
        let home = std::env::var_os("RAG_HOME").map_or_else(
            || {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/rag")
            },
            std::path::PathBuf::from,
        );
        let config = Config::new(&home);
        if !config
            .minilm_path()
            .is_ok_and(|d| d.join("model.safetensors").is_file())
        {
            eprintln!("SKIP: all-MiniLM-L6-v2 is not fetched (scripts/fetch-models.sh --minilm)");
            return;
        }
        let candle = Some("minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256".to_string());
        let engine = Some("minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256:q8".to_string());
        let runtime = |id: &Option<String>, usage| {
            load(&config, id.clone(), usage)
                .unwrap()
                .minilm_runtime()
                .unwrap()
        };
        use EmbedderUse::*;
        assert_eq!(runtime(&candle, Query), MiniLmRuntime::Candle);
        assert_eq!(runtime(&candle, Ingest), MiniLmRuntime::Candle);
        assert_eq!(runtime(&candle, Rebuild), MiniLmRuntime::Engine);
        assert_eq!(runtime(&engine, Query), MiniLmRuntime::Engine);
        assert_eq!(runtime(&None, Ingest), MiniLmRuntime::Engine);
        // The ids the two runtimes write are those the index records.
        let e = load(&config, candle.clone(), Query).unwrap();
        assert_eq!(Some(e.id()), candle);
        let e = load(&config, None, Ingest).unwrap();
        assert_eq!(Some(e.id()), engine);
    }
}
