//! Model runtime: GGUF loading, tokenizer, Llama forward, generation, embeddings.
pub mod tokenizer;
