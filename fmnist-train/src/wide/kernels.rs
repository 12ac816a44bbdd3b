//! Batched forward and backward kernels of the wide CNN for training.
//!
//! ```text
//! 1x28x28 -> conv 32@3x3 pad 1 -> BN -> ReLU -> pool 2 -> conv 64@3x3 pad 1 -> BN -> ReLU
//!         -> pool 2 -> flatten 3136 -> dense 512 -> ReLU -> dropout 0.5 -> dense 10
//! ```
//!
//! The convolutional part runs per chunk of [`CHUNK`] images (a fixed cut of the mini-batch that
//! does not depend on the thread count): im2col + GEMM for both convolutions, batch-norm sums per
//! chunk in f64, reduced in chunk order by the caller. The dense part ([`Head`]) runs over the
//! whole batch as GEMMs cut into fixed column (or row) blocks: every output element is computed
//! by exactly one task in a fixed k order, so the result is the same for any thread count — and
//! the 1.6 M-weight gradient of the big dense layer is written once, never copied per chunk.
//!
//! GEMMs are `shared::gemm` (AVX2 + FMA with the values of `matrixmultiply`, which runs where the
//! CPU lacks them; training is host-only); fc1's backward multiplies only the non-zeros of its
//! output gradient (`shared::sparse`, the same values).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use rayon::prelude::*;

use fmnist_core::lenet::{BnParams, IMAGE_PIXELS};
use fmnist_core::wide::{WIDE_FLAT, WIDE_HIDDEN, WideParams};
use fmnist_infer::data::Dataset;

use crate::shared::config::Conv;
use crate::shared::kernels::{BnBatch, Evaluation, PIXELS, gemm, simd_dispatch, sum_and_squares};
use crate::shared::sparse::{self, SparseRows, sparse_gemm};

use super::winograd;
pub use super::winograd::Filters;

/// Images per chunk: the unit of parallel work of the convolutional part.
pub const CHUNK: usize = 8;

/// He-normal conv weights (std √(2/fan_in)), Xavier-uniform dense weights
/// (±√(6/(fan_in+fan_out))), zero biases, identity batch norm.
pub fn init_wide_params(seed: u64) -> Box<WideParams> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let mut p: Box<WideParams> = bytemuck::zeroed_box();
    let mut he = |w: &mut [f32], fan_in: usize| {
        let d = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).expect("positive std");
        w.iter_mut().for_each(|v| *v = d.sample(&mut rng));
    };
    he(bytemuck::cast_slice_mut(&mut p.conv1_weight), 9);
    he(bytemuck::cast_slice_mut(&mut p.conv2_weight), 32 * 9);
    let mut xavier = |w: &mut [f32], fan_in: usize, fan_out: usize| {
        let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
        let d = Uniform::new_inclusive(-a, a).expect("positive bound");
        w.iter_mut().for_each(|v| *v = d.sample(&mut rng));
    };
    xavier(p.fc1_weight.as_flattened_mut(), WIDE_FLAT, 512);
    xavier(p.fc2_weight.as_flattened_mut(), 512, 10);
    p.bn1 = BnParams::identity();
    p.bn2 = BnParams::identity();
    p
}

/// Positions of conv1 per image (28x28).
const P1: usize = 28 * 28;
/// Positions after pool2 (7x7).
const Q2: usize = 7 * 7;
/// Taps of conv1 and conv2.
const K1: usize = 9;
const K2: usize = C1 * 9;
const F: usize = WIDE_FLAT;
const H: usize = WIDE_HIDDEN;
/// Column blocks of the dense layers: fc1's 512 outputs in 4 blocks of 128, its 3,136 inputs in
/// 4 blocks of 784. Fixed, so the arithmetic never depends on the thread count. Few blocks: each
/// block packs the whole batch's features (or their gradient) once.
const HB: usize = 128;
const XB: usize = F / 4;
/// Dropout probability (training only); kept units are scaled by 1 / (1 - p).
pub const DROPOUT: f32 = 0.5;

use super::common::{BnGrad, C1, C2, Layout, NONE, P2, bn_backward, bn_pool_grad_row, grow};

/// One row of a 3x3, pad-1 tap: `dst[x] = src[x + kx - 1]`, zero outside.
#[inline(always)]
fn shifted_row(dst: &mut [f32], src: &[f32], kx: usize) {
    let w = dst.len();
    match kx {
        0 => {
            dst[0] = 0.0;
            dst[1..].copy_from_slice(&src[..w - 1]);
        }
        1 => dst.copy_from_slice(src),
        _ => {
            dst[..w - 1].copy_from_slice(&src[1..]);
            dst[w - 1] = 0.0;
        }
    }
}

/// The adjoint of [`shifted_row`]: `dst[x + kx - 1] += src[x]` inside the row.
#[inline(always)]
fn add_shifted_row(dst: &mut [f32], src: &[f32], kx: usize) {
    let w = dst.len();
    let (d, s) = match kx {
        0 => (&mut dst[..w - 1], &src[1..]),
        1 => (&mut dst[..], src),
        _ => (&mut dst[1..], &src[..w - 1]),
    };
    for (a, &b) in d.iter_mut().zip(s) {
        *a += b;
    }
}

simd_dispatch! {
    /// im2col of a 3x3, pad-1 convolution: `src` is `[ch][n][w·w]`, `dst` is `[ch·9][n·w·w]`
    /// (row = channel·9 + ky·3 + kx).
    fn im2col3(src: &[f32], ch: usize, n: usize, w: usize, dst: &mut [f32]) {
        let np = n * w * w;
        for c in 0..ch {
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &mut dst[(c * 9 + ky * 3 + kx) * np..][..np];
                    for i in 0..n {
                        let s = &src[c * np + i * w * w..][..w * w];
                        let d = &mut row[i * w * w..][..w * w];
                        for y in 0..w {
                            let sy = y + ky;
                            let dr = &mut d[y * w..][..w];
                            if sy == 0 || sy > w {
                                dr.fill(0.0);
                            } else {
                                shifted_row(dr, &s[(sy - 1) * w..][..w], kx);
                            }
                        }
                    }
                }
            }
        }
    }
}

simd_dispatch! {
    /// col2im (the adjoint of [`im2col3`]): `dst` (`[ch][n][w·w]`) = Σ taps of `src`.
    fn col2im3(src: &[f32], ch: usize, n: usize, w: usize, dst: &mut [f32]) {
        let np = n * w * w;
        dst[..ch * np].fill(0.0);
        for c in 0..ch {
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &src[(c * 9 + ky * 3 + kx) * np..][..np];
                    for i in 0..n {
                        let s = &row[i * w * w..][..w * w];
                        let d = &mut dst[c * np + i * w * w..][..w * w];
                        for y in 0..w {
                            let sy = y + ky;
                            if sy == 0 || sy > w {
                                continue;
                            }
                            add_shifted_row(&mut d[(sy - 1) * w..][..w], &s[y * w..][..w], kx);
                        }
                    }
                }
            }
        }
    }
}

/// Row pitch of conv1's zero-padded planes (28 + 2): in this layout every tap of the 3×3
/// kernel is one fixed offset, so conv1 and its weight gradient are contiguous 1-D passes.
const XW: usize = 30;
/// Positions computed per image in that layout: 28 rows of [`XW`] (the two pad columns of
/// each row are computed and thrown away, or held at zero in a gradient).
const XN: usize = 28 * XW;

/// Image `i` of `x0` (`[n][28·28]`) zero-padded: pixel (y, x) at `(y + 1)·XW + x + 1`.
#[inline(always)]
fn padded_image(x0: &[f32], i: usize, xp: &mut [f32; XW * XW + 8]) {
    xp.fill(0.0);
    for y in 0..28 {
        xp[(y + 1) * XW + 1..][..28].copy_from_slice(&x0[i * P1 + y * 28..][..28]);
    }
}

/// Offset of tap (ky, kx) in the padded layout.
const fn tap(t: usize) -> usize {
    (t / 3) * XW + t % 3
}

/// Conv1 of one padded image for one channel: `acc[j] = bias + Σ_t w[t]·xp[j + tap(t)]`, the
/// taps added in order after the bias, multiplying then adding (no fused multiply-add), so
/// the vector and the portable paths give the same bits.
#[inline(always)]
fn conv_taps(xp: &[f32; XW * XW + 8], w: &[f32; 9], bias: f32, acc: &mut [f32; XN]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX.
            return unsafe { conv_taps_avx(xp, w, bias, acc) };
        }
    }
    conv_taps_portable(xp, w, bias, acc)
}

#[inline(always)]
fn conv_taps_portable(xp: &[f32; XW * XW + 8], w: &[f32; 9], bias: f32, acc: &mut [f32; XN]) {
    acc.fill(bias);
    for (t, &wk) in w.iter().enumerate() {
        for (a, &x) in acc.iter_mut().zip(&xp[tap(t)..][..XN]) {
            *a += wk * x;
        }
    }
}

/// [`conv_taps`] with AVX: each output vector's sum stays in a register over the nine taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn conv_taps_avx(xp: &[f32; XW * XW + 8], w: &[f32; 9], bias: f32, acc: &mut [f32; XN]) {
    use std::arch::x86_64::*;
    let wv: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(w[t]));
    for j in (0..XN).step_by(8) {
        let mut a = _mm256_set1_ps(bias);
        for (t, &wk) in wv.iter().enumerate() {
            // SAFETY: j + 8 + tap(8) <= XN + 2·XW + 2 < XW·XW + 8.
            let x = unsafe { _mm256_loadu_ps(xp.as_ptr().add(j + tap(t))) };
            a = _mm256_add_ps(a, _mm256_mul_ps(wk, x));
        }
        // SAFETY: j + 8 <= XN.
        unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(j), a) };
    }
}

/// The nine tap sums of conv1's weight gradient in 8 lanes: lane l of tap t sums
/// `dz[8j + l]·xp[8j + l + tap(t)]` over j, in j order, multiplying then adding (no fused
/// multiply-add), so the vector and the portable paths give the same bits.
#[inline(always)]
fn tap_sums(dz: &[f32; XN], xp: &[f32; XW * XW + 8]) -> [[f32; 8]; 9] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX.
            return unsafe { tap_sums_avx(dz, xp) };
        }
    }
    tap_sums_portable(dz, xp)
}

#[inline(always)]
fn tap_sums_portable(dz: &[f32; XN], xp: &[f32; XW * XW + 8]) -> [[f32; 8]; 9] {
    let mut acc = [[0.0f32; 8]; 9];
    for j in (0..XN).step_by(8) {
        for (t, a) in acc.iter_mut().enumerate() {
            for l in 0..8 {
                a[l] += dz[j + l] * xp[j + l + tap(t)];
            }
        }
    }
    acc
}

/// [`tap_sums`] with AVX: nine independent sums in registers, one pass over `dz` (the
/// compiler's vectoriser splits the portable loop badly).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tap_sums_avx(dz: &[f32; XN], xp: &[f32; XW * XW + 8]) -> [[f32; 8]; 9] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 9];
    for j in (0..XN).step_by(8) {
        // SAFETY: j + 8 <= XN, and j + 8 + tap(8) <= XN + 2·XW + 2 < XW·XW + 8.
        let d = unsafe { _mm256_loadu_ps(dz.as_ptr().add(j)) };
        for (t, a) in acc.iter_mut().enumerate() {
            let x = unsafe { _mm256_loadu_ps(xp.as_ptr().add(j + tap(t))) };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(d, x));
        }
    }
    let mut out = [[0.0f32; 8]; 9];
    for (o, a) in out.iter_mut().zip(&acc) {
        // SAFETY: `o` holds 8 floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
    }
    out
}

/// Conv1's nine weights of channel `c` in tap order.
#[inline(always)]
fn conv1_taps(w: &[[[[f32; 3]; 3]; 1]; C1], c: usize) -> [f32; 9] {
    std::array::from_fn(|t| w[c][0][t / 3][t % 3])
}

simd_dispatch! {
    /// Conv1 (pre-BN) of `n` images `x0` (`[n][28·28]`) into `z` (`[32][n][28·28]`), by the
    /// padded-layout kernel [`conv_taps`]; Σz and Σz² per channel into `sums` (f32 over each
    /// image, f64 across images).
    fn conv1_direct(
        x0: &[f32],
        n: usize,
        w: &[[[[f32; 3]; 3]; 1]; C1],
        bias: &[f32],
        z: &mut [f32],
        sums: &mut [[f64; C2]; 2],
    ) {
        *sums = [[0.0; C2]; 2];
        let mut xp = [0.0f32; XW * XW + 8];
        let mut acc = [0.0f32; XN];
        for i in 0..n {
            padded_image(x0, i, &mut xp);
            for c in 0..C1 {
                conv_taps(&xp, &conv1_taps(w, c), bias[c], &mut acc);
                let plane = &mut z[(c * n + i) * P1..][..P1];
                for (y, row) in plane.chunks_exact_mut(28).enumerate() {
                    row.copy_from_slice(&acc[y * XW..][..28]);
                }
                let (sz, szz) = sum_and_squares(plane);
                sums[0][c] += sz;
                sums[1][c] += szz;
            }
        }
    }
}

simd_dispatch! {
    /// BN1 → ReLU → pool1 backward and conv1's weight and bias gradients in one pass: `dz`
    /// (as `bn_backward` forms it) is built per image in the padded layout and goes straight
    /// into Σdz and the nine tap sums Σdz·x, never stored. `z` is conv1's output as stage 1
    /// stored it (`[32][n][28·28]`), `dout` the gradient of pool1's output (`[32][n][14·14]`),
    /// `arg` its winners (index in the channel's `[n][28·28]` plane).
    fn conv1_backward_fused(
        x0: &[f32],
        n: usize,
        z: &[f32],
        g: &BnGrad,
        gw: &mut [f32],
        gb: &mut [f32],
    ) {
        let mut taps = [[0.0f64; 9]; C1];
        let mut bias = [0.0f64; C1];
        let mut xp = [0.0f32; XW * XW + 8];
        // The pad columns stay 0: only columns 0..28 of each row are written.
        let mut dz = [0.0f32; XN];
        for i in 0..n {
            padded_image(x0, i, &mut xp);
            for c in 0..C1 {
                let bn = g.channel(c);
                let plane = &z[(c * n + i) * P1..][..P1];
                let routes = &g.arg[c * n * P2 + i * P2..][..P2];
                let grads = &g.dout[c * n * P2 + i * P2..][..P2];
                for y in 0..28 {
                    let q = (y / 2) * 14;
                    bn_pool_grad_row(
                        &bn,
                        &plane[y * 28..][..28],
                        &grads[q..][..14],
                        &routes[q..][..14],
                        (i * P1 + y * 28) as u32,
                        &mut dz[y * XW..][..28],
                    );
                }
                // Σdz and the nine Σdz·x.
                bias[c] += sum_and_squares(&dz).0;
                for (t, acc) in tap_sums(&dz, &xp).iter().enumerate() {
                    taps[c][t] += acc.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
        }
        for c in 0..C1 {
            gb[c] = bias[c] as f32;
            for t in 0..9 {
                gw[c * 9 + t] = taps[c][t] as f32;
            }
        }
    }
}

simd_dispatch! {
    /// BN (with `bn`'s statistics) → ReLU → 2x2 max-pool of `z` (`[ch][n][w·w]`) into `out`,
    /// remembering in `arg` which element of the channel plane won (NONE when all were ≤ 0).
    fn bn_relu_pool(
        z: &[f32],
        ch: usize,
        n: usize,
        w: usize,
        mean: &[f32],
        invstd: &[f32],
        gamma: &[f32],
        beta: &[f32],
        out: &mut [f32],
        arg: &mut [u32],
        lay: Layout,
    ) {
        let np = n * w * w;
        for c in 0..ch {
            let bn = [mean[c], invstd[c], gamma[c], beta[c]];
            for i in 0..n {
                let o = c * lay.channel + i * lay.image;
                pool_plane(&z[c * np + i * w * w..][..w * w], w, bn, (i * w * w) as u32, &mut out[o..], &mut arg[o..]);
            }
        }
    }
}

/// BN (`bn` = mean, invstd, γ, β) → ReLU → 2x2 max-pool of one `w`×`w` plane `z` into the
/// first (w/2)² of `out`, and into `arg` which element won (its index in the plane plus
/// `first`; NONE when all four were ≤ 0).
#[inline(always)]
fn pool_plane(z: &[f32], w: usize, bn: [f32; 4], first: u32, out: &mut [f32], arg: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { pool_plane_avx2(z, w, bn, first, out, arg) };
        }
    }
    pool_plane_portable(z, w, bn, first, out, arg)
}

#[inline(always)]
fn pool_plane_portable(
    z: &[f32],
    w: usize,
    bn: [f32; 4],
    first: u32,
    out: &mut [f32],
    arg: &mut [u32],
) {
    let [m, s, g, b] = bn;
    let h = w / 2;
    for py in 0..h {
        let row0 = 2 * py * w;
        // Eight pooled outputs at a time, from the even and odd columns of the window's two
        // rows: the same arithmetic and order as one at a time.
        for px0 in (0..h).step_by(8) {
            let lanes = (h - px0).min(8);
            let mut best = [0.0f32; 8];
            let mut at_best = [NONE; 8];
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let at = row0 + dy * w + 2 * px0 + dx;
                let mut zs = [0.0f32; 8];
                for (l, v) in zs.iter_mut().enumerate().take(lanes) {
                    *v = z[at + 2 * l];
                }
                for l in 0..8 {
                    let v = (zs[l] - m) * s * g + b;
                    // Branch-free selects: which candidate wins is unpredictable.
                    let win = v > best[l];
                    best[l] = if win { v } else { best[l] };
                    at_best[l] = if win {
                        first + (at + 2 * l) as u32
                    } else {
                        at_best[l]
                    };
                }
            }
            let o = py * h + px0;
            out[o..][..lanes].copy_from_slice(&best[..lanes]);
            arg[o..][..lanes].copy_from_slice(&at_best[..lanes]);
        }
    }
}

/// [`pool_plane_portable`] with AVX2: a window row's 16 floats are loaded as two vectors and
/// split into their even and odd columns by shuffles instead of gathered one by one. The same
/// operations in the same order on each lane (subtract, multiply, multiply, add, strict
/// greater-than), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_plane_avx2(
    z: &[f32],
    w: usize,
    bn: [f32; 4],
    first: u32,
    out: &mut [f32],
    arg: &mut [u32],
) {
    use std::arch::x86_64::*;
    let [m, s, g, b] = bn.map(|v| _mm256_set1_ps(v));
    let h = w / 2;
    let step = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let none = _mm256_set1_epi32(NONE as i32);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Lanes past the plane's end (the last window row of the last group) come from here.
    let mut tail = [0.0f32; 16];
    for py in 0..h {
        let row0 = 2 * py * w;
        for px0 in (0..h).step_by(8) {
            let lanes = (h - px0).min(8);
            let mut best = _mm256_setzero_ps();
            let mut at_best = none;
            for dy in 0..2 {
                let at = row0 + dy * w + 2 * px0;
                let src: &[f32] = if at + 16 <= z.len() {
                    &z[at..at + 16]
                } else {
                    let have = z.len() - at;
                    tail[..have].copy_from_slice(&z[at..]);
                    &tail
                };
                // SAFETY: `src` holds 16 floats.
                let (lo, hi) = unsafe {
                    (
                        _mm256_loadu_ps(src.as_ptr()),
                        _mm256_loadu_ps(src.as_ptr().add(8)),
                    )
                };
                // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6] → [lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6].
                let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi)),
                ));
                let odd = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                    _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi)),
                ));
                for (dx, zs) in [(0, even), (1, odd)] {
                    let v =
                        _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(zs, m), s), g), b);
                    let win = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
                    best = _mm256_blendv_ps(best, v, win);
                    let idx = _mm256_add_epi32(
                        _mm256_set1_epi32((first + (at + dx) as u32) as i32),
                        step,
                    );
                    at_best = _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(at_best),
                        _mm256_castsi256_ps(idx),
                        win,
                    ));
                }
            }
            let o = py * h + px0;
            if lanes == 8 {
                // SAFETY: `out` and `arg` hold the h² pooled outputs, o + 8 <= h².
                unsafe {
                    _mm256_storeu_ps(out[o..][..8].as_mut_ptr(), best);
                    _mm256_storeu_si256(arg[o..][..8].as_mut_ptr().cast(), at_best);
                }
            } else {
                // The first `lanes` lanes only (a call to memcpy per group cost 1 % of the step).
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), lane);
                let (out, arg) = (&mut out[o..][..lanes], &mut arg[o..][..lanes]);
                // SAFETY: the mask writes lanes 0..lanes, which `out` and `arg` hold.
                unsafe {
                    _mm256_maskstore_ps(out.as_mut_ptr(), mask, best);
                    _mm256_maskstore_epi32(arg.as_mut_ptr().cast(), mask, at_best);
                }
            }
        }
    }
}

simd_dispatch! {
    /// Σdy and Σdy·x̂ per channel for a batch-norm backward, routed through pool and ReLU.
    fn routed_sums(
        dout: &[f32],
        arg: &[u32],
        z: &[f32],
        ch: usize,
        n: usize,
        w: usize,
        mean: &[f32],
        invstd: &[f32],
        lay: Layout,
        sums: &mut [[f64; C2]; 2],
    ) {
        let np = n * w * w;
        let q = (w / 2) * (w / 2);
        *sums = [[0.0; C2]; 2];
        for c in 0..ch {
            let z = &z[c * np..][..np];
            let (mut sd, mut sdx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let o = c * lay.channel + i * lay.image;
                // In pooled-output order: `dy` is `dout` where the output has a winner in `arg`
                // (the winner's index in the channel's plane), x̂ the winner's
                // `(z − mean)·invstd`.
                for (&a, &d) in arg[o..][..q].iter().zip(&dout[o..][..q]) {
                    // Branch-free: a pooled output without a winner adds 0.
                    let valid = a != NONE;
                    let at = if valid { a as usize } else { 0 };
                    let dy = if valid { d } else { 0.0 };
                    let xhat = (z[at] - mean[c]) * invstd[c];
                    sd += dy as f64;
                    sdx += (dy * xhat) as f64;
                }
            }
            sums[0][c] = sd;
            sums[1][c] = sdx;
        }
    }
}

/// Buffers of one chunk, allocated once and reused every step.
pub struct WideChunk {
    /// Images in this chunk this step.
    pub n: usize,
    x0: Vec<f32>,
    // Allocated on first use: `z1` (conv1's output, both recipes) and the buffers only the
    // im2col recipe touches (im2col, stored gradients).
    col1: Vec<f32>,
    z1: Vec<f32>,
    a1: Vec<f32>,
    arg1: Vec<u32>,
    col2: Vec<f32>,
    z2: Vec<f32>,
    arg2: Vec<u32>,
    dz1: Vec<f32>,
    dz2: Vec<f32>,
    dcol2: Vec<f32>,
    da1: Vec<f32>,
    /// This chunk's conv1 weight gradient `[32][9]`.
    pub g_conv1_w: Vec<f32>,
    /// This chunk's conv1 bias gradient.
    pub g_conv1_b: Vec<f32>,
    /// This chunk's conv2 weight gradient `[64][288]`.
    pub g_conv2_w: Vec<f32>,
    /// This chunk's conv2 bias gradient.
    pub g_conv2_b: Vec<f32>,
    /// Partial per-channel sums for the batch-norm reductions (Σx, Σx² or Σdy, Σdy·x̂).
    pub sums: [[f64; C2]; 2],
}

impl Default for WideChunk {
    fn default() -> Self {
        let z = |len: usize| vec![0.0f32; len];
        WideChunk {
            n: 0,
            x0: z(CHUNK * P1),
            col1: Vec::new(),
            z1: Vec::new(),
            a1: z(C1 * CHUNK * P2),
            arg1: vec![NONE; C1 * CHUNK * P2],
            col2: Vec::new(),
            z2: z(C2 * CHUNK * P2),
            arg2: vec![NONE; CHUNK * F],
            dz1: Vec::new(),
            dz2: Vec::new(),
            dcol2: Vec::new(),
            da1: z(C1 * CHUNK * P2),
            g_conv1_w: z(C1 * K1),
            g_conv1_b: z(C1),
            g_conv2_w: z(C2 * K2),
            g_conv2_b: z(C2),
            sums: [[0.0; C2]; 2],
        }
    }
}

/// A 3×3, pad-1 convolution by im2col + GEMM: `src` (`[cin][n][w·w]`) → `z` (`[cout][n][w·w]`,
/// bias first, then the GEMM adds the taps), through the im2col buffer `col`.
#[allow(clippy::too_many_arguments)]
fn conv3x3_im2col(
    src: &[f32],
    (cin, cout): (usize, usize),
    n: usize,
    w: usize,
    weight: &[f32],
    bias: &[f32],
    col: &mut [f32],
    z: &mut [f32],
) {
    let np = n * w * w;
    let k = cin * 9;
    im2col3(src, cin, n, w, &mut col[..k * np]);
    for c in 0..cout {
        z[c * np..][..np].fill(bias[c]);
    }
    gemm(
        cout,
        k,
        np,
        weight,
        (k, 1),
        &col[..k * np],
        (np, 1),
        1.0,
        &mut z[..cout * np],
        (np, 1),
    );
}

/// The bias and weight gradients of [`conv3x3_im2col`] from its output gradient `dz`
/// (`[cout][np]`): Σdz per channel, and `dW[cout][cin·9] = dz · colᵀ`.
fn conv3x3_grads(
    dz: &[f32],
    (cin, cout): (usize, usize),
    np: usize,
    col: &[f32],
    gw: &mut [f32],
    gb: &mut [f32],
) {
    let k = cin * 9;
    for c in 0..cout {
        gb[c] = sum_and_squares(&dz[c * np..][..np]).0 as f32;
    }
    gemm(
        cout,
        np,
        k,
        dz,
        (np, 1),
        &col[..k * np],
        (1, np),
        0.0,
        gw,
        (k, 1),
    );
}

fn channel_sums(z: &[f32], ch: usize, np: usize, sums: &mut [[f64; C2]; 2]) {
    *sums = [[0.0; C2]; 2];
    for c in 0..ch {
        let (s, q) = sum_and_squares(&z[c * np..][..np]);
        sums[0][c] = s;
        sums[1][c] = q;
    }
}

/// How a step computes the two convolutions: the recipe's [`Conv`], with what Winograd needs.
/// One value for all four stages, so the forward and the backward cannot disagree.
#[derive(Clone, Copy)]
pub enum Arith<'a> {
    /// im2col + GEMM for both convolutions; conv1's output is stored for the later stages.
    Direct,
    /// Winograd F(2×2, 3×3) for conv2, with its transformed weights; conv1 by the direct AVX
    /// kernels (its output stored, its weight gradient fused with BN1's backward).
    Winograd(&'a Filters),
}

impl<'a> Arith<'a> {
    /// The arithmetic of `conv`: for Winograd, `filters` holds the transform of conv2's weights
    /// (filled here, once per step) and must outlive the step.
    pub fn new(
        conv: Conv,
        conv2_weight: &[[[[f32; 3]; 3]; C1]; C2],
        filters: &'a mut Option<Filters>,
    ) -> Self {
        match conv {
            Conv::Direct => Arith::Direct,
            Conv::Winograd => Arith::Winograd(filters.insert(Filters::new(conv2_weight))),
        }
    }
}

impl WideChunk {
    /// Stage 1: conv1 (pre-BN) of `images` into the chunk; Σz, Σz² per channel in `sums`.
    pub fn conv1(&mut self, p: &WideParams, images: &[&[u8; IMAGE_PIXELS]], arith: Arith) {
        let n = images.len();
        assert!(n > 0 && n <= CHUNK);
        self.n = n;
        let np = n * P1;
        let lut = &*PIXELS;
        for (dst, img) in self.x0.chunks_exact_mut(P1).zip(images) {
            for (d, &px) in dst.iter_mut().zip(img.iter()) {
                *d = lut[px as usize];
            }
        }
        grow(&mut self.z1, C1 * CHUNK * P1);
        if let Arith::Winograd(_) = arith {
            conv1_direct(
                &self.x0,
                n,
                &p.conv1_weight,
                &p.conv1_bias,
                &mut self.z1,
                &mut self.sums,
            );
            return;
        }
        grow(&mut self.col1, K1 * CHUNK * P1);
        conv3x3_im2col(
            &self.x0[..np],
            (1, C1),
            n,
            28,
            bytemuck::cast_slice(&p.conv1_weight),
            &p.conv1_bias,
            &mut self.col1,
            &mut self.z1,
        );
        channel_sums(&self.z1, C1, np, &mut self.sums);
    }

    /// Stage 2: BN1 → ReLU → pool1, conv2 (pre-BN) by `arith`; Σz, Σz² per channel in `sums`.
    pub fn conv2(&mut self, p: &WideParams, bn1: &BnBatch<C1>, arith: Arith) {
        let n = self.n;
        let np = n * P2;
        bn_relu_pool(
            &self.z1,
            C1,
            n,
            28,
            &bn1.mean,
            &bn1.invstd,
            &p.bn1.gamma,
            &p.bn1.beta,
            &mut self.a1,
            &mut self.arg1,
            Layout {
                channel: np,
                image: P2,
            },
        );
        match arith {
            Arith::Winograd(f) => {
                winograd::forward(
                    f,
                    &p.conv2_bias,
                    &self.a1[..C1 * np],
                    n,
                    &mut self.z2[..C2 * np],
                );
            }
            Arith::Direct => {
                grow(&mut self.col2, K2 * CHUNK * P2);
                conv3x3_im2col(
                    &self.a1[..C1 * np],
                    (C1, C2),
                    n,
                    14,
                    bytemuck::cast_slice(&p.conv2_weight),
                    &p.conv2_bias,
                    &mut self.col2,
                    &mut self.z2,
                );
            }
        }
        channel_sums(&self.z2, C2, np, &mut self.sums);
    }

    /// Stage 3: BN2 → ReLU → pool2 into the flattened features `x` (`[n][3136]`, C×H×W).
    pub fn pool2(&mut self, p: &WideParams, bn2: &BnBatch<C2>, x: &mut [f32]) {
        let n = self.n;
        bn_relu_pool(
            &self.z2,
            C2,
            n,
            14,
            &bn2.mean,
            &bn2.invstd,
            &p.bn2.gamma,
            &p.bn2.beta,
            &mut x[..n * F],
            &mut self.arg2,
            Layout {
                channel: Q2,
                image: F,
            },
        );
    }

    /// Stage 4: Σdy and Σdy·x̂ of BN2 (into `sums`) from the feature gradient `dx` (`[n][3136]`).
    pub fn bn2_sums(&mut self, bn2: &BnBatch<C2>, dx: &[f32]) {
        routed_sums(
            dx,
            &self.arg2,
            &self.z2,
            C2,
            self.n,
            14,
            &bn2.mean,
            &bn2.invstd,
            Layout {
                channel: Q2,
                image: F,
            },
            &mut self.sums,
        );
    }

    /// Stage 5: BN2 backward (with the batch's Σdy, Σdy·x̂), conv2's gradients (by `arith`, the
    /// forward's), the gradient of pool1's output, then the BN1 sums of this chunk (into `sums`).
    #[allow(clippy::too_many_arguments)]
    pub fn back_conv2(
        &mut self,
        p: &WideParams,
        bn1: &BnBatch<C1>,
        bn2: &BnBatch<C2>,
        dsum: &[f64; C2],
        dxsum: &[f64; C2],
        dx: &[f32],
        arith: Arith,
    ) {
        let n = self.n;
        let np = n * P2;
        let grad = BnGrad {
            mean: &bn2.mean,
            invstd: &bn2.invstd,
            gamma: &p.bn2.gamma,
            count: bn2.count,
            dsum,
            dxsum,
            dout: dx,
            arg: &self.arg2,
        };
        match arith {
            Arith::Winograd(f) => {
                // BN2 → pool2's backward is fused into the transform of conv2's output
                // gradient: dz2 is never stored.
                winograd::backward(
                    f,
                    winograd::OutputGrad::PoolBn(&self.z2[..C2 * np], grad),
                    n,
                    &self.a1[..C1 * np],
                    &mut self.g_conv2_w,
                    &mut self.g_conv2_b,
                    &mut self.da1,
                );
            }
            Arith::Direct => {
                grow(&mut self.dz2, C2 * CHUNK * P2);
                bn_backward(
                    &self.z2,
                    &mut self.dz2,
                    C2,
                    n,
                    14,
                    &grad,
                    Layout {
                        channel: Q2,
                        image: F,
                    },
                );
                let dz = &self.dz2[..C2 * np];
                conv3x3_grads(
                    dz,
                    (C1, C2),
                    np,
                    &self.col2,
                    &mut self.g_conv2_w,
                    &mut self.g_conv2_b,
                );
                // dcol2[288][np] = W2ᵀ[288][64] · dz2[64][np]
                grow(&mut self.dcol2, K2 * CHUNK * P2);
                let w: &[f32] = bytemuck::cast_slice(&p.conv2_weight);
                gemm(
                    K2,
                    C2,
                    np,
                    w,
                    (1, K2),
                    dz,
                    (np, 1),
                    0.0,
                    &mut self.dcol2[..K2 * np],
                    (np, 1),
                );
                col2im3(&self.dcol2[..K2 * np], C1, n, 14, &mut self.da1);
            }
        }
        routed_sums(
            &self.da1,
            &self.arg1,
            &self.z1,
            C1,
            n,
            28,
            &bn1.mean,
            &bn1.invstd,
            Layout {
                channel: np,
                image: P2,
            },
            &mut self.sums,
        );
    }

    /// Stage 6: BN1 backward (with the batch's Σdy, Σdy·x̂) and conv1's gradients.
    pub fn back_conv1(
        &mut self,
        p: &WideParams,
        bn1: &BnBatch<C1>,
        dsum: &[f64; C1],
        dxsum: &[f64; C1],
        arith: Arith,
    ) {
        let n = self.n;
        let np = n * P1;
        let grad = BnGrad {
            mean: &bn1.mean,
            invstd: &bn1.invstd,
            gamma: &p.bn1.gamma,
            count: bn1.count,
            dsum,
            dxsum,
            dout: &self.da1,
            arg: &self.arg1,
        };
        if let Arith::Winograd(_) = arith {
            conv1_backward_fused(
                &self.x0,
                n,
                &self.z1[..C1 * np],
                &grad,
                &mut self.g_conv1_w,
                &mut self.g_conv1_b,
            );
            return;
        }
        grow(&mut self.dz1, C1 * CHUNK * P1);
        bn_backward(
            &self.z1,
            &mut self.dz1,
            C1,
            n,
            28,
            &grad,
            Layout {
                channel: n * P2,
                image: P2,
            },
        );
        conv3x3_grads(
            &self.dz1[..C1 * np],
            (1, C1),
            np,
            &self.col1,
            &mut self.g_conv1_w,
            &mut self.g_conv1_b,
        );
    }
}

/// A 64-bit mix (SplitMix64's finaliser).
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 dropout keep-bits for units `64·word..64·word + 64` of the image at `position` in the
/// batch of optimizer step `step`: a counter-based hash, independent of threads and chunks.
pub fn dropout_bits(seed: u64, step: u64, position: usize, word: usize) -> u64 {
    mix64(mix64(mix64(seed) ^ step) ^ ((position as u64) << 16 | word as u64))
}

/// The dense part over a whole batch: features → fc1 → ReLU → dropout → fc2 → loss, and back.
pub struct Head {
    /// Flattened features `[batch][3136]`, written by the chunks' [`WideChunk::pool2`].
    pub x: Vec<f32>,
    h: Vec<f32>,
    scale: Vec<f32>,
    hd: Vec<f32>,
    /// Logits `[batch][10]` of the last forward pass.
    pub logits: Vec<f32>,
    dlogits: Vec<f32>,
    dh: Vec<f32>,
    /// Gradient of the features `[batch][3136]` after [`Head::backward`].
    pub dx: Vec<f32>,
    hblk: Vec<Vec<f32>>,
    dxblk: Vec<Vec<f32>>,
    /// dH's non-zeros per hidden unit (for fc1's weight gradient) and per image (for dX).
    dh_units: SparseRows,
    dh_images: SparseRows,
    dh_multiplied: usize,
    /// Σ cross-entropy over the batch of the last forward pass.
    pub loss: f64,
    /// Label smoothing ε of the training loss.
    pub smoothing: f32,
    /// Knowledge distillation: weight and temperature of the teacher term, whose soft
    /// targets `[batch][10]` are in `soft`.
    pub distill: Option<crate::shared::config::Distill>,
    /// The teacher's soft targets of the batch (read when `distill` is set).
    pub soft: Vec<f32>,
    /// Correct predictions in the batch of the last forward pass.
    pub correct: usize,
}

impl Head {
    /// Buffers for batches of up to `batch` images.
    pub fn new(batch: usize) -> Self {
        let z = |len: usize| vec![0.0f32; len];
        Head {
            x: z(batch * F),
            h: z(batch * H),
            scale: z(batch * H),
            hd: z(batch * H),
            logits: z(batch * 10),
            dlogits: z(batch * 10),
            dh: z(batch * H),
            dx: z(batch * F),
            hblk: (0..H / HB).map(|_| z(batch * HB)).collect(),
            dxblk: (0..F / XB).map(|_| z(batch * XB)).collect(),
            dh_units: SparseRows::default(),
            dh_images: SparseRows::default(),
            dh_multiplied: 0,
            loss: 0.0,
            smoothing: 0.0,
            distill: None,
            soft: z(batch * 10),
            correct: 0,
        }
    }

    /// fc1 → ReLU → dropout (when `dropout` is `Some((seed, step))`) → fc2 over the first `b`
    /// rows of `x`; loss and accuracy against `labels`. Runs its blocks on the current rayon
    /// pool.
    pub fn forward(
        &mut self,
        p: &WideParams,
        b: usize,
        labels: &[u8],
        dropout: Option<(u64, u64)>,
    ) {
        let x = &self.x[..b * F];
        let w = p.fc1_weight.as_flattened();
        self.hblk.par_iter_mut().enumerate().for_each(|(j, blk)| {
            let blk = &mut blk[..b * HB];
            for row in blk.chunks_exact_mut(HB) {
                row.copy_from_slice(&p.fc1_bias[j * HB..][..HB]);
            }
            gemm(
                b,
                F,
                HB,
                x,
                (F, 1),
                &w[j * HB * F..],
                (1, F),
                1.0,
                blk,
                (HB, 1),
            );
        });
        for (j, blk) in self.hblk.iter().enumerate() {
            for (dst, src) in self.h[..b * H]
                .chunks_exact_mut(H)
                .zip(blk[..b * HB].chunks_exact(HB))
            {
                for (d, &s) in dst[j * HB..][..HB].iter_mut().zip(src) {
                    *d = s.max(0.0);
                }
            }
        }
        let keep = 1.0 / (1.0 - DROPOUT);
        for i in 0..b {
            let sc = &mut self.scale[i * H..][..H];
            match dropout {
                Some((seed, step)) => {
                    for (word, s64) in sc.chunks_exact_mut(64).enumerate() {
                        let bits = dropout_bits(seed, step, i, word);
                        for (u, s) in s64.iter_mut().enumerate() {
                            *s = if bits >> u & 1 == 1 { keep } else { 0.0 };
                        }
                    }
                }
                None => sc.fill(1.0),
            }
        }
        for ((d, &h), &s) in self.hd[..b * H]
            .iter_mut()
            .zip(&self.h[..b * H])
            .zip(&self.scale[..b * H])
        {
            *d = h * s;
        }
        for row in self.logits[..b * 10].chunks_exact_mut(10) {
            row.copy_from_slice(&p.fc2_bias);
        }
        gemm(
            b,
            H,
            10,
            &self.hd[..b * H],
            (H, 1),
            p.fc2_weight.as_flattened(),
            (1, H),
            1.0,
            &mut self.logits[..b * 10],
            (10, 1),
        );
        self.loss = 0.0;
        self.correct = 0;
        for (i, &y) in labels[..b].iter().enumerate() {
            let l = &self.logits[i * 10..][..10];
            let y = y as usize;
            let pred = fmnist_core::layers::argmax::<f32, 10>(l.try_into().unwrap());
            self.correct += (pred == y) as usize;
            let m = l[pred];
            let sum: f32 = l.iter().map(|&v| libm::expf(v - m)).sum();
            let lse = m + libm::logf(sum);
            let d = &mut self.dlogits[i * 10..][..10];
            self.loss += match self.distill {
                None => crate::shared::kernels::smoothed_loss_grad(l, lse, y, self.smoothing, b, d),
                Some(k) => {
                    let soft = &self.soft[i * 10..][..10];
                    crate::shared::kernels::distilled_loss_grad(
                        l,
                        lse,
                        y,
                        self.smoothing,
                        soft,
                        k,
                        b,
                        d,
                    )
                }
            } as f64;
        }
    }

    /// Backward of the mean loss of the last [`Head::forward`] over `b` images: writes the
    /// gradients of fc1 and fc2 into `g`, and the features' gradient into `dx`. Runs its blocks
    /// on the current rayon pool.
    pub fn backward(&mut self, p: &WideParams, b: usize, g: &mut WideParams) {
        let dl = &self.dlogits[..b * 10];
        // fc2: dW = dLᵀ·hd, db = Σ dL, dhd = dL·W.
        gemm(
            10,
            b,
            H,
            dl,
            (1, 10),
            &self.hd[..b * H],
            (H, 1),
            0.0,
            g.fc2_weight.as_flattened_mut(),
            (H, 1),
        );
        g.fc2_bias = [0.0; 10];
        for row in dl.chunks_exact(10) {
            for (a, &v) in g.fc2_bias.iter_mut().zip(row) {
                *a += v;
            }
        }
        gemm(
            b,
            10,
            H,
            dl,
            (10, 1),
            p.fc2_weight.as_flattened(),
            (H, 1),
            0.0,
            &mut self.dh[..b * H],
            (H, 1),
        );
        // Through dropout and ReLU.
        for ((d, &h), &s) in self.dh[..b * H]
            .iter_mut()
            .zip(&self.h[..b * H])
            .zip(&self.scale[..b * H])
        {
            *d = if h > 0.0 { *d * s } else { 0.0 };
        }
        g.fc1_bias = [0.0; H];
        for row in self.dh[..b * H].chunks_exact(H) {
            for (a, &v) in g.fc1_bias.iter_mut().zip(row) {
                *a += v;
            }
        }
        let dh = &self.dh[..b * H];
        let x = &self.x[..b * F];
        let w = p.fc1_weight.as_flattened();
        let gw = g.fc1_weight.as_flattened_mut();
        // ReLU and dropout leave most of dH zero: where the CPU allows, the same products over
        // its non-zeros (the dense GEMMs' values, see `shared::sparse`).
        let sparse = sparse::available();
        let (units, images) = (&mut self.dh_units, &mut self.dh_images);
        if sparse {
            rayon::join(
                || units.fill_columns(dh, b, H),
                || images.fill_rows(dh, b, H),
            );
            self.dh_multiplied = images.nonzeros();
        } else {
            self.dh_multiplied = b * H;
        }
        let (units, images) = (&*units, &*images);
        rayon::join(
            || {
                // dW1 rows j·128.. = dHᵀ[128][b] · X[b][3136]
                gw.par_chunks_mut(HB * F).enumerate().for_each(|(j, blk)| {
                    if sparse {
                        sparse_gemm(units, j * HB..(j + 1) * HB, x, F, F, blk, F);
                    } else {
                        gemm(HB, b, F, &dh[j * HB..], (1, H), x, (F, 1), 0.0, blk, (F, 1));
                    }
                });
            },
            || {
                // dX columns j·784.. = dH[b][512] · W1[512][784 columns]
                self.dxblk.par_iter_mut().enumerate().for_each(|(j, blk)| {
                    let (w, c) = (&w[j * XB..], &mut blk[..b * XB]);
                    if sparse {
                        sparse_gemm(images, 0..b, w, F, XB, c, XB);
                    } else {
                        gemm(b, H, XB, dh, (H, 1), w, (F, 1), 0.0, c, (XB, 1));
                    }
                });
            },
        );
        for (j, blk) in self.dxblk.iter().enumerate() {
            for (dst, src) in self.dx[..b * F]
                .chunks_exact_mut(F)
                .zip(blk[..b * XB].chunks_exact(XB))
            {
                dst[j * XB..][..XB].copy_from_slice(src);
            }
        }
    }

    /// Non-zero entries of dH in the last [`Head::backward`] (all of them where the sparse
    /// products do not run: the dense GEMMs multiply every entry).
    pub fn dh_nonzeros(&self) -> usize {
        self.dh_multiplied
    }

    /// Eval-mode fc1 → ReLU → fc2 of the first `b` rows of `x` into `logits` (single-threaded).
    pub fn forward_eval(&mut self, p: &WideParams, b: usize) {
        let h = &mut self.h[..b * H];
        for row in h.chunks_exact_mut(H) {
            row.copy_from_slice(&p.fc1_bias);
        }
        gemm(
            b,
            F,
            H,
            &self.x[..b * F],
            (F, 1),
            p.fc1_weight.as_flattened(),
            (1, F),
            1.0,
            h,
            (H, 1),
        );
        h.iter_mut().for_each(|v| *v = v.max(0.0));
        for row in self.logits[..b * 10].chunks_exact_mut(10) {
            row.copy_from_slice(&p.fc2_bias);
        }
        gemm(
            b,
            H,
            10,
            h,
            (H, 1),
            p.fc2_weight.as_flattened(),
            (1, H),
            1.0,
            &mut self.logits[..b * 10],
            (10, 1),
        );
    }
}

/// Cross-entropy and arg-max of one row of logits.
fn cross_entropy(l: &[f32], y: usize) -> (f64, usize) {
    let pred = fmnist_core::layers::argmax::<f32, 10>(l.try_into().expect("10 logits"));
    let m = l[pred];
    let sum: f32 = l.iter().map(|&v| libm::expf(v - m)).sum();
    ((m + libm::logf(sum) - l[y]) as f64, pred)
}

/// Images per evaluation task (the dense layers run over this many rows at once).
const EVAL_GROUP: usize = 128;

/// Batched eval-mode forward of the wide CNN over `data` (BN with running statistics).
pub fn evaluate_wide(p: &WideParams, data: &Dataset, pool: &rayon::ThreadPool) -> Evaluation {
    let bn1 = BnBatch::<32>::from_running(&p.bn1.running_mean, &p.bn1.running_var);
    let bn2 = BnBatch::<64>::from_running(&p.bn2.running_mean, &p.bn2.running_var);
    let groups: Vec<(usize, usize)> = (0..data.len())
        .step_by(EVAL_GROUP)
        .map(|s| (s, (s + EVAL_GROUP).min(data.len())))
        .collect();
    let per_group: Vec<(Vec<[f32; 10]>, f64, usize)> = pool.install(|| {
        groups
            .par_iter()
            .map_init(
                || (WideChunk::default(), Head::new(EVAL_GROUP)),
                |(ch, head), &(s, e)| {
                    let imgs: Vec<&[u8; IMAGE_PIXELS]> = data.images[s..e].iter().collect();
                    for (k, sub) in imgs.chunks(CHUNK).enumerate() {
                        ch.conv1(p, sub, Arith::Direct);
                        ch.conv2(p, &bn1, Arith::Direct);
                        ch.pool2(p, &bn2, &mut head.x[k * CHUNK * WIDE_FLAT..]);
                    }
                    head.forward_eval(p, e - s);
                    let mut loss = 0.0;
                    let mut correct = 0;
                    let mut logits = Vec::with_capacity(e - s);
                    for (l, &y) in head.logits[..(e - s) * 10]
                        .chunks_exact(10)
                        .zip(&data.labels[s..e])
                    {
                        let (ce, pred) = cross_entropy(l, y as usize);
                        loss += ce;
                        correct += (pred == y as usize) as usize;
                        logits.push(l.try_into().expect("10 logits"));
                    }
                    (logits, loss, correct)
                },
            )
            .collect()
    });
    let mut logits = Vec::with_capacity(data.len());
    let (mut loss, mut correct) = (0.0, 0);
    for (l, ls, c) in per_group {
        logits.extend(l);
        loss += ls;
        correct += c;
    }
    Evaluation {
        accuracy: correct as f64 / data.len().max(1) as f64,
        loss: loss / data.len().max(1) as f64,
        logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_has_the_requested_scales() {
        let p = init_wide_params(1);
        let std =
            |w: &[f32]| (w.iter().map(|&v| (v * v) as f64).sum::<f64>() / w.len() as f64).sqrt();
        let c2: &[f32] = bytemuck::cast_slice(&p.conv2_weight);
        assert!((std(c2) / (2.0f64 / 288.0).sqrt() - 1.0).abs() < 0.05);
        let a = (6.0f32 / (3136.0 + 512.0)).sqrt();
        let f1 = p.fc1_weight.as_flattened();
        assert!(f1.iter().all(|v| v.abs() <= a));
        assert!((std(f1) - a as f64 / 3f64.sqrt()).abs() < 1e-3);
        assert_eq!(p.bn1, BnParams::identity());
        assert!(p.fc1_bias.iter().all(|&v| v == 0.0));
    }

    fn noise(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|k| (mix64(seed ^ (k as u64) << 8) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect()
    }

    /// The AVX kernels of the fused conv1 give the bits of their portable definitions, so a
    /// run is the same on any x86-64 and on other hosts.
    #[test]
    fn conv1_vector_kernels_match_their_portable_definitions() {
        let x0 = noise(P1, 1);
        let mut xp = [0.0f32; XW * XW + 8];
        padded_image(&x0, 0, &mut xp);
        let w: [f32; 9] = noise(9, 2).try_into().unwrap();
        let (mut a, mut b) = ([0.0f32; XN], [0.0f32; XN]);
        conv_taps(&xp, &w, 0.25, &mut a);
        conv_taps_portable(&xp, &w, 0.25, &mut b);
        assert!(a == b);
        // By definition, at a pixel next to the border.
        let (y, x) = (0, 5);
        let mut want = 0.25f32;
        for (t, &wt) in w.iter().enumerate() {
            let (sy, sx) = (y + t / 3, x + t % 3);
            let px = if (1..=28).contains(&sy) && (1..=28).contains(&sx) {
                x0[(sy - 1) * 28 + sx - 1]
            } else {
                0.0
            };
            want += wt * px;
        }
        assert_eq!(a[y * XW + x], want);
        let mut dz = [0.0f32; XN];
        dz.copy_from_slice(&noise(XN, 3));
        assert!(tap_sums(&dz, &xp) == tap_sums_portable(&dz, &xp));
    }

    #[test]
    fn pool_vector_kernel_matches_its_portable_definition() {
        for w in [28, 14] {
            let mut z = noise(w * w, w as u64);
            // Ties between a window's elements, and windows where no element survives ReLU.
            // (The whole first window: BN keeps 2.0 positive.)
            for at in [0, 1, w, w + 1] {
                z[at] = 2.0;
            }
            for v in &mut z[2 * w..3 * w] {
                *v = -1.0 - v.abs();
            }
            let bn = [0.1, 1.3, 0.9, -0.05];
            let q = (w / 2) * (w / 2);
            let (mut oa, mut aa) = (vec![0.0f32; q], vec![0u32; q]);
            let (mut ob, mut ab) = (vec![0.0f32; q], vec![0u32; q]);
            pool_plane(&z, w, bn, 7 * 784, &mut oa, &mut aa);
            pool_plane_portable(&z, w, bn, 7 * 784, &mut ob, &mut ab);
            assert!(oa.iter().zip(&ob).all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_eq!(aa, ab);
            assert!(ab.contains(&NONE) && ab.iter().any(|&a| a != NONE));
        }
    }
}
