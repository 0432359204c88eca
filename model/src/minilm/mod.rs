//! Sentence embeddings from all-MiniLM-L6-v2: a 6-layer, 384-wide BERT trained for sentence
//! similarity, the second embedder beside the Llama hidden states of [`crate::Embedder`].
//! It owns its weights and its [`WordPiece`] tokenizer, and does what sentence-transformers does
//! with the model: `[CLS] text [SEP]`, mean pooling over the real tokens, L2 normalisation. It
//! knows nothing of indexes or of which embedder a user picked.
//!
//! Two runtimes ([`Runtime`]): rag's own engine (the default: Q8_0 weights, the quantized
//! kernels of [`crate::engine`], texts packed without padding; see `bert.rs`), and
//! candle-transformers' [`BertModel`] over the memory-mapped f32 weights (padded batches with an
//! attention mask), kept as the reference the engine is tested against and for indexes built
//! with it.
//!
//! The model directory holds `config.json`, `tokenizer.json` and `model.safetensors` (the
//! layout of the model's Hugging Face repository).
mod bert;
pub mod wordpiece;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use sha2::{Digest, Sha256};

use crate::embed::{by_length, normalize};
use crate::error::{ModelError, Result};
use wordpiece::WordPiece;

/// The folder name of all-MiniLM-L6-v2 under a models folder (`$RAG_HOME/models` for the
/// `rag` command, whose fetch script fills it).
///
/// ```
/// let dir = std::path::Path::new("/cache/models").join(rag_model::MINILM_DIR);
/// assert!(dir.ends_with("all-MiniLM-L6-v2"));
/// ```
pub const MINILM_DIR: &str = "all-MiniLM-L6-v2";

/// How [`MiniLm`] embeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniLmOptions {
    /// Tokens per text, `[CLS]` and `[SEP]` included; longer texts are truncated. Default 256:
    /// all-MiniLM-L6-v2 was trained on sequences of at most 128 tokens and sentence-transformers
    /// runs it with `max_seq_length` 256, so positions past 256 are untrained in practice even
    /// though the position table has 512.
    pub max_tokens: usize,
    /// Padded tokens per forward batch. Default 2048: enough to amortise the matmuls, while the
    /// attention scores of a full batch of 256-token texts stay near 25 MB.
    pub batch_tokens: usize,
    /// What runs the model.
    pub runtime: Runtime,
}

/// What runs the BERT forward pass. The two give vectors that agree to a cosine above 0.999,
/// but not the same bits, so an index records which one made its vectors (the embedder id) and
/// is queried with that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// rag's own CPU engine: Q8_0 weights and 8-bit activations through the x8 kernels, f32
    /// attention, texts packed without padding. About 4x candle's speed on 2 cores.
    Engine,
    /// candle-transformers' f32 BERT: the reference.
    Candle,
}

impl Runtime {
    /// The runtime that made the vectors of an index whose embedder id is `id`: the engine's
    /// ids end in `:q8`; older MiniLM ids (before the engine) are candle's.
    ///
    /// ```
    /// use rag_model::MiniLmRuntime as Runtime;
    /// assert_eq!(Runtime::of_id("minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256:q8"), Runtime::Engine);
    /// assert_eq!(Runtime::of_id("minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256"), Runtime::Candle);
    /// ```
    pub fn of_id(id: &str) -> Self {
        if id.ends_with(":q8") {
            Self::Engine
        } else {
            Self::Candle
        }
    }
}

impl Default for MiniLmOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            batch_tokens: 2048,
            runtime: Runtime::Engine,
        }
    }
}

/// all-MiniLM-L6-v2 (or another BERT sentence model in the same layout): turns texts into unit
/// vectors.
pub struct MiniLm {
    forward: Forward,
    tokenizer: WordPiece,
    config: Config,
    opts: MiniLmOptions,
    id: String,
}

enum Forward {
    Engine(bert::Bert),
    Candle(BertModel),
}

impl MiniLm {
    /// Load the model in `dir` with the default [`MiniLmOptions`].
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, MiniLmOptions::default())
    }

    /// Load the model in `dir`. A missing file is an error that names it and says how to fetch
    /// it.
    pub fn load_with(dir: &Path, opts: MiniLmOptions) -> Result<Self> {
        let file = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::MissingFile {
                    path,
                    what: "MiniLM model",
                })
            }
        };
        let (config_path, tokenizer_path, weights_path) = (
            file("config.json")?,
            file("tokenizer.json")?,
            file("model.safetensors")?,
        );
        let bad = |path: &Path, detail: String| ModelError::BadModel {
            path: path.to_path_buf(),
            detail: format!("{detail}: download the model's files again"),
        };
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| bad(&config_path, format!("not a BERT config.json ({e})")))?;
        if opts.max_tokens < 2 || opts.max_tokens > config.max_position_embeddings {
            return Err(ModelError::InvalidInput(format!(
                "max_tokens is {} but must be from 2 to the model's {} positions",
                opts.max_tokens, config.max_position_embeddings
            )));
        }
        let tokenizer = WordPiece::from_file(&tokenizer_path)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(bad(
                &tokenizer_path,
                format!(
                    "{} tokens but the model has {} embeddings",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        let forward = match opts.runtime {
            Runtime::Engine => {
                if config.hidden_act != HiddenAct::Gelu {
                    return Err(ModelError::BadModel {
                        path: config_path,
                        detail: format!(
                            "hidden_act {:?}: rag's engine runs BERTs with \"gelu\" only; \
                             load it with Runtime::Candle",
                            config.hidden_act
                        ),
                    });
                }
                let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
                    .map_err(|e| bad(&weights_path, format!("cannot read the weights ({e})")))?;
                let bert = bert::Bert::new(&tensors, &config).map_err(|e| {
                    bad(
                        &weights_path,
                        format!("not BERT weights for config.json ({e})"),
                    )
                })?;
                Forward::Engine(bert)
            }
            Runtime::Candle => {
                // SAFETY: the file is memory-mapped read-only; rag never writes model files
                // while they are in use.
                let vb = unsafe {
                    VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, &Device::Cpu)
                }
                .map_err(|e| bad(&weights_path, format!("cannot read the weights ({e})")))?;
                Forward::Candle(BertModel::load(vb, &config).map_err(|e| {
                    bad(
                        &weights_path,
                        format!("not BERT weights for config.json ({e})"),
                    )
                })?)
            }
        };
        let name = dir
            .file_name()
            .map_or_else(|| MINILM_DIR.into(), |n| n.to_string_lossy().into_owned());
        let hash = sha256_hex(&weights_path)?;
        let runtime = match opts.runtime {
            Runtime::Engine => ":q8",
            Runtime::Candle => "",
        };
        let id = format!(
            "minilm:{name}:{}:mean:{}{runtime}",
            &hash[..12],
            opts.max_tokens
        );
        Ok(Self {
            forward,
            tokenizer,
            config,
            opts,
            id,
        })
    }

    /// Identifies what made the vectors, so an index refuses vectors from anything else: the
    /// model directory's name, the first 12 hex digits of the weights' sha256, the pooling and
    /// the token limit, and `:q8` for the engine's vectors, e.g.
    /// `minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256:q8`.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The vector dimension (384 for all-MiniLM-L6-v2).
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// Tokens per text after truncation, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.opts.max_tokens
    }

    /// Tokens of `text` as the model sees it, `[CLS]` and `[SEP]` included, before truncation.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.count(text)
    }

    /// The ids that [`embed`](Self::embed) runs for `text`: `[CLS]`, word pieces, `[SEP]`,
    /// truncated to [`max_tokens`](Self::max_tokens).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.opts.max_tokens)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// Embed texts; unit vectors come back in input order. Texts are batched by length, and a
    /// text's vector does not depend on what it is batched with.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t)).collect();
        by_length(&seqs, self.opts.batch_tokens, |_, batch| {
            self.embed_ids(batch)
        })
    }

    /// The runtime in use.
    pub fn runtime(&self) -> Runtime {
        match self.forward {
            Forward::Engine(_) => Runtime::Engine,
            Forward::Candle(_) => Runtime::Candle,
        }
    }

    /// Embed token sequences (each `[CLS] ... [SEP]`, at most the model's positions long, ids
    /// below its vocabulary size) in one batch.
    pub fn embed_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let max = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if seqs.iter().any(|s| s.is_empty()) || max > self.config.max_position_embeddings {
            return Err(ModelError::InvalidInput(format!(
                "MiniLM sequences must hold 1 to {} tokens",
                self.config.max_position_embeddings
            )));
        }
        let vocab = self.config.vocab_size;
        if let Some(&id) = seqs
            .iter()
            .flat_map(|s| s.iter())
            .find(|&&id| id as usize >= vocab)
        {
            return Err(ModelError::InvalidInput(format!(
                "token id {id} is past the model's {vocab} embeddings"
            )));
        }
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let bert = match &self.forward {
            Forward::Engine(bert) => {
                let mut vectors = bert.mean_states(seqs);
                vectors.iter_mut().for_each(|v| normalize(v));
                return Ok(vectors);
            }
            Forward::Candle(bert) => bert,
        };
        let device = Device::Cpu;
        let mut ids = Vec::with_capacity(seqs.len() * max);
        let mut mask = Vec::with_capacity(seqs.len() * max);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.resize(ids.len() + max - s.len(), self.tokenizer.pad_id());
            mask.resize(mask.len() + s.len(), 1u32);
            mask.resize(mask.len() + max - s.len(), 0);
        }
        let ids = Tensor::from_vec(ids, (seqs.len(), max), &device)?;
        let mask = Tensor::from_vec(mask, (seqs.len(), max), &device)?;
        let hidden = bert.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        // Mean over the real tokens: padded positions weigh zero.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let mean = hidden
            .broadcast_mul(&mask)?
            .sum(1)?
            .broadcast_div(&mask.sum(1)?)?;
        let mut vectors = mean.to_vec2::<f32>()?;
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

/// The sha256 of a file, in hex, read in a stream (the weights are 90 MB).
fn sha256_hex(path: &Path) -> Result<String> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).map_err(io)?, &mut hasher).map_err(io)?;
    Ok(format!("{:x}", hasher.finalize()))
}
