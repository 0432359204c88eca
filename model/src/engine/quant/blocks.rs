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

/// How the Q6_K products of [`super::gemm_x8`] take their activations and scales
/// ([`super::q6k_form`]). Each form is exact in its integer sums; they differ in the
/// activations' rounding and in their float steps, so each gives its own bits, the same with
/// the fast kernels and the scalar ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Q6kForm {
    /// Ordinary activation blocks (a scale per 32 columns) and a float step per 16 columns,
    /// `fma(sum, (d·scale)·d_a, acc)`: VNNI on 256-bit registers (AVX-VNNI without AVX-512,
    /// or the 512-bit loops turned off).
    Blocks,
    /// Activations with one scale per 256 columns ([`super::quantize_row_q8_units`]); each
    /// row's sixteen 8-bit scales fold into its integer sum (`madd`, free on AVX2), one float
    /// step per 256 columns, `fma(sum, d·d_a, acc)`.
    UnitsFolded,
    /// Activations with one scale per 256 columns; per 16 columns the integer sum times its
    /// 8-bit scale by an FMA into a float sum over the 256 columns (a 32-bit integer multiply
    /// is slow on AVX-512 cores), then `fma(sum, d·d_a, acc)`.
    UnitsFloat,
}

/// Whether [`repack_x8`] handles `ty`: the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
/// the K-quants Q4_K, Q5_K, Q6_K.
pub fn has_x8(ty: QType) -> bool {
    !matches!(ty, QType::F32 | QType::F16)
}

/// Bytes of one unit of eight interleaved rows of `ty` ([`repack_x8`]): a 32-column block for
/// the 32-element formats (the same as eight blocks of `ty`), a 256-column superblock for the
/// K-quants (Q4_K and Q5_K a little more than eight blocks: their 6-bit scales are unpacked
/// to bytes).
pub fn x8_block_bytes(ty: QType) -> usize {
    match ty {
        QType::Q4K => 16 + 16 + 64 + 64 + 1024,
        QType::Q5K => 16 + 16 + 64 + 64 + 256 + 1024,
        _ => 8 * ty.block_bytes(),
    }
}

/// Bytes of one group of eight interleaved rows of `cols` columns.
pub fn x8_group_bytes(ty: QType, cols: usize) -> usize {
    cols / ty.block_elems().max(32) * x8_block_bytes(ty)
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

/// Rows of a block format regrouped eight at a time for [`super::gemm_x8`]. The K-quants are
/// regrouped per 256-column unit (see `KLayout` in this module's source). For the 32-element formats, for each
/// group of eight rows and each 32-column block: each f16 field (the scale, then for Q4_1 /
/// Q5_1 the minimum) of the eight rows; for Q5_0 / Q5_1, eight 32-bit words, word `k` holding
/// the fifth bits of columns `4k..4k + 4` of all eight rows (row `r`'s at bits `4r..4r + 4`);
/// then the quant bytes in 32-byte chunks, chunk `m` holding bytes `4m..4m + 4` of each row
/// (row `r` at bytes `4r..4r + 4`). The same size as the input, and done in place (a group of
/// eight rows occupies the same bytes before and after), so loading needs no second copy of
/// a matrix; `rows` must be a multiple of 8 (and for the K-quants `cols` of 256).
pub fn repack_x8(ty: QType, mut data: Vec<u8>, rows: usize, cols: usize) -> Vec<u8> {
    if ty.block_elems() == 256 {
        return repack_x8k(ty, data, rows, cols);
    }
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
    if ty.block_elems() == 256 {
        return x8k_row(ty, packed, cols, r);
    }
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

/// Where the parts of a K-quant unit of eight rows lie ([`repack_x8`]): the f16 fields, the
/// unpacked scales (and for Q4_K / Q5_K the minimums), the high bits and the low nibbles.
#[derive(Clone, Copy, Debug)]
pub(super) struct KLayout {
    /// The eight rows' `d` (f16), then for Q4_K / Q5_K their `dmin`.
    pub dmin: usize,
    /// Q4_K / Q5_K: byte `8j + r` is sub-block `j`'s 6-bit scale of row `r`; Q6_K: byte
    /// `8k + r` is row `r`'s signed scale of 16-column group `k`.
    pub sc: usize,
    /// Q4_K / Q5_K: byte `8j + r` is sub-block `j`'s 6-bit minimum of row `r`.
    pub m: usize,
    /// Q5_K's high bits (bit `j` of byte `l` is the fifth bit of column `l` of sub-block
    /// `j`), in 32-byte chunks: chunk `p` holds bytes `4p..4p + 4` of each row (row `r` at
    /// `4r`). Q4_K and Q6_K have none (the same offset as `qs`).
    pub qh: usize,
    /// The quants. Q4_K / Q5_K: the low nibbles in the same 32-byte chunks (byte `l` of
    /// 64-column part `c` holds column `64c + l` low and `64c + 32 + l` high). Q6_K: three
    /// 32-byte planes per piece (see [`q6k_at`]), so that four registers of 6-bit weights
    /// come out of three loads with eleven operations.
    pub qs: usize,
}

/// Q6_K, in an x8 unit from `k_layout(Q6K).qs`: where the byte of row `r` and columns `4k +
/// c` (c < 4) of plane `p` (0..3) of half `h` lies. Plane `p` holds sub-block `4h + p`'s
/// 6-bit weights (0..63) in bits 0..6, and bits `2p..2p + 2` of sub-block `4h + 3`'s in bits
/// 6..8; so a 32-byte plane is one register of the x8 kernels (row `r` at bytes `4r..4r + 4`).
#[inline(always)]
pub(super) fn q6k_at(h: usize, k: usize, p: usize, r: usize, c: usize) -> usize {
    768 * h + 96 * k + 32 * p + 4 * r + c
}

/// Q6_K: the 6-bit weight (0..63) of element `n` (0..256) of a block in the file's format.
#[inline(always)]
pub(super) fn q6k_source(src: &[u8], n: usize) -> u8 {
    let (h, g, l) = (n / 128, n % 128 / 32, n % 32);
    let x = src[64 * h + 32 * (g & 1) + l];
    let nib = if g < 2 { x & 0xF } else { x >> 4 };
    nib | (((src[128 + 32 * h + l] >> (2 * g)) & 3) << 4)
}

/// Q6_K: the 6-bit weight (0..63) of row `r`, sub-block `j` (0..8), column `col` (0..32) of
/// the planes `qs` of an x8 unit (see [`q6k_at`]).
#[inline(always)]
pub(super) fn q6k_x8(qs: &[u8], r: usize, j: usize, col: usize) -> u8 {
    let (h, i, k, c) = (j / 4, j % 4, col / 4, col % 4);
    let at = |p: usize| qs[q6k_at(h, k, p, r, c)];
    if i < 3 {
        at(i) & 63
    } else {
        (0..3).fold(0, |v, p| v | ((at(p) >> 6) << (2 * p)))
    }
}

/// The unit layout of a K-quant.
pub(super) fn k_layout(ty: QType) -> KLayout {
    match ty {
        QType::Q4K => KLayout {
            dmin: 16,
            sc: 32,
            m: 96,
            qh: 160,
            qs: 160,
        },
        QType::Q5K => KLayout {
            dmin: 16,
            sc: 32,
            m: 96,
            qh: 160,
            qs: 416,
        },
        QType::Q6K => KLayout {
            dmin: 16,
            sc: 16,
            m: 16,
            qh: 144,
            qs: 144,
        },
        _ => unreachable!("K layout for {ty:?}"),
    }
}

/// (offset of d, of dmin, of the 12 scale bytes, of qh, of qs) in a source block of a K-quant
/// (Q6_K: its 16 scales at the scale offset, no dmin).
fn k_source(ty: QType) -> (usize, usize, usize, usize, usize) {
    match ty {
        QType::Q4K => (0, 2, 4, 16, 16),
        QType::Q5K => (0, 2, 4, 16, 48),
        _ => (208, 208, 192, 128, 0),
    }
}

/// The K-quant part of [`repack_x8`]: units of 256 columns (see [`KLayout`]). Q6_K keeps its
/// size and is regrouped in place; Q4_K and Q5_K grow by 32 bytes a unit (their packed 6-bit
/// scales are unpacked to bytes), so the rows are copied, one group of eight at a time, into
/// a new vector as the old one is read.
fn repack_x8k(ty: QType, mut data: Vec<u8>, rows: usize, cols: usize) -> Vec<u8> {
    let (nb, bb, xb) = (cols / 256, ty.block_bytes(), x8_block_bytes(ty));
    assert!(
        rows.is_multiple_of(8) && cols.is_multiple_of(256) && data.len() == rows * nb * bb,
        "repack_x8: {} bytes of {ty:?} for {rows}x{cols}",
        data.len()
    );
    if ty == QType::Q6K {
        // A group of eight rows occupies the same bytes before and after (xb == 8 · bb).
        let mut group = vec![0u8; 8 * nb * bb];
        for out in data.chunks_exact_mut(8 * nb * bb) {
            group.copy_from_slice(out);
            out.fill(0);
            for b in 0..nb {
                for r in 0..8 {
                    let src = &group[(r * nb + b) * bb..][..bb];
                    pack_k_row(ty, src, &mut out[b * xb..][..xb], r);
                }
            }
        }
        return data;
    }
    let mut out = vec![0u8; rows / 8 * nb * xb];
    for g in 0..rows / 8 {
        for b in 0..nb {
            let o = &mut out[(g * nb + b) * xb..][..xb];
            for r in 0..8 {
                let src = &data[((8 * g + r) * nb + b) * bb..][..bb];
                pack_k_row(ty, src, o, r);
            }
        }
    }
    out
}

/// Row `r`'s source block `src` into its places in the unit `o`.
fn pack_k_row(ty: QType, src: &[u8], o: &mut [u8], r: usize) {
    let l = k_layout(ty);
    let (d_at, dmin_at, sc_at, qh_at, qs_at) = k_source(ty);
    o[2 * r..2 * r + 2].copy_from_slice(&src[d_at..d_at + 2]);
    let chunks = |o: &mut [u8], at: usize, from: &[u8]| {
        for p in 0..from.len() / 4 {
            o[at + 32 * p + 4 * r..][..4].copy_from_slice(&from[4 * p..4 * p + 4]);
        }
    };
    if ty == QType::Q6K {
        for k in 0..16 {
            o[l.sc + 8 * k + r] = src[sc_at + k];
        }
        let qs = &mut o[l.qs..];
        for n in 0..256 {
            let v = q6k_source(src, n);
            let (h, i, k, c) = (n / 128, n % 128 / 32, n % 32 / 4, n % 4);
            if i < 3 {
                qs[q6k_at(h, k, i, r, c)] |= v;
            } else {
                for p in 0..3 {
                    qs[q6k_at(h, k, p, r, c)] |= ((v >> (2 * p)) & 3) << 6;
                }
            }
        }
        return;
    }
    o[l.dmin + 2 * r..l.dmin + 2 * r + 2].copy_from_slice(&src[dmin_at..dmin_at + 2]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &src[sc_at..sc_at + 12]);
        o[l.sc + 8 * j + r] = sc;
        o[l.m + 8 * j + r] = m;
    }
    if ty == QType::Q5K {
        chunks(o, l.qh, &src[qh_at..qh_at + 32]);
    }
    chunks(o, l.qs, &src[qs_at..qs_at + 128]);
}

/// The K-quant part of [`x8_row`].
fn x8k_row(ty: QType, packed: &[u8], cols: usize, r: usize) -> Vec<u8> {
    let (nb, bb, xb) = (cols / 256, ty.block_bytes(), x8_block_bytes(ty));
    let l = k_layout(ty);
    let (d_at, dmin_at, sc_at, qh_at, qs_at) = k_source(ty);
    let (g, k) = (r / 8, r % 8);
    let mut row = vec![0u8; nb * bb];
    let chunks = |to: &mut [u8], o: &[u8], at: usize| {
        for p in 0..to.len() / 4 {
            to[4 * p..4 * p + 4].copy_from_slice(&o[at + 32 * p + 4 * k..][..4]);
        }
    };
    for b in 0..nb {
        let o = &packed[(g * nb + b) * xb..][..xb];
        let dst = &mut row[b * bb..(b + 1) * bb];
        dst[d_at..d_at + 2].copy_from_slice(&o[2 * k..2 * k + 2]);
        if ty == QType::Q6K {
            for j in 0..16 {
                dst[sc_at + j] = o[l.sc + 8 * j + k];
            }
            for n in 0..256 {
                let v = q6k_x8(&o[l.qs..], k, n / 32, n % 32);
                let (h, g, i) = (n / 128, n % 128 / 32, n % 32);
                dst[qs_at + 64 * h + 32 * (g & 1) + i] |= (v & 0xF) << if g < 2 { 0 } else { 4 };
                dst[qh_at + 32 * h + i] |= (v >> 4) << (2 * g);
            }
            continue;
        }
        dst[dmin_at..dmin_at + 2].copy_from_slice(&o[l.dmin + 2 * k..][..2]);
        let (sc, m): (Vec<u8>, Vec<u8>) = (0..8)
            .map(|j| (o[l.sc + 8 * j + k], o[l.m + 8 * j + k]))
            .unzip();
        let q = &mut dst[sc_at..sc_at + 12];
        for j in 0..4 {
            q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
            q[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        if ty == QType::Q5K {
            chunks(&mut dst[qh_at..qh_at + 32], o, l.qh);
        }
        chunks(&mut dst[qs_at..qs_at + 128], o, l.qs);
    }
    row
}
