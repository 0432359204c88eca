//! Typed quant blocks: the GGUF block formats the engine reads ([`QType`]: sizes, GGML
//! mapping), the 8-bit activation block ([`BlockQ8`]), the eight-row interleaved layout of
//! the 32-element formats ([`repack_x8`], [`x8_row`]) and the byte-level helpers the kernels
//! share (f16 fields, K-quant scales). No arithmetic kernel lives here.

use candle_core::quantized::GgmlDType;
/// A weight row's storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl QType {
    /// All supported types.
    pub const ALL: [QType; 10] = [
        QType::F32,
        QType::F16,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q8_0,
        QType::Q4K,
        QType::Q5K,
        QType::Q6K,
    ];

    /// The kernel type for a GGML tensor type; `None` when unsupported (BF16, Q8_1, Q2K,
    /// Q3K, Q8K).
    pub fn from_ggml(t: GgmlDType) -> Option<QType> {
        Some(match t {
            GgmlDType::F32 => QType::F32,
            GgmlDType::F16 => QType::F16,
            GgmlDType::Q4_0 => QType::Q4_0,
            GgmlDType::Q4_1 => QType::Q4_1,
            GgmlDType::Q5_0 => QType::Q5_0,
            GgmlDType::Q5_1 => QType::Q5_1,
            GgmlDType::Q8_0 => QType::Q8_0,
            GgmlDType::Q4K => QType::Q4K,
            GgmlDType::Q5K => QType::Q5K,
            GgmlDType::Q6K => QType::Q6K,
            _ => return None,
        })
    }

    /// The matching GGML type.
    pub fn to_ggml(self) -> GgmlDType {
        match self {
            QType::F32 => GgmlDType::F32,
            QType::F16 => GgmlDType::F16,
            QType::Q4_0 => GgmlDType::Q4_0,
            QType::Q4_1 => GgmlDType::Q4_1,
            QType::Q5_0 => GgmlDType::Q5_0,
            QType::Q5_1 => GgmlDType::Q5_1,
            QType::Q8_0 => GgmlDType::Q8_0,
            QType::Q4K => GgmlDType::Q4K,
            QType::Q5K => GgmlDType::Q5K,
            QType::Q6K => GgmlDType::Q6K,
        }
    }

    /// Elements per block: 1 for F32/F16, 32 for the simple quants, 256 for the K-quants.
    pub fn block_elems(self) -> usize {
        match self {
            QType::F32 | QType::F16 => 1,
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0 => 32,
            QType::Q4K | QType::Q5K | QType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 => 2,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q5_1 => 24,
            QType::Q8_0 => 34,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
        }
    }

    /// Bytes in a row of `cols` elements. Panics unless `cols` is a multiple of
    /// [`block_elems`](Self::block_elems).
    pub fn row_bytes(self, cols: usize) -> usize {
        let be = self.block_elems();
        assert!(
            cols.is_multiple_of(be),
            "{self:?} row of {cols} elements: not a multiple of {be}"
        );
        cols / be * self.block_bytes()
    }
}

/// One 32-element block of a quantized activation row. d = scale, s = d * sum(qs),
/// qs = round(x/d) (ties to even), |qs| <= 127.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// Whether [`repack_x8`] handles `ty`: the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
pub fn has_x8(ty: QType) -> bool {
    matches!(
        ty,
        QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0
    )
}

/// Bytes of one block (32 columns) of eight interleaved rows of `ty` ([`repack_x8`]): the
/// same as eight blocks of `ty`.
pub fn x8_block_bytes(ty: QType) -> usize {
    8 * ty.block_bytes()
}

/// (f16 fields, has the 5th-bit word, bytes of quants) of a block of `ty`.
pub(super) fn x8_parts(ty: QType) -> (usize, bool, usize) {
    match ty {
        QType::Q4_0 => (1, false, 16),
        QType::Q4_1 => (2, false, 16),
        QType::Q5_0 => (1, true, 16),
        QType::Q5_1 => (2, true, 16),
        QType::Q8_0 => (1, false, 32),
        _ => unreachable!("x8 layout for {ty:?}"),
    }
}

/// Rows of a 32-element block format regrouped eight at a time for [`super::gemm_x8`]. For each
/// group of eight rows and each 32-column block: each f16 field (the scale, then for Q4_1 /
/// Q5_1 the minimum) of the eight rows; for Q5_0 / Q5_1, eight 32-bit words, word `k` holding
/// the fifth bits of columns `4k..4k + 4` of all eight rows (row `r`'s at bits `4r..4r + 4`);
/// then the quant bytes in 32-byte chunks, chunk `m` holding bytes `4m..4m + 4` of each row
/// (row `r` at bytes `4r..4r + 4`). The same size as the input, and done in place (a group of
/// eight rows occupies the same bytes before and after), so loading needs no second copy of
/// a matrix; `rows` must be a multiple of 8.
pub fn repack_x8(ty: QType, mut data: Vec<u8>, rows: usize, cols: usize) -> Vec<u8> {
    let (nb, bb, xb) = (cols / 32, ty.block_bytes(), x8_block_bytes(ty));
    assert!(
        has_x8(ty)
            && rows.is_multiple_of(8)
            && cols.is_multiple_of(32)
            && data.len() == rows * nb * bb,
        "repack_x8: {} bytes of {ty:?} for {rows}x{cols}",
        data.len()
    );
    let (nf, five, nq) = x8_parts(ty);
    let (qh_at, qs_at) = (2 * nf, bb - nq); // in a source block
    let chunks_at = 16 * nf + if five { 32 } else { 0 }; // in an x8 block
    let mut group = vec![0u8; 8 * nb * bb];
    for g in 0..rows / 8 {
        let span = g * 8 * nb * bb..(g + 1) * 8 * nb * bb;
        group.copy_from_slice(&data[span.clone()]);
        let out = &mut data[span];
        out.fill(0);
        for b in 0..nb {
            let o = &mut out[b * xb..][..xb];
            for r in 0..8 {
                let src = &group[(r * nb + b) * bb..][..bb];
                for f in 0..nf {
                    o[16 * f + 2 * r..16 * f + 2 * r + 2].copy_from_slice(&src[2 * f..2 * f + 2]);
                }
                if five {
                    let qh = u32::from_le_bytes(src[qh_at..qh_at + 4].try_into().unwrap());
                    for k in 0..8 {
                        let at = 16 * nf + 4 * k;
                        let mut w = u32::from_le_bytes(o[at..at + 4].try_into().unwrap());
                        w |= ((qh >> (4 * k)) & 0xF) << (4 * r);
                        o[at..at + 4].copy_from_slice(&w.to_le_bytes());
                    }
                }
                for m in 0..nq / 4 {
                    let at = chunks_at + 32 * m + 4 * r;
                    o[at..at + 4].copy_from_slice(&src[qs_at + 4 * m..qs_at + 4 * m + 4]);
                }
            }
        }
    }
    data
}

/// Row `r` of [`repack_x8`] data back in `ty`'s own block format.
pub fn x8_row(ty: QType, packed: &[u8], cols: usize, r: usize) -> Vec<u8> {
    let (nb, bb, xb) = (cols / 32, ty.block_bytes(), x8_block_bytes(ty));
    let (nf, five, nq) = x8_parts(ty);
    let (qh_at, qs_at) = (2 * nf, bb - nq);
    let chunks_at = 16 * nf + if five { 32 } else { 0 };
    let (g, k) = (r / 8, r % 8);
    let mut row = vec![0u8; nb * bb];
    for b in 0..nb {
        let src = &packed[(g * nb + b) * xb..][..xb];
        let dst = &mut row[b * bb..(b + 1) * bb];
        for f in 0..nf {
            dst[2 * f..2 * f + 2].copy_from_slice(&src[16 * f + 2 * k..16 * f + 2 * k + 2]);
        }
        if five {
            let mut qh = 0u32;
            for j in 0..8 {
                let at = 16 * nf + 4 * j;
                let w = u32::from_le_bytes(src[at..at + 4].try_into().unwrap());
                qh |= ((w >> (4 * k)) & 0xF) << (4 * j);
            }
            dst[qh_at..qh_at + 4].copy_from_slice(&qh.to_le_bytes());
        }
        for m in 0..nq / 4 {
            let at = chunks_at + 32 * m + 4 * k;
            dst[qs_at + 4 * m..qs_at + 4 * m + 4].copy_from_slice(&src[at..at + 4]);
        }
    }
    row
}

/// IEEE half (little-endian bits) to f32, exact.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 => {
            // Zero or subnormal: man * 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[inline]
pub(super) fn rd_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The 6-bit (scale, min) pair `j` (0..8) of a Q4_K / Q5_K superblock's 12 scale bytes.
#[inline]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}
