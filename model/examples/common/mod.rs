//! Helpers shared by the speed examples.

/// `n` deterministic pseudo-random values in [-0.05, 0.05) from `seed` (an LCG): weights and
/// activations of the size real ones have.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}
