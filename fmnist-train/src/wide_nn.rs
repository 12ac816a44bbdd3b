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
//! GEMMs use `matrixmultiply` (FMA where the CPU has it: training is host-only).

use rayon::prelude::*;

use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::wide::{WIDE_FLAT, WIDE_HIDDEN, WideParams};

use crate::nn::{BnBatch, PIXELS, gemm};

pub use winograd::Filters;

/// Images per chunk: the unit of parallel work of the convolutional part.
pub const CHUNK: usize = 8;
/// Channels of conv1 and conv2.
const C1: usize = 32;
const C2: usize = 64;
/// Positions of conv1 per image (28x28) and after pool1 (14x14 = conv2's positions).
const P1: usize = 28 * 28;
const P2: usize = 14 * 14;
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
const NONE: u32 = u32::MAX;
/// Dropout probability (training only); kept units are scaled by 1 / (1 - p).
pub const DROPOUT: f32 = 0.5;

/// Defines `fn $name` that runs its body compiled for AVX2 when the CPU has it (checked at run
/// time, cached by std), and as baseline code otherwise.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

pub mod winograd;

/// Σx and Σx² in f64, from 16 f32 lanes flushed every 1,024 values.
#[inline(always)]
fn sum_and_squares(xs: &[f32]) -> (f64, f64) {
    let (mut s, mut q) = (0.0f64, 0.0f64);
    for block in xs.chunks(1024) {
        let (mut ls, mut lq) = ([0.0f32; 16], [0.0f32; 16]);
        let mut it = block.chunks_exact(16);
        for v in &mut it {
            for l in 0..16 {
                ls[l] += v[l];
                lq[l] += v[l] * v[l];
            }
        }
        for &v in it.remainder() {
            s += v as f64;
            q += (v * v) as f64;
        }
        s += ls.iter().map(|&v| v as f64).sum::<f64>();
        q += lq.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, q)
}

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

/// Where a pooled layer's outputs go: element (channel c, image i, pooled position q) is at
/// `c·channel + i·image + q`.
#[derive(Clone, Copy)]
struct Layout {
    channel: usize,
    image: usize,
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
        let h = w / 2;
        for c in 0..ch {
            let (m, s, g, b) = (mean[c], invstd[c], gamma[c], beta[c]);
            let zc = &z[c * np..][..np];
            for i in 0..n {
                for py in 0..h {
                    for px in 0..h {
                        let mut best = 0.0f32;
                        let mut at_best = NONE;
                        // Branch-free selects: which candidate wins is unpredictable.
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let at = i * w * w + (2 * py + dy) * w + 2 * px + dx;
                            let v = (zc[at] - m) * s * g + b;
                            let win = v > best;
                            best = if win { v } else { best };
                            at_best = if win { at as u32 } else { at_best };
                        }
                        let o = c * lay.channel + i * lay.image + py * h + px;
                        out[o] = best;
                        arg[o] = at_best;
                    }
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
            let (mut sd, mut sdx) = (0.0f64, 0.0f64);
            for i in 0..n {
                for k in 0..q {
                    let o = c * lay.channel + i * lay.image + k;
                    // Branch-free: a pooled output without a winner adds 0.
                    let a = arg[o];
                    let valid = a != NONE;
                    let at = if valid { a as usize } else { 0 };
                    let dy = if valid { dout[o] } else { 0.0 };
                    let xhat = (z[c * np + at] - mean[c]) * invstd[c];
                    sd += dy as f64;
                    sdx += (dy * xhat) as f64;
                }
            }
            sums[0][c] = sd;
            sums[1][c] = sdx;
        }
    }
}

simd_dispatch! {
    /// Batch-norm + pool backward: `dz = γ·invstd·(dy − Σdy/N − x̂·Σdy·x̂/N)` where dy is
    /// routed from `dout` to the pool's winners (0 elsewhere).
    fn bn_backward(
        z: &[f32],
        dz: &mut [f32],
        ch: usize,
        n: usize,
        w: usize,
        bn_mean: &[f32],
        bn_invstd: &[f32],
        count: usize,
        gamma: &[f32],
        dsum: &[f64],
        dxsum: &[f64],
        dout: &[f32],
        arg: &[u32],
        lay: Layout,
    ) {
        let np = n * w * w;
        let q = (w / 2) * (w / 2);
        let total = count as f32;
        for c in 0..ch {
            let k = gamma[c] * bn_invstd[c] / total;
            let (m, s) = (bn_mean[c], bn_invstd[c]);
            let (sd, sdx) = (dsum[c] as f32, dxsum[c] as f32);
            let d = &mut dz[c * np..][..np];
            for (d, &z) in d.iter_mut().zip(&z[c * np..][..np]) {
                *d = -k * (sd + (z - m) * s * sdx);
            }
            let k = gamma[c] * bn_invstd[c];
            for i in 0..n {
                for j in 0..q {
                    let o = c * lay.channel + i * lay.image + j;
                    // Branch-free: a pooled output without a winner adds 0 to element 0.
                    let a = arg[o];
                    let valid = a != NONE;
                    let at = if valid { a as usize } else { 0 };
                    d[at] += if valid { k * dout[o] } else { 0.0 };
                }
            }
        }
    }
}

/// Buffers of one chunk, allocated once and reused every step.
pub struct WideChunk {
    /// Images in this chunk this step.
    pub n: usize,
    x0: Vec<f32>,
    col1: Vec<f32>,
    z1: Vec<f32>,
    a1: Vec<f32>,
    arg1: Vec<u32>,
    /// im2col of conv2's input (direct convolution only; allocated on first use).
    col2: Vec<f32>,
    /// Winograd-domain input of conv2, kept for its weight gradient (Winograd only).
    wv: Vec<f32>,
    /// Winograd-domain output of conv2, then its gradient (Winograd only).
    wm: Vec<f32>,
    /// Winograd-domain gradient of conv2's input (Winograd only).
    wdv: Vec<f32>,
    /// Winograd-domain weight gradient of conv2 (Winograd only).
    wdu: Vec<f32>,
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
            col1: z(K1 * CHUNK * P1),
            z1: z(C1 * CHUNK * P1),
            a1: z(C1 * CHUNK * P2),
            arg1: vec![NONE; C1 * CHUNK * P2],
            col2: Vec::new(),
            wv: Vec::new(),
            wm: Vec::new(),
            wdv: Vec::new(),
            wdu: Vec::new(),
            z2: z(C2 * CHUNK * P2),
            arg2: vec![NONE; CHUNK * F],
            dz1: z(C1 * CHUNK * P1),
            dz2: z(C2 * CHUNK * P2),
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

/// Sizes `buf` to `len` floats the first time it is needed.
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

fn channel_sums(z: &[f32], ch: usize, np: usize, sums: &mut [[f64; C2]; 2]) {
    *sums = [[0.0; C2]; 2];
    for c in 0..ch {
        let (s, q) = sum_and_squares(&z[c * np..][..np]);
        sums[0][c] = s;
        sums[1][c] = q;
    }
}

impl WideChunk {
    /// Stage 1: conv1 (pre-BN) of `images` into the chunk; Σz, Σz² per channel in `sums`.
    pub fn conv1(&mut self, p: &WideParams, images: &[&[u8; IMAGE_PIXELS]]) {
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
        im2col3(&self.x0[..np], 1, n, 28, &mut self.col1[..K1 * np]);
        for c in 0..C1 {
            self.z1[c * np..][..np].fill(p.conv1_bias[c]);
        }
        let w: &[f32] = bytemuck::cast_slice(&p.conv1_weight);
        gemm(
            C1,
            K1,
            np,
            w,
            (K1, 1),
            &self.col1[..K1 * np],
            (np, 1),
            1.0,
            &mut self.z1[..C1 * np],
            (np, 1),
        );
        channel_sums(&self.z1, C1, np, &mut self.sums);
    }

    /// Stage 2: BN1 → ReLU → pool1, conv2 (pre-BN) — by im2col + GEMM, or by Winograd with
    /// `filters` (conv2's transformed weights); Σz, Σz² per channel in `sums`.
    pub fn conv2(&mut self, p: &WideParams, bn1: &BnBatch<C1>, filters: Option<&Filters>) {
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
        match filters {
            Some(f) => {
                grow(&mut self.wv, 16 * winograd::plane_len(C1, CHUNK));
                grow(&mut self.wm, 16 * winograd::plane_len(C2, CHUNK));
                winograd::forward(
                    f,
                    &p.conv2_bias,
                    &self.a1[..C1 * np],
                    n,
                    &mut self.wv,
                    &mut self.wm,
                    &mut self.z2[..C2 * np],
                );
            }
            None => {
                grow(&mut self.col2, K2 * CHUNK * P2);
                im2col3(&self.a1[..C1 * np], C1, n, 14, &mut self.col2[..K2 * np]);
                for c in 0..C2 {
                    self.z2[c * np..][..np].fill(p.conv2_bias[c]);
                }
                let w: &[f32] = bytemuck::cast_slice(&p.conv2_weight);
                gemm(
                    C2,
                    K2,
                    np,
                    w,
                    (K2, 1),
                    &self.col2[..K2 * np],
                    (np, 1),
                    1.0,
                    &mut self.z2[..C2 * np],
                    (np, 1),
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

    /// Stage 5: BN2 backward (with the batch's Σdy, Σdy·x̂), conv2's gradients (by the algorithm
    /// of the forward: Winograd when `filters` is given), the gradient of pool1's output, then
    /// the BN1 sums of this chunk (into `sums`).
    #[allow(clippy::too_many_arguments)]
    pub fn back_conv2(
        &mut self,
        p: &WideParams,
        bn1: &BnBatch<C1>,
        bn2: &BnBatch<C2>,
        dsum: &[f64; C2],
        dxsum: &[f64; C2],
        dx: &[f32],
        filters: Option<&Filters>,
    ) {
        let n = self.n;
        let np = n * P2;
        bn_backward(
            &self.z2,
            &mut self.dz2,
            C2,
            n,
            14,
            &bn2.mean,
            &bn2.invstd,
            bn2.count,
            &p.bn2.gamma,
            dsum,
            dxsum,
            dx,
            &self.arg2,
            Layout {
                channel: Q2,
                image: F,
            },
        );
        let dz = &self.dz2[..C2 * np];
        for c in 0..C2 {
            self.g_conv2_b[c] = sum_and_squares(&dz[c * np..][..np]).0 as f32;
        }
        match filters {
            Some(f) => {
                grow(&mut self.wdv, 16 * winograd::plane_len(C1, CHUNK));
                grow(&mut self.wdu, 16 * C2 * C1);
                winograd::backward(
                    f,
                    dz,
                    n,
                    &self.wv,
                    &mut self.wm,
                    &mut self.wdv,
                    &mut self.wdu,
                    &mut self.g_conv2_w,
                    &mut self.da1,
                );
            }
            None => {
                // dW2[64][288] = dz2[64][np] · col2ᵀ[np][288]
                gemm(
                    C2,
                    np,
                    K2,
                    dz,
                    (np, 1),
                    &self.col2[..K2 * np],
                    (1, np),
                    0.0,
                    &mut self.g_conv2_w,
                    (K2, 1),
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
    ) {
        let n = self.n;
        let np = n * P1;
        bn_backward(
            &self.z1,
            &mut self.dz1,
            C1,
            n,
            28,
            &bn1.mean,
            &bn1.invstd,
            bn1.count,
            &p.bn1.gamma,
            dsum,
            dxsum,
            &self.da1,
            &self.arg1,
            Layout {
                channel: n * P2,
                image: P2,
            },
        );
        let dz = &self.dz1[..C1 * np];
        for c in 0..C1 {
            self.g_conv1_b[c] = sum_and_squares(&dz[c * np..][..np]).0 as f32;
        }
        // dW1[32][9] = dz1[32][np] · col1ᵀ[np][9]
        gemm(
            C1,
            np,
            K1,
            dz,
            (np, 1),
            &self.col1[..K1 * np],
            (1, np),
            0.0,
            &mut self.g_conv1_w,
            (K1, 1),
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
    /// Σ cross-entropy over the batch of the last forward pass.
    pub loss: f64,
    /// Label smoothing ε of the training loss.
    pub smoothing: f32,
    /// Knowledge distillation: weight and temperature of the teacher term, whose soft
    /// targets `[batch][10]` are in `soft`.
    pub distill: Option<crate::distill::Distill>,
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
                None => crate::nn::smoothed_loss_grad(l, lse, y, self.smoothing, b, d),
                Some(k) => {
                    let soft = &self.soft[i * 10..][..10];
                    crate::nn::distilled_loss_grad(l, lse, y, self.smoothing, soft, k, b, d)
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
        rayon::join(
            || {
                // dW1 rows j·128.. = dHᵀ[128][b] · X[b][3136]
                gw.par_chunks_mut(HB * F).enumerate().for_each(|(j, blk)| {
                    gemm(HB, b, F, &dh[j * HB..], (1, H), x, (F, 1), 0.0, blk, (F, 1));
                });
            },
            || {
                // dX columns j·784.. = dH[b][512] · W1[512][784 columns]
                self.dxblk.par_iter_mut().enumerate().for_each(|(j, blk)| {
                    gemm(
                        b,
                        H,
                        XB,
                        dh,
                        (H, 1),
                        &w[j * XB..],
                        (F, 1),
                        0.0,
                        &mut blk[..b * XB],
                        (XB, 1),
                    );
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
