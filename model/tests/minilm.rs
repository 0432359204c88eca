//! all-MiniLM-L6-v2 on the real model: WordPiece ids against Hugging Face `tokenizers`, sentence
//! embeddings against an independent reference on both runtimes, rag's engine against candle's
//! f32 BERT, batch invariance. Skips with a printed reason when the model has not been fetched
//! (`make test` fetches it).
mod common;

use std::path::Path;
use std::sync::OnceLock;

use rag_model::cosine;
use rag_model::{MiniLm, MiniLmOptions, MiniLmRuntime};

/// The model on rag's engine (the default runtime).
fn model() -> Option<&'static MiniLm> {
    static M: OnceLock<Option<MiniLm>> = OnceLock::new();
    M.get_or_init(|| {
        let dir = common::minilm_dir()?;
        Some(MiniLm::load(&dir).expect("load all-MiniLM-L6-v2"))
    })
    .as_ref()
}

/// The model on candle's f32 BERT, the reference runtime.
fn candle() -> Option<&'static MiniLm> {
    static M: OnceLock<Option<MiniLm>> = OnceLock::new();
    M.get_or_init(|| {
        let dir = common::minilm_dir()?;
        let opts = MiniLmOptions {
            runtime: MiniLmRuntime::Candle,
            ..MiniLmOptions::default()
        };
        Some(MiniLm::load_with(&dir, opts).expect("load all-MiniLM-L6-v2 on candle"))
    })
    .as_ref()
}

/// Both runtimes, named.
fn both() -> Option<[(&'static str, &'static MiniLm); 2]> {
    Some([("engine", model()?), ("candle", candle()?)])
}

fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/all-minilm-l6-v2")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// (name, text, ids) of every case in tokenizer_cases.json.
fn tokenizer_cases() -> Vec<(String, String, Vec<u32>)> {
    fixture("tokenizer_cases.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["text"].as_str().unwrap().to_string(),
                ids(&c["ids"]),
            )
        })
        .collect()
}

#[test]
fn describes_itself() {
    let Some(m) = model() else { return };
    assert_eq!(m.dim(), 384);
    assert_eq!(m.max_tokens(), 256);
    assert_eq!(m.tokenizer().vocab_size(), 30_522);
    assert_eq!(m.id(), "minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256:q8");
    assert_eq!(m.runtime(), MiniLmRuntime::Engine);
    let c = candle().unwrap();
    assert_eq!(c.id(), "minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256");
    assert_eq!(MiniLmRuntime::of_id(&m.id()), MiniLmRuntime::Engine);
    assert_eq!(MiniLmRuntime::of_id(&c.id()), MiniLmRuntime::Candle);
}

#[test]
fn reproduces_reference_embeddings() {
    let Some(runtimes) = both() else { return };
    for (name, m) in runtimes {
        eprintln!("{name}:");
        reference_embeddings(name, m);
    }
}

fn reference_embeddings(name: &str, m: &MiniLm) {
    let reference = fixture("reference_embeddings.json");
    let reference = reference.as_object().unwrap();
    assert_eq!(reference.len(), 5);
    let texts: Vec<&str> = reference.keys().map(String::as_str).collect();
    // All five in one padded batch: they are 6 to 9 tokens long.
    let ours = m.embed(&texts).unwrap();
    let mut min = f32::INFINITY;
    for (text, v) in texts.iter().zip(&ours) {
        let r = &reference[*text];
        assert_eq!(m.encode(text), ids(&r["ids"]), "ids of {text:?}");
        let want: Vec<f32> = r["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), 384);
        let c = cosine(v, &want);
        eprintln!("cosine {c:.7}  {text}");
        // candle's f32 reproduces the reference to float noise; the engine's 8-bit products
        // to the 0.999.
        let floor = if name == "candle" { 0.99999 } else { 0.999 };
        assert!(
            c >= floor,
            "{name}: cosine {c} with the reference for {text:?}"
        );
        min = min.min(c);
    }
    eprintln!("{name}: minimum cosine with the reference: {min:.7}");
    let example = texts
        .iter()
        .position(|t| *t == "This is an example sentence")
        .unwrap();
    let want = [0.0677, 0.0635, 0.0487];
    for (got, want) in ours[example][..3].iter().zip(want) {
        let tol = if name == "candle" { 5e-5 } else { 2e-3 };
        assert!((got - want).abs() <= tol, "{name}: {got} vs {want}");
    }
}

#[test]
fn engine_agrees_with_candle_on_every_text() {
    let (Some(engine), Some(candle)) = (model(), candle()) else {
        return;
    };
    // The tokenizer cases (2 to 256 tokens after truncation: prose, code, accents, CJK,
    // numbers, long articles) and texts of every length from 1 word to 200.
    let cases = tokenizer_cases();
    let long = &cases.iter().find(|c| c.0 == "black_death").unwrap().1;
    let words: Vec<&str> = long.split_whitespace().collect();
    let mut texts: Vec<String> = cases.iter().map(|c| c.1.clone()).collect();
    for n in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 200] {
        texts.push(words[..n.min(words.len())].join(" "));
    }
    texts.push(String::new());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (a, b) = (engine.embed(&refs).unwrap(), candle.embed(&refs).unwrap());
    let mut worst = (f32::INFINITY, "");
    for ((x, y), t) in a.iter().zip(&b).zip(&refs) {
        let c = cosine(x, y);
        if t.trim().is_empty() {
            // [CLS] [SEP] alone: a vector of two special tokens, the hardest case for 8-bit
            // activations (nothing to average the rounding over) and never a chunk or query.
            assert!(c >= 0.998, "cosine {c} for the empty text");
            continue;
        }
        if c < worst.0 {
            worst = (c, t);
        }
    }
    eprintln!(
        "{} texts: lowest cosine engine vs candle {:.6} ({:?}...)",
        refs.len(),
        worst.0,
        &worst.1.chars().take(40).collect::<String>()
    );
    assert!(worst.0 >= 0.999, "cosine {} for {:?}", worst.0, worst.1);
}

#[test]
fn related_sentences_are_closest() {
    let Some(m) = model() else { return };
    let v = m
        .embed(&[
            "The cat sits on the mat",
            "A feline rests on a rug",
            "Quarterly revenue grew by ten percent",
        ])
        .unwrap();
    let (related, unrelated) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(related > unrelated + 0.2, "{related} vs {unrelated}");
}

#[test]
fn wordpiece_ids_match_the_tokenizers_library() {
    let Some(m) = model() else { return };
    let cases = tokenizer_cases();
    assert_eq!(cases.len(), 20);
    for (name, text, want) in &cases {
        let got = m.tokenizer().encode(text, usize::MAX);
        assert_eq!(&got, want, "case {name}: {text:?}");
        assert_eq!(m.count_tokens(text), want.len(), "case {name}");
    }
}

#[test]
fn long_texts_are_truncated_to_max_tokens() {
    let Some(m) = model() else { return };
    let (_, text, all) = tokenizer_cases()
        .into_iter()
        .find(|(name, ..)| name == "yuan_dynasty")
        .unwrap();
    assert!(m.count_tokens(&text) > 1000);
    let ids = m.encode(&text);
    assert_eq!(ids.len(), 256);
    assert_eq!(ids[..255], all[..255]);
    assert_eq!(ids[255], 102, "[SEP] is kept");
    // The vector is that of the first 256 tokens.
    let head = m.embed_ids(&[&ids]).unwrap();
    let whole = m.embed(&[&text]).unwrap();
    assert!(cosine(&head[0], &whole[0]) > 0.99999);
}

#[test]
fn vectors_do_not_depend_on_the_batch() {
    let Some(runtimes) = both() else { return };
    for (name, m) in runtimes {
        batch_invariance(name, m);
    }
}

fn batch_invariance(name: &str, m: &MiniLm) {
    let cases = tokenizer_cases();
    let long = &cases.iter().find(|c| c.0 == "black_death").unwrap().1;
    // Texts of 2 to 256 tokens, so the short ones are padded by hundreds of positions.
    let mut texts: Vec<&str> = vec![
        "",
        "Hello world",
        long,
        "The Black Death was a plague pandemic.",
        &long[..600],
        "Café déjà vu, naïve résumé",
    ];
    texts.extend(cases.iter().map(|c| c.1.as_str()));
    let together = m.embed(&texts).unwrap();
    let mut min = f32::INFINITY;
    for (t, v) in texts.iter().zip(&together) {
        let alone = m.embed(&[t]).unwrap();
        min = min.min(cosine(v, &alone[0]));
        if name == "engine" {
            // No padding and per-token quantization: the same bits in any batch.
            assert_eq!(v, &alone[0], "engine: {t:?} alone vs batched");
        }
    }
    eprintln!("{name}: minimum cosine alone vs batched: {min:.7}");
    assert!(min >= 0.9999, "{name}: minimum cosine {min}");
    // One explicitly padded batch of very different lengths, too.
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| m.encode(t)).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let padded = m.embed_ids(&refs).unwrap();
    for (a, b) in padded.iter().zip(&together) {
        assert!(cosine(a, b) >= 0.9999);
    }
    for v in &together {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[test]
fn missing_files_are_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = MiniLm::load(&dir.path().join("nowhere"))
        .err()
        .expect("no model there")
        .to_string();
    assert!(err.contains("nowhere/config.json"), "{err}");
    // The fix: what the folder must hold (the app adds where to fetch its default from).
    assert!(
        err.contains("config.json, tokenizer.json, model.safetensors"),
        "{err}"
    );
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = MiniLm::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    // All three present but config.json is not a BERT config.
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.path().join("model.safetensors"), "").unwrap();
    let err = MiniLm::load(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("config.json") && err.contains("not a BERT config.json"),
        "{err}"
    );
}
