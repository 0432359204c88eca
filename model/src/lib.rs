//! rag-model: the model runtime of rag. It loads any Llama-architecture GGUF (one file is enough:
//! the tokenizer and the chat template come from its metadata), generates text, and turns texts
//! into vectors (Llama hidden states, or the all-MiniLM-L6-v2 sentence encoder). It depends on no
//! other crate of the workspace and knows nothing of indexes, retrieval or the command line.
//!
//! ```no_run
//! use rag_model::{GenerateParams, Model, ModelOptions};
//!
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &ModelOptions::default())?;
//! let ids = model.chat_prompt("You are a helpful assistant.", "Hi!").encode(model.tokenizer());
//! let answer = model.generate(&ids, &GenerateParams::default(), &mut |piece| print!("{piece}"))?;
//! println!("\n[{} tokens, stop: {:?}]", answer.tokens.len(), answer.stop);
//! # Ok::<(), rag_model::ModelError>(())
//! ```
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `gguf` | opening a GGUF: magic, header, tensor bounds; raw tensor bytes |
//! | `hparams` | Llama hyper-parameters from `llama.*` metadata; which hidden states to return |
//! | `tokenizer/` | GPT-2 byte-level BPE and Llama SentencePiece, built from `tokenizer.ggml.*` |
//! | `template` | chat templates (Llama 2, ChatML; text in the repository's `prompts/`) |
//! | `model` | [`Model`]: tokenizer + template + weights; [`ModelInfo`] |
//! | `llama` | [`Llama`]: picks the forward for the weight format; the KV cache |
//! | [`engine`] | the CPU engine for quantized weights: kernels, matrices, attention, forward |
//! | `dense` | the forward on candle tensors (f32 / f16 weights, candle's quantized matmul) |
//! | `generate` | prefill, sessions (scoring, hidden states), sampling, streaming, stopping |
//! | `span` | constrained decoding of quotes: the best span of the passages as a whole answer |
//! | `embed`, `minilm/`, `text_embedder` | embedders: Llama hidden states, all-MiniLM-L6-v2, either |
mod dense;
mod embed;
pub mod engine;
mod error;
mod generate;
mod gguf;
mod hparams;
mod llama;
mod minilm;
mod model;
mod span;
mod template;
mod text_embedder;
mod tokenizer;

pub use embed::{
    cosine, llama_format_of_id, normalize, standardized_of_id, variant_of_id, EmbedOptions,
    Embedder, Pooling,
};
pub use error::{ModelError, Result};
pub use generate::{greedy, Cancel, GenerateParams, Generation, Session, StopReason};
pub use gguf::GgufFile;
pub use hparams::{HiddenLayer, LlamaConfig};
pub use llama::{Fed, KvCache, Llama, Logits, WeightFormat};
pub use minilm::wordpiece::WordPiece;
pub use minilm::{MiniLm, MiniLmOptions, Runtime as MiniLmRuntime, MINILM_DIR};
pub use model::{
    default_threads, set_threads, Model, ModelInfo, ModelOptions, PromptFormat, DEFAULT_MAX_CONTEXT,
};
pub use span::{Span, SpanQuery};
pub use template::{ChatTemplate, Prompt, TemplateFamily};
pub use text_embedder::{EmbedderKind, TextEmbedder, DEFAULT_EMBEDDER};
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerFamily};
