//! Helpers shared by the integration tests: a seeded generator, unit vectors, chunks.
#![allow(dead_code)]

use rag_index::NewChunk;

/// splitmix64: small, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn gauss(&mut self) -> f32 {
        let u1 = self.f32().max(1e-7);
        let u2 = self.f32();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    pub fn unit(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.gauss()).collect();
        normalize(v)
    }
}

pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    for x in &mut v {
        *x /= n;
    }
    v
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A chunk with text and vector, other fields filled plausibly.
pub fn chunk(text: &str, vector: Vec<f32>) -> NewChunk {
    NewChunk {
        text: text.to_string(),
        title: None,
        heading: None,
        pages: None,
        byte_range: 0..text.len(),
        modified: None,
        vector,
    }
}

/// `n` chunks of a document, with texts that name the document and version.
pub fn doc_chunks(rng: &mut Rng, dim: usize, doc: &str, version: u32, n: usize) -> Vec<NewChunk> {
    (0..n)
        .map(|j| {
            let text = format!("{doc} version v{version} part p{j} common words here");
            NewChunk {
                title: Some(format!("Title of {doc}")),
                heading: Some(format!("Section {j} > Sub")),
                pages: Some((j as u32 + 1, j as u32 + 2)),
                byte_range: j * 100..j * 100 + 90,
                ..chunk(&text, rng.unit(dim))
            }
        })
        .collect()
}
