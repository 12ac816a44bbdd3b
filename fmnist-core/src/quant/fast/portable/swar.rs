//! Kernels for Arm cores without the DSP extension (Cortex-M0/M0+ Thumb-1, Cortex-M3): two
//! multiply-adds per 32-bit multiply, in plain Rust (so the host tests run the very code the
//! device runs).
//!
//! # Two outputs per multiply
//!
//! The convolution input is stored once as packed words `X[r][c] = x[r][c] + 2^16·x[r][c+1]`
//! (exact in i32: `|x| ≤ 128`). One weight `w` times `X[y+ky][x+kx]` is `w·x[..][x+kx] +
//! 2^16·w·x[..][x+kx+1]`: the tap's product for the two horizontally adjacent outputs of a
//! pooling window, in the low and high half. A chunk of two taps sums two such words:
//!
//! ```text
//! p = w_a·X_a + w_b·X_b = L + 2^16·H,   |L|, |H| ≤ 2·127·128 = 32,512 < 2^15
//! ```
//!
//! (weights in −127..=127 by `check_layer`, activations i8). So `p` fits an i32, `p + 2^15 =
//! (L + 2^15) + 2^16·H` with `0 < L + 2^15 < 2^16`, and the arithmetic shift `(p + 2^15) >> 16`
//! is exactly `H`. Per chunk the kernel adds `H` to one accumulator and `p` to another
//! (wrapping): after all chunks, `h = ΣH` exactly (at most the layer's product bound, < 2^23)
//! and `s ≡ ΣL + 2^16·ΣH (mod 2^32)`, so `ΣL = s − 2^16·h` (wrapping arithmetic, exact because
//! `|ΣL| < 2^31`). `chunk_lanes_are_exact` checks the lane algebra at the extremes.
//!
//! Thumb-1 (ARMv6-M: Cortex-M0/M0+) is told apart from ARMv7-M by its lack of 32-bit atomic
//! read-modify-write (`cfg(not(target_has_atomic = "32"))`): the `arm` target features are not
//! visible to `cfg` on stable Rust.
//!
//! The cost per two multiply-adds: one load of `X`, one multiply, half an add, and per chunk
//! the shift and two adds for each packed accumulator (`MLA` folds the adds on the M3).

use super::*;

/// The rounding bias that makes the high lane's arithmetic shift exact (see the module docs).
const HALF: i32 = 1 << 15;

/// `lo + 2^16·hi`.
#[inline(always)]
fn pack(lo: i8, hi: i8) -> i32 {
    lo as i32 + (hi as i32) * (1 << 16)
}

/// A packed accumulator: `s` (the wrapping sum of the chunks) and `h` (the exact sum of their
/// high lanes).
#[derive(Clone, Copy)]
struct Packed {
    s: i32,
    h: i32,
}

impl Packed {
    #[inline(always)]
    fn add(&mut self, p: i32) {
        self.s = self.s.wrapping_add(p);
        self.h = self.h.wrapping_add(p.wrapping_add(HALF) >> 16);
    }

    /// `[ΣL, ΣH]`: the sums of the low and the high output.
    #[inline(always)]
    fn lanes(self) -> [i32; 2] {
        [self.s.wrapping_sub(self.h.wrapping_shl(16)), self.h]
    }
}

/// One output channel's bias and requantization for a ReLU output, unpacked once per layer.
#[derive(Clone, Copy)]
struct Relu {
    bias: i32,
    multiplier: u32,
    left: u32,
    right: u32,
    /// `2^(right − 1)`, or 0 when `right = 0`.
    round: u32,
    zp: i32,
}

impl Relu {
    /// Channel `c` of `q` (a checked layer: `multiplier ≥ 0`, `shift` in −31..=30).
    #[inline(always)]
    fn new<const C: usize>(q: &QLayerParams<C>, c: usize) -> Self {
        let r = q.requant(c);
        let right = (-r.shift).clamp(0, 31) as u32;
        Relu {
            bias: q.bias[c],
            multiplier: r.multiplier as u32,
            left: r.shift.clamp(0, 31) as u32,
            right,
            round: (1u32 << right) >> 1,
            zp: q.output_zero_point as i32,
        }
    }

    /// `Requant::to_i8(bias + best, zp, zp)` (requantize, ReLU at the zero point), bit for bit:
    /// `t = bias + best ≤ 0` gives the zero point (requantization is monotone and maps 0 to
    /// 0); otherwise `a = t·2^left` is positive and below 2^31 (the overflow proof), so the
    /// high multiply is `(a·m + 2^30) >> 31` on unsigned values ([`mul_round_31`], no
    /// saturating case) and the rounding divide of a non-negative `h` is `(h + 2^(right−1)) >>
    /// right` (`h < 2^31`: no overflow in u32). `relu_requant_matches_to_i8` checks it.
    #[inline(always)]
    fn output(&self, best: i32) -> i8 {
        let t = self.bias.wrapping_add(best);
        if t <= 0 {
            return self.zp as i8;
        }
        let h = mul_round_31((t as u32) << self.left, self.multiplier);
        let y = (h + self.round) >> self.right;
        (y.min(255) as i32 + self.zp).min(127) as i8
    }
}

/// `(a·m + 2^30) >> 31` for `a, m < 2^31`. Cortex-M0 has no 32x32→64 multiply (a `u64`
/// product calls a library routine), so there it is built from four 16x16 products.
#[inline(always)]
fn mul_round_31(a: u32, m: u32) -> u32 {
    if cfg!(all(target_arch = "arm", not(target_has_atomic = "32"))) {
        mul_round_31_halves(a, m)
    } else {
        ((a as u64 * m as u64 + (1 << 30)) >> 31) as u32
    }
}

/// [`mul_round_31`] from 16-bit halves: `a·m = hh·2^32 + (lh + hl)·2^16 + ll`.
#[inline(always)]
fn mul_round_31_halves(a: u32, m: u32) -> u32 {
    let (al, ah, ml, mh) = (a & 0xffff, a >> 16, m & 0xffff, m >> 16);
    // ah, mh < 2^15: lh, hl < 2^31 and their sum fits in u32.
    let mid = al * mh + ah * ml;
    let ll = al * ml;
    let lo = ll.wrapping_add(mid << 16);
    let hi = ah * mh + (mid >> 16) + (lo < ll) as u32;
    let lo2 = lo.wrapping_add(1 << 30);
    let hi = hi + (lo2 < lo) as u32;
    hi << 1 | lo2 >> 31
}

/// The four sums `[(0,0), (0,1), (1,0), (1,1)]` of the 2x2 window whose top-left output is at
/// `(y, x)`, for one output channel with weights `w[ic]` in [`widen`]'s chunk order, over the
/// packed input `xp[ic][row][col]` (`PLANE = R·C`).
#[inline(always)]
fn window<const IC: usize, const R: usize, const C: usize, const PLANE: usize>(
    w: &[[i32; 25]; IC],
    xp: &[[[i32; C]; R]; IC],
    y: usize,
    x: usize,
) -> [i32; 4] {
    const { assert!(PLANE == R * C) };
    assert!(y + 6 <= R && x + 5 <= C);
    #[cfg(target_arch = "arm")]
    let [st, ht, sb, hb] = thumb::window_sums::<IC, C, PLANE>(w, xp[0][y][x..].as_ptr());
    #[cfg(not(target_arch = "arm"))]
    let [st, ht, sb, hb] = window_sums(w, xp, y, x);
    let [a00, a01] = Packed { s: st, h: ht }.lanes();
    let [a10, a11] = Packed { s: sb, h: hb }.lanes();
    [a00, a01, a10, a11]
}

#[cfg(target_arch = "arm")]
mod thumb;

/// The taps `(ky, kx)` of a 5x5 kernel in the order the window consumes them, two per chunk
/// (the last alone): each kernel row's columns 0, 1 and 2, 3, and after rows 0 and 2 the last
/// column of that row and the next.
const ORDER: [(usize, usize); 25] = [
    (0, 0),
    (0, 1),
    (0, 2),
    (0, 3),
    (0, 4),
    (1, 4),
    (1, 0),
    (1, 1),
    (1, 2),
    (1, 3),
    (2, 0),
    (2, 1),
    (2, 2),
    (2, 3),
    (2, 4),
    (3, 4),
    (3, 0),
    (3, 1),
    (3, 2),
    (3, 3),
    (4, 0),
    (4, 1),
    (4, 2),
    (4, 3),
    (4, 4),
];

/// What `thumb::window_sums` computes, in Rust (the host runs it; the tests check it):
/// `[s_top, h_top, s_bottom, h_bottom]`, chunk by chunk in [`ORDER`].
#[cfg_attr(target_arch = "arm", allow(dead_code))]
#[inline(always)]
fn window_sums<const IC: usize, const R: usize, const C: usize>(
    w: &[[i32; 25]; IC],
    xp: &[[[i32; C]; R]; IC],
    y: usize,
    x: usize,
) -> [i32; 4] {
    let mut top = Packed { s: 0, h: 0 };
    let mut bot = Packed { s: 0, h: 0 };
    for (wk, plane) in w.iter().zip(xp) {
        for i in (0..25).step_by(2) {
            let mut pt = 0i32;
            let mut pb = 0i32;
            for j in i..(i + 2).min(25) {
                let (ky, kx) = ORDER[j];
                pt = pt.wrapping_add(wk[j].wrapping_mul(plane[y + ky][x + kx]));
                pb = pb.wrapping_add(wk[j].wrapping_mul(plane[y + ky + 1][x + kx]));
            }
            top.add(pt);
            bot.add(pb);
        }
    }
    [top.s, top.h, bot.s, bot.h]
}

/// The weights of one output channel widened to i32 in [`ORDER`].
#[inline(always)]
fn widen<const IC: usize>(w: &[[[i8; 5]; 5]; IC]) -> [[i32; 25]; IC] {
    core::array::from_fn(|ic| ORDER.map(|(ky, kx)| w[ic][ky][kx] as i32))
}

/// See [`super::super::conv1_relu_pool`]: the image padded by 2 at the input zero point and
/// packed in three strips of 13 columns (`32 × 13` words each: pooling columns 0..5, 5..10 and
/// 10..14), then per strip, output channel and pooling window one `window`.
pub fn conv1_relu_pool(
    weight: &[[[[i8; 5]; 5]; 1]; 6],
    q: &QLayerParams<6>,
    image: &[u8; IMAGE_PIXELS],
    out: &mut [[[i8; 14]; 14]; 6],
) {
    let zp = q.input_zero_point;
    let w: [[[i32; 25]; 1]; 6] = core::array::from_fn(|oc| widen(&weight[oc]));
    let rq: [Relu; 6] = core::array::from_fn(|oc| Relu::new(q, oc));
    let mut xp = [[[pack(zp, zp); 13]; 32]; 1];
    for strip in 0..3 {
        // Padded column `10·strip + c` (image column `10·strip + c − 2`).
        let col0 = 10 * strip;
        for (row, src) in xp[0][2..30].iter_mut().zip(image.as_chunks::<28>().0) {
            let v = |c: usize| {
                (col0 + c)
                    .checked_sub(2)
                    .and_then(|c| src.get(c))
                    .map_or(zp, |&p| (p ^ 0x80) as i8)
            };
            for (c, d) in row.iter_mut().enumerate() {
                *d = pack(v(c), v(c + 1));
            }
        }
        let pxs = 5 * strip..(5 * strip + 5).min(14);
        for ((plane, w), rq) in out.iter_mut().zip(&w).zip(&rq) {
            for (py, row) in plane.iter_mut().enumerate() {
                for px in pxs.clone() {
                    let acc = window::<1, 32, 13, 416>(w, &xp, 2 * py, 2 * (px - 5 * strip));
                    row[px] = rq.output(max4(acc));
                }
            }
        }
    }
}

/// The pooling rows of conv2 in bands: each band's input rows (`2·first ..= 2·last + 5`, at
/// most [`BAND_ROWS`]) are packed together, so the packed input never holds all 14 rows.
const BANDS: [core::ops::Range<usize>; 2] = [0..3, 3..5];

/// Input rows the packed buffer of [`conv2_relu_pool`] holds: the first band's 2·3 + 4.
const BAND_ROWS: usize = 10;

/// See [`super::super::conv2_relu_pool`]: per band of pooling rows (`BANDS`) its input rows
/// packed (`6 × 10 × 13` words, 3,120 bytes instead of 4,368 for all 14 rows), then per output
/// channel and pooling window of the band one `window`. The weights are widened once per
/// band and channel.
pub fn conv2_relu_pool(
    weight: &[[[[i8; 5]; 5]; 6]; 16],
    q: &QLayerParams<16>,
    x: &[[[i8; 14]; 14]; 6],
    out: &mut [[[i8; 5]; 5]; 16],
) {
    let mut xp = [[[0i32; 13]; BAND_ROWS]; 6];
    for pys in BANDS {
        conv2_band(weight, q, x, pys, &mut xp, out);
    }
}

/// One band of [`conv2_relu_pool`]. Not inlined: one copy of the window's code for both bands
/// (unrolled, the two copies cost the Cortex-M3 build 2.8 KB of flash).
#[inline(never)]
fn conv2_band(
    weight: &[[[[i8; 5]; 5]; 6]; 16],
    q: &QLayerParams<16>,
    x: &[[[i8; 14]; 14]; 6],
    pys: core::ops::Range<usize>,
    xp: &mut [[[i32; 13]; BAND_ROWS]; 6],
    out: &mut [[[i8; 5]; 5]; 16],
) {
    let y0 = 2 * pys.start;
    let rows = 2 * pys.len() + 4;
    for (dst, src) in xp.iter_mut().zip(x) {
        for (d, s) in dst.iter_mut().zip(&src[y0..y0 + rows]) {
            for (c, v) in d.iter_mut().enumerate() {
                *v = pack(s[c], s[c + 1]);
            }
        }
    }
    for (oc, plane) in out.iter_mut().enumerate() {
        let w = widen(&weight[oc]);
        let rq = Relu::new(q, oc);
        // One loop over the band's windows (nested loops get the inner one unrolled: five
        // copies of the window's code), the window's corner kept in counters (no division).
        let (mut y, mut x) = (0, 0);
        for o in plane[pys.clone()].as_flattened_mut() {
            let acc = window::<6, BAND_ROWS, 13, 130>(&w, xp, y, x);
            *o = rq.output(max4(acc));
            x += 2;
            if x == 10 {
                (y, x) = (y + 2, 0);
            }
        }
    }
}

/// See [`super::super::dense`]: four rows at a time sharing each widened input (one load of
/// `x` per four multiply-adds; `MLA` on the M3).
pub fn dense<const I: usize, const O: usize>(
    weight: &[[i8; I]; O],
    q: &QLayerParams<O>,
    x: &[i8; I],
    relu: bool,
    out: &mut [i8; O],
) {
    // Widened in place (`x.map` would build it and then copy it: twice the stack).
    let mut x32 = [0i32; I];
    for (d, &v) in x32.iter_mut().zip(x) {
        *d = v as i32;
    }
    let mut o = 0;
    while o + 4 <= O {
        #[cfg(all(target_arch = "arm", not(target_has_atomic = "32")))]
        let acc = thumb::dense_rows4(weight[o..o + 4].as_ptr().cast::<i8>(), &x32);
        // (On the M3, `LDRSB` with an immediate offset and `MLA` make the compiled loop
        // cheaper than the Thumb-1 one.)
        #[cfg(not(all(target_arch = "arm", not(target_has_atomic = "32"))))]
        let acc = {
            let (w0, w1, w2, w3) = (&weight[o], &weight[o + 1], &weight[o + 2], &weight[o + 3]);
            let mut acc = [0i32; 4];
            for k in 0..I {
                let xk = x32[k];
                acc[0] += w0[k] as i32 * xk;
                acc[1] += w1[k] as i32 * xk;
                acc[2] += w2[k] as i32 * xk;
                acc[3] += w3[k] as i32 * xk;
            }
            acc
        };
        for (r, &a) in acc.iter().enumerate() {
            out[o + r] = if relu {
                Relu::new(q, o + r).output(a)
            } else {
                output(q, o + r, a, false)
            };
        }
        o += 4;
    }
    while o < O {
        let mut a = 0i32;
        for k in 0..I {
            a += weight[o][k] as i32 * x32[k];
        }
        out[o] = output(q, o, a, relu);
        o += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane algebra at its extremes: every combination of the extreme weights and inputs
    /// (and random ones) in two-tap chunks, summed over up to 150 chunks, gives the exact
    /// low and high sums.
    #[test]
    fn chunk_lanes_are_exact() {
        let extremes = [-127i32, -1, 0, 1, 127];
        let xs = [-128i8, -1, 0, 1, 127];
        let mut r = crate::testutil::Lcg(17);
        for case in 0..20_000 {
            let n = 1 + case % 150;
            let mut acc = Packed { s: 0, h: 0 };
            let (mut lo, mut hi) = (0i64, 0i64);
            for _ in 0..n {
                let mut p = 0i32;
                for _ in 0..2 {
                    let (w, a, b) = if case % 2 == 0 {
                        (
                            extremes[r.range(0, 4) as usize],
                            xs[r.range(0, 4) as usize],
                            xs[r.range(0, 4) as usize],
                        )
                    } else {
                        (
                            r.range(-127, 127),
                            r.range(-128, 127) as i8,
                            r.range(-128, 127) as i8,
                        )
                    };
                    p = p.wrapping_add(w.wrapping_mul(pack(a, b)));
                    lo += w as i64 * a as i64;
                    hi += w as i64 * b as i64;
                }
                acc.add(p);
            }
            assert_eq!(acc.lanes(), [lo as i32, hi as i32], "case {case}");
        }
        // All taps at the worst case: 150 chunks of (−127)·(−128) in both lanes, and mixed signs.
        for (w, a, b) in [(-127, -128, -128), (127, -128, 127), (-127, 127, -128)] {
            let mut acc = Packed { s: 0, h: 0 };
            for _ in 0..150 {
                acc.add(2 * w * pack(a, b));
            }
            let (l, h) = (300 * w * a as i32, 300 * w * b as i32);
            assert_eq!(acc.lanes(), [l, h]);
        }
    }

    /// [`Relu::output`] equals `Requant::to_i8` with a ReLU, and the 16-bit-halves high
    /// multiply equals the 64-bit one, on random channels and accumulators up to the bound.
    #[test]
    fn relu_requant_matches_to_i8() {
        use crate::testutil::Lcg;
        let mut r = Lcg(555);
        for _ in 0..1_000_000 {
            let (a, m) = (r.next_u32() >> 1, r.next_u32() >> 1);
            assert_eq!(
                mul_round_31_halves(a, m),
                ((a as u64 * m as u64 + (1 << 30)) >> 31) as u32
            );
        }
        for (a, m) in [
            (0, 0),
            (i32::MAX as u32, i32::MAX as u32),
            (1, 1 << 30),
            (0xffff, 0xffff),
        ] {
            assert_eq!(
                mul_round_31_halves(a, m),
                ((a as u64 * m as u64 + (1 << 30)) >> 31) as u32
            );
        }
        let mut q = crate::testutil::random_qparams(9).fc1;
        for case in 0..400_000u32 {
            let shift = r.range(-31, 30);
            q.shift[0] = shift;
            q.multiplier[0] = match case % 4 {
                0 => 0,
                1 => i32::MAX,
                _ => (1 << 30) | (r.next_u32() >> 2) as i32,
            };
            q.output_zero_point = r.range(-128, 127) as i8;
            q.bias[0] = r.range(-5000, 5000);
            let lim = (i32::MAX >> shift.max(0)) as i64 - 5000;
            let best = match case % 3 {
                0 => (r.next_u32() as i32) >> r.range(0, 31),
                1 => r.range(-70_000, 70_000),
                _ => lim as i32,
            };
            if (best as i64).abs() > lim {
                continue;
            }
            let want = q.requant(0).to_i8(
                q.bias[0] + best,
                q.output_zero_point as i32,
                q.output_zero_point as i32,
            );
            assert_eq!(Relu::new(&q, 0).output(best), want, "{case}");
        }
    }

    /// The three kernels against the reference layers on random valid layers and inputs over
    /// all of i8.
    #[test]
    fn swar_kernels_match_the_reference() {
        use crate::quant::{QConv2d, QDense, max_pool_2x2};
        use crate::testutil::{Lcg, random_image, random_qparams};
        let mut r = Lcg(77);
        for seed in 0..30 {
            let mut p = random_qparams(3000 + seed);
            if seed % 3 == 0 {
                // Weights at the extremes of their range.
                for v in bytemuck::cast_slice_mut::<_, i8>(&mut p.conv2_weight) {
                    *v = if r.range(0, 1) == 0 { -127 } else { 127 };
                }
            }
            let img = if seed % 4 == 0 {
                core::array::from_fn(|_| r.range(0, 255) as u8)
            } else {
                random_image(&mut r)
            };
            let x = crate::quant::lenet::image_to_i8(&img);
            let mut full = [[[0i8; 28]; 28]; 6];
            QConv2d::<1, 6, 5, 2> {
                weight: &p.conv1_weight,
                q: &p.conv1,
            }
            .forward(&x, true, &mut full);
            let mut want1 = [[[0i8; 14]; 14]; 6];
            max_pool_2x2(&full, &mut want1);
            let mut got1 = [[[0i8; 14]; 14]; 6];
            conv1_relu_pool(&p.conv1_weight, &p.conv1, &img, &mut got1);
            assert_eq!(got1, want1, "conv1, seed {seed}");

            let mut x2 = [[[0i8; 14]; 14]; 6];
            x2.iter_mut().flatten().flatten().for_each(|v| {
                *v = match seed % 3 {
                    0 => [-128, 127][r.range(0, 1) as usize],
                    _ => r.range(-128, 127) as i8,
                }
            });
            let mut full2 = [[[0i8; 10]; 10]; 16];
            QConv2d::<6, 16, 5, 0> {
                weight: &p.conv2_weight,
                q: &p.conv2,
            }
            .forward(&x2, true, &mut full2);
            let mut want2 = [[[0i8; 5]; 5]; 16];
            max_pool_2x2(&full2, &mut want2);
            let mut got2 = [[[0i8; 5]; 5]; 16];
            conv2_relu_pool(&p.conv2_weight, &p.conv2, &x2, &mut got2);
            assert_eq!(got2, want2, "conv2, seed {seed}");

            let x400: [i8; 400] = core::array::from_fn(|_| r.range(-128, 127) as i8);
            let x84: [i8; 84] = core::array::from_fn(|_| r.range(-128, 127) as i8);
            for relu in [true, false] {
                let mut want = [0i8; 120];
                QDense {
                    weight: &p.fc1_weight,
                    q: &p.fc1,
                }
                .forward(&x400, relu, &mut want);
                let mut got = [0i8; 120];
                dense(&p.fc1_weight, &p.fc1, &x400, relu, &mut got);
                assert_eq!(got, want, "fc1, seed {seed}");
                let mut want3 = [0i8; 10];
                QDense {
                    weight: &p.fc3_weight,
                    q: &p.fc3,
                }
                .forward(&x84, relu, &mut want3);
                let mut got3 = [0i8; 10];
                dense(&p.fc3_weight, &p.fc3, &x84, relu, &mut got3);
                assert_eq!(got3, want3, "fc3, seed {seed}");
            }
        }
    }
}
