//! AMX tile forms of the x8 kernels for Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K, for products
//! of sixteen or more tokens on CPUs with AMX-TILE and AMX-INT8 ([`super::amx`]). Each
//! block's (K-quants: sub-block's) integer sums come from one `tdpbssd`: sixteen tokens'
//! activation bytes (tile A, 16 × 32 bytes) against sixteen rows' weights (tile B: two
//! groups of eight rows in the x8 layout side by side, which is the tile's
//! four-bytes-a-column form), 256 sums at once. The weights of sixteen rows are unpacked
//! once per call by the 256-bit kernels' own code ([`super::avx2`], [`super::avx2_k`]) into
//! a buffer of tiles. The activations are copied once per call into the same order, sixteen
//! tokens' block a tile (512 contiguous bytes a product: 1.1-1.4x on Q4_K against loading the
//! tile straight from the interleaved blocks).
//!
//! The sums are exact, and each token's sixteen rows then take the float operations of the
//! 512-bit and 256-bit kernels, lane for lane, in the same order: the same bits. Rows left
//! over from whole tiles (a lone group of eight) and tokens (fewer than sixteen) go to
//! [`super::avx512`]. Q8_0 stays there too: its kernels wrap an activation of -128 against a
//! negative weight as `_mm256_sign_epi8` does, which an exact tile product would not.
//!
//! Every block's sums are stored and scaled in f32, as the other kernels do, and that float
//! work now dominates: 4 vector operations per token and sixteen rows for each 32 columns,
//! against one tile product. On the host this was written on, tile and vector work did not
//! overlap.
//!
//! Q6_K is not here. Its scales are per 16 columns, so a product could take only 16 bytes of
//! each token (a quarter of what a tile product can sum) and its sums were stored and
//! scaled twice as often: with ordinary activation blocks it ran at 232-271 GMAC/s where
//! the 512-bit loop of its units form ([`super::Q6kForm::UnitsFloat`]) runs at 310-334, and
//! in that units form (each 16 columns' sums times the 8-bit scale into a float sum per
//! unit, one float step per unit) at 274-300 (7B shapes, 128 tokens, two threads, a virtual
//! Xeon with AMX, 2026-12-07).
#![allow(clippy::needless_range_loop)]
use std::arch::asm;
use std::arch::x86_64::*;

use super::avx2::{unpack_q45, Unpacked};
use super::avx2_k::{unpack_k45, UnpackedK};
use super::avx512;
use super::blocks::{x8_block_bytes, x8_group_bytes, BlockQ8, QType};

/// Whether this CPU and kernel let a process use AMX-TILE and AMX-INT8: CPUID says so, the
/// OS enables the tile state (XCR0 bits 17 and 18), and Linux grants this process the tile
/// data (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, asked here, once).
pub(super) fn detect() -> bool {
    // SAFETY: CPUID is always there on x86_64; xgetbv after OSXSAVE says it may run.
    unsafe {
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        if !(tile && int8) || __cpuid(1).ecx & (1 << 27) == 0 {
            return false;
        }
        if xcr0() & (3 << 17) != 3 << 17 {
            return false;
        }
    }
    request_tile_data()
}

#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    _xgetbv(0)
}

#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with two integer arguments; it reads and writes no
    // memory of ours.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 158i64 => ret, // SYS_arch_prctl
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// A tile configuration (palette 1): tile `t` has `rows[t]` rows of `colsb[t]` bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// Tiles 0, 1, 2: A (16 tokens × 32 bytes), B (8 rows of 64 bytes), C (16 × 16 sums).
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        for (t, (colsb, rows)) in [(32, 16), (64, 8), (64, 16)].into_iter().enumerate() {
            c[16 + 2 * t] = colsb;
            c[48 + t] = rows;
        }
        TileConfig(c)
    }
}

/// One unit (256 columns) of sixteen rows of Q4_K / Q5_K as tiles: `w[c]` is chunk `c`
/// (four columns) of both groups, `sc` / `nm` the per-sub-block scales and minimums of the
/// sixteen rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Unit {
    w: [[u8; 64]; 64],
    sc: [[f32; 16]; 8],
    nm: [[f32; 16]; 8],
}

impl Unit {
    const ZERO: Unit = Unit {
        w: [[0; 64]; 64],
        sc: [[0.0; 16]; 8],
        nm: [[0.0; 16]; 8],
    };
}

/// One block (32 columns) of sixteen rows of Q4_0 / Q4_1 / Q5_0 / Q5_1 as a tile: `w[c]` is
/// chunk `c` of both groups, `d` the rows' scales, `m` their minimums (or the offset times
/// the scale).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block {
    w: [[u8; 64]; 8],
    d: [f32; 16],
    m: [f32; 16],
}

impl Block {
    const ZERO: Block = Block {
        w: [[0; 64]; 8],
        d: [0.0; 16],
        m: [0.0; 16],
    };
}

/// 256 sums of one product: `c[m][n]` for token `m`, row `n`.
#[repr(C, align(64))]
struct Sums([[i32; 16]; 16]);

/// One activation block of sixteen tokens as a tile: their bytes (a token a row) and their
/// scales and scaled sums.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Tokens {
    q: [[i8; 32]; 16],
    d: [f32; 16],
    s: [f32; 16],
}

/// The activations of a whole number of sixteen-token tiles, block by block within each tile
/// (`nb` [`Tokens`] a tile): each product then loads 512 contiguous bytes.
fn tokens_as_tiles(acts: &[BlockQ8], nb: usize) -> Vec<Tokens> {
    let tiles = acts.len() / nb / 16;
    let mut out = Vec::with_capacity(tiles * nb);
    for tt in 0..tiles {
        for c in 0..nb {
            let blk = |m: usize| &acts[(16 * tt + m) * nb + c];
            out.push(Tokens {
                q: std::array::from_fn(|m| blk(m).qs),
                d: std::array::from_fn(|m| blk(m).d),
                s: std::array::from_fn(|m| blk(m).s),
            });
        }
    }
    out
}

/// Stores the two halves of `a` and `b` side by side at `p` (64 bytes).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_pair(p: *mut u8, a: __m256i, b: __m256i) {
    _mm256_storeu_si256(p as *mut __m256i, a);
    _mm256_storeu_si256(p.add(32) as *mut __m256i, b);
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_pair_ps(p: &mut [f32; 16], a: __m256, b: __m256) {
    _mm256_storeu_ps(p.as_mut_ptr(), a);
    _mm256_storeu_ps(p.as_mut_ptr().add(8), b);
}

/// Whether [`gemm_x8`] takes `ty`: the 4- and 5-bit 32-element formats, Q4_K and Q5_K (not
/// Q8_0 or Q6_K, see the module's notes).
pub(super) fn takes(ty: QType) -> bool {
    use QType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q4K | Q5K)
}

/// [`super::gemm_x8`] for a type [`takes`] allows and sixteen or more tokens (the caller
/// checked the sizes and that [`super::amx`] is on).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x8(
    ty: QType,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let p = (ty, packed, acts, nb, out, ldo);
    match ty {
        QType::Q4_0 => drive(p, Block::ZERO, unpack_blocks::<false, false>, tile_q45),
        QType::Q4_1 => drive(p, Block::ZERO, unpack_blocks::<false, true>, tile_q45),
        QType::Q5_0 => drive(p, Block::ZERO, unpack_blocks::<true, false>, tile_q45),
        QType::Q5_1 => drive(p, Block::ZERO, unpack_blocks::<true, true>, tile_q45),
        QType::Q4K => drive(p, Unit::ZERO, unpack_units::<false>, tile_k45),
        _ => drive(p, Unit::ZERO, unpack_units::<true>, tile_k45),
    }
}

/// The arguments of [`gemm_x8`].
type Product<'a> = (QType, &'a [u8], &'a [BlockQ8], usize, *mut f32, usize);

/// Runs the product on tiles of sixteen rows × sixteen tokens: for each pair of groups of
/// eight rows, `unpack(rows, unit bytes, buffer)` fills the buffer of units (`U`, 256 or 32
/// columns each), then `tile` takes each sixteen tokens against it. What is left over goes
/// to [`rest`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn drive<U: Copy>(
    (ty, packed, acts, nb, out, ldo): Product<'_>,
    zero: U,
    unpack: unsafe fn(&[u8], usize, &mut [U]),
    tile: unsafe fn(&[U], &[Tokens], *mut f32, usize),
) {
    let (bs, group_bytes) = (x8_block_bytes(ty), x8_group_bytes(ty, 32 * nb));
    let units = group_bytes / bs;
    let groups = packed.len() / group_bytes;
    let t = acts.len() / nb;
    let (tiles, whole) = (groups / 2, t / 16 * 16);
    if tiles > 0 && whole > 0 {
        let cfg = TileConfig::new();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        let mut buf = vec![zero; units];
        let tokens = tokens_as_tiles(&acts[..whole * nb], nb);
        for rt in 0..tiles {
            let rows = &packed[2 * rt * group_bytes..(2 * rt + 2) * group_bytes];
            unpack(rows, bs, &mut buf);
            for (tt, a) in tokens.chunks_exact(nb).enumerate() {
                tile(&buf, a, out.add(16 * tt * ldo + 16 * rt), ldo);
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
    if tiles > 0 && whole < t {
        let rows = &packed[..2 * tiles * group_bytes];
        rest(ty, rows, &acts[whole * nb..], nb, out.add(whole * ldo), ldo);
    }
    if groups % 2 == 1 {
        let g = groups - 1;
        rest(
            ty,
            &packed[g * group_bytes..],
            acts,
            nb,
            out.add(8 * g),
            ldo,
        );
    }
}

/// The 512-bit kernels, for rows and tokens left over from whole tiles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rest(ty: QType, packed: &[u8], acts: &[BlockQ8], nb: usize, out: *mut f32, ldo: usize) {
    match ty {
        QType::Q4_0 => avx512::gemm_x8_q45::<false, false>(packed, acts, nb, out, ldo),
        QType::Q4_1 => avx512::gemm_x8_q45::<false, true>(packed, acts, nb, out, ldo),
        QType::Q5_0 => avx512::gemm_x8_q45::<true, false>(packed, acts, nb, out, ldo),
        QType::Q5_1 => avx512::gemm_x8_q45::<true, true>(packed, acts, nb, out, ldo),
        QType::Q4K => avx512::gemm_x8_k45::<false>(packed, acts, nb, out, ldo),
        _ => avx512::gemm_x8_k45::<true>(packed, acts, nb, out, ldo),
    }
}

/// Unpacks the blocks (32 columns) of two groups of eight rows (`rows`, `bs` bytes a block
/// and group) of Q4_0 / Q4_1 / Q5_0 / Q5_1 into `buf` as tiles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_blocks<const FIVE: bool, const MIN: bool>(
    rows: &[u8],
    bs: usize,
    buf: &mut [Block],
) {
    let (base, group_bytes) = (rows.as_ptr(), rows.len() / 2);
    let mut u = Unpacked::<2>::new();
    for (b, block) in buf.iter_mut().enumerate() {
        for g in 0..2 {
            unpack_q45::<2, FIVE, MIN>(base.add(g * group_bytes + b * bs), g, &mut u);
        }
        for c in 0..8 {
            store_pair(block.w[c].as_mut_ptr(), u.w[0][c], u.w[1][c]);
        }
        store_pair_ps(&mut block.d, u.d[0], u.d[1]);
        store_pair_ps(&mut block.m, u.m[0], u.m[1]);
    }
}

/// Unpacks the units of two groups of eight rows (`rows`, `bs` bytes a unit and group) into
/// `buf` as tiles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unpack_units<const FIVE: bool>(rows: &[u8], bs: usize, buf: &mut [Unit]) {
    let (base, group_bytes) = (rows.as_ptr(), rows.len() / 2);
    let mut u = UnpackedK::<2, 8> {
        w: [[_mm256_setzero_si256(); 64]; 2],
        sc: [[_mm256_setzero_ps(); 8]; 2],
        nm: [[_mm256_setzero_ps(); 8]; 2],
    };
    for (b, unit) in buf.iter_mut().enumerate() {
        for g in 0..2 {
            unpack_k45::<2, FIVE>(base.add(g * group_bytes + b * bs), g, &mut u);
        }
        for c in 0..64 {
            store_pair(unit.w[c].as_mut_ptr(), u.w[0][c], u.w[1][c]);
        }
        for s in 0..8 {
            store_pair_ps(&mut unit.sc[s], u.sc[0][s], u.sc[1][s]);
            store_pair_ps(&mut unit.nm[s], u.nm[0][s], u.nm[1][s]);
        }
    }
}

/// One product into `sums`: `tileloadd` of tile 0 (A: activation bytes at `pa`, a token
/// every 32 bytes, as in [`Tokens`]) and tile 1 (B: weights at `pb`, 64 bytes a row),
/// `tdpbssd` into tile 2 from zero, `tilestored` of tile 2.
#[inline(always)]
unsafe fn product(pa: *const i8, pb: *const u8, sums: &mut Sums) {
    asm!(
        "tileloadd tmm0, [{pa} + {lda}*1]",
        "tileloadd tmm1, [{pb} + {ld}*1]",
        "tilezero tmm2",
        "tdpbssd tmm2, tmm0, tmm1",
        "tilestored [{ps} + {ld}*1], tmm2",
        pa = in(reg) pa,
        lda = in(reg) 32usize,
        pb = in(reg) pb,
        ps = in(reg) sums.0.as_mut_ptr(),
        ld = in(reg) 64usize,
        options(nostack),
    )
}

/// Products `0..n`, one after the other (activation tiles of [`Tokens`]): `operands(i)` gives
/// product `i`'s activation and weight pointers, `scale(i, sums, acc)` adds its sums to the
/// accumulators. (They travel by value: kept in a place whose address is taken, they would
/// be reloaded around every tile store.) A second set of tiles, product `i + 1` started
/// before the sums of `i` are scaled, measured no faster: on the host this was written on,
/// tile and vector work did not overlap.
#[inline(always)]
unsafe fn each_product(
    n: usize,
    operands: impl Fn(usize) -> (*const i8, *const u8),
    scale: impl Fn(usize, &Sums, Acc) -> Acc,
) -> Acc {
    let mut acc = [_mm512_setzero_ps(); 16];
    let mut sums = Sums([[0; 16]; 16]);
    for i in 0..n {
        let (pa, pb) = operands(i);
        product(pa, pb, &mut sums);
        acc = scale(i, &sums, acc);
    }
    acc
}

/// Sixteen tokens' accumulators for sixteen rows.
type Acc = [__m512; 16];

/// Sixteen tokens (`acts`, [`Tokens`] block by block) against the sixteen rows unpacked in
/// `buf`, Q4_0 / Q4_1 / Q5_0 / Q5_1: per block, `acc = fma(sums, d × d', acc)` then
/// `acc += m × s'` (the activation's scale and scaled sum), as the 512-bit kernel.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_q45(buf: &[Block], acts: &[Tokens], out: *mut f32, ldo: usize) {
    let u = buf.as_ptr();
    let parts = |i: usize| {
        let b = &*u.add(i);
        (b.w[0].as_ptr(), b.d.as_ptr(), b.m.as_ptr())
    };
    tile_scaled::<false>(acts, parts, out, ldo);
}

/// As [`tile_q45`] for Q4_K / Q5_K, per sub-block and less the minimum: `acc = fma(sums, sc
/// × d', acc)` then `acc -= nm × s'`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_k45(buf: &[Unit], acts: &[Tokens], out: *mut f32, ldo: usize) {
    let u = buf.as_ptr();
    // Sub-block i is activation block i, sub-block i % 8 of unit i / 8.
    let parts = |i: usize| {
        let (unit, j) = (&*u.add(i / 8), i % 8);
        (
            unit.w[8 * j].as_ptr(),
            unit.sc[j].as_ptr(),
            unit.nm[j].as_ptr(),
        )
    };
    tile_scaled::<true>(acts, parts, out, ldo);
}

/// The blocks of `acts` against weights with a scale and a minimum per row and block:
/// `parts(i)` gives block `i`'s weight tile, its sixteen rows' scales and minimums; `acc =
/// fma(sums, scale × d', acc)`, then the minimum times the activation's scaled sum added, or
/// taken off where `LESS`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_scaled<const LESS: bool>(
    acts: &[Tokens],
    parts: impl Fn(usize) -> (*const u8, *const f32, *const f32),
    out: *mut f32,
    ldo: usize,
) {
    let a = acts.as_ptr();
    let operands = |i: usize| ((*a.add(i)).q.as_ptr() as *const i8, parts(i).0);
    let acc = each_product(acts.len(), operands, |i, s, mut acc| {
        let (_, scale, min) = parts(i);
        let (scale, min, blk) = (_mm512_loadu_ps(scale), _mm512_loadu_ps(min), &*a.add(i));
        for m in 0..16 {
            let f = _mm512_cvtepi32_ps(_mm512_loadu_si512(s.0[m].as_ptr() as *const _));
            let x = _mm512_fmadd_ps(f, _mm512_mul_ps(scale, _mm512_set1_ps(blk.d[m])), acc[m]);
            let sum = _mm512_set1_ps(blk.s[m]);
            acc[m] = if LESS {
                _mm512_fnmadd_ps(min, sum, x)
            } else {
                _mm512_fmadd_ps(min, sum, x)
            };
        }
        acc
    });
    store(&acc, out, ldo);
}

/// Token `m`'s sixteen rows from `acc[m]` to `out + m * ldo`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store(acc: &[__m512; 16], out: *mut f32, ldo: usize) {
    for m in 0..16 {
        _mm512_storeu_ps(out.add(m * ldo), acc[m]);
    }
}
