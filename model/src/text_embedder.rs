//! The embedder of an index: Llama hidden states or all-MiniLM-L6-v2, behind one type so that
//! ingest and queries need not know which. An index records the embedder's id; queries use the
//! kind the index was built with.
use std::path::Path;
use std::sync::Arc;

use crate::embed::{EmbedOptions, Embedder};
use crate::error::Result;
use crate::llama::WeightFormat;
use crate::minilm::{MiniLm, MiniLmOptions, Runtime};
use crate::model::{Model, ModelOptions};

/// The embedder of a new index when none is asked for: all-MiniLM-L6-v2. On SciFact it
/// retrieves far better than SmolLM2 hidden states (docs/EVAL.md: nDCG@10 0.800 against
/// 0.218 on the same 1,000-abstract subset; 0.708 hybrid on the full corpus) and embeds
/// about 6x faster (both on rag's engine: ~10,900 against ~1,800 tok/s on 2 cores).
pub const DEFAULT_EMBEDDER: EmbedderKind = EmbedderKind::MiniLm;

/// Which model embeds chunks and queries.
///
/// ```
/// use rag_model::EmbedderKind;
/// assert_eq!("minilm".parse(), Ok(EmbedderKind::MiniLm));
/// assert_eq!(EmbedderKind::of_id("llama:SmolLM2.gguf:98362432:mean:final"), EmbedderKind::Llama);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedderKind {
    /// Mean-pooled final hidden states of a Llama-architecture GGUF (the embedding model).
    Llama,
    /// all-MiniLM-L6-v2, a 6-layer BERT trained for sentence similarity.
    MiniLm,
}

impl EmbedderKind {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::MiniLm => "minilm",
        }
    }

    /// The kind that made an index, from the embedder id in its manifest.
    pub fn of_id(id: &str) -> Self {
        if id.starts_with("minilm:") {
            Self::MiniLm
        } else {
            Self::Llama
        }
    }
}

impl std::str::FromStr for EmbedderKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "llama" => Ok(Self::Llama),
            "minilm" | "all-minilm-l6-v2" => Ok(Self::MiniLm),
            _ => Err(format!("unknown embedder '{s}' (llama, minilm)")),
        }
    }
}

impl std::fmt::Display for EmbedderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A loaded embedder of either kind.
pub enum TextEmbedder {
    Llama(Embedder),
    /// Boxed: the BERT weights' handles are large beside the Llama embedder's `Arc`.
    MiniLm(Box<MiniLm>),
}

impl TextEmbedder {
    /// Load a Llama embedder over the GGUF at `path` with its weights held as `format`:
    /// [`WeightFormat::Quantized`] (rag's engine, for new indexes) or [`WeightFormat::F32`]
    /// (candle's dense weights, as indexes made before the engine were embedded; see
    /// [`crate::llama_format_of_id`]).
    pub fn llama(
        path: &Path,
        opts: &ModelOptions,
        embed: EmbedOptions,
        format: WeightFormat,
    ) -> Result<Self> {
        let mut opts = opts.clone();
        opts.format = format;
        let model = Model::load(path, &opts)?;
        Ok(Self::Llama(Embedder::new(Arc::new(model), embed)))
    }

    /// Load all-MiniLM-L6-v2 from `dir` on rag's own engine (see [`MiniLm::load`]).
    pub fn minilm(dir: &Path) -> Result<Self> {
        Self::minilm_on(dir, Runtime::Engine)
    }

    /// Load all-MiniLM-L6-v2 from `dir` on the given runtime (an index's own, see
    /// [`Runtime::of_id`]).
    pub fn minilm_on(dir: &Path, runtime: Runtime) -> Result<Self> {
        let opts = MiniLmOptions {
            runtime,
            ..MiniLmOptions::default()
        };
        Ok(Self::MiniLm(Box::new(MiniLm::load_with(dir, opts)?)))
    }

    /// How a Llama embedder's weights are held, for a Llama embedder.
    pub fn llama_format(&self) -> Option<WeightFormat> {
        match self {
            Self::Llama(e) => Some(e.weight_format()),
            Self::MiniLm(_) => None,
        }
    }

    /// The MiniLM runtime, for a MiniLM embedder.
    pub fn minilm_runtime(&self) -> Option<Runtime> {
        match self {
            Self::Llama(_) => None,
            Self::MiniLm(m) => Some(m.runtime()),
        }
    }

    /// Which kind this is.
    pub fn kind(&self) -> EmbedderKind {
        match self {
            Self::Llama(_) => EmbedderKind::Llama,
            Self::MiniLm(_) => EmbedderKind::MiniLm,
        }
    }

    /// Identifies what made the vectors (recorded in the index manifest).
    pub fn id(&self) -> String {
        match self {
            Self::Llama(e) => e.id(),
            Self::MiniLm(m) => m.id(),
        }
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        match self {
            Self::Llama(e) => e.dim(),
            Self::MiniLm(m) => m.dim(),
        }
    }

    /// Tokens of `text` as this embedder counts them (the chunker sizes chunks with this).
    pub fn count_tokens(&self, text: &str) -> usize {
        match self {
            Self::Llama(e) => e.count_tokens(text),
            Self::MiniLm(m) => m.count_tokens(text),
        }
    }

    /// Unit vectors of `texts`, in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Llama(e) => e.embed(texts),
            Self::MiniLm(m) => m.embed(texts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::variant_of_id;
    use crate::embed::Pooling;
    use crate::hparams::HiddenLayer;

    #[test]
    fn kinds_and_variants_from_ids() {
        assert_eq!(
            EmbedderKind::of_id("minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256"),
            EmbedderKind::MiniLm
        );
        assert_eq!(
            EmbedderKind::of_id("minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256:q8"),
            EmbedderKind::MiniLm
        );
        let llama = "llama:SmolLM2-135M-Instruct.Q4_1.gguf:98362432:mean:final";
        assert_eq!(EmbedderKind::of_id(llama), EmbedderKind::Llama);
        assert_eq!(
            variant_of_id(llama),
            Some((Pooling::Mean, HiddenLayer::Final))
        );
        assert_eq!(
            variant_of_id("llama:m.gguf:1:last:layer15"),
            Some((Pooling::LastToken, HiddenLayer::After(15)))
        );
        assert_eq!(variant_of_id("llama:m.gguf:1:max:final"), None);
        assert_eq!(variant_of_id("test/emb"), None);
        assert_eq!("minilm".parse::<EmbedderKind>(), Ok(EmbedderKind::MiniLm));
        assert!("bert".parse::<EmbedderKind>().is_err());
    }
}
