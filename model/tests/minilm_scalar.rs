//! all-MiniLM-L6-v2 on rag's engine with the portable kernels (`RAG_KERNELS=scalar`, or a CPU
//! without AVX2): the same model as with the fast ones, to float noise. Its own test binary:
//! the kernel choice is process-wide. Skips with a printed reason when the model has not been
//! fetched.
mod common;

use rag_model::engine::quant::{self, Kernels};
use rag_model::{cosine, MiniLm, MiniLmOptions, MiniLmRuntime};

#[test]
fn portable_kernels_embed_as_the_fast_ones() {
    let Some(dir) = common::minilm_dir() else {
        return;
    };
    let engine = MiniLm::load(&dir).unwrap();
    let candle = MiniLm::load_with(
        &dir,
        MiniLmOptions {
            runtime: MiniLmRuntime::Candle,
            ..MiniLmOptions::default()
        },
    )
    .unwrap();
    let texts = [
        "The Black Death was a plague pandemic that reached Norway in 1349.",
        "Hello world",
        "Quarterly revenue grew by ten percent while costs fell.",
        "Café déjà vu, naïve résumé",
    ];
    let detected = quant::kernels();
    let fast = engine.embed(&texts).unwrap();
    assert_eq!(quant::set_kernels(Kernels::Scalar), Kernels::Scalar);
    let portable = engine.embed(&texts).unwrap();
    quant::set_kernels(detected);
    let reference = candle.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        // The matrix products give the same bits with either kernels; attention, GELU and the
        // norms sum in another order without AVX2.
        let same = cosine(&fast[i], &portable[i]);
        assert!(same >= 0.99999, "{t:?}: portable vs fast {same}");
        let c = cosine(&portable[i], &reference[i]);
        assert!(c >= 0.999, "{t:?}: portable vs candle {c}");
    }
}
