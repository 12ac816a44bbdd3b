//! SSE2 (baseline on every x86-64) dot products with `pmaddwd`: eight i16 products summed
//! pairwise into i32 lanes, exact (every product and pair sum fits in i32, see the overflow
//! proof), so the result equals the scalar sum bit for bit.

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
pub fn requant4(acc: __m128i, r: crate::quant::requant::Requant, zp: i8, lo: i32) -> [i8; 4] {
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
            core::array::from_fn(|ky| core::array::from_fn(|j| _mm_set1_epi32(wp[oc][ky][j])))
        });
        for py in 0..14 {
            // Pooled accumulators (bias not yet added) of this output row, 2 spare.
            let mut pooled = [[0i32; 16]; 6];
            for xb in 0..7 {
                let c = 4 * xb;
                let mut acc = [[z; 2]; 6];
                for r in 0..6 {
                    let row = &xp[2 * py + r];
                    let l = |k: usize| _mm_loadu_si128(row[c + k..c + k + 8].as_ptr().cast());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Lcg;

    /// The SSE2 requantization of four lanes equals the scalar one.
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
                let got = requant4(v, rq, zp, lo);
                let want = accs.map(|a| rq.to_i8(a, zp as i32, lo));
                assert_eq!(got, want, "{rq:?} zp {zp} lo {lo} accs {accs:?}");
            }
        }
    }
}
