//! CPU compute kernels for the Llama forward pass: quantized dot products that read GGUF
//! weight blocks in place (see [`quant`]).
pub mod quant;
