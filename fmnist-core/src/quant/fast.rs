//! The kernels [`super::LeNetQ`] runs: fused (convolution + requantization + ReLU + 2x2
//! max-pool in one pass, the full convolution map never exists) and bit-identical to the plain
//! reference kernels ([`super::QConv2d`], [`super::QDense`]); the tests below compare them on
//! many random layers.
//!
//! Two implementations of the same arithmetic:
//!
//! * [`portable`]: plain Rust shaped for auto-vectorization (i16 patches and weights, four
//!   windows per weight load); what the host runs;
//! * [`dsp`]: the Cortex-M4 kernels built on the dual 16-bit multiply-accumulate `SMLAD` (and
//!   the byte unpack `SXTB16` for the dense layers, [`dsp::intrinsics`]), with the convolution
//!   windows and the dense row loop as hand-scheduled inline assembly on Arm targets with the
//!   DSP extension and a Rust version of the same arithmetic elsewhere (on the emulated
//!   instructions), so the host tests exercise the data layouts and pairings the device uses;
//!   requantization through [`dsp::Rq`], exhaustively tested against `Requant::to_i8`.
//!
//! Both compute `max over the 2x2 window of Σ w·x`, then add the bias and requantize once.
//! That equals pooling the requantized outputs because requantization and the clamp are
//! monotone non-decreasing (`requant::tests::requantization_is_monotone_so_pooling_commutes`),
//! and `max(a + b, c + b) = max(a, c) + b` exactly in integers.

use super::params::QLayerParams;
use super::requant::clamp_floor;
use crate::lenet::IMAGE_PIXELS;

/// The four output offsets `(dy, dx)` of a 2x2 pooling window.
const WINDOW: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// `bias + best`, requantized, zero point added, clamped (ReLU when `relu`).
#[inline(always)]
fn output<const C: usize>(q: &QLayerParams<C>, c: usize, best: i32, relu: bool) -> i8 {
    q.requant(c).to_i8(
        q.bias[c] + best,
        q.output_zero_point as i32,
        clamp_floor(q.output_zero_point, relu),
    )
}

#[inline(always)]
fn max4(a: [i32; 4]) -> i32 {
    a[0].max(a[1]).max(a[2].max(a[3]))
}

/// Whether this build runs the [`dsp`] kernels (Arm with the DSP extension).
pub const USES_DSP: bool = cfg!(all(
    target_arch = "arm",
    any(target_feature = "dsp", fmnist_dsp)
));

/// conv1 (6@5x5, padding 2 at the input zero point) → requant → ReLU → 2x2 max-pool, straight
/// from the u8 image (`q = p − 128`).
#[inline]
pub fn conv1_relu_pool(
    weight: &[[[[i8; 5]; 5]; 1]; 6],
    q: &QLayerParams<6>,
    image: &[u8; IMAGE_PIXELS],
    out: &mut [[[i8; 14]; 14]; 6],
) {
    if USES_DSP {
        dsp::conv1_relu_pool(weight, q, image, out)
    } else {
        portable::conv1_relu_pool(weight, q, image, out)
    }
}

/// conv2 (16@5x5) → requant → ReLU → 2x2 max-pool.
#[inline]
pub fn conv2_relu_pool(
    weight: &[[[[i8; 5]; 5]; 6]; 16],
    q: &QLayerParams<16>,
    x: &[[[i8; 14]; 14]; 6],
    out: &mut [[[i8; 5]; 5]; 16],
) {
    if USES_DSP {
        dsp::conv2_relu_pool(weight, q, x, out)
    } else {
        portable::conv2_relu_pool(weight, q, x, out)
    }
}

/// Dense → requant (→ ReLU). `I` must be a multiple of 4 (400, 120 and 84 are).
#[inline]
pub fn dense<const I: usize, const O: usize>(
    weight: &[[i8; I]; O],
    q: &QLayerParams<O>,
    x: &[i8; I],
    relu: bool,
    out: &mut [i8; O],
) {
    if USES_DSP {
        dsp::dense(weight, q, x, relu, out)
    } else {
        portable::dense(weight, q, x, relu, out)
    }
}

/// Longest im2col patch [`conv_relu_pool`] takes: the wide CNN's conv2, 32·3·3 taps.
pub const MAX_TAPS: usize = 288;

/// A `K`x`K` convolution (stride 1, padding `P` at the input zero point) → requant → ReLU →
/// 2x2 max-pool, as a matrix product: for each pooling window the four im2col patches of its
/// outputs (taps in the weight order `ic, ky, kx`), then per output channel the dot products
/// of the weight row with the four patches, whose maximum is requantized once. The weights are
/// PyTorch's `[OC][IC][K][K]` read as rows `[OC][T]`; when `T > IC·K·K` (a fan-in that is not a
/// multiple of 4, padded by the caller) the extra taps must have zero weights.
///
/// # Shapes
/// input `[IC][H][W]` → output `[OC][PH][PW]` with `2·PH = H + 2P − K + 1`,
/// `2·PW = W + 2P − K + 1`; `K ≤ 3`; `IC·K·K ≤ T ≤ MAX_TAPS`, `T` a multiple of 4.
#[inline]
pub fn conv_relu_pool<
    const IC: usize,
    const OC: usize,
    const K: usize,
    const P: usize,
    const H: usize,
    const W: usize,
    const PH: usize,
    const PW: usize,
    const T: usize,
>(
    weight: &[[i8; T]; OC],
    q: &QLayerParams<OC>,
    x: &[[[i8; W]; H]; IC],
    out: &mut [[[i8; PW]; PH]; OC],
) {
    const { assert!(2 * PH + K == H + 2 * P + 1 && 2 * PW + K == W + 2 * P + 1) };
    const { assert!(IC * K * K <= T && T <= MAX_TAPS && T.is_multiple_of(4) && T >= 4) };
    if USES_DSP {
        dsp::conv_relu_pool::<IC, OC, K, P, H, W, PH, PW, T>(weight, q, x, out)
    } else {
        portable::conv_relu_pool::<IC, OC, K, P, H, W, PH, PW, T>(weight, q, x, out)
    }
}

/// The four im2col patches of the 2x2 pooling window `(py, px)`: patch `j` holds, for output
/// `(2py + dy, 2px + dx)` (`WINDOW[j]`), the input under tap `ic·K·K + ky·K + kx`, or the input
/// zero point `zp` where the tap falls in the padding. Taps from `IC·K·K` to `T` are left as
/// they are (their weights are zero).
///
/// The four patches of one input channel all lie in one `(K+1)x(K+1)` region of the input;
/// it is read once (padding handled per region row, and per column only at the left and right
/// edges) and then scattered into the four patches.
#[inline(always)]
fn window_patches<
    const IC: usize,
    const K: usize,
    const P: usize,
    const H: usize,
    const W: usize,
    const T: usize,
>(
    x: &[[[i8; W]; H]; IC],
    zp: i8,
    py: usize,
    px: usize,
    patches: &mut [[i8; T]; 4],
) {
    const { assert!(K < REGION) };
    let (y0, x0) = (2 * py, 2 * px);
    // The region's columns x0 − P ..= x0 − P + K, when all of them are inside the input.
    let cols = x0
        .checked_sub(P)
        .filter(|&c| c + K < W)
        .map(|c| c..c + K + 1);
    let [p0, p1, p2, p3] = patches;
    fn chunks<const K: usize, const T: usize>(p: &mut [i8; T]) -> &mut [[i8; K]] {
        p.as_chunks_mut::<K>().0
    }
    let (c0, c1, c2, c3) = (
        chunks::<K, T>(p0),
        chunks::<K, T>(p1),
        chunks::<K, T>(p2),
        chunks::<K, T>(p3),
    );
    let per_channel = c0
        .chunks_exact_mut(K)
        .zip(c1.chunks_exact_mut(K))
        .zip(c2.chunks_exact_mut(K))
        .zip(c3.chunks_exact_mut(K));
    for ((((r0, r1), r2), r3), plane) in per_channel.zip(x) {
        let mut region = [[zp; REGION]; REGION];
        for (r, reg) in region.iter_mut().take(K + 1).enumerate() {
            let Some(src) = (y0 + r).checked_sub(P).and_then(|iy| plane.get(iy)) else {
                continue;
            };
            match cols.clone().and_then(|c| src.get(c)) {
                Some(s) => {
                    for (d, &v) in reg.iter_mut().zip(s) {
                        *d = v;
                    }
                }
                None => {
                    for (c, d) in reg.iter_mut().take(K + 1).enumerate() {
                        if let Some(&v) = (x0 + c).checked_sub(P).and_then(|ix| src.get(ix)) {
                            *d = v;
                        }
                    }
                }
            }
        }
        for (rows, (dy, dx)) in [r0, r1, r2, r3].into_iter().zip(WINDOW) {
            for (ky, row) in rows.iter_mut().enumerate() {
                for (kx, d) in row.iter_mut().enumerate() {
                    *d = region[(dy + ky) % REGION][(dx + kx) % REGION];
                }
            }
        }
    }
}

/// Side of the input region [`window_patches`] reads per channel (`K + 1 ≤ REGION`): kernels
/// up to 3x3, the only size the im2col path serves (a larger region costs its initialisation
/// on every channel of every window).
const REGION: usize = 4;

/// Plain Rust kernels shaped for auto-vectorization: the host's fast path.
pub mod portable {
    use super::*;

    /// `Σ_k w[k]·p_j[k]` for four patches sharing one weight row (one weight load feeds four
    /// multiply-adds). `T` is a multiple of 8.
    #[inline(always)]
    fn dots4<const T: usize>(w: &[i16; T], p: &[[i16; T]; 4]) -> [i32; 4] {
        #[cfg(target_arch = "x86_64")]
        {
            sse2::dots4(w, p)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
            for k in 0..T {
                let wk = w[k] as i32;
                a0 += wk * p[0][k] as i32;
                a1 += wk * p[1][k] as i32;
                a2 += wk * p[2][k] as i32;
                a3 += wk * p[3][k] as i32;
            }
            [a0, a1, a2, a3]
        }
    }

    /// SSE2 (baseline on every x86-64) dot products with `pmaddwd`: eight i16 products summed
    /// pairwise into i32 lanes, exact (every product and pair sum fits in i32, see the overflow
    /// proof), so the result equals the scalar sum bit for bit.
    #[cfg(target_arch = "x86_64")]
    mod sse2 {
        use core::arch::x86_64::*;

        /// The four lane sums of four vectors: `[Σa, Σb, Σc, Σd]`.
        #[inline(always)]
        fn hsum4(a: __m128i, b: __m128i, c: __m128i, d: __m128i) -> [i32; 4] {
            // SAFETY (every `unsafe` in this module): SSE2 is part of the x86-64 baseline, so
            // the intrinsics are available; pointer arguments are checked slices.
            unsafe {
                let ab = _mm_add_epi32(_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
                let cd = _mm_add_epi32(_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
                let s = _mm_add_epi32(_mm_unpacklo_epi64(ab, cd), _mm_unpackhi_epi64(ab, cd));
                let mut out = [0i32; 4];
                _mm_storeu_si128(out.as_mut_ptr().cast(), s);
                out
            }
        }

        #[inline(always)]
        fn load8(x: &[i16], at: usize) -> __m128i {
            let v = &x[at..at + 8];
            // SAFETY: `v` is 8 readable i16 (16 bytes); unaligned load.
            unsafe { _mm_loadu_si128(v.as_ptr().cast()) }
        }

        /// See `dots4`.
        #[inline(always)]
        pub fn dots4<const T: usize>(w: &[i16; T], p: &[[i16; T]; 4]) -> [i32; 4] {
            const { assert!(T.is_multiple_of(8)) };
            unsafe {
                let z = _mm_setzero_si128();
                let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
                let mut k = 0;
                while k < T {
                    let wv = load8(w, k);
                    a0 = _mm_add_epi32(a0, _mm_madd_epi16(wv, load8(&p[0], k)));
                    a1 = _mm_add_epi32(a1, _mm_madd_epi16(wv, load8(&p[1], k)));
                    a2 = _mm_add_epi32(a2, _mm_madd_epi16(wv, load8(&p[2], k)));
                    a3 = _mm_add_epi32(a3, _mm_madd_epi16(wv, load8(&p[3], k)));
                    k += 8;
                }
                hsum4(a0, a1, a2, a3)
            }
        }

        /// [`super::super::super::requant::Requant::to_i8`] on four accumulators of one channel,
        /// exactly (`requant4_matches_scalar` checks it): the 64-bit products come from
        /// `pmuludq` with the sign correction `−(a < 0)·m·2^32` (m ≥ 0), `(p + 2^30) >> 31`
        /// keeps the low 32 bits of the shifted sum, `RoundingDivideByPOT` is vectorized
        /// literally, and saturating packs do `+ zp` and the clamp (an |h| > 32767 saturates to
        /// ±32767 first, which lands on the same clamp bound).
        #[inline(always)]
        pub fn requant4(
            acc: __m128i,
            r: crate::quant::requant::Requant,
            zp: i8,
            lo: i32,
        ) -> [i8; 4] {
            unsafe {
                let left = r.shift.max(0);
                let right = (-r.shift).max(0);
                let a = _mm_sll_epi32(acc, _mm_cvtsi32_si128(left));
                let m = _mm_set1_epi32(r.multiplier);
                let half = _mm_set1_epi64x(1 << 30);
                // Lanes 0 and 2, then 1 and 3 (moved down by 32 bits).
                let hi_of = |a: __m128i| {
                    let p = _mm_mul_epu32(a, m);
                    let neg = _mm_and_si128(_mm_srai_epi32(a, 31), m);
                    let p = _mm_sub_epi64(p, _mm_slli_epi64(neg, 32));
                    _mm_srli_epi64(_mm_add_epi64(p, half), 31)
                };
                let even = hi_of(a);
                let odd = hi_of(_mm_srli_epi64(a, 32));
                // [e0, o0, e2, o2] = interleave the low dwords.
                let h = _mm_unpacklo_epi32(
                    _mm_shuffle_epi32(even, 0b10_00_10_00),
                    _mm_shuffle_epi32(odd, 0b10_00_10_00),
                );
                // The single saturating case of the high multiply: a = m = i32::MIN. It cannot
                // occur (m ≥ 0 by the parameter check), so no lane needs it.
                let mask = _mm_set1_epi32(((1u32 << right) - 1) as i32);
                let rem = _mm_and_si128(h, mask);
                let neg = _mm_cmplt_epi32(h, _mm_setzero_si128());
                let thr = _mm_sub_epi32(_mm_srai_epi32(mask, 1), neg);
                let y = _mm_sub_epi32(
                    _mm_sra_epi32(h, _mm_cvtsi32_si128(right)),
                    _mm_cmpgt_epi32(rem, thr),
                );
                let y16 = _mm_packs_epi32(y, y);
                let y16 = _mm_adds_epi16(y16, _mm_set1_epi16(zp as i16));
                let y16 = _mm_max_epi16(y16, _mm_set1_epi16(lo as i16));
                let y8 = _mm_packs_epi16(y16, y16);
                let v = _mm_cvtsi128_si32(y8) as u32;
                v.to_le_bytes().map(|b| b as i8)
            }
        }

        /// conv1 vectorized across output columns: for four adjacent outputs and a tap pair
        /// `(k, k+1)` of one kernel row, `unpacklo(x[c+k..], x[c+k+1..])` holds the four input
        /// pairs, and one `pmaddwd` with the broadcast weight pair adds both taps to the four
        /// accumulators. Each input row is loaded once for the six channels and both output rows
        /// of a pooling window. Exact, like the reference (integer sums).
        pub fn conv1_relu_pool(
            weight: &[[[[i8; 5]; 5]; 1]; 6],
            q: &super::QLayerParams<6>,
            image: &[u8; super::IMAGE_PIXELS],
            out: &mut [[[i8; 14]; 14]; 6],
        ) {
            // Padded image, i16, rows of 40 so every 8-lane load at column ≤ 32 stays inside.
            let mut xp = [[q.input_zero_point as i16; 40]; 32];
            for (row, src) in xp[2..30].iter_mut().zip(image.chunks_exact(28)) {
                for (d, &p) in row[2..30].iter_mut().zip(src) {
                    *d = p as i16 - 128;
                }
            }
            // Broadcast weight pairs (w[k], w[k+1]) for k = 0, 2, 4 (w[5] = 0), per oc and ky.
            let mut wp = [[[0i32; 3]; 5]; 6];
            for (oc, k5) in weight.iter().enumerate() {
                for (ky, row) in k5[0].iter().enumerate() {
                    for (j, pair) in wp[oc][ky].iter_mut().enumerate() {
                        let lo = row[2 * j] as i16 as u16 as u32;
                        let hi = if 2 * j + 1 < 5 {
                            row[2 * j + 1] as i16 as u16 as u32
                        } else {
                            0
                        };
                        *pair = (lo | hi << 16) as i32;
                    }
                }
            }
            unsafe {
                let z = _mm_setzero_si128();
                let w: [[[__m128i; 3]; 5]; 6] = core::array::from_fn(|oc| {
                    core::array::from_fn(|ky| {
                        core::array::from_fn(|j| _mm_set1_epi32(wp[oc][ky][j]))
                    })
                });
                for py in 0..14 {
                    // Pooled accumulators (bias not yet added) of this output row, 2 spare.
                    let mut pooled = [[0i32; 16]; 6];
                    for xb in 0..7 {
                        let c = 4 * xb;
                        let mut acc = [[z; 2]; 6];
                        for r in 0..6 {
                            let row = &xp[2 * py + r];
                            let l =
                                |k: usize| _mm_loadu_si128(row[c + k..c + k + 8].as_ptr().cast());
                            let pairs = [
                                _mm_unpacklo_epi16(l(0), l(1)),
                                _mm_unpacklo_epi16(l(2), l(3)),
                                _mm_unpacklo_epi16(l(4), l(5)),
                            ];
                            for oc in 0..6 {
                                // Input row r is kernel row r for output row 0, r - 1 for row 1.
                                if r < 5 {
                                    for j in 0..3 {
                                        acc[oc][0] = _mm_add_epi32(
                                            acc[oc][0],
                                            _mm_madd_epi16(pairs[j], w[oc][r][j]),
                                        );
                                    }
                                }
                                if r >= 1 {
                                    for j in 0..3 {
                                        acc[oc][1] = _mm_add_epi32(
                                            acc[oc][1],
                                            _mm_madd_epi16(pairs[j], w[oc][r - 1][j]),
                                        );
                                    }
                                }
                            }
                        }
                        for (oc, row) in pooled.iter_mut().enumerate() {
                            let (mut a, mut b) = ([0i32; 4], [0i32; 4]);
                            _mm_storeu_si128(a.as_mut_ptr().cast(), acc[oc][0]);
                            _mm_storeu_si128(b.as_mut_ptr().cast(), acc[oc][1]);
                            let m = [
                                a[0].max(b[0]),
                                a[1].max(b[1]),
                                a[2].max(b[2]),
                                a[3].max(b[3]),
                            ];
                            row[2 * xb] = m[0].max(m[1]);
                            row[2 * xb + 1] = m[2].max(m[3]);
                        }
                    }
                    for (oc, plane) in out.iter_mut().enumerate() {
                        let lo = super::clamp_floor(q.output_zero_point, true);
                        let mut bytes = [0i8; 16];
                        for k in 0..4 {
                            let v = _mm_add_epi32(
                                _mm_loadu_si128(pooled[oc][4 * k..4 * k + 4].as_ptr().cast()),
                                _mm_set1_epi32(q.bias[oc]),
                            );
                            let r = requant4(v, q.requant(oc), q.output_zero_point, lo);
                            bytes[4 * k..4 * k + 4].copy_from_slice(&r);
                        }
                        plane[py].copy_from_slice(&bytes[..14]);
                    }
                }
            }
        }

        /// `Σ w·p_j` for one i8 weight row against four i16 patches: eight weights per load,
        /// sign-extended to i16, one `pmaddwd` per patch; the last `T % 8` taps in scalar.
        #[inline(always)]
        pub fn patch_dots4<const T: usize>(w: &[i8; T], p: &[[i16; T]; 4]) -> [i32; 4] {
            unsafe {
                let z = _mm_setzero_si128();
                let mut acc = [z; 4];
                let mut k = 0;
                while k + 8 <= T {
                    let b = &w[k..k + 8];
                    // `b` is 8 readable bytes: 64-bit unaligned load.
                    let bytes = _mm_loadl_epi64(b.as_ptr().cast());
                    let wv = _mm_srai_epi16(_mm_unpacklo_epi8(bytes, bytes), 8);
                    for (a, patch) in acc.iter_mut().zip(p) {
                        *a = _mm_add_epi32(*a, _mm_madd_epi16(wv, load8(patch, k)));
                    }
                    k += 8;
                }
                let mut sums = hsum4(acc[0], acc[1], acc[2], acc[3]);
                for (sum, patch) in sums.iter_mut().zip(p) {
                    for i in k..T {
                        *sum += w[i] as i32 * patch[i] as i32;
                    }
                }
                sums
            }
        }

        /// `Σ w·x` for four weight rows of i8 against one i16 activation vector.
        #[inline(always)]
        pub fn dot_rows4<const I: usize>(w: [&[i8; I]; 4], x: &[i16; I]) -> [i32; 4] {
            unsafe {
                let z = _mm_setzero_si128();
                let mut acc = [z; 4];
                let mut k = 0;
                while k + 8 <= I {
                    let xv = load8(x, k);
                    for r in 0..4 {
                        let b = &w[r][k..k + 8];
                        // `b` is 8 readable bytes: 64-bit unaligned load.
                        let bytes = _mm_loadl_epi64(b.as_ptr().cast());
                        // Sign-extend 8 i8 to i16: duplicate each byte into a word, shift right 8.
                        let wv = _mm_srai_epi16(_mm_unpacklo_epi8(bytes, bytes), 8);
                        acc[r] = _mm_add_epi32(acc[r], _mm_madd_epi16(wv, xv));
                    }
                    k += 8;
                }
                let mut sums = hsum4(acc[0], acc[1], acc[2], acc[3]);
                // The last I % 8 inputs (4 for fc3's 84).
                for (r, sum) in sums.iter_mut().enumerate() {
                    for i in k..I {
                        *sum += w[r][i] as i32 * x[i] as i32;
                    }
                }
                sums
            }
        }
    }

    /// See [`super::conv1_relu_pool`].
    pub fn conv1_relu_pool(
        weight: &[[[[i8; 5]; 5]; 1]; 6],
        q: &QLayerParams<6>,
        image: &[u8; IMAGE_PIXELS],
        out: &mut [[[i8; 14]; 14]; 6],
    ) {
        #[cfg(target_arch = "x86_64")]
        sse2::conv1_relu_pool(weight, q, image, out);
        #[cfg(not(target_arch = "x86_64"))]
        conv1_patches(weight, q, image, out);
    }

    /// The SSE2 four-lane requantization (for its test).
    #[cfg(all(test, target_arch = "x86_64"))]
    pub(crate) use sse2::requant4 as sse2_requant4;

    /// conv1 by im2col patches (the non-x86 portable kernel; tested everywhere).
    pub fn conv1_patches(
        weight: &[[[[i8; 5]; 5]; 1]; 6],
        q: &QLayerParams<6>,
        image: &[u8; IMAGE_PIXELS],
        out: &mut [[[i8; 14]; 14]; 6],
    ) {
        // The image with 2 pixels of padding at the input zero point, widened to i16.
        let mut xp = [[q.input_zero_point as i16; 32]; 32];
        for (row, src) in xp[2..30].iter_mut().zip(image.chunks_exact(28)) {
            for (d, &p) in row[2..30].iter_mut().zip(src) {
                *d = p as i16 - 128;
            }
        }
        // Taps `ky·5 + kx`, padded with zero weights to 32.
        let mut w = [[0i16; 32]; 6];
        for (dst, src) in w.iter_mut().zip(weight) {
            for (d, &s) in dst.iter_mut().zip(src.as_flattened().as_flattened()) {
                *d = s as i16;
            }
        }
        let mut patches = [[0i16; 32]; 4];
        for py in 0..14 {
            for px in 0..14 {
                for (patch, (dy, dx)) in patches.iter_mut().zip(WINDOW) {
                    let (y, x) = (2 * py + dy, 2 * px + dx);
                    for ky in 0..5 {
                        patch[ky * 5..ky * 5 + 5].copy_from_slice(&xp[y + ky][x..x + 5]);
                    }
                }
                for (oc, plane) in out.iter_mut().enumerate() {
                    plane[py][px] = output(q, oc, max4(dots4(&w[oc], &patches)), true);
                }
            }
        }
    }

    /// See [`super::conv2_relu_pool`].
    pub fn conv2_relu_pool(
        weight: &[[[[i8; 5]; 5]; 6]; 16],
        q: &QLayerParams<16>,
        x: &[[[i8; 14]; 14]; 6],
        out: &mut [[[i8; 5]; 5]; 16],
    ) {
        // Taps `ic·25 + ky·5 + kx` (the weight layout), padded with zero weights to 152.
        let mut w = [[0i16; 152]; 16];
        for (dst, src) in w.iter_mut().zip(weight) {
            let src: &[i8; 150] = bytemuck::cast_ref(src);
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as i16;
            }
        }
        let mut patches = [[0i16; 152]; 4];
        for py in 0..5 {
            for px in 0..5 {
                for (patch, (dy, dx)) in patches.iter_mut().zip(WINDOW) {
                    let (y, xx) = (2 * py + dy, 2 * px + dx);
                    for (ic, plane) in x.iter().enumerate() {
                        for ky in 0..5 {
                            let src = &plane[y + ky][xx..xx + 5];
                            let dst = &mut patch[ic * 25 + ky * 5..ic * 25 + ky * 5 + 5];
                            for (d, &s) in dst.iter_mut().zip(src) {
                                *d = s as i16;
                            }
                        }
                    }
                }
                for (oc, plane) in out.iter_mut().enumerate() {
                    plane[py][px] = output(q, oc, max4(dots4(&w[oc], &patches)), true);
                }
            }
        }
    }

    /// `Σ_k w[k]·p_j[k]` for four i16 patches against one i8 weight row.
    #[inline(always)]
    fn patch_dots4<const T: usize>(w: &[i8; T], p: &[[i16; T]; 4]) -> [i32; 4] {
        #[cfg(target_arch = "x86_64")]
        {
            sse2::patch_dots4(w, p)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut acc = [0i32; 4];
            for (k, &wk) in w.iter().enumerate() {
                for (a, patch) in acc.iter_mut().zip(p) {
                    *a += wk as i32 * patch[k] as i32;
                }
            }
            acc
        }
    }

    /// See [`super::conv_relu_pool`]: i16 patches, SSE2 `pmaddwd` on x86-64.
    pub fn conv_relu_pool<
        const IC: usize,
        const OC: usize,
        const K: usize,
        const P: usize,
        const H: usize,
        const W: usize,
        const PH: usize,
        const PW: usize,
        const T: usize,
    >(
        weight: &[[i8; T]; OC],
        q: &QLayerParams<OC>,
        x: &[[[i8; W]; H]; IC],
        out: &mut [[[i8; PW]; PH]; OC],
    ) {
        let mut patches = [[0i8; T]; 4];
        let mut p16 = [[0i16; T]; 4];
        for py in 0..PH {
            for px in 0..PW {
                window_patches::<IC, K, P, H, W, T>(x, q.input_zero_point, py, px, &mut patches);
                for (d, s) in p16.iter_mut().zip(&patches) {
                    for (d, &s) in d.iter_mut().zip(s) {
                        *d = s as i16;
                    }
                }
                for (oc, (plane, w)) in out.iter_mut().zip(weight).enumerate() {
                    plane[py][px] = output(q, oc, max4(patch_dots4(w, &p16)), true);
                }
            }
        }
    }

    #[inline(always)]
    fn dot<const I: usize>(w: &[i8; I], x: &[i16; I]) -> i32 {
        let mut acc = 0i32;
        for k in 0..I {
            acc += w[k] as i32 * x[k] as i32;
        }
        acc
    }

    /// See [`super::dense`].
    pub fn dense<const I: usize, const O: usize>(
        weight: &[[i8; I]; O],
        q: &QLayerParams<O>,
        x: &[i8; I],
        relu: bool,
        out: &mut [i8; O],
    ) {
        let x16: [i16; I] = core::array::from_fn(|i| x[i] as i16);
        let mut o = 0;
        #[cfg(target_arch = "x86_64")]
        {
            while o + 4 <= O {
                let acc = sse2::dot_rows4(core::array::from_fn(|r| &weight[o + r]), &x16);
                for (r, &a) in acc.iter().enumerate() {
                    out[o + r] = output(q, o + r, a, relu);
                }
                o += 4;
            }
        }
        while o < O {
            out[o] = output(q, o, dot(&weight[o], &x16), relu);
            o += 1;
        }
    }
}

/// The Cortex-M4 kernels, built on `SMLAD` (multiply two pairs of i16 and add both products to
/// an accumulator). The convolutions store their input once as i16 pairs and their weights as
/// pairs for the even and the odd column of a pooling window, so one `LDRD` of two input rows
/// and one of two weight pairs feed the four outputs of the window; the dense layers unpack
/// four int8 weights into two pairs with `SXTB16` against activations stored in that order.
pub mod dsp {
    use super::*;

    /// The three DSP instructions the kernels use. On Arm with the DSP extension they are
    /// inline assembly; elsewhere a bit-exact emulation of the architecture's pseudocode.
    pub mod intrinsics {
        #[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
        mod imp {
            use core::arch::asm;

            /// `SMLAD acc, a, b`: `acc + a.lo·b.lo + a.hi·b.hi` (signed 16-bit halves, wrapping).
            #[inline(always)]
            pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
                let r: i32;
                // SAFETY: a pure register-only instruction of ARMv7E-M.
                unsafe {
                    asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a,
                         b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
                }
                r
            }

            /// `SMMLAR acc, a, b`: bits 63..32 of `acc·2^32 + a·b + 2^31`.
            #[inline(always)]
            pub fn smmlar(a: i32, b: i32, acc: i32) -> i32 {
                let r: i32;
                // SAFETY: a pure register-only instruction of ARMv7E-M.
                unsafe {
                    asm!("smmlar {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a,
                         b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
                }
                r
            }

            /// `SXTB16 x`: bytes 0 and 2 sign-extended into the low and high halfwords.
            #[inline(always)]
            pub fn sxtb16(x: u32) -> u32 {
                let r: u32;
                // SAFETY: a pure register-only instruction of ARMv7E-M.
                unsafe {
                    asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
                         options(pure, nomem, nostack, preserves_flags));
                }
                r
            }

            /// `SXTB16 x, ROR #8`: bytes 1 and 3 sign-extended into the two halfwords.
            #[inline(always)]
            pub fn sxtb16_ror8(x: u32) -> u32 {
                let r: u32;
                // SAFETY: a pure register-only instruction of ARMv7E-M.
                unsafe {
                    asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
                         options(pure, nomem, nostack, preserves_flags));
                }
                r
            }
        }

        /// The emulation, always compiled so the host can test it against the hardware
        /// definitions and run the device's algorithm.
        pub mod emulated {
            /// `SMLAD`: `acc + a.lo·b.lo + a.hi·b.hi`, the sum truncated to 32 bits (the
            /// hardware sets the Q flag on overflow, which the overflow proof rules out).
            #[inline(always)]
            pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
                let lo = (a as i16 as i32) * (b as i16 as i32);
                let hi = ((a >> 16) as i16 as i32) * ((b >> 16) as i16 as i32);
                acc.wrapping_add(lo).wrapping_add(hi)
            }

            /// `SMMLAR`: bits 63..32 of `acc·2^32 + a·b + 2^31`, the sum taken modulo 2^64 as
            /// in the architecture's pseudocode (bits 63..32 of the exact sum).
            #[inline(always)]
            pub fn smmlar(a: i32, b: i32, acc: i32) -> i32 {
                (((acc as i64) << 32)
                    .wrapping_add(a as i64 * b as i64)
                    .wrapping_add(1 << 31)
                    >> 32) as i32
            }

            /// `SXTB16`: bytes 0 and 2 sign-extended to halfwords.
            #[inline(always)]
            pub fn sxtb16(x: u32) -> u32 {
                let lo = x as u8 as i8 as i16 as u16 as u32;
                let hi = (x >> 16) as u8 as i8 as i16 as u16 as u32;
                lo | hi << 16
            }

            /// `SXTB16 ROR #8`: bytes 1 and 3 sign-extended to halfwords.
            #[inline(always)]
            pub fn sxtb16_ror8(x: u32) -> u32 {
                sxtb16(x.rotate_right(8))
            }
        }

        #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
        pub use emulated::{smlad, smmlar, sxtb16, sxtb16_ror8};
        #[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
        pub use imp::{smlad, smmlar, sxtb16, sxtb16_ror8};
    }

    use intrinsics::{smlad, smmlar, sxtb16, sxtb16_ror8};

    /// One output channel's bias and requantization, unpacked for [`Rq::output`]: the shifts
    /// and the rounding divide's mask are computed once, not per output.
    #[derive(Clone, Copy, Debug)]
    pub struct Rq {
        bias: i32,
        /// `2·multiplier` modulo 2^32.
        multiplier2: i32,
        /// All ones when `multiplier ≥ 2^30` (then `multiplier2 = 2·multiplier − 2^32`).
        high: i32,
        left: u32,
        right: u32,
        mask: i32,
        half: i32,
        zp: i32,
    }

    impl Rq {
        /// Channel `c` of `q`. Needs `multiplier ≥ 0` (checked for every model).
        #[inline(always)]
        pub fn new<const C: usize>(q: &QLayerParams<C>, c: usize) -> Self {
            let r = q.requant(c);
            // Both below 32 for any `shift` (−31..=30 in a checked model), as the unchecked
            // shifts of `output` require.
            let right = (-r.shift).clamp(0, 31) as u32;
            let mask = ((1u64 << right) - 1) as i32;
            Self {
                bias: q.bias[c],
                multiplier2: r.multiplier.wrapping_mul(2),
                high: -((r.multiplier >= 1 << 30) as i32),
                left: r.shift.clamp(0, 31) as u32,
                right,
                mask,
                half: mask >> 1,
                zp: q.output_zero_point as i32,
            }
        }

        /// `Requant::to_i8(bias + best, zp, clamp_floor(zp, relu))`, bit for bit
        /// (`fast_requant_matches_to_i8` checks it), in fewer instructions:
        ///
        /// * the high multiply is `(a·m + 2^30) >> 31` (its only saturating case needs
        ///   `m = i32::MIN`, excluded by `m ≥ 0`), as one `SMMLAR` of `a` by `2m` (see below);
        /// * `RoundingDivideByPOT` as in gemmlowp, with the mask and its half precomputed;
        /// * with ReLU, `max(y ⊕ zp, zp) = max(y, 0) ⊕ zp` (⊕ saturating; both sides are
        ///   non-decreasing in y and agree for y ≤ 0 and y ≥ 0), and `max(y, 0) ⊕ zp ≥ −128`,
        ///   so the final clamp is the `SSAT #8` of `[−128, 127]`.
        #[inline(always)]
        pub fn output(&self, best: i32, relu: bool) -> i8 {
            let t = self.bias + best;
            if relu && t <= 0 {
                // `a = t·2^left ≤ 0` (no overflow, by the proof), so `a·m + 2^30 < 2^31`,
                // `h ≤ 0`, `y ≤ 0`, and the ReLU output is the zero point itself.
                return self.zp as i8;
            }
            // SAFETY: `left` and `right` are below 32 (see `new`).
            let a = unsafe { t.unchecked_shl(self.left) };
            // (a·m + 2^30) >> 31 = bits 63..32 of 2·a·m + 2^31, and 2·a·m = a·multiplier2
            // + (a·2^32 when multiplier2 wrapped): one `SMMLAR`, exact for every a.
            let h = smmlar(a, self.multiplier2, a & self.high);
            let rem = h & self.mask;
            let threshold = self.half + (h < 0) as i32;
            // SAFETY: as above.
            let y = unsafe { h.unchecked_shr(self.right) } + (rem > threshold) as i32;
            let y = if relu { y.max(0) } else { y };
            y.saturating_add(self.zp).clamp(-128, 127) as i8
        }
    }

    /// Position of input `t` in the dense kernel's activation pairs: inputs `4g..4g+4` are
    /// stored as `[t0, t2, t1, t3]`, the order in which `SXTB16` / `SXTB16 ROR #8` unpack a
    /// little-endian word (of weights, and of activations when the pairs are built).
    #[cfg(test)]
    const fn slot(t: usize) -> usize {
        (t & !3) | [0, 2, 1, 3][t & 3]
    }

    /// One weight word (4 int8 taps) against the matching pair words of four activation
    /// vectors: the dense kernel's step, for the exhaustive test.
    #[cfg(test)]
    fn mac_group(word: u32, g: usize, p: &[&[[u32; 2]]; 4], acc: &mut [i32; 4]) {
        let (w02, w13) = (sxtb16(word), sxtb16_ror8(word));
        for j in 0..4 {
            let [x02, x13] = p[j][g];
            acc[j] = smlad(w13, x13, smlad(w02, x02, acc[j]));
        }
    }

    /// See [`super::conv1_relu_pool`]. Row-wise, without patches: the padded image is stored
    /// once as i16 pairs `(x[r][c], x[r][c+1])` (c even), column-major (`xt[c/2][r]`), and for a
    /// 2x2 window at even column `x` the words at columns `x, x+2, x+4` of each input row feed
    /// both columns of the window: column `x` with the weight pairs `(w0,w1) (w2,w3) (w4,0)`,
    /// column `x+1` with `(0,w0) (w1,w2) (w3,w4)`. Rows `r` and `r+1` of a column are adjacent,
    /// so one `LDRD` of two inputs and one of two weight pairs feed four `SMLAD`; no gathering.
    pub fn conv1_relu_pool(
        weight: &[[[[i8; 5]; 5]; 1]; 6],
        q: &QLayerParams<6>,
        image: &[u8; IMAGE_PIXELS],
        out: &mut [[[i8; 14]; 14]; 6],
    ) {
        let zp = q.input_zero_point as i16 as u16 as u32;
        let mut xt = Conv1Image([[zp | zp << 16; 32]; 16]);
        // Four pixels at a time: `SXTB16` of `p ^ 0x80` gives (q0, q2) and (q1, q3).
        for (r, src) in image.as_chunks::<4>().0.chunks_exact(7).enumerate() {
            for (g, &px) in src.iter().enumerate() {
                let w = u32::from_le_bytes(px) ^ 0x8080_8080;
                let (e, o) = (sxtb16(w), sxtb16_ror8(w));
                xt.0[2 * g + 1][r + 2] = (e & 0xffff) | o << 16;
                xt.0[2 * g + 2][r + 2] = e >> 16 | (o & 0xffff_0000);
            }
        }
        // Per channel, kernel row and pair j: [even column's pair, odd column's pair].
        let wp: [Conv1Weights; 6] =
            core::array::from_fn(|oc| Conv1Weights(weight[oc][0].each_ref().map(row_pairs)));
        let rq: [Rq; 6] = core::array::from_fn(|oc| Rq::new(q, oc));
        for py in 0..14 {
            for px in 0..14 {
                for (oc, plane) in out.iter_mut().enumerate() {
                    let acc = window_rows(&wp[oc], &xt, px, 2 * py);
                    plane[py][px] = rq[oc].output(max4(acc), true);
                }
            }
        }
    }

    /// conv1's padded input, i16 pairs, column-major: `[c/2][row]`.
    #[repr(C, align(8))]
    struct Conv1Image([[u32; 32]; 16]);

    /// conv1's weights of one channel as `[ky][j][even, odd]` pairs (see `conv1_relu_pool`).
    #[repr(C, align(8))]
    struct Conv1Weights([[[u32; 2]; 3]; 5]);

    /// The four sums `[(0,0), (0,1), (1,0), (1,1)]` of the 2x2 window at rows `y, y+1` and
    /// columns `2px, 2px+1` of conv1, in Rust: what the assembly below computes.
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
    #[inline(always)]
    fn window_rows(w: &Conv1Weights, xt: &Conv1Image, px: usize, y: usize) -> [i32; 4] {
        let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
        for ky in 0..5 {
            for j in 0..3 {
                let [k0, k1] = w.0[ky][j];
                let (x0, x1) = (xt.0[px + j][y + ky], xt.0[px + j][y + ky + 1]);
                a00 = smlad(k0, x0, a00);
                a10 = smlad(k0, x1, a10);
                a01 = smlad(k1, x0, a01);
                a11 = smlad(k1, x1, a11);
            }
        }
        [a00, a01, a10, a11]
    }

    /// The same, unrolled: 15 × (two `LDRD` at constant offsets, four `SMLAD`), the first
    /// step with `SMUAD` (no accumulator to clear): 90 instructions for 100 multiply-adds.
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
    #[inline(always)]
    fn window_rows(w: &Conv1Weights, xt: &Conv1Image, px: usize, y: usize) -> [i32; 4] {
        assert!(px < 14 && y < 28);
        let (a00, a01, a10, a11): (i32, i32, i32, i32);
        // SAFETY: reads the 120 bytes of `w` and, for columns px..px+3 (< 16) and rows
        // y..y+6 (≤ 32) of `xt`, the words at `xt[px + j][y + ky]` (offset j·128 + ky·4 from
        // `&xt[px][y]`); both are 8-byte aligned so every LDRD address is word aligned.
        unsafe {
            core::arch::asm!(
                "ldrd {k0}, {k1}, [{wp}, #0]",
                "ldrd {x0}, {x1}, [{xp}, #0]",
                "smuad {a00}, {k0}, {x0}",
                "smuad {a10}, {k0}, {x1}",
                "smuad {a01}, {k1}, {x0}",
                "smuad {a11}, {k1}, {x1}",
                "ldrd {k0}, {k1}, [{wp}, #8]",
                "ldrd {x0}, {x1}, [{xp}, #128]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #16]",
                "ldrd {x0}, {x1}, [{xp}, #256]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #24]",
                "ldrd {x0}, {x1}, [{xp}, #4]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #32]",
                "ldrd {x0}, {x1}, [{xp}, #132]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #40]",
                "ldrd {x0}, {x1}, [{xp}, #260]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #48]",
                "ldrd {x0}, {x1}, [{xp}, #8]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #56]",
                "ldrd {x0}, {x1}, [{xp}, #136]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #64]",
                "ldrd {x0}, {x1}, [{xp}, #264]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #72]",
                "ldrd {x0}, {x1}, [{xp}, #12]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #80]",
                "ldrd {x0}, {x1}, [{xp}, #140]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #88]",
                "ldrd {x0}, {x1}, [{xp}, #268]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #96]",
                "ldrd {x0}, {x1}, [{xp}, #16]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #104]",
                "ldrd {x0}, {x1}, [{xp}, #144]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                "ldrd {k0}, {k1}, [{wp}, #112]",
                "ldrd {x0}, {x1}, [{xp}, #272]",
                "smlad {a00}, {k0}, {x0}, {a00}",
                "smlad {a10}, {k0}, {x1}, {a10}",
                "smlad {a01}, {k1}, {x0}, {a01}",
                "smlad {a11}, {k1}, {x1}, {a11}",
                k0 = out(reg) _,
                k1 = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                a00 = out(reg) a00,
                a01 = out(reg) a01,
                a10 = out(reg) a10,
                a11 = out(reg) a11,
                wp = in(reg) w.0.as_ptr(),
                xp = in(reg) xt.0[px].as_ptr().add(y),
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        [a00, a01, a10, a11]
    }

    /// See [`super::conv2_relu_pool`]. Pairs of input channels: the input is stored once as
    /// words `(x[2p][r][c], x[2p+1][r][c])`, column-major (`xt[c][p][r]`), and each output
    /// channel's weights as `(w[2p][ky][kx], w[2p+1][ky][kx])`, 75 words with no padding. For a
    /// 2x2 window, one `LDRD` loads rows `r, r+1` of a column, which with the previous column
    /// feeds all four outputs of the window for one weight word: 150 multiply-adds in 75
    /// `SMLAD` per output.
    pub fn conv2_relu_pool(
        weight: &[[[[i8; 5]; 5]; 6]; 16],
        q: &QLayerParams<16>,
        x: &[[[i8; 14]; 14]; 6],
        out: &mut [[[i8; 5]; 5]; 16],
    ) {
        let mut xt = Conv2Image([[[0u32; 14]; 3]; 14]);
        for (p, [even, odd]) in x.as_chunks::<2>().0.iter().enumerate() {
            for (r, (re, ro)) in even.iter().zip(odd).enumerate() {
                for (c, (&a, &b)) in re.iter().zip(ro).enumerate() {
                    xt.0[c][p][r] = pair(a, b);
                }
            }
        }
        let rq: [Rq; 16] = core::array::from_fn(|oc| Rq::new(q, oc));
        let mut wp = Conv2Weights([[[0u32; 5]; 5]; 3]);
        for (oc, plane) in out.iter_mut().enumerate() {
            for (dst, [even, odd]) in wp.0.iter_mut().zip(weight[oc].as_chunks::<2>().0) {
                for (d, (re, ro)) in dst.iter_mut().zip(even.iter().zip(odd)) {
                    for (d, (&a, &b)) in d.iter_mut().zip(re.iter().zip(ro)) {
                        *d = pair(a, b);
                    }
                }
            }
            // One loop over the 25 windows (not two nested ones of 5, which the compiler
            // would unroll into five copies of the window).
            for (i, o) in plane.as_flattened_mut().iter_mut().enumerate() {
                let acc = conv2_window(&wp, &xt, 2 * (i % 5), 2 * (i / 5));
                *o = rq[oc].output(max4(acc), true);
            }
        }
    }

    /// See [`super::conv_relu_pool`]. The four patches of a pooling window are stored as
    /// `SMLAD` pairs interleaved by group of four taps (`[g][j] = [x02, x13]`, the order in which
    /// `SXTB16` unpacks a weight word), so each weight word is loaded and unpacked once for the
    /// four outputs of the window: one `LDR`, two `SXTB16`, four `LDRD` and eight `SMLAD` per 16
    /// multiply-adds ([`patch_dots4`]).
    pub fn conv_relu_pool<
        const IC: usize,
        const OC: usize,
        const K: usize,
        const P: usize,
        const H: usize,
        const W: usize,
        const PH: usize,
        const PW: usize,
        const T: usize,
    >(
        weight: &[[i8; T]; OC],
        q: &QLayerParams<OC>,
        x: &[[[i8; W]; H]; IC],
        out: &mut [[[i8; PW]; PH]; OC],
    ) {
        let mut patches = [[0i8; T]; 4];
        let mut pairs = WindowPairs([[[0u32; 2]; 4]; MAX_TAPS / 4]);
        let rq: [Rq; OC] = core::array::from_fn(|oc| Rq::new(q, oc));
        for py in 0..PH {
            for px in 0..PW {
                window_patches::<IC, K, P, H, W, T>(x, q.input_zero_point, py, px, &mut patches);
                for (j, patch) in patches.iter().enumerate() {
                    for (dst, w) in pairs.0.iter_mut().zip(patch.as_chunks::<4>().0) {
                        let w = u32::from_le_bytes(w.map(|b| b as u8));
                        dst[j] = [sxtb16(w), sxtb16_ror8(w)];
                    }
                }
                for ((plane, w), rq) in out.iter_mut().zip(weight).zip(&rq) {
                    plane[py][px] = rq.output(max4(patch_dots4(w, &pairs)), true);
                }
            }
        }
    }

    /// The four patches of a pooling window as `SMLAD` pairs: `[group][j][x02, x13]`.
    #[repr(C, align(8))]
    struct WindowPairs([[[u32; 2]; 4]; MAX_TAPS / 4]);

    /// `Σ w·p_j` of one weight row against the four patches, in Rust: what the assembly below
    /// computes.
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
    #[inline(always)]
    fn patch_dots4<const T: usize>(w: &[i8; T], p: &WindowPairs) -> [i32; 4] {
        let mut acc = [0i32; 4];
        for (word, group) in w.as_chunks::<4>().0.iter().zip(&p.0) {
            let word = u32::from_le_bytes(word.map(|b| b as u8));
            let (w02, w13) = (sxtb16(word), sxtb16_ror8(word));
            for (a, &[x02, x13]) in acc.iter_mut().zip(group) {
                *a = smlad(w13, x13, smlad(w02, x02, *a));
            }
        }
        acc
    }

    /// The same as a loop of 15 instructions per 16 multiply-adds, unrolled twice: one weight
    /// word (`LDR`, post-incremented; any alignment), its two `SXTB16`, then per patch one
    /// `LDRD` of its pair words at a constant offset and two `SMLAD`.
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
    #[inline(always)]
    fn patch_dots4<const T: usize>(w: &[i8; T], p: &WindowPairs) -> [i32; 4] {
        const { assert!(T >= 4 && T.is_multiple_of(4) && T <= MAX_TAPS) };
        let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
        // SAFETY: reads the T bytes of `w` and the first T/4 groups (32 bytes each, 8-byte
        // aligned) of `p`; writes only the named registers.
        unsafe {
            core::arch::asm!(
                // G = T/4 groups, two per pass, entering at the second half when G is odd
                // (as in `dense_rows4`).
                "lsrs {n}, {n}, #1",
                "bcc 2f",
                "adds {n}, {n}, #1",
                "b 4f",
                "2:",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "ldrd {x0}, {x1}, [{xp}, #8]",
                "smlad {a1}, {t}, {x0}, {a1}",
                "smlad {a1}, {w}, {x1}, {a1}",
                "ldrd {x0}, {x1}, [{xp}, #16]",
                "smlad {a2}, {t}, {x0}, {a2}",
                "smlad {a2}, {w}, {x1}, {a2}",
                "ldrd {x0}, {x1}, [{xp}, #24]",
                "smlad {a3}, {t}, {x0}, {a3}",
                "smlad {a3}, {w}, {x1}, {a3}",
                "ldrd {x0}, {x1}, [{xp}], #32",
                "smlad {a0}, {t}, {x0}, {a0}",
                "smlad {a0}, {w}, {x1}, {a0}",
                "4:",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "ldrd {x0}, {x1}, [{xp}, #8]",
                "smlad {a1}, {t}, {x0}, {a1}",
                "smlad {a1}, {w}, {x1}, {a1}",
                "ldrd {x0}, {x1}, [{xp}, #16]",
                "smlad {a2}, {t}, {x0}, {a2}",
                "smlad {a2}, {w}, {x1}, {a2}",
                "ldrd {x0}, {x1}, [{xp}, #24]",
                "smlad {a3}, {t}, {x0}, {a3}",
                "smlad {a3}, {w}, {x1}, {a3}",
                "ldrd {x0}, {x1}, [{xp}], #32",
                "smlad {a0}, {t}, {x0}, {a0}",
                "smlad {a0}, {w}, {x1}, {a0}",
                "subs {n}, {n}, #1",
                "bne 2b",
                w = out(reg) _,
                t = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                wp = inout(reg) w.as_ptr() => _,
                xp = inout(reg) p.0.as_ptr() => _,
                n = inout(reg) T / 4 => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                options(nostack, readonly),
            );
        }
        [a0, a1, a2, a3]
    }

    /// `(lo, hi)` as an i16 pair word.
    #[inline(always)]
    fn pair(lo: i8, hi: i8) -> u32 {
        (lo as i16 as u16 as u32) | (hi as i16 as u16 as u32) << 16
    }

    /// A 5-tap kernel row as `[j][even, odd]` pairs: `(w0,w1) (w2,w3) (w4,0)` for an even
    /// output column, `(0,w0) (w1,w2) (w3,w4)` for the odd one (see [`conv1_relu_pool`]).
    #[inline(always)]
    fn row_pairs(w: &[i8; 5]) -> [[u32; 2]; 3] {
        [
            [pair(w[0], w[1]), pair(0, w[0])],
            [pair(w[2], w[3]), pair(w[1], w[2])],
            [pair(w[4], 0), pair(w[3], w[4])],
        ]
    }

    /// conv2's input as channel pairs, column-major: `[c][p][row]` (so every offset of a
    /// window fits an `LDRD` immediate).
    #[repr(C, align(8))]
    struct Conv2Image([[[u32; 14]; 3]; 14]);

    /// conv2's weights of one output channel as channel pairs: `[p][ky][kx]`.
    #[repr(C, align(8))]
    struct Conv2Weights([[[u32; 5]; 5]; 3]);

    /// The four sums `[(0,0), (0,1), (1,0), (1,1)]` of the 2x2 window at rows `y, y+1` and
    /// columns `x, x+1` of conv2, in Rust: what the assembly below computes.
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
    #[inline(always)]
    fn conv2_window(w: &Conv2Weights, xt: &Conv2Image, x: usize, y: usize) -> [i32; 4] {
        let (mut a00, mut a01, mut a10, mut a11) = (0i32, 0i32, 0i32, 0i32);
        for (p, wp) in w.0.iter().enumerate() {
            for (ky, wr) in wp.iter().enumerate() {
                for (kx, &k) in wr.iter().enumerate() {
                    let (c0, c1) = (&xt.0[x + kx][p], &xt.0[x + kx + 1][p]);
                    a00 = smlad(k, c0[y + ky], a00);
                    a01 = smlad(k, c1[y + ky], a01);
                    a10 = smlad(k, c0[y + ky + 1], a10);
                    a11 = smlad(k, c1[y + ky + 1], a11);
                }
            }
        }
        [a00, a01, a10, a11]
    }

    /// The same, unrolled: per channel pair and kernel row, one `LDRD` of the first column,
    /// then per tap the next column's `LDRD`, the weight word and four `SMLAD` (the first
    /// `SMUAD`): 465 instructions for 600 multiply-adds.
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
    #[inline(always)]
    fn conv2_window(w: &Conv2Weights, xt: &Conv2Image, x: usize, y: usize) -> [i32; 4] {
        assert!(x < 9 && y < 9);
        let (a00, a01, a10, a11): (i32, i32, i32, i32);
        // SAFETY: reads the 300 bytes of `w` and, for columns x..x+6 (≤ 14), every channel pair
        // and rows y..y+6 (≤ 14), the words `xt[x + c][p][y + r]` (offset c·168 + p·56 + r·4
        // ≤ 1,012 from `&xt[x][0][y]`); both are 8-byte aligned so every LDRD address is word
        // aligned.
        unsafe {
            core::arch::asm!(
                "ldrd {p0}, {p1}, [{xp}, #0]",
                "ldrd {q0}, {q1}, [{xp}, #168]",
                "ldr {k}, [{wp}, #0]",
                "smuad {a00}, {k}, {p0}",
                "smuad {a01}, {k}, {q0}",
                "smuad {a10}, {k}, {p1}",
                "smuad {a11}, {k}, {q1}",
                "ldrd {p0}, {p1}, [{xp}, #336]",
                "ldr {k}, [{wp}, #4]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #504]",
                "ldr {k}, [{wp}, #8]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #672]",
                "ldr {k}, [{wp}, #12]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #840]",
                "ldr {k}, [{wp}, #16]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #4]",
                "ldrd {q0}, {q1}, [{xp}, #172]",
                "ldr {k}, [{wp}, #20]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #340]",
                "ldr {k}, [{wp}, #24]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #508]",
                "ldr {k}, [{wp}, #28]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #676]",
                "ldr {k}, [{wp}, #32]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #844]",
                "ldr {k}, [{wp}, #36]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #8]",
                "ldrd {q0}, {q1}, [{xp}, #176]",
                "ldr {k}, [{wp}, #40]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #344]",
                "ldr {k}, [{wp}, #44]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #512]",
                "ldr {k}, [{wp}, #48]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #680]",
                "ldr {k}, [{wp}, #52]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #848]",
                "ldr {k}, [{wp}, #56]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #12]",
                "ldrd {q0}, {q1}, [{xp}, #180]",
                "ldr {k}, [{wp}, #60]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #348]",
                "ldr {k}, [{wp}, #64]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #516]",
                "ldr {k}, [{wp}, #68]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #684]",
                "ldr {k}, [{wp}, #72]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #852]",
                "ldr {k}, [{wp}, #76]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #16]",
                "ldrd {q0}, {q1}, [{xp}, #184]",
                "ldr {k}, [{wp}, #80]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #352]",
                "ldr {k}, [{wp}, #84]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #520]",
                "ldr {k}, [{wp}, #88]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #688]",
                "ldr {k}, [{wp}, #92]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #856]",
                "ldr {k}, [{wp}, #96]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #56]",
                "ldrd {q0}, {q1}, [{xp}, #224]",
                "ldr {k}, [{wp}, #100]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #392]",
                "ldr {k}, [{wp}, #104]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #560]",
                "ldr {k}, [{wp}, #108]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #728]",
                "ldr {k}, [{wp}, #112]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #896]",
                "ldr {k}, [{wp}, #116]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #60]",
                "ldrd {q0}, {q1}, [{xp}, #228]",
                "ldr {k}, [{wp}, #120]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #396]",
                "ldr {k}, [{wp}, #124]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #564]",
                "ldr {k}, [{wp}, #128]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #732]",
                "ldr {k}, [{wp}, #132]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #900]",
                "ldr {k}, [{wp}, #136]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #64]",
                "ldrd {q0}, {q1}, [{xp}, #232]",
                "ldr {k}, [{wp}, #140]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #400]",
                "ldr {k}, [{wp}, #144]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #568]",
                "ldr {k}, [{wp}, #148]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #736]",
                "ldr {k}, [{wp}, #152]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #904]",
                "ldr {k}, [{wp}, #156]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #68]",
                "ldrd {q0}, {q1}, [{xp}, #236]",
                "ldr {k}, [{wp}, #160]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #404]",
                "ldr {k}, [{wp}, #164]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #572]",
                "ldr {k}, [{wp}, #168]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #740]",
                "ldr {k}, [{wp}, #172]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #908]",
                "ldr {k}, [{wp}, #176]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #72]",
                "ldrd {q0}, {q1}, [{xp}, #240]",
                "ldr {k}, [{wp}, #180]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #408]",
                "ldr {k}, [{wp}, #184]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #576]",
                "ldr {k}, [{wp}, #188]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #744]",
                "ldr {k}, [{wp}, #192]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #912]",
                "ldr {k}, [{wp}, #196]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #112]",
                "ldrd {q0}, {q1}, [{xp}, #280]",
                "ldr {k}, [{wp}, #200]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #448]",
                "ldr {k}, [{wp}, #204]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #616]",
                "ldr {k}, [{wp}, #208]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #784]",
                "ldr {k}, [{wp}, #212]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #952]",
                "ldr {k}, [{wp}, #216]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #116]",
                "ldrd {q0}, {q1}, [{xp}, #284]",
                "ldr {k}, [{wp}, #220]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #452]",
                "ldr {k}, [{wp}, #224]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #620]",
                "ldr {k}, [{wp}, #228]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #788]",
                "ldr {k}, [{wp}, #232]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #956]",
                "ldr {k}, [{wp}, #236]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #120]",
                "ldrd {q0}, {q1}, [{xp}, #288]",
                "ldr {k}, [{wp}, #240]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #456]",
                "ldr {k}, [{wp}, #244]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #624]",
                "ldr {k}, [{wp}, #248]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #792]",
                "ldr {k}, [{wp}, #252]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #960]",
                "ldr {k}, [{wp}, #256]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #124]",
                "ldrd {q0}, {q1}, [{xp}, #292]",
                "ldr {k}, [{wp}, #260]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #460]",
                "ldr {k}, [{wp}, #264]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #628]",
                "ldr {k}, [{wp}, #268]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #796]",
                "ldr {k}, [{wp}, #272]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #964]",
                "ldr {k}, [{wp}, #276]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #128]",
                "ldrd {q0}, {q1}, [{xp}, #296]",
                "ldr {k}, [{wp}, #280]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #464]",
                "ldr {k}, [{wp}, #284]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #632]",
                "ldr {k}, [{wp}, #288]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                "ldrd {p0}, {p1}, [{xp}, #800]",
                "ldr {k}, [{wp}, #292]",
                "smlad {a00}, {k}, {q0}, {a00}",
                "smlad {a01}, {k}, {p0}, {a01}",
                "smlad {a10}, {k}, {q1}, {a10}",
                "smlad {a11}, {k}, {p1}, {a11}",
                "ldrd {q0}, {q1}, [{xp}, #968]",
                "ldr {k}, [{wp}, #296]",
                "smlad {a00}, {k}, {p0}, {a00}",
                "smlad {a01}, {k}, {q0}, {a01}",
                "smlad {a10}, {k}, {p1}, {a10}",
                "smlad {a11}, {k}, {q1}, {a11}",
                k = out(reg) _,
                p0 = out(reg) _,
                p1 = out(reg) _,
                q0 = out(reg) _,
                q1 = out(reg) _,
                a00 = out(reg) a00,
                a01 = out(reg) a01,
                a10 = out(reg) a10,
                a11 = out(reg) a11,
                wp = in(reg) w.0.as_ptr(),
                xp = in(reg) xt.0[x][0].as_ptr().add(y),
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        [a00, a01, a10, a11]
    }

    /// `Σ w·x` of four consecutive weight rows (`rows[r]` = the words of `block[r]`).
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
    #[inline(always)]
    fn dense_rows4<const I: usize>(
        _block: &[[i8; I]],
        rows: [&[[u8; 4]]; 4],
        xs: &[[u32; 2]],
    ) -> [i32; 4] {
        let mut acc = [0i32; 4];
        for (g, &[x02, x13]) in xs.iter().enumerate() {
            for r in 0..4 {
                let word = u32::from_le_bytes(rows[r][g]);
                acc[r] = smlad(sxtb16_ror8(word), x13, smlad(sxtb16(word), x02, acc[r]));
            }
        }
        acc
    }

    /// The same as one loop of 21 instructions per 16 multiply-accumulates, unrolled twice
    /// (44 instructions per 32): one `LDRD` of activation pairs, then per row one weight word,
    /// two `SXTB16` and two `SMLAD`. Rows 0 and 1 are read through one pointer (`[wp]` and
    /// `[wp, #I]`), rows 2 and 3 through a second (`wq = wp + 2I`), so the immediate offsets
    /// stay below 4096 for any fan-in up to 4095 (the wide CNN's fc1 has 3136).
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
    #[inline(always)]
    fn dense_rows4<const I: usize>(
        block: &[[i8; I]],
        _rows: [&[[u8; 4]]; 4],
        xs: &[[u32; 2]],
    ) -> [i32; 4] {
        const { assert!(I >= 4 && I <= 4095) };
        assert!(block.len() == 4 && xs.len() == I / 4);
        let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
        // SAFETY: reads the 4·I bytes of `block` (rows 0, 1 at `wp`, `wp + I` and rows 2, 3 at
        // `wq`, `wq + I`, any alignment for LDR) and the I/4 aligned pair words of `xs`; writes
        // only the named registers.
        unsafe {
            core::arch::asm!(
                // G = I/4 groups, two per pass: n = G/2 passes, or (G+1)/2 with the first
                // pass entering at its second half when G is odd.
                "lsrs {n}, {n}, #1",
                "bcc 2f",
                "adds {n}, {n}, #1",
                "b 4f",
                "2:",
                "ldrd {x0}, {x1}, [{xp}], #8",
                "ldr {w}, [{wp}, #{s1}]",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a1}, {t}, {x0}, {a1}",
                "smlad {a1}, {w}, {x1}, {a1}",
                "ldr {w}, [{wq}, #{s1}]",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a3}, {t}, {x0}, {a3}",
                "smlad {a3}, {w}, {x1}, {a3}",
                "ldr {w}, [{wq}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a2}, {t}, {x0}, {a2}",
                "smlad {a2}, {w}, {x1}, {a2}",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a0}, {t}, {x0}, {a0}",
                "smlad {a0}, {w}, {x1}, {a0}",
                "4:",
                "ldrd {x0}, {x1}, [{xp}], #8",
                "ldr {w}, [{wp}, #{s1}]",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a1}, {t}, {x0}, {a1}",
                "smlad {a1}, {w}, {x1}, {a1}",
                "ldr {w}, [{wq}, #{s1}]",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a3}, {t}, {x0}, {a3}",
                "smlad {a3}, {w}, {x1}, {a3}",
                "ldr {w}, [{wq}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a2}, {t}, {x0}, {a2}",
                "smlad {a2}, {w}, {x1}, {a2}",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a0}, {t}, {x0}, {a0}",
                "smlad {a0}, {w}, {x1}, {a0}",
                "subs {n}, {n}, #1",
                "bne 2b",
                w = out(reg) _,
                t = out(reg) _,
                x0 = out(reg) _,
                x1 = out(reg) _,
                wp = inout(reg) block.as_ptr() => _,
                wq = inout(reg) block.as_ptr().add(2) => _,
                xp = inout(reg) xs.as_ptr() => _,
                n = inout(reg) I / 4 => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                s1 = const I,
                options(nostack, readonly),
            );
        }
        [a0, a1, a2, a3]
    }

    /// `I` int8 values widened to i16 and stored as `I/4` pairs of words for `SMLAD`
    /// (`[x0 x2] [x1 x3]` per group of four), 8-byte aligned for `LDRD`: `2·I` bytes of stack.
    #[repr(C, align(8))]
    struct Pairs<const I: usize>([i16; I]);

    impl<const I: usize> Pairs<I> {
        const GROUPS: usize = {
            assert!(I.is_multiple_of(4));
            I / 4
        };

        fn new() -> Self {
            Pairs([0; I])
        }

        fn words(&self) -> &[[u32; 2]] {
            // SAFETY: `self.0` is 8-byte aligned (repr align 8) and holds exactly
            // `GROUPS · 8` bytes; every bit pattern is a valid `u32`.
            unsafe { core::slice::from_raw_parts(self.0.as_ptr().cast(), Self::GROUPS) }
        }

        fn words_mut(&mut self) -> &mut [[u32; 2]] {
            // SAFETY: as in `words`, and `&mut self` makes the view unique.
            unsafe { core::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), Self::GROUPS) }
        }
    }

    /// See [`super::dense`]. Four rows share each activation pair load.
    pub fn dense<const I: usize, const O: usize>(
        weight: &[[i8; I]; O],
        q: &QLayerParams<O>,
        x: &[i8; I],
        relu: bool,
        out: &mut [i8; O],
    ) {
        const { assert!(I.is_multiple_of(4)) };
        // x in the SXTB16 order, as pairs: [x0 x2] [x1 x3] [x4 x6] ...
        // (`SXTB16` of each little-endian word of x makes exactly these pairs.)
        let mut pairs = Pairs::<I>::new();
        for (d, w) in pairs.words_mut().iter_mut().zip(x.as_chunks::<4>().0) {
            let w = u32::from_le_bytes(w.map(|b| b as u8));
            *d = [sxtb16(w), sxtb16_ror8(w)];
        }
        let xs = pairs.words();
        let mut o = 0;
        while o + 4 <= O {
            let rows: [&[[u8; 4]]; 4] = core::array::from_fn(|r| {
                bytemuck::cast_slice::<i8, u8>(&weight[o + r])
                    .as_chunks::<4>()
                    .0
            });
            let acc = dense_rows4::<I>(&weight[o..o + 4], rows, xs);
            for r in 0..4 {
                out[o + r] = Rq::new(q, o + r).output(acc[r], relu);
            }
            o += 4;
        }
        while o < O {
            let (row, _) = bytemuck::cast_slice::<i8, u8>(&weight[o]).as_chunks::<4>();
            let mut acc = 0i32;
            for (word, &[x02, x13]) in row.iter().zip(xs) {
                let word = u32::from_le_bytes(*word);
                acc = smlad(sxtb16_ror8(word), x13, smlad(sxtb16(word), x02, acc));
            }
            out[o] = Rq::new(q, o).output(acc, relu);
            o += 1;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::intrinsics::emulated;
        use super::*;

        /// The convolutions' pair scheme: for every weight and input value and every tap
        /// position, the three `SMLAD` of [`row_pairs`] against the input pairs of one row give
        /// `w·x` at the even column (input at `kx`) and at the odd column (input at `kx + 1`),
        /// and nothing from inputs outside the taps; plus random full rows.
        #[test]
        fn row_pairs_match_plain_products_exhaustively() {
            let dot = |k: &[[u32; 2]; 3], side: usize, xs: &[i8; 6]| {
                (0..3).fold(0i32, |a, j| {
                    smlad(k[j][side], pair(xs[2 * j], xs[2 * j + 1]), a)
                })
            };
            for w in -128i8..=127 {
                for x in -128i8..=127 {
                    for kx in 0..5 {
                        let mut row = [0i8; 5];
                        row[kx] = w;
                        let k = row_pairs(&row);
                        let mut xs = [0i8; 6];
                        xs[kx] = x;
                        assert_eq!(dot(&k, 0, &xs), w as i32 * x as i32);
                        let mut xs = [0i8; 6];
                        xs[kx + 1] = x;
                        assert_eq!(dot(&k, 1, &xs), w as i32 * x as i32);
                    }
                    // Input 0 (even column) and 5 (odd column) are outside the taps.
                    let k = row_pairs(&[w; 5]);
                    assert_eq!(dot(&k, 0, &[0, 0, 0, 0, 0, x]), 0);
                    assert_eq!(dot(&k, 1, &[x, 0, 0, 0, 0, 0]), 0);
                }
            }
            let mut r = crate::quant::lenet::testutil::Lcg(99);
            for _ in 0..100_000 {
                let w: [i8; 5] = core::array::from_fn(|_| r.range(-128, 127) as i8);
                let xs: [i8; 6] = core::array::from_fn(|_| r.range(-128, 127) as i8);
                let k = row_pairs(&w);
                let even: i32 = (0..5).map(|t| w[t] as i32 * xs[t] as i32).sum();
                let odd: i32 = (0..5).map(|t| w[t] as i32 * xs[t + 1] as i32).sum();
                assert_eq!([dot(&k, 0, &xs), dot(&k, 1, &xs)], [even, odd]);
            }
        }

        /// [`Rq::output`] equals `Requant::to_i8` on random channels (every shift, multipliers
        /// ≥ 0 including 0 and the extremes) and accumulators up to the overflow bound, with
        /// the rounding ties and the saturating ends hit on purpose.
        #[test]
        fn fast_requant_matches_to_i8() {
            use crate::quant::lenet::testutil::Lcg;
            let mut r = Lcg(4242);
            let mut q = QLayerParams::<1> {
                input_scale: 1.0,
                output_scale: 1.0,
                input_zero_point: 0,
                output_zero_point: 0,
                _pad: [0; 2],
                bias: [0],
                multiplier: [0],
                shift: [0],
                weight_scale: [1.0],
            };
            for case in 0..200_000u32 {
                let shift = r.range(-31, 30);
                let multiplier = match case % 8 {
                    0 => 0,
                    1 => i32::MAX,
                    2 => 1 << 30,
                    3 => (r.next_u32() >> 1) as i32,
                    _ => (1 << 30) | (r.next_u32() >> 2) as i32,
                };
                q.shift[0] = shift;
                q.multiplier[0] = multiplier;
                q.output_zero_point = r.range(-128, 127) as i8;
                let lim = (i32::MAX >> shift.max(0)) as i64;
                let wide = (r.next_u32() as i32) >> r.range(0, 31);
                let total = match case % 5 {
                    0 => lim as i32,
                    1 => -lim as i32,
                    // Near a tie of the divide: a multiple of 2^(right−1) before scaling.
                    2 => wide & !((1 << (-shift).clamp(1, 31) as u32 >> 1) - 1),
                    _ => wide,
                } as i64;
                let total = total.clamp(-lim, lim) as i32;
                let bias = r.range(-1000, 1000);
                q.bias[0] = bias;
                let best = total.wrapping_sub(bias);
                if (best as i64 + bias as i64).abs() > lim {
                    continue;
                }
                let rq = q.requant(0);
                let zp = q.output_zero_point as i32;
                for relu in [true, false] {
                    let want = rq.to_i8(bias + best, zp, clamp_floor(q.output_zero_point, relu));
                    assert_eq!(
                        Rq::new(&q, 0).output(best, relu),
                        want,
                        "{rq:?} {total} {relu}"
                    );
                }
            }
            // Exhaustive over small accumulators for a few scales.
            for (multiplier, shift) in [
                (1 << 30, -1),
                (1 << 30, -7),
                (1_610_612_736, -3),
                (i32::MAX, 0),
                (1_234_567_890, 2),
            ] {
                q.multiplier[0] = multiplier;
                q.shift[0] = shift;
                q.bias[0] = 0;
                for zp in [-128i8, -5, 0, 127] {
                    q.output_zero_point = zp;
                    let rq = q.requant(0);
                    for acc in -70_000..=70_000 {
                        for relu in [true, false] {
                            let want = rq.to_i8(acc, zp as i32, clamp_floor(zp, relu));
                            assert_eq!(Rq::new(&q, 0).output(acc, relu), want);
                        }
                    }
                }
            }
        }

        #[test]
        fn emulated_instructions_hand_checked() {
            // SXTB16: bytes [0x80, 0x7f, 0xff, 0x01] (LE word 0x01ff7f80) -> (-128, -1), (127, 1).
            let w = 0x01ff_7f80u32;
            assert_eq!(emulated::sxtb16(w), 0xffff_ff80);
            assert_eq!(emulated::sxtb16_ror8(w), 0x0001_007f);
            // SMLAD: 10 + (-128)(3) + (-1)(-7) = 10 - 384 + 7 = -367.
            assert_eq!(emulated::smlad(0xffff_ff80, 0xfff9_0003, 10), -367);
            // Extremes: (-32768)(-32768)·2 + 0 wraps to i32::MIN (hardware: Q flag, same bits).
            assert_eq!(emulated::smlad(0x8000_8000, 0x8000_8000, 0), i32::MIN);
            // SMMLAR: 2^30·4 + 2^31 = 2^32 + 2^31 → 1; −2^31 + 2^31 → 0 (ties round up);
            // 3·2^32 − 2^31 + 2^31 → 3; 2^62 + 2^31 → 2^30.
            assert_eq!(emulated::smmlar(1 << 30, 4, 0), 1);
            assert_eq!(emulated::smmlar(-(1 << 30), 2, 0), 0);
            assert_eq!(emulated::smmlar(-(1 << 16), 1 << 15, 3), 3);
            assert_eq!(emulated::smmlar(i32::MIN, i32::MIN, 0), 1 << 30);
            // Bits 63..32 of (2^31 − 1)·2^32 + 2^62 + 2^31, past 2^63: 0xbfff_ffff.
            assert_eq!(
                emulated::smmlar(i32::MIN, i32::MIN, i32::MAX),
                0xbfff_ffffu32 as i32
            );
        }

        /// The dense layers' dot product (`SXTB16` + `SMLAD` in `slot` order) equals the plain
        /// `Σ w·x` for every weight byte and activation value: exhaustive over all 256 × 256
        /// (w, x) pairs in every lane, plus random full groups.
        #[test]
        fn dsp_group_matches_plain_products_exhaustively() {
            for w in -128i32..=127 {
                for x in -128i32..=127 {
                    for lane in 0..4 {
                        let mut wb = [0u8; 4];
                        wb[lane] = w as u8;
                        let mut taps = [0i16; 4];
                        taps[slot(lane)] = x as i16;
                        let p: [u32; 2] = bytemuck::cast(taps);
                        let views: [&[[u32; 2]]; 4] = [&[p], &[p], &[p], &[p]];
                        let mut acc = [7, -7, 0, 1 << 20];
                        mac_group(u32::from_le_bytes(wb), 0, &views, &mut acc);
                        assert_eq!(acc, [7 + w * x, -7 + w * x, w * x, (1 << 20) + w * x]);
                    }
                }
            }
            let mut s = 1u32;
            for _ in 0..100_000 {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let wb = s.to_le_bytes();
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let xb = s.to_le_bytes().map(|b| b as i8);
                let mut taps = [0i16; 4];
                for t in 0..4 {
                    taps[slot(t)] = xb[t] as i16;
                }
                let p: [u32; 2] = bytemuck::cast(taps);
                let views: [&[[u32; 2]]; 4] = [&[p], &[p], &[p], &[p]];
                let mut acc = [0; 4];
                mac_group(u32::from_le_bytes(wb), 0, &views, &mut acc);
                let want: i32 = (0..4).map(|t| wb[t] as i8 as i32 * xb[t] as i32).sum();
                assert_eq!(acc, [want; 4]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::lenet::testutil::{Lcg, random_image, random_qparams};
    use crate::quant::{QConv2d, QDense, max_pool_2x2};

    /// The SSE2 requantization of four lanes equals the scalar one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn requant4_matches_scalar() {
        use crate::quant::Requant;
        use core::arch::x86_64::_mm_loadu_si128;
        let mut r = Lcg(77);
        for case in 0..4_000 {
            let shift = r.range(-31, 3);
            let multiplier = if case % 50 == 0 {
                0
            } else {
                r.range(1 << 30, i32::MAX)
            };
            let rq = Requant { multiplier, shift };
            let zp = r.range(-128, 127) as i8;
            let lo = if case % 2 == 0 { zp as i32 } else { -128 };
            let lim = (i32::MAX >> shift.max(0)) as i64;
            for _ in 0..64 {
                let accs: [i32; 4] = core::array::from_fn(|k| {
                    let wide = (r.next_u32() as i32) >> r.range(0, 30);
                    let v = if k == 3 { -wide } else { wide } as i64;
                    v.clamp(-lim, lim) as i32
                });
                // SAFETY: 16 readable bytes.
                let v = unsafe { _mm_loadu_si128(accs.as_ptr().cast()) };
                let got = portable::sse2_requant4(v, rq, zp, lo);
                let want = accs.map(|a| rq.to_i8(a, zp as i32, lo));
                assert_eq!(got, want, "{rq:?} zp {zp} lo {lo} accs {accs:?}");
            }
        }
    }

    /// The im2col convolution and the wide dense layers, both implementations, against the
    /// reference kernels on random valid layers and inputs over all of i8.
    #[test]
    fn wide_layers_both_paths_match_the_reference() {
        use crate::quant::wide::testutil::random_wide_qparams;
        let mut r = Lcg(31);
        for seed in 0..6 {
            let p = random_wide_qparams(500 + seed);
            // conv1 (9 taps padded to 12) on the image
            let img: [u8; IMAGE_PIXELS] = if seed % 2 == 0 {
                core::array::from_fn(|_| r.range(0, 255) as u8)
            } else {
                random_image(&mut r)
            };
            let x = crate::quant::lenet::image_to_i8(&img);
            let mut full = [[[0i8; 28]; 28]; 32];
            QConv2d::<1, 32, 3, 1> {
                weight: &p.conv1_weight,
                q: &p.conv1,
            }
            .forward(&x, true, &mut full);
            let mut want1 = [[[0i8; 14]; 14]; 32];
            max_pool_2x2(&full, &mut want1);
            let mut w12 = [[0i8; 12]; 32];
            for (d, s) in w12.iter_mut().zip(&p.conv1_weight) {
                d[..9].copy_from_slice(s.as_flattened().as_flattened());
            }
            let mut a = [[[0i8; 14]; 14]; 32];
            portable::conv_relu_pool::<1, 32, 3, 1, 28, 28, 14, 14, 12>(&w12, &p.conv1, &x, &mut a);
            assert_eq!(a, want1, "portable conv1, seed {seed}");
            let mut b = [[[0i8; 14]; 14]; 32];
            dsp::conv_relu_pool::<1, 32, 3, 1, 28, 28, 14, 14, 12>(&w12, &p.conv1, &x, &mut b);
            assert_eq!(b, want1, "dsp conv1, seed {seed}");
            // conv2 on random input
            let mut x2 = [[[0i8; 14]; 14]; 32];
            x2.iter_mut()
                .flatten()
                .flatten()
                .for_each(|v| *v = r.range(-128, 127) as i8);
            let mut full2 = [[[0i8; 14]; 14]; 64];
            QConv2d::<32, 64, 3, 1> {
                weight: &p.conv2_weight,
                q: &p.conv2,
            }
            .forward(&x2, true, &mut full2);
            let mut want2 = [[[0i8; 7]; 7]; 64];
            max_pool_2x2(&full2, &mut want2);
            let w288: &[[i8; 288]; 64] = bytemuck::cast_ref(&p.conv2_weight);
            let mut a2 = [[[0i8; 7]; 7]; 64];
            portable::conv_relu_pool::<32, 64, 3, 1, 14, 14, 7, 7, 288>(
                w288, &p.conv2, &x2, &mut a2,
            );
            assert_eq!(a2, want2, "portable conv2, seed {seed}");
            let mut b2 = [[[0i8; 7]; 7]; 64];
            dsp::conv_relu_pool::<32, 64, 3, 1, 14, 14, 7, 7, 288>(w288, &p.conv2, &x2, &mut b2);
            assert_eq!(b2, want2, "dsp conv2, seed {seed}");
            // fc1 (3136 inputs) and fc2 (512), with and without ReLU
            let x3136: Vec<i8> = (0..3136).map(|_| r.range(-128, 127) as i8).collect();
            let x3136: &[i8; 3136] = x3136.as_slice().try_into().unwrap();
            let x512: [i8; 512] = core::array::from_fn(|_| r.range(-128, 127) as i8);
            for relu in [true, false] {
                let mut want = [0i8; 512];
                QDense {
                    weight: &p.fc1_weight,
                    q: &p.fc1,
                }
                .forward(x3136, relu, &mut want);
                let mut got = [0i8; 512];
                portable::dense(&p.fc1_weight, &p.fc1, x3136, relu, &mut got);
                assert_eq!(got, want, "portable fc1");
                dsp::dense(&p.fc1_weight, &p.fc1, x3136, relu, &mut got);
                assert_eq!(got, want, "dsp fc1");
                let mut want = [0i8; 10];
                QDense {
                    weight: &p.fc2_weight,
                    q: &p.fc2,
                }
                .forward(&x512, relu, &mut want);
                let mut got = [0i8; 10];
                portable::dense(&p.fc2_weight, &p.fc2, &x512, relu, &mut got);
                assert_eq!(got, want, "portable fc2");
                dsp::dense(&p.fc2_weight, &p.fc2, &x512, relu, &mut got);
                assert_eq!(got, want, "dsp fc2");
            }
        }
    }

    /// Both implementations against the reference kernels, layer by layer, on random valid
    /// layers (weights over the whole −127..=127 range) and random inputs over all of i8.
    #[test]
    fn both_fast_paths_match_the_reference_layer_by_layer() {
        let mut r = Lcg(2024);
        for seed in 0..40 {
            let p = random_qparams(1000 + seed);
            let img = if seed % 4 == 0 {
                core::array::from_fn(|_| r.range(0, 255) as u8)
            } else {
                random_image(&mut r)
            };
            // conv1
            let x = crate::quant::lenet::image_to_i8(&img);
            let conv1 = QConv2d::<1, 6, 5, 2> {
                weight: &p.conv1_weight,
                q: &p.conv1,
            };
            let mut full = [[[0i8; 28]; 28]; 6];
            conv1.forward(&x, true, &mut full);
            let mut want1 = [[[0i8; 14]; 14]; 6];
            max_pool_2x2(&full, &mut want1);
            let mut a = [[[0i8; 14]; 14]; 6];
            portable::conv1_relu_pool(&p.conv1_weight, &p.conv1, &img, &mut a);
            assert_eq!(a, want1, "portable conv1, seed {seed}");
            let mut a = [[[0i8; 14]; 14]; 6];
            portable::conv1_patches(&p.conv1_weight, &p.conv1, &img, &mut a);
            assert_eq!(a, want1, "portable conv1 patches, seed {seed}");
            let mut b = [[[0i8; 14]; 14]; 6];
            dsp::conv1_relu_pool(&p.conv1_weight, &p.conv1, &img, &mut b);
            assert_eq!(b, want1, "dsp conv1, seed {seed}");
            // conv2 on random i8 input over the whole range
            let mut x2 = [[[0i8; 14]; 14]; 6];
            x2.iter_mut()
                .flatten()
                .flatten()
                .for_each(|v| *v = r.range(-128, 127) as i8);
            let conv2 = QConv2d::<6, 16, 5, 0> {
                weight: &p.conv2_weight,
                q: &p.conv2,
            };
            let mut full2 = [[[0i8; 10]; 10]; 16];
            conv2.forward(&x2, true, &mut full2);
            let mut want2 = [[[0i8; 5]; 5]; 16];
            max_pool_2x2(&full2, &mut want2);
            let mut a2 = [[[0i8; 5]; 5]; 16];
            portable::conv2_relu_pool(&p.conv2_weight, &p.conv2, &x2, &mut a2);
            assert_eq!(a2, want2, "portable conv2, seed {seed}");
            let mut b2 = [[[0i8; 5]; 5]; 16];
            dsp::conv2_relu_pool(&p.conv2_weight, &p.conv2, &x2, &mut b2);
            assert_eq!(b2, want2, "dsp conv2, seed {seed}");
            // dense layers, with and without ReLU
            let x400: [i8; 400] = core::array::from_fn(|_| r.range(-128, 127) as i8);
            for relu in [true, false] {
                let mut want = [0i8; 120];
                QDense {
                    weight: &p.fc1_weight,
                    q: &p.fc1,
                }
                .forward(&x400, relu, &mut want);
                let mut got = [0i8; 120];
                portable::dense(&p.fc1_weight, &p.fc1, &x400, relu, &mut got);
                assert_eq!(got, want);
                dsp::dense(&p.fc1_weight, &p.fc1, &x400, relu, &mut got);
                assert_eq!(got, want);
                let x84: [i8; 84] = core::array::from_fn(|_| r.range(-128, 127) as i8);
                let mut want3 = [0i8; 10];
                QDense {
                    weight: &p.fc3_weight,
                    q: &p.fc3,
                }
                .forward(&x84, relu, &mut want3);
                let mut got3 = [0i8; 10];
                portable::dense(&p.fc3_weight, &p.fc3, &x84, relu, &mut got3);
                assert_eq!(got3, want3);
                dsp::dense(&p.fc3_weight, &p.fc3, &x84, relu, &mut got3);
                assert_eq!(got3, want3);
            }
        }
    }
}
