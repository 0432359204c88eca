//! The CPU engine for quantized Llama weights, layer by layer:
//!
//! - [`quant`]: the kernels. `quant/blocks.rs` holds the typed GGUF blocks and the eight-row
//!   interleaved layouts, `quant/scalar.rs` the portable reference kernels, `quant/avx2.rs` the
//!   AVX2 ones (`quant/avx2_k.rs` those of the K-quants' interleaved layout, AVX2 and
//!   AVX-VNNI), and `quant/mod.rs` the dispatch between them (detected at run time; all
//!   bit-identical).
//! - [`matrix`]: a weight matrix in its stored layout and the parallel matrix products.
//! - [`attn`]: causal attention over the f16 KV cache; [`vmath`]: `exp` and SiLU.
//! - [`forward`]: the Llama decoder forward on all of the above, and its KV cache.
//!
//! Nothing here knows of candle tensors beyond reading GGUF tensor types and dequantizing the
//! few tensors without a kernel at load.
pub mod attn;
pub mod forward;
pub mod matrix;
pub mod quant;
pub mod vmath;

pub use forward::{Cache, TensorSource, Weights};
pub use matrix::{matmul_many, quantize, Input, QMatrix};
