//! The CPU engine for quantized Llama weights: dot-product kernels that read GGUF weight blocks
//! in place ([`quant`]) and the decoder forward built on them ([`engine`]).
pub mod attn;
pub mod engine;
pub mod quant;
pub mod vmath;
