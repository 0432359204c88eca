//! Helpers for the command-line tests: the model helpers shared with the rag-model tests (where
//! the models are, a tiny Llama 2 GGUF) and a command's output as text.
#![allow(dead_code)]

#[path = "../../model/tests/common/mod.rs"]
mod model_common;

pub use model_common::*;

/// A command's stdout and stderr together, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
