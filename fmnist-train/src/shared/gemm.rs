//! The trainers' f32 GEMM, `c = a·b + beta·c` on strided layouts, single-threaded.
//!
//! Why hand-written: training output must stay bit-identical to what `matrixmultiply` 0.3.11
//! computes on an AVX2+FMA CPU (the hashes in `tests/tests/same_bits.rs` were recorded with it),
//! and its 8×8 FMA kernel runs the trainer's shapes well below the core's FMA peak. No crate
//! offers a faster kernel with exactly those roundings, so this file computes the same sums with
//! a 6×16 broadcast-A / vector-B tile. Without AVX2+FMA it calls `matrixmultiply` itself (which
//! then rounds differently anyway), and the tests compare against it bit for bit.
//!
//! What `matrixmultiply::sgemm` (alpha = 1) computes, and so what this file must reproduce:
//! K is cut into blocks of 256 (`S_KC`), the last one shorter. In each block every output keeps
//! one accumulator that starts at +0.0 and takes `acc = fma(a[i][kk], b[kk][j], acc)` strictly in
//! k order. Each block is then merged into C: block 0 with `beta == 0` stores `acc + 0.0` (C is
//! not read); any other block stores `round(round(C·beta') + acc')` with `beta' = beta` for block
//! 0 and 1 after. `acc'` is `acc` for an output inside a full 8×8 tile of matrixmultiply's
//! tiling but `acc + 0.0` inside a partial ("masked") tile — rows from `m - m % 8`, columns from
//! `n - n % 8` — because the masked kernel first stores to a buffer with beta = 0. The two differ
//! only in the sign of a zero (an accumulator that underflowed to −0.0 added to a C of −0.0), and
//! the kernel reproduces that too by adding +0.0 or −0.0 per lane.

use std::cmp::min;

/// `c = a·b + beta·c` (m×k times k×n, element (i, j) of `x` at `i·rsx + j·csx`), rounded exactly
/// as `matrixmultiply` 0.3.11 rounds on a CPU with AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    // Bounds: the largest index each matrix is touched at must be inside its slice.
    assert!(m > 0 && k > 0 && n > 0);
    assert!((m - 1) * rsa + (k - 1) * csa < a.len());
    assert!((k - 1) * rsb + (n - 1) * csb < b.len());
    assert!((m - 1) * rsc + (n - 1) * csc < c.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the asserts above keep every access inside the
        // slices, and `c` is a `&mut` so it aliases neither `a` nor `b`.
        unsafe {
            avx2::gemm(
                m,
                k,
                n,
                a.as_ptr(),
                (rsa, csa),
                b.as_ptr(),
                (rsb, csb),
                beta,
                c.as_mut_ptr(),
                (rsc, csc),
            )
        };
        return;
    }
    reference(m, k, n, a, (rsa, csa), b, (rsb, csb), beta, c, (rsc, csc));
}

/// Whether this CPU runs [`gemm`]'s own AVX2 + FMA kernel (checked once by std); elsewhere it
/// calls `matrixmultiply`, whose kernels without FMA round differently.
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The same product by `matrixmultiply::sgemm`: the fallback without AVX2+FMA, and the yardstick
/// of the tests.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    assert!(m > 0 && k > 0 && n > 0);
    assert!((m - 1) * rsa + (k - 1) * csa < a.len());
    assert!((k - 1) * rsb + (n - 1) * csb < b.len());
    assert!((m - 1) * rsc + (n - 1) * csc < c.len());
    // SAFETY: the asserts above keep every access inside the slices; `c` does not alias `a`/`b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// Rows of the tile to run next when `rem` rows are left: 6 while that leaves none or at least
/// 3, so a 7 or 8 row remainder runs as 4 + 3 or 4 + 4 rows rather than 6 + 1 or 6 + 2 (a
/// 1- or 2-row tile has too few accumulators to hide the FMA latency).
fn tile_rows(rem: usize) -> usize {
    match rem {
        7 | 8 => 4,
        r => min(r, 6),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::cmp::min;
    use std::mem::MaybeUninit;

    use super::tile_rows;

    /// A's packed MC×KC block, one per thread (kept between calls: no allocation per GEMM).
    struct APack(Vec<f32>);

    thread_local! {
        static A_PACK: std::cell::RefCell<APack> =
            std::cell::RefCell::new(APack(Vec::with_capacity(MC * KC)));
    }

    /// matrixmultiply's K block (`S_KC`): the sums are rounded into C at these boundaries.
    const KC: usize = 256;
    /// Columns of a tile: two AVX vectors.
    const NR: usize = 16;
    /// matrixmultiply's tile edge: its partial tiles start at multiples of 8.
    const MM_TILE: usize = 8;

    /// Rows of A packed at a time: 144·256 floats (144 KiB) stay in L2 while every panel of B
    /// goes through them.
    const MC: usize = 144;

    /// One packed KC×16 panel of B (16 KiB, stays in L1 while every row tile uses it).
    #[repr(C, align(64))]
    struct Panel([f32; KC * NR]);

    /// # Safety
    /// AVX2 and FMA present; every element (i, j) of the m×k, k×n and m×n matrices at the given
    /// strides is inside its allocation; `c` aliases neither `a` nor `b`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        (rsa, csa): (usize, usize),
        b: *const f32,
        (rsb, csb): (usize, usize),
        beta: f32,
        c: *mut f32,
        (rsc, csc): (usize, usize),
    ) {
        // The tile writes rows of C as vectors: with a column-major C compute Cᵀ = Bᵀ·Aᵀ
        // instead. Each output's FMA chain is the same (fma is symmetric in its two factors),
        // and matrixmultiply's partial tiles (row OR column past the last multiple of 8) are
        // symmetric too.
        let (m, n, a, rsa, csa, b, rsb, csb, rsc, csc) = if csc != 1 && rsc == 1 {
            (n, m, b, csb, rsb, a, csa, rsa, csc, rsc)
        } else {
            (m, n, a, rsa, csa, b, rsb, csb, rsc, csc)
        };
        let m_full = m - m % MM_TILE;
        let n_full = n - n % MM_TILE;
        let mut panel = MaybeUninit::<Panel>::uninit();
        let bp = panel.as_mut_ptr().cast::<f32>();
        // Packing A pays when its rows are read by several panels of B; for one or two panels
        // the tile reads A in place (six strided streams).
        let pack = n > 2 * NR;
        A_PACK.with_borrow_mut(|apack| {
            let mut k0 = 0;
            while k0 < k {
                let kc = min(KC, k - k0);
                // Block 0 with beta == 0 overwrites C; later blocks add with beta' = 1.
                let init = k0 == 0 && beta == 0.0;
                let betap = if k0 == 0 { beta } else { 1.0 };
                let mut i1 = 0;
                while i1 < m {
                    let mc = min(MC, m - i1);
                    let a0 = a.wrapping_add(i1 * rsa + k0 * csa);
                    if pack {
                        // SAFETY: rows i1..i1+mc, columns k0..k0+kc of A are inside it.
                        unsafe { pack_a(mc, kc, a0, rsa, csa, &mut apack.0) };
                    }
                    let mut j0 = 0;
                    while j0 < n {
                        let nr = min(NR, n - j0);
                        // A full panel of a row-major B is read in place (row stride rsb);
                        // anything else is packed into rows of 16.
                        let b0 = b.wrapping_add(k0 * rsb + j0 * csb);
                        let (bq, rb) = if nr == NR && csb == 1 {
                            (b0, rsb)
                        } else {
                            // SAFETY: rows k0..k0+kc and columns j0..j0+nr of B are inside it.
                            unsafe { pack_b(kc, nr, b0, rsb, csb, bp) };
                            (bp.cast_const(), NR)
                        };
                        // +0.0 in the lanes of columns inside matrixmultiply's partial tiles,
                        // −0.0 (adding it changes nothing) elsewhere.
                        let zc: [__m256; 2] = std::array::from_fn(|v| {
                            let lanes: [f32; 8] = std::array::from_fn(|l| {
                                if j0 + v * 8 + l >= n_full { 0.0 } else { -0.0 }
                            });
                            // SAFETY: reads the 8 floats of `lanes`.
                            unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
                        });
                        let ep = Epilogue {
                            init,
                            betap,
                            nr,
                            csc,
                            zc,
                        };
                        // The run of 6-row tiles in one call, then the 1–2 tail tiles.
                        let mut i0 = 0;
                        while i0 < mc {
                            let rem = mc - i0;
                            let mr = tile_rows(rem);
                            // As many 6-row tiles as `tile_rows` cuts before the tail.
                            let count = match (mr, rem % 6) {
                                (6, 1 | 2) => rem / 6 - 1,
                                (6, _) => rem / 6,
                                _ => 1,
                            };
                            // Packed: tile after tile, kc groups of mr; else A itself.
                            let (ap, ra, ca) = if pack {
                                (apack.0.as_ptr().wrapping_add(i0 * kc), 1, mr)
                            } else {
                                (a0.wrapping_add(i0 * rsa), rsa, csa)
                            };
                            let cp = c.wrapping_add((i1 + i0) * rsc + j0 * csc);
                            let from = m_full.saturating_sub(i1 + i0);
                            let run = Run {
                                count,
                                kc,
                                ap,
                                ra,
                                ca,
                                bp: bq,
                                rb,
                                c: cp,
                                rsc,
                                masked_from: from,
                            };
                            // SAFETY: the packed tiles and panel hold count·kc·mr and kc·16
                            // floats; rows i1+i0.. of C (count·mr of them), nr columns, are in
                            // bounds.
                            unsafe {
                                match mr {
                                    6 => tiles::<6>(&run, &ep),
                                    5 => tiles::<5>(&run, &ep),
                                    4 => tiles::<4>(&run, &ep),
                                    3 => tiles::<3>(&run, &ep),
                                    2 => tiles::<2>(&run, &ep),
                                    _ => tiles::<1>(&run, &ep),
                                }
                            }
                            i0 += count * mr;
                        }
                        j0 += NR;
                    }
                    i1 += mc;
                }
                k0 += kc;
            }
        });
    }

    /// Copies A's mc×kc block at `a` into `dst` tile by tile (the tiles `tile_rows` cuts), each
    /// tile of r rows as kc groups of r floats, so the kernel's broadcasts read one stream.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_a(
        mc: usize,
        kc: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        dst: &mut Vec<f32>,
    ) {
        dst.clear();
        dst.resize(mc * kc, 0.0);
        let mut d = dst.as_mut_ptr();
        let mut i0 = 0;
        while i0 < mc {
            let mr = tile_rows(mc - i0);
            let rows: [*const f32; 6] = std::array::from_fn(|i| a.wrapping_add((i0 + i) * rsa));
            for kk in 0..kc {
                for (i, row) in rows.iter().enumerate().take(mr) {
                    // SAFETY: rows i0..i0+mr and column kk < kc are inside A; `dst` holds
                    // mc·kc floats, written once each in order.
                    unsafe { *d.add(i) = *row.add(kk * csa) };
                }
                // SAFETY: stays within (or one past) `dst`.
                d = unsafe { d.add(mr) };
            }
            i0 += mr;
        }
    }

    /// Copies B's kc×nr block at `b` into `dst` as kc rows of 16 floats, zero past column nr.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_b(kc: usize, nr: usize, b: *const f32, rsb: usize, csb: usize, dst: *mut f32) {
        // SAFETY (whole body): the caller keeps rows < kc and columns < nr of B in bounds, and
        // `dst` holds KC·NR floats.
        unsafe {
            if nr == NR && csb == 1 {
                for kk in 0..kc {
                    let s = b.add(kk * rsb);
                    let d = dst.add(kk * NR);
                    _mm256_storeu_ps(d, _mm256_loadu_ps(s));
                    _mm256_storeu_ps(d.add(8), _mm256_loadu_ps(s.add(8)));
                }
            } else if rsb == 1 && nr == NR {
                // Columns contiguous (a transposed B): 8×8 blocks through a register transpose.
                let k8 = kc - kc % 8;
                for kk in (0..k8).step_by(8) {
                    for h in 0..2 {
                        let r: [__m256; 8] =
                            std::array::from_fn(|j| _mm256_loadu_ps(b.add((h * 8 + j) * csb + kk)));
                        for (q, t) in transpose8(r).into_iter().enumerate() {
                            _mm256_storeu_ps(dst.add((kk + q) * NR + h * 8), t);
                        }
                    }
                }
                for j in 0..NR {
                    for kk in k8..kc {
                        *dst.add(kk * NR + j) = *b.add(j * csb + kk);
                    }
                }
            } else if rsb == 1 {
                // Columns contiguous (a transposed B): read each column in order.
                for j in 0..nr {
                    let s = b.add(j * csb);
                    for kk in 0..kc {
                        *dst.add(kk * NR + j) = *s.add(kk);
                    }
                }
                for j in nr..NR {
                    for kk in 0..kc {
                        *dst.add(kk * NR + j) = 0.0;
                    }
                }
            } else {
                for kk in 0..kc {
                    let s = b.add(kk * rsb);
                    let d = dst.add(kk * NR);
                    for j in 0..NR {
                        *d.add(j) = if j < nr { *s.add(j * csb) } else { 0.0 };
                    }
                }
            }
        }
    }

    /// The transpose of the 8×8 matrix whose rows are `r`.
    #[inline(always)]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: register-only AVX operations; the callers run with AVX2 enabled.
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ]
        }
    }

    /// How a tile's block sums go into C (the same for every row tile of one panel).
    struct Epilogue {
        /// Block 0 with beta == 0: store `acc + 0.0` without reading C.
        init: bool,
        /// beta for block 0, 1 after.
        betap: f32,
        /// Columns of the tile inside C (the rest of the 16 are padding).
        nr: usize,
        csc: usize,
        /// Per column lane: +0.0 inside matrixmultiply's partial tiles, −0.0 outside.
        zc: [__m256; 2],
    }

    /// `count` R-row tiles stacked down C, A and the packed tiles of A.
    struct Run {
        count: usize,
        kc: usize,
        ap: *const f32,
        ra: usize,
        ca: usize,
        bp: *const f32,
        rb: usize,
        c: *mut f32,
        rsc: usize,
        masked_from: usize,
    }

    /// The tiles of one run, in one call (short K blocks made the call per tile count).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tiles<const R: usize>(run: &Run, ep: &Epilogue) {
        let packed = run.ra == 1 && run.ca == R;
        for t in 0..run.count {
            let ap = if packed {
                run.ap.wrapping_add(t * R * run.kc)
            } else {
                run.ap.wrapping_add(t * R * run.ra)
            };
            let c = run.c.wrapping_add(t * R * run.rsc);
            let from = run.masked_from.saturating_sub(t * R);
            // SAFETY: the caller keeps the run's tiles in bounds.
            unsafe {
                kernel::<R>(
                    run.kc, ap, run.ra, run.ca, run.bp, run.rb, c, run.rsc, ep, from,
                )
            };
        }
    }

    /// R×16 tile: C[0..R][0..nr] merged with Σ_kk A[i][kk]·Bp[kk][j] over one K block, each
    /// output its own FMA chain in k order. Rows from `masked_from` on are in matrixmultiply's
    /// partial tiles.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const R: usize>(
        kc: usize,
        ap: *const f32,
        ra: usize,
        ca: usize,
        bp: *const f32,
        rb: usize,
        c: *mut f32,
        rsc: usize,
        ep: &Epilogue,
        masked_from: usize,
    ) {
        // SAFETY (whole body): the caller keeps R rows × kc columns of A, the packed panel and
        // R rows × nr columns of C in bounds.
        unsafe {
            let mut ab = [[_mm256_setzero_ps(); 2]; R];
            let mut bk = bp;
            if ra == 1 && ca == R {
                // Packed A: one stream, the offsets are constants.
                let mut ak = ap;
                for _ in 0..kc {
                    let b0 = _mm256_loadu_ps(bk);
                    let b1 = _mm256_loadu_ps(bk.add(8));
                    for (i, acc) in ab.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*ak.add(i));
                        acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                    }
                    ak = ak.add(R);
                    bk = bk.add(rb);
                }
            } else {
                let mut ar: [*const f32; R] = std::array::from_fn(|i| ap.wrapping_add(i * ra));
                for _ in 0..kc {
                    let b0 = _mm256_loadu_ps(bk);
                    let b1 = _mm256_loadu_ps(bk.add(8));
                    for (acc, a) in ab.iter_mut().zip(ar.iter_mut()) {
                        let av = _mm256_set1_ps(**a);
                        acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                        *a = a.wrapping_add(ca);
                    }
                    bk = bk.add(rb);
                }
            }
            let pz = _mm256_setzero_ps();
            let betav = _mm256_set1_ps(ep.betap);
            let direct = ep.csc == 1 && ep.nr == NR;
            // The common cases straight from registers: a branch per row below made LLVM
            // spill the accumulators at the loop's end.
            if direct && ep.init {
                for (i, acc) in ab.iter().enumerate() {
                    let cr = c.add(i * rsc);
                    _mm256_storeu_ps(cr, _mm256_add_ps(acc[0], pz));
                    _mm256_storeu_ps(cr.add(8), _mm256_add_ps(acc[1], pz));
                }
                return;
            }
            if direct && masked_from >= R {
                for (i, acc) in ab.iter().enumerate() {
                    let cr = c.add(i * rsc);
                    for (v, (&x, &z)) in acc.iter().zip(&ep.zc).enumerate() {
                        let cv = _mm256_mul_ps(_mm256_loadu_ps(cr.add(8 * v)), betav);
                        _mm256_storeu_ps(cr.add(8 * v), _mm256_add_ps(cv, _mm256_add_ps(x, z)));
                    }
                }
                return;
            }
            let mut tmp = [0.0f32; NR];
            for (i, acc) in ab.iter().enumerate() {
                let cr = c.add(i * rsc);
                let out = if ep.init {
                    [_mm256_add_ps(acc[0], pz), _mm256_add_ps(acc[1], pz)]
                } else {
                    let cv = if direct {
                        [_mm256_loadu_ps(cr), _mm256_loadu_ps(cr.add(8))]
                    } else {
                        for (j, t) in tmp.iter_mut().enumerate().take(ep.nr) {
                            *t = *cr.add(j * ep.csc);
                        }
                        [
                            _mm256_loadu_ps(tmp.as_ptr()),
                            _mm256_loadu_ps(tmp.as_ptr().add(8)),
                        ]
                    };
                    let z = if i >= masked_from { [pz, pz] } else { ep.zc };
                    [
                        _mm256_add_ps(_mm256_mul_ps(cv[0], betav), _mm256_add_ps(acc[0], z[0])),
                        _mm256_add_ps(_mm256_mul_ps(cv[1], betav), _mm256_add_ps(acc[1], z[1])),
                    ]
                };
                if direct {
                    _mm256_storeu_ps(cr, out[0]);
                    _mm256_storeu_ps(cr.add(8), out[1]);
                } else {
                    _mm256_storeu_ps(tmp.as_mut_ptr(), out[0]);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(8), out[1]);
                    for (j, t) in tmp.iter().enumerate().take(ep.nr) {
                        *cr.add(j * ep.csc) = *t;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: test inputs without a dependency on an RNG crate's stream.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        /// Mostly ordinary values, with zeros of both signs, values that come back with the
        /// opposite sign (so products cancel), and tiny ones whose products underflow to ±0.0.
        fn value(&mut self, prev: &[f32]) -> f32 {
            match self.below(16) {
                0 => 0.0,
                1 => -0.0,
                2 if !prev.is_empty() => -prev[self.below(prev.len())],
                3 => self.unit() * 1e-30,
                4 => self.unit() * 1e6,
                _ => self.unit(),
            }
        }
        fn fill(&mut self, len: usize) -> Vec<f32> {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                let x = self.value(&v);
                v.push(x);
            }
            v
        }
    }

    /// Strides of an r×c matrix: row-major or column-major, with `pad` unused elements after
    /// each row (column), as the trainer's sub-matrix views have.
    fn strides(r: usize, c: usize, col_major: bool, pad: usize) -> ((usize, usize), usize) {
        if col_major {
            ((1, r + pad), (r + pad) * c)
        } else {
            ((c + pad, 1), (c + pad) * r)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        rng: &mut Rng,
        m: usize,
        k: usize,
        n: usize,
        (sa, la): ((usize, usize), usize),
        (sb, lb): ((usize, usize), usize),
        (sc, lc): ((usize, usize), usize),
        beta: f32,
    ) {
        let a = rng.fill(la);
        let b = rng.fill(lb);
        let c0 = rng.fill(lc);
        let (mut got, mut want) = (c0.clone(), c0);
        gemm(m, k, n, &a, sa, &b, sb, beta, &mut got, sc);
        reference(m, k, n, &a, sa, &b, sb, beta, &mut want, sc);
        for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "m={m} k={k} n={n} a={sa:?} b={sb:?} c={sc:?} beta={beta} at {idx}: {g} vs {w}"
            );
        }
    }

    /// Every layout of A, B and C (row/column-major, padded or not) on small and odd shapes,
    /// K across the 256 block edges, four betas, several seeds.
    #[test]
    fn same_bits_as_matrixmultiply() {
        let dims = [
            1, 2, 3, 5, 6, 7, 8, 9, 12, 13, 16, 17, 23, 24, 31, 33, 40, 64, 65,
        ];
        let ks = [1, 2, 3, 8, 9, 31, 255, 256, 257, 300, 513];
        for seed in 1..=4u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            for _ in 0..600 {
                let m = dims[rng.below(dims.len())];
                let n = dims[rng.below(dims.len())];
                let k = ks[rng.below(ks.len())];
                let beta = [0.0, 1.0, 0.5, -1.5][rng.below(4)];
                let lay = rng.below(8);
                let pad = [0, 0, 3][rng.below(3)];
                check(
                    &mut rng,
                    m,
                    k,
                    n,
                    strides(m, k, lay & 1 != 0, pad),
                    strides(k, n, lay & 2 != 0, pad),
                    strides(m, n, lay & 4 != 0, pad),
                    beta,
                );
            }
        }
    }

    /// Zero signs: accumulators that underflow to −0.0 meeting C = −0.0, in full and partial
    /// tiles of matrixmultiply's tiling, over one and several K blocks.
    #[test]
    fn negative_zero_cases_match() {
        for seed in 1..=3u64 {
            let mut rng = Rng(seed * 7919);
            for &(m, k, n) in &[
                (8, 1, 8),
                (13, 3, 21),
                (16, 257, 16),
                (9, 513, 17),
                (24, 2, 40),
            ] {
                for beta in [0.0, 1.0, -1.0] {
                    for lay in 0..8usize {
                        let sa = strides(m, k, lay & 1 != 0, 0);
                        let sb = strides(k, n, lay & 2 != 0, 0);
                        let sc = strides(m, n, lay & 4 != 0, 0);
                        // Tiny values of both signs (products underflow) and signed zeros.
                        let tiny = |rng: &mut Rng, len: usize| -> Vec<f32> {
                            (0..len)
                                .map(|_| match rng.below(3) {
                                    0 => -0.0,
                                    1 => 0.0,
                                    _ => rng.unit() * 1e-25,
                                })
                                .collect()
                        };
                        let a = tiny(&mut rng, sa.1);
                        let b = tiny(&mut rng, sb.1);
                        let c0: Vec<f32> = (0..sc.1)
                            .map(|i| if i % 3 == 0 { 0.0 } else { -0.0 })
                            .collect();
                        let (mut got, mut want) = (c0.clone(), c0);
                        gemm(m, k, n, &a, sa.0, &b, sb.0, beta, &mut got, sc.0);
                        reference(m, k, n, &a, sa.0, &b, sb.0, beta, &mut want, sc.0);
                        let gb: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                        let wb: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(gb, wb, "m={m} k={k} n={n} lay={lay} beta={beta}");
                    }
                }
            }
        }
    }

    /// The trainers' own calls (shape, strides, beta), as counted in `bench --model wide` and
    /// `--model lenet` runs; `ld` is the padded row stride where the trainer views a sub-matrix.
    #[test]
    fn trainer_shapes_match() {
        type Call = (
            usize,
            usize,
            usize,
            (usize, usize),
            (usize, usize),
            f32,
            (usize, usize),
        );
        let calls: [Call; 25] = [
            (64, 392, 32, (392, 1), (1, 392), 0.0, (32, 1)),
            (64, 32, 392, (32, 1), (392, 1), 0.0, (392, 1)),
            (32, 64, 392, (1, 32), (392, 1), 0.0, (392, 1)),
            (64, 288, 1568, (288, 1), (1568, 1), 1.0, (1568, 1)),
            (32, 9, 6272, (9, 1), (6272, 1), 1.0, (6272, 1)),
            (64, 1568, 288, (1568, 1), (1, 1568), 0.0, (288, 1)),
            (32, 6272, 9, (6272, 1), (1, 6272), 0.0, (9, 1)),
            (288, 64, 1568, (1, 288), (1568, 1), 0.0, (1568, 1)),
            (128, 512, 784, (512, 1), (3136, 1), 0.0, (784, 1)),
            (128, 3136, 128, (3136, 1), (1, 3136), 1.0, (128, 1)),
            (128, 128, 3136, (1, 512), (3136, 1), 0.0, (3136, 1)),
            (128, 512, 10, (512, 1), (1, 512), 1.0, (10, 1)),
            (128, 10, 512, (10, 1), (512, 1), 0.0, (512, 1)),
            (10, 128, 512, (1, 10), (512, 1), 0.0, (512, 1)),
            (128, 3136, 512, (3136, 1), (1, 3136), 1.0, (512, 1)),
            (16, 3136, 512, (3136, 1), (1, 3136), 1.0, (512, 1)),
            (16, 84, 10, (84, 1), (1, 84), 1.0, (10, 1)),
            (16, 400, 120, (400, 1), (1, 400), 1.0, (120, 1)),
            (16, 120, 84, (120, 1), (1, 120), 1.0, (84, 1)),
            (84, 16, 120, (1, 84), (120, 1), 1.0, (120, 1)),
            (16, 84, 120, (84, 1), (120, 1), 0.0, (120, 1)),
            (16, 120, 400, (120, 1), (400, 1), 0.0, (400, 1)),
            (150, 16, 1600, (1, 150), (1600, 1), 0.0, (1600, 1)),
            (120, 16, 400, (1, 120), (400, 1), 1.0, (400, 1)),
            (10, 16, 84, (1, 10), (84, 1), 1.0, (84, 1)),
        ];
        let len = |r: usize, c: usize, (rs, cs): (usize, usize)| (r - 1) * rs + (c - 1) * cs + 1;
        let mut rng = Rng(2024);
        for &(m, k, n, sa, sb, beta, sc) in &calls {
            check(
                &mut rng,
                m,
                k,
                n,
                (sa, len(m, k, sa)),
                (sb, len(k, n, sb)),
                (sc, len(m, n, sc)),
                beta,
            );
        }
    }
}
