//! Which embedder serves an index: the one it was built with for queries, the configured one for
//! a new index. Whether an existing index accepts it is decided in one place, the index's
//! manifest ([`rag_index::Manifest::check_embedder`]).
use rag_model::{variant_of_id, EmbedOptions, EmbedderKind, TextEmbedder, DEFAULT_EMBEDDER};

use crate::config::Config;
use crate::error::Result;

/// What an embedder is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EmbedderUse {
    /// Writing an index: the kind `config.embedder` names wins (a mismatch with an existing
    /// index is then refused by the writer, with the fix).
    Ingest,
    /// Embedding queries: the kind the index was built with wins, whatever is configured.
    Query,
}

/// The embedder for an index built by `index_id` (`None`: no index yet). For [`EmbedderUse::Ingest`]: the kind `config.embedder`
/// names, else the index's own, else [`DEFAULT_EMBEDDER`]; for [`EmbedderUse::Query`] the
/// index's own comes first. A Llama embedder holds the model with dense f32 weights (the fast
/// path for batches).
pub(crate) fn load(
    config: &Config,
    index_id: Option<String>,
    usage: EmbedderUse,
) -> Result<TextEmbedder> {
    let of_index = index_id.as_deref().map(EmbedderKind::of_id);
    let kind = match usage {
        EmbedderUse::Ingest => config.embedder.or(of_index),
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
            }
            if usage == EmbedderUse::Ingest || from_index.is_none() {
                if let Some(p) = config.embed_pooling {
                    embed.pooling = p;
                }
                if let Some(l) = config.embed_layer {
                    embed.layer = l;
                }
            }
            TextEmbedder::llama(&config.embed_model_path()?, &config.model_options(), embed)?
        }
        EmbedderKind::MiniLm => TextEmbedder::minilm(&config.minilm_path()?)?,
    })
}
