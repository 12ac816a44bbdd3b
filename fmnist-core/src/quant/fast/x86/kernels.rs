//! The layer kernels every x86 path shares, generic over its integer dot product ([`Path`]):
//! a fused convolution → requantization → ReLU → 2x2 max-pool over channel-last (HWC) input,
//! and a dense layer, both vectorised across output channels (8 per 256-bit register), with
//! the weights packed once at load ([`pack_conv`], [`pack_dense`]).
//!
//! # Layout (no im2col)
//! A convolution's input is a padded HWC buffer: `Hp = H + 2P` rows of `Wp = W + 2P` pixels of
//! `IC` channels, the padding holding the input zero point. For output `(y, x)` and kernel row
//! `ky`, the `K·IC` taps `(kx, ic)` are *contiguous* in that buffer (`K` neighbouring pixels,
//! all their channels). They are read as `NG = ⌈K·IC / G⌉` groups of `G` taps (one 32-bit
//! word, broadcast to all lanes); the packed weights hold, per group and output channel, the
//! `G` weights of those taps, and zeros for the at most `G − 1` taps past `K·IC` (which read
//! the next pixel, a value that is then multiplied by zero). Each broadcast group meets 8
//! output channels in one dot-product instruction; the four outputs of a pooling window share
//! each weight load.
//!
//! # Exactness
//! Every path computes `Σ w·x` over the same taps with exact integer arithmetic (see each
//! [`Path`]); integer addition is associative, so the order of the sum does not matter and
//! every output equals the reference kernel's ([`crate::quant::QConv2d`],
//! [`crate::quant::QDense`]). Requantization ([`requant8`]) is TFLite's, vectorised lane by
//! lane and tested against the scalar one.

use core::arch::x86_64::*;

use crate::image::IMAGE_PIXELS;
use crate::quant::params::QLayerParams;
use crate::quant::requant::clamp_floor;

/// One x86 path's integer dot product and activation type.
///
/// # Safety
/// The methods use the path's instructions: call them only from code compiled with the path's
/// target features, after checking the CPU has them.
pub(crate) unsafe trait Path: Copy + Send + Sync + 'static {
    /// Activation element in the buffers (u8 `x + 128` for `vpdpbusd`, i16 `x` for `vpmaddwd`).
    type A: Copy + Send + Sync + 'static;
    /// Taps per 32-bit group (4 u8 or 2 i16).
    const G: usize;
    /// Added to each channel's bias per unit of `Σ w` (−128 when activations are stored as
    /// `x + 128`: `Σ w·(x + 128) − 128·Σ w = Σ w·x`).
    const BIAS_PER_WEIGHT: i32;
    /// The activation `x` as stored.
    fn act(x: i8) -> Self::A;
    /// The stored activation back as `x`.
    fn to_i8(a: Self::A) -> i8;
    /// The vector the dot products run on (256 or 512 bits).
    type V: Vector;
    /// One packed weight vector (`LANES·G` i8 weights) as `dot` takes it (widened to i16 on
    /// the AVX2 path: the weights stay i8 in memory, half the cache footprint).
    ///
    /// # Safety
    /// The path's target features are enabled; `p` is readable for `LANES·G` bytes.
    unsafe fn load_w(p: *const u8) -> Self::V;
    /// `acc + Σ_{G taps} a·w` per 32-bit lane: `a` a broadcast group, `w` one weight per lane
    /// and tap.
    ///
    /// # Safety
    /// The path's target features must be enabled.
    unsafe fn dot(acc: Self::V, a: Self::V, w: Self::V) -> Self::V;
    /// Stores 8 values (i16 lanes already clamped to `[−128, 127]`) as activations.
    ///
    /// # Safety
    /// `dst` is valid for 8 elements; AVX2 is enabled.
    unsafe fn store8(v: __m128i, dst: *mut Self::A);

    /// LeNet-BN's conv1 → ReLU → 2x2 max-pool, from the image into conv2's input
    /// (`[14][14][6]`, at least `14·14·6` elements): [`conv_pool`] on the padded image, unless
    /// the path has a kernel of its own.
    ///
    /// # Safety
    /// The path's target features are enabled; `c` was packed for this path.
    #[inline(always)]
    unsafe fn lenet_conv1(c: &LeNetConv1, image: &[u8; IMAGE_PIXELS], out: &mut [Self::A]) {
        let mut x0 = [Self::act(-128); 32 * 32 + 8];
        load_image::<Self>(image, 32, 2, &mut x0);
        // SAFETY: the caller's promise; the buffer sizes are the ones `conv_pool` asserts.
        unsafe { conv_pool::<Self, 1, 5, 32, 14, 14, 1, 2, 6, 0, 14>(&c.conv, &x0, out) }
    }
}

/// LeNet-BN's conv1 (6@5x5, padding 2) packed: for [`conv_pool`], and for a 16-lane path also
/// as lane pairs ([`LeNetConv1::pairs`]).
#[derive(Clone, Debug)]
pub(crate) struct LeNetConv1 {
    /// The packing of [`pack_conv`].
    pub(crate) conv: ConvPacked,
    /// For 16-lane paths (else empty): per kernel row `ky` and group `g` (taps `kx = 4g..4g+3`,
    /// zero past 4), 16 lanes `2k + d` (`k` the output channel, 8 of them, `d` = 0, 1) each
    /// holding channel `k`'s four weights: one 512-bit vector computes 8 channels of two
    /// vertically adjacent outputs. `[ky][g]` × 64 bytes.
    pub(crate) pairs: Vec<u8>,
    /// For 16-lane paths: conv1's output constants twice (lanes 0..8 and 8..16), for two
    /// pooling windows requantized in one vector.
    pub(crate) rq_pairs: Rq,
}

impl LeNetConv1 {
    /// Packs conv1 for path `P`.
    pub(crate) fn new<P: Path>(weight: &[[[[i8; 5]; 5]; 1]; 6], q: &QLayerParams<6>) -> Self {
        let conv = pack_conv::<P, 6>(bytemuck::cast_slice(weight), q, 1, 5);
        let mut pairs = Vec::new();
        if lanes::<P>() == 16 {
            pairs = vec![0u8; 5 * 2 * 64];
            for (oc, k) in weight.iter().enumerate() {
                for (ky, row) in k[0].iter().enumerate() {
                    for (kx, &w) in row.iter().enumerate() {
                        let (g, t) = (kx / 4, kx % 4);
                        for d in 0..2 {
                            pairs[(ky * 2 + g) * 64 + (2 * oc + d) * 4 + t] = w as u8;
                        }
                    }
                }
            }
        }
        let sums: Vec<i32> = weight
            .iter()
            .map(|k| {
                k.as_flattened()
                    .as_flattened()
                    .iter()
                    .map(|&w| w as i32)
                    .sum()
            })
            .collect();
        let twice: Vec<i32> = (0..16)
            .map(|l| if l % 8 < 6 { sums[l % 8] } else { 0 })
            .collect();
        let mut q2: QLayerParams<16> = bytemuck::Zeroable::zeroed();
        q2.output_zero_point = q.output_zero_point;
        for l in 0..16 {
            if l % 8 < 6 {
                q2.bias[l] = q.bias[l % 8];
                q2.multiplier[l] = q.multiplier[l % 8];
                q2.shift[l] = q.shift[l % 8];
            }
        }
        let rq_pairs = Rq::new(&q2, &twice, P::BIAS_PER_WEIGHT, true, 16);
        LeNetConv1 {
            conv,
            pairs,
            rq_pairs,
        }
    }
}

/// The image `p` as activations `p − 128`, into a padded `[..][wp]` buffer at `(pad, pad)`.
#[inline(always)]
pub(crate) fn load_image<P: Path>(
    image: &[u8; IMAGE_PIXELS],
    wp: usize,
    pad: usize,
    x: &mut [P::A],
) {
    for (y, row) in image.chunks_exact(28).enumerate() {
        let at = (y + pad) * wp + pad;
        for (d, &p) in x[at..at + 28].iter_mut().zip(row) {
            *d = P::act((p ^ 0x80) as i8);
        }
    }
}

/// A vector of 32-bit lanes: 8 (`__m256i`) or 16 (`__m512i`, AVX-512 F).
pub(crate) trait Vector: Copy {
    /// Lanes.
    const LANES: usize;
    /// All zero.
    ///
    /// # Safety
    /// The vector's instructions are enabled (every method).
    unsafe fn zero() -> Self;
    /// `v` in every lane.
    ///
    /// # Safety
    /// See [`Vector::zero`].
    unsafe fn splat(v: i32) -> Self;
    /// Lane-wise signed maximum.
    ///
    /// # Safety
    /// See [`Vector::zero`].
    unsafe fn max(a: Self, b: Self) -> Self;
    /// The output step ([`requant8`]) of these accumulators, lanes `LANES·v..` of `rq`: 8 i16
    /// per entry, the first `LANES / 8` entries.
    ///
    /// # Safety
    /// See [`Vector::zero`]; the lanes exist in `rq`.
    unsafe fn requant(self, rq: &Rq, v: usize) -> [__m128i; 2];
}

impl Vector for __m256i {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> Self {
        unsafe { _mm256_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        unsafe { _mm256_max_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn requant(self, rq: &Rq, v: usize) -> [__m128i; 2] {
        unsafe { [requant8(self, rq, v), _mm_setzero_si128()] }
    }
}

impl Vector for __m512i {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> Self {
        unsafe { _mm512_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        unsafe { _mm512_max_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn requant(self, rq: &Rq, v: usize) -> [__m128i; 2] {
        unsafe {
            let y = requant16(self, rq, v);
            [_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y)]
        }
    }
}

/// Per-lane constants of a layer's output step, for a multiple of 8 lanes (lanes past the
/// real channels hold zeros and are never read as real outputs).
#[derive(Clone, Debug)]
pub(crate) struct Rq {
    bias: Vec<i32>,
    multiplier: Vec<i32>,
    left: Vec<i32>,
    right: Vec<i32>,
    zp: i16,
    lo: i16,
}

impl Rq {
    /// The constants of `q` for `lanes` lanes, the bias corrected by `per_weight·Σ w[c]`
    /// (`weight_sums[c]`).
    pub(crate) fn new<const C: usize>(
        q: &QLayerParams<C>,
        weight_sums: &[i32],
        per_weight: i32,
        relu: bool,
        lanes: usize,
    ) -> Rq {
        let get = |c: usize, f: &dyn Fn(usize) -> i32| if c < C { f(c) } else { 0 };
        Rq {
            bias: (0..lanes)
                .map(|c| get(c, &|c| q.bias[c] + per_weight * weight_sums[c]))
                .collect(),
            multiplier: (0..lanes).map(|c| get(c, &|c| q.multiplier[c])).collect(),
            left: (0..lanes).map(|c| get(c, &|c| q.shift[c].max(0))).collect(),
            right: (0..lanes)
                .map(|c| get(c, &|c| (-q.shift[c]).max(0)))
                .collect(),
            zp: q.output_zero_point as i16,
            lo: clamp_floor(q.output_zero_point, relu) as i16,
        }
    }
}

#[inline(always)]
unsafe fn load8(v: &[i32], at: usize) -> __m256i {
    debug_assert!(at + 8 <= v.len());
    // SAFETY: the caller's lanes are inside `v` (8·V lanes for V vectors).
    unsafe { _mm256_loadu_si256(v.as_ptr().add(at).cast()) }
}

/// The output step of lanes `8v..8v+8`: `acc + bias`, TFLite's `MultiplyByQuantizedMultiplier`
/// per lane, `+ zp`, clamp to `[lo, 127]`; as 8 i16 lanes.
///
/// Exactly [`crate::quant::Requant::to_i8`]: the 64-bit products `a·m` come from `vpmuldq`
/// (even lanes, then the odd ones shifted down); `(a·m + 2^30) >> 31` is needed only in its low
/// 32 bits, which a logical shift gives as well as an arithmetic one; the result fits an i32
/// (the only case that does not, `a = m = i32::MIN`, cannot occur: `m ≥ 0`). The divide is
/// `RoundingDivideByPOT` literally, with per-lane shifts. The saturating packs to i16 then do
/// `+ zp` and the clamp (an |h| > 32767 saturates to ±32767 first, which lands on the same
/// clamp bound).
///
/// # Safety
/// AVX2; lanes `8v..8v+8` exist in `rq`.
#[inline(always)]
pub(crate) unsafe fn requant8(acc: __m256i, rq: &Rq, v: usize) -> __m128i {
    unsafe {
        let at = 8 * v;
        let a = _mm256_add_epi32(acc, load8(&rq.bias, at));
        let a = _mm256_sllv_epi32(a, load8(&rq.left, at));
        let m = load8(&rq.multiplier, at);
        let half = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(a, m), half), 31);
        let odd = _mm256_add_epi64(
            _mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(m, 32)),
            half,
        );
        // Odd lanes: bits 31..62 of the sum are the result's low 32 bits; a left shift by 1
        // puts them in the high half of the 64-bit lane, where the blend takes them from.
        let odd = _mm256_slli_epi64(odd, 1);
        let h = _mm256_blend_epi32(even, odd, 0b1010_1010);
        let right = load8(&rq.right, at);
        let one = _mm256_set1_epi32(1);
        let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
        let rem = _mm256_and_si256(h, mask);
        let neg = _mm256_cmpgt_epi32(_mm256_setzero_si256(), h);
        let thr = _mm256_sub_epi32(_mm256_srai_epi32(mask, 1), neg);
        let y = _mm256_sub_epi32(_mm256_srav_epi32(h, right), _mm256_cmpgt_epi32(rem, thr));
        let y16 = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
        let y16 = _mm_adds_epi16(y16, _mm_set1_epi16(rq.zp));
        let y16 = _mm_max_epi16(y16, _mm_set1_epi16(rq.lo));
        _mm_min_epi16(y16, _mm_set1_epi16(127))
    }
}

/// [`requant8`] on 16 lanes (`16v..16v+16` of `rq`) with AVX-512: the same steps, the
/// comparisons as masks, and `vpmovsdw` as the saturating pack to i16.
///
/// # Safety
/// AVX-512 F/BW/VL; the lanes exist in `rq`.
#[inline(always)]
pub(crate) unsafe fn requant16(acc: __m512i, rq: &Rq, v: usize) -> __m256i {
    unsafe {
        let at = 16 * v;
        debug_assert!(at + 16 <= rq.bias.len());
        let ld = |x: &[i32]| _mm512_loadu_si512(x.as_ptr().add(at).cast());
        let a = _mm512_add_epi32(acc, ld(&rq.bias));
        let a = _mm512_sllv_epi32(a, ld(&rq.left));
        let m = ld(&rq.multiplier);
        let half = _mm512_set1_epi64(1 << 30);
        let even = _mm512_srli_epi64(_mm512_add_epi64(_mm512_mul_epi32(a, m), half), 31);
        let odd = _mm512_add_epi64(
            _mm512_mul_epi32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(m, 32)),
            half,
        );
        let h = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 1));
        let right = ld(&rq.right);
        let one = _mm512_set1_epi32(1);
        let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
        let rem = _mm512_and_si512(h, mask);
        let thr = _mm512_add_epi32(_mm512_srai_epi32(mask, 1), _mm512_srli_epi32(h, 31));
        let y = _mm512_srav_epi32(h, right);
        let y = _mm512_mask_add_epi32(y, _mm512_cmpgt_epi32_mask(rem, thr), y, one);
        let y16 = _mm512_cvtsepi32_epi16(y);
        let y16 = _mm256_adds_epi16(y16, _mm256_set1_epi16(rq.zp));
        let y16 = _mm256_max_epi16(y16, _mm256_set1_epi16(rq.lo));
        _mm256_min_epi16(y16, _mm256_set1_epi16(127))
    }
}

/// Stores lanes `8v..8v+8` of a layer with `real` channels at `dst` (channel `8v` first): all 8
/// when they are real, else only the real ones.
#[inline(always)]
unsafe fn store_lanes<P: Path>(y: __m128i, dst: *mut P::A, v: usize, real: usize) {
    unsafe {
        if 8 * v + 8 <= real {
            P::store8(y, dst);
        } else {
            let mut tmp = [P::act(0); 8];
            P::store8(y, tmp.as_mut_ptr());
            for (i, &t) in tmp.iter().enumerate().take(real - 8 * v) {
                dst.add(i).write(t);
            }
        }
    }
}

#[inline(always)]
unsafe fn broadcast<V: Vector, A>(x: *const A) -> V {
    // SAFETY: the caller checked 4 readable bytes at `x`.
    unsafe { V::splat(x.cast::<i32>().read_unaligned()) }
}

/// Lanes of path `P`'s vector.
const fn lanes<P: Path>() -> usize {
    P::V::LANES
}

/// Bytes of one packed weight vector of path `P`: its lanes' i8 weights for one group of taps.
const fn vec_bytes<P: Path>() -> usize {
    P::G * lanes::<P>()
}

/// Groups of `G` taps in one kernel row of a `K`x`K` convolution over `IC` channels.
pub(crate) const fn groups(k: usize, ic: usize, g: usize) -> usize {
    (k * ic).div_ceil(g)
}

/// A convolution's packed i8 weights, `[vector v][ky][group]` × `LANES·G` bytes (vector `v`
/// is channels `LANES·v..`; lane `l`, tap `t` of the group at byte `l·G + t`), and its output
/// constants.
#[derive(Clone, Debug)]
pub(crate) struct ConvPacked {
    w: Vec<u8>,
    rq: Rq,
}

/// Packs `weight` (`[OC][IC][K][K]`, PyTorch's layout) for path `P` (see the module docs).
pub(crate) fn pack_conv<P: Path, const C: usize>(
    weight: &[i8],
    q: &QLayerParams<C>,
    ic: usize,
    k: usize,
) -> ConvPacked {
    assert_eq!(weight.len(), C * ic * k * k);
    let ng = groups(k, ic, P::G);
    let (n, vb) = (lanes::<P>(), vec_bytes::<P>());
    let vecs = C.div_ceil(n);
    let mut w = vec![0u8; vecs * k * ng * vb];
    for oc in 0..C {
        let (v, lane) = (oc / n, oc % n);
        for ky in 0..k {
            for e in 0..k * ic {
                let (kx, c) = (e / ic, e % ic);
                let val = weight[((oc * ic + c) * k + ky) * k + kx];
                let (g, t) = (e / P::G, e % P::G);
                let at = ((v * k + ky) * ng + g) * vb + lane * P::G + t;
                w[at] = val as u8;
            }
        }
    }
    let sums: Vec<i32> = weight
        .chunks_exact(ic * k * k)
        .map(|r| r.iter().map(|&v| v as i32).sum())
        .collect();
    ConvPacked {
        w,
        rq: Rq::new(q, &sums, P::BIAS_PER_WEIGHT, true, vecs * n),
    }
}

/// conv (`K`x`K`, stride 1) → requant → ReLU → 2x2 max-pool over a padded HWC input.
///
/// * `x`: `[Hp][WP][IC]` activations (padding included), at least
///   `((2·PH + K − 2)·WP + 2·PW − 1)·IC + NG·G` elements;
/// * output `(py, px)`, `OCR` channels, written at `out[OUT0 + (py·OROW + px)·OCR ..]`;
/// * the `⌈OCR / LANES⌉` vectors of channels go `B` at a time (a divisor), over `NW`
///   neighbouring pooling windows per step (`PW % NW == 0`), so that `4·NW·B` independent
///   accumulators hide the dot product's latency.
///
/// # Safety
/// The path's target features are enabled; `p` was packed by [`pack_conv`] for `P` with
/// these `IC`, `K` and `OCR`.
#[inline(always)]
pub(crate) unsafe fn conv_pool<
    P: Path,
    const IC: usize,
    const K: usize,
    const WP: usize,
    const PH: usize,
    const PW: usize,
    const B: usize,
    const NW: usize,
    const OCR: usize,
    const OUT0: usize,
    const OROW: usize,
>(
    p: &ConvPacked,
    x: &[P::A],
    out: &mut [P::A],
) {
    let ng = groups(K, IC, P::G);
    let (n, vb) = (lanes::<P>(), vec_bytes::<P>());
    let vecs = OCR.div_ceil(n);
    assert!(vecs.is_multiple_of(B) && PW.is_multiple_of(NW));
    assert!(x.len() >= ((2 * PH + K - 2) * WP + 2 * PW - 1) * IC + ng * P::G);
    assert!(out.len() >= OUT0 + ((PH - 1) * OROW + PW) * OCR);
    assert_eq!(p.w.len(), vecs * K * ng * vb);
    let xp = x.as_ptr();
    let op = out.as_mut_ptr();
    let wp = p.w.as_ptr();
    unsafe {
        for py in 0..PH {
            for px0 in (0..PW).step_by(NW) {
                // The four outputs of each of the NW windows: window w, output (dy, dx) at
                // pos[w][2dy + dx].
                let pos: [[usize; 4]; NW] = core::array::from_fn(|w| {
                    let base = (2 * py * WP + 2 * (px0 + w)) * IC;
                    [base, base + IC, base + WP * IC, base + (WP + 1) * IC]
                });
                let mut v0 = 0;
                while v0 < vecs {
                    let z = P::V::zero();
                    let mut acc = [[[z; B]; 4]; NW];
                    for ky in 0..K {
                        for g in 0..ng {
                            let mut w = [z; B];
                            for (j, wj) in w.iter_mut().enumerate() {
                                *wj = P::load_w(wp.add((((v0 + j) * K + ky) * ng + g) * vb));
                            }
                            let off = ky * WP * IC + g * P::G;
                            for (win, wpos) in acc.iter_mut().zip(&pos) {
                                for (a, &o) in win.iter_mut().zip(wpos) {
                                    let xa = broadcast::<P::V, _>(xp.add(o + off));
                                    for (aj, &wj) in a.iter_mut().zip(&w) {
                                        *aj = P::dot(*aj, xa, wj);
                                    }
                                }
                            }
                        }
                    }
                    for (w, [a0, a1, a2, a3]) in acc.iter().enumerate() {
                        let dst = op.add(OUT0 + (py * OROW + px0 + w) * OCR);
                        for j in 0..B {
                            let m = P::V::max(P::V::max(a0[j], a1[j]), P::V::max(a2[j], a3[j]));
                            let ys = m.requant(&p.rq, v0 + j);
                            for (i, &y) in ys.iter().enumerate().take(n / 8) {
                                let c8 = (v0 + j) * n / 8 + i;
                                if 8 * c8 < OCR {
                                    store_lanes::<P>(y, dst.add(8 * c8), c8, OCR);
                                }
                            }
                        }
                    }
                    v0 += B;
                }
            }
        }
    }
}

/// A dense layer's packed i8 weights, `[block of B vectors][group][vector in block]` ×
/// `LANES·G` bytes, and its output constants.
#[derive(Clone, Debug)]
pub(crate) struct DensePacked {
    w: Vec<u8>,
    rq: Rq,
}

/// Packs `weight` (`[O][I]`) for path `P`, `block` vectors per block (a divisor of
/// `⌈O / LANES⌉`); `column(i)` is the weight column of buffer input `i` (the identity, or the
/// map from an HWC buffer to PyTorch's C×H×W flatten).
pub(crate) fn pack_dense<P: Path, const O: usize>(
    weight: &[i8],
    q: &QLayerParams<O>,
    inputs: usize,
    block: usize,
    relu: bool,
    column: impl Fn(usize) -> usize,
) -> DensePacked {
    assert_eq!(weight.len(), O * inputs);
    assert!(inputs.is_multiple_of(P::G));
    let (n, vb) = (lanes::<P>(), vec_bytes::<P>());
    let vecs = O.div_ceil(n);
    assert!(vecs.is_multiple_of(block));
    let ng = inputs / P::G;
    let mut w = vec![0u8; vecs * ng * vb];
    for o in 0..O {
        let (v, lane) = (o / n, o % n);
        let (b, j) = (v / block, v % block);
        for i in 0..inputs {
            let (g, t) = (i / P::G, i % P::G);
            let at = ((b * ng + g) * block + j) * vb + lane * P::G + t;
            w[at] = weight[o * inputs + column(i)] as u8;
        }
    }
    let sums: Vec<i32> = weight
        .chunks_exact(inputs)
        .map(|r| r.iter().map(|&v| v as i32).sum())
        .collect();
    DensePacked {
        w,
        rq: Rq::new(q, &sums, P::BIAS_PER_WEIGHT, relu, vecs * n),
    }
}

/// Dense `I` → `O` outputs, `B` vectors per block, written at `out[..⌈O / LANES⌉·LANES]` (the
/// lanes past `O` too).
///
/// # Safety
/// The path's target features are enabled; `p` was packed by [`pack_dense`] for `P` with
/// these `I`, `O` and `B`.
#[inline(always)]
pub(crate) unsafe fn dense<P: Path, const I: usize, const O: usize, const B: usize>(
    p: &DensePacked,
    x: &[P::A],
    out: &mut [P::A],
) {
    let ng = I / P::G;
    let (n, vb) = (lanes::<P>(), vec_bytes::<P>());
    let vecs = O.div_ceil(n);
    assert!(I.is_multiple_of(P::G) && vecs.is_multiple_of(B));
    assert!(x.len() >= I && out.len() >= vecs * n);
    assert_eq!(p.w.len(), vecs * ng * vb);
    let xp = x.as_ptr();
    let op = out.as_mut_ptr();
    let mut wp = p.w.as_ptr();
    unsafe {
        let mut v0 = 0;
        while v0 < vecs {
            let mut acc = [P::V::zero(); B];
            for g in 0..ng {
                let xa = broadcast::<P::V, _>(xp.add(g * P::G));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = P::dot(*a, xa, P::load_w(wp.add(j * vb)));
                }
                wp = wp.add(B * vb);
            }
            for (j, &a) in acc.iter().enumerate() {
                let ys = a.requant(&p.rq, v0 + j);
                for (i, &y) in ys.iter().enumerate().take(n / 8) {
                    P::store8(y, op.add(8 * ((v0 + j) * n / 8 + i)));
                }
            }
            v0 += B;
        }
    }
}
