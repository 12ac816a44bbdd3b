//! The Cortex-M4 kernels, built on `SMLAD` (multiply two pairs of i16 and add both products to
//! an accumulator). The convolutions store their input once as i16 pairs and their weights as
//! pairs for the even and the odd column of a pooling window, so one `LDRD` of two input rows
//! and one of two weight pairs feed the four outputs of the window; the dense layers unpack
//! four int8 weights into two pairs with `SXTB16` against activations stored in that order.

use super::*;

pub mod intrinsics;

#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
mod host;
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))))]
use host::{conv2_window, dense_rows4, patch_dots4, window_rows2};
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
mod cortex_m4;
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp)))]
use cortex_m4::{conv2_window, dense_rows4, patch_dots4, window_rows2};

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
    /// `2^(right − 1)`, or 0 when `right = 0`: the rounding divide of a non-negative value.
    round: u32,
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
            round: (1u32 << right) >> 1,
            zp: q.output_zero_point as i32,
        }
    }

    /// `Requant::to_i8(bias + best, zp, clamp_floor(zp, relu))`, bit for bit
    /// (`fast_requant_matches_to_i8` checks it), in fewer instructions:
    ///
    /// * the high multiply is `(a·m + 2^30) >> 31` (its only saturating case needs
    ///   `m = i32::MIN`, excluded by `m ≥ 0`), as one `SMMLAR` of `a` by `2m` (see below);
    /// * `RoundingDivideByPOT` as in gemmlowp, with the mask precomputed;
    /// * with ReLU, `max(y ⊕ zp, zp) = max(y, 0) ⊕ zp` (⊕ saturating; both sides are
    ///   non-decreasing in y and agree for y ≤ 0 and y ≥ 0), and `max(y, 0) ⊕ zp ≥ −128`,
    ///   so the final clamp is the `SSAT #8` of `[−128, 127]`;
    /// * with ReLU and `t > 0`, `a > 0` so `h ≥ 0` (and `h < 2^31`), where the rounding divide
    ///   is `(h + 2^(right−1)) >> right` in u32 (no wrap: `2^(right−1) ≤ 2^30`) and the result
    ///   `y ≥ 0`: no mask, no sign test, no ReLU max.
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
        if relu {
            // SAFETY: `right` is below 32 (see `new`).
            let y = unsafe {
                (h as u32)
                    .wrapping_add(self.round)
                    .unchecked_shr(self.right)
            } as i32;
            return y.saturating_add(self.zp).clamp(-128, 127) as i8;
        }
        let rem = h & self.mask;
        let threshold = (self.mask >> 1) + (h < 0) as i32;
        // SAFETY: as above.
        let y = unsafe { h.unchecked_shr(self.right) } + (rem > threshold) as i32;
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
    // Two pooling rows per step (`window_rows2`: eight accumulators, the weights loaded once).
    for py in (0..14).step_by(2) {
        for px in 0..14 {
            for (oc, plane) in out.iter_mut().enumerate() {
                let [top, bottom] = window_rows2(&wp[oc], &xt, px, 2 * py);
                plane[py][px] = rq[oc].output(max4(top), true);
                plane[py + 1][px] = rq[oc].output(max4(bottom), true);
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
            // Columns 0..12 four at a time (as in `conv2_pairs`), then 12 and 13.
            for (g, (wa, wb)) in re
                .as_chunks::<4>()
                .0
                .iter()
                .zip(ro.as_chunks::<4>().0)
                .enumerate()
            {
                let (wa, wb) = (
                    u32::from_le_bytes(wa.map(|v| v as u8)),
                    u32::from_le_bytes(wb.map(|v| v as u8)),
                );
                for (k, (ea, eb)) in [(sxtb16(wa), sxtb16(wb)), (sxtb16_ror8(wa), sxtb16_ror8(wb))]
                    .into_iter()
                    .enumerate()
                {
                    xt.0[4 * g + k][p][r] = (ea & 0xffff) | eb << 16;
                    xt.0[4 * g + k + 2][p][r] = ea >> 16 | (eb & 0xffff_0000);
                }
            }
            for c in 12..14 {
                xt.0[c][p][r] = pair(re[c], ro[c]);
            }
        }
    }
    let rq: [Rq; 16] = core::array::from_fn(|oc| Rq::new(q, oc));
    let mut wp = Conv2Weights([[[0u32; 5]; 5]; 3]);
    for (oc, plane) in out.iter_mut().enumerate() {
        for (dst, [even, odd]) in wp.0.iter_mut().zip(weight[oc].as_chunks::<2>().0) {
            conv2_pairs(
                bytemuck::cast_ref(even),
                bytemuck::cast_ref(odd),
                bytemuck::cast_mut(dst),
            );
        }
        // One loop over the 25 windows (not two nested ones of 5, which the compiler
        // would unroll into five copies of the window).
        for (win, o) in plane.as_flattened_mut().iter_mut().enumerate() {
            let acc = conv2_window(&wp, &xt, win);
            *o = rq[oc].output(max4(acc), true);
        }
    }
}

/// See [`super::conv_relu_pool`]. The four patches of a pooling window are stored as
/// `SMLAD` pairs interleaved by group of four taps (`[g][j] = [x02, x13]`, the order in which
/// `SXTB16` unpacks a weight word), so each weight word is loaded and unpacked once for the
/// four outputs of the window: one `LDR`, two `SXTB16`, four `LDRD` and eight `SMLAD` per 16
/// multiply-adds (`patch_dots4`).
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

/// `d[t] = pair(a[t], b[t])` for the 25 taps of two input channels, four taps per pair of
/// word loads: `SXTB16` of each word gives taps 0 and 2 (`ROR #8`: 1 and 3) as halfwords,
/// which two halfword packs (`PKHBT`, `PKHTB`) pair up.
#[inline(always)]
fn conv2_pairs(a: &[i8; 25], b: &[i8; 25], d: &mut [u32; 25]) {
    let (qa, _) = a.as_chunks::<4>();
    let (qb, _) = b.as_chunks::<4>();
    for (g, (wa, wb)) in qa.iter().zip(qb).enumerate() {
        let (wa, wb) = (
            u32::from_le_bytes(wa.map(|v| v as u8)),
            u32::from_le_bytes(wb.map(|v| v as u8)),
        );
        for (k, (ea, eb)) in [(sxtb16(wa), sxtb16(wb)), (sxtb16_ror8(wa), sxtb16_ror8(wb))]
            .into_iter()
            .enumerate()
        {
            d[4 * g + k] = (ea & 0xffff) | eb << 16;
            d[4 * g + k + 2] = ea >> 16 | (eb & 0xffff_0000);
        }
    }
    d[24] = pair(a[24], b[24]);
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

/// The top-left input `[x, y]` of conv2's 25 pooling windows, row by row (a table instead of
/// dividing the window index by 5).
const CONV2_WINDOWS: [[u8; 2]; 25] = {
    let mut t = [[0u8; 2]; 25];
    let mut i = 0;
    while i < 25 {
        t[i] = [2 * (i % 5) as u8, 2 * (i / 5) as u8];
        i += 1;
    }
    t
};

#[cfg_attr(
    not(all(target_arch = "arm", any(target_feature = "dsp", fmnist_dsp))),
    allow(dead_code)
)]
/// The word offset of `xt[x][0][y]` in a [`Conv2Image`] for each window of
/// [`CONV2_WINDOWS`]: every one at most `8·42 + 8`, so a window's reads (columns x..x+6, rows
/// y..y+6 of every channel pair) stay inside the image.
const CONV2_OFFSETS: [u16; 25] = {
    let mut t = [0u16; 25];
    let mut i = 0;
    while i < 25 {
        let [x, y] = CONV2_WINDOWS[i];
        assert!(x < 9 && y < 9);
        t[i] = x as u16 * 42 + y as u16;
        i += 1;
    }
    t
};

/// conv2's input as channel pairs, column-major: `[c][p][row]` (so every offset of a
/// window fits an `LDRD` immediate).
#[repr(C, align(8))]
struct Conv2Image([[[u32; 14]; 3]; 14]);

/// conv2's weights of one output channel as channel pairs: `[p][ky][kx]`.
#[repr(C, align(8))]
struct Conv2Weights([[[u32; 5]; 5]; 3]);

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
        let mut r = crate::testutil::Lcg(99);
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
        use crate::testutil::Lcg;
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
        let mut r = crate::testutil::Lcg(1);
        for _ in 0..100_000 {
            let wb = r.next_u32().to_le_bytes();
            let xb = r.next_u32().to_le_bytes().map(|b| b as i8);
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
