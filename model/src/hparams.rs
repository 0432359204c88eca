//! Llama hyper-parameters, read from a GGUF's `llama.*` metadata, and the choice of which
//! hidden states a forward returns. Both forwards (candle's dense path in [`crate::dense`] and
//! the CPU engine in [`crate::engine`]) take these; neither depends on the other.
use crate::error::Result;
use crate::gguf::GgufFile;

/// Hyperparameters read from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ctx_train: usize,
    pub rope_freq_base: f32,
    pub rms_eps: f64,
    pub vocab_size: usize,
}

impl LlamaConfig {
    /// Read the hyperparameters of a `llama` GGUF.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = "llama";
        let n_embd = g.arch_u32(arch, "embedding_length")?;
        let n_head = g.arch_u32(arch, "attention.head_count")?;
        let n_kv_head = g
            .arch_u32(arch, "attention.head_count_kv")
            .unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(g.bad(format!(
                "inconsistent attention sizes: embedding {n_embd}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = n_embd / n_head;
        if let Ok(rope_dim) = g.arch_u32(arch, "rope.dimension_count") {
            if rope_dim != head_dim {
                return Err(g.bad(format!(
                    "partial rotary embeddings (rope dimension {rope_dim}, head dimension {head_dim}) are not supported"
                )));
            }
        }
        let vocab_size = match g.arch_u32(arch, "vocab_size") {
            Ok(v) => v,
            Err(_) => g
                .content
                .tensor_infos
                .get("token_embd.weight")
                .map(|i| i.shape.dims()[0])
                .ok_or_else(|| g.bad("tensor token_embd.weight is missing".into()))?,
        };
        Ok(Self {
            n_layer: g.arch_u32(arch, "block_count")?,
            n_embd,
            n_ff: g.arch_u32(arch, "feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim,
            n_ctx_train: g.arch_u32(arch, "context_length")?,
            rope_freq_base: g.arch_f32(arch, "rope.freq_base").unwrap_or(10_000.0),
            rms_eps: g
                .arch_f32(arch, "attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5) as f64,
            vocab_size,
        })
    }
}

/// Which hidden states a forward pass returns.
///
/// ```
/// use rag_model::HiddenLayer;
/// assert_eq!(HiddenLayer::default(), HiddenLayer::Final);
/// let middle = HiddenLayer::After(15); // the residual stream after block 15
/// assert_ne!(middle, HiddenLayer::Final);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenLayer {
    /// After the last block and the final RMSNorm (what the LM head sees).
    #[default]
    Final,
    /// The residual stream after block `n` (0-based), stopping the forward there.
    After(usize),
}
