//! Shapes and pieces shared by the wide CNN's kernels (`wide_nn.rs`) and its Winograd
//! convolution (`winograd.rs`), so that the Winograd file imports neither its parent nor a
//! sibling that imports it.

use crate::shared::kernels::simd_dispatch;

/// Channels of conv1 and conv2.
pub const C1: usize = 32;
pub const C2: usize = 64;
/// Positions after pool1 (14x14 = conv2's positions).
pub const P2: usize = 14 * 14;
/// No pool winner.
pub const NONE: u32 = u32::MAX;

/// Sizes `buf` to `len` floats the first time it is needed.
pub fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// What the backward of batch norm → ReLU → 2×2 max-pool needs, for any of the three kernels
/// that do it (`bn_backward`, `conv1_backward_fused`, `winograd::pool_bn_grad_transform`): with
/// `x̂ = (z − mean)·invstd`, `dz = γ·invstd·(dy − Σdy/N − x̂·Σdy·x̂/N)`, where `dy` is the
/// gradient `dout` of the pooled output routed to each window's winner (`arg`, as the pooling
/// recorded it: the element's index in its channel's plane; [`NONE`] when no element won).
#[derive(Clone, Copy)]
pub struct BnGrad<'a> {
    /// The batch's per-channel mean.
    pub mean: &'a [f32],
    /// The batch's per-channel 1/√(var + ε).
    pub invstd: &'a [f32],
    /// BN's γ.
    pub gamma: &'a [f32],
    /// Elements per channel in the batch (N).
    pub count: usize,
    /// The batch's Σdy per channel.
    pub dsum: &'a [f64],
    /// The batch's Σdy·x̂ per channel.
    pub dxsum: &'a [f64],
    /// Gradient of the pooled output.
    pub dout: &'a [f32],
    /// The pool's winners.
    pub arg: &'a [u32],
}

/// [`BnGrad`]'s constants for one channel.
#[derive(Clone, Copy)]
pub struct BnGradChannel {
    k: f32,
    m: f32,
    s: f32,
    sd: f32,
    sdx: f32,
    /// γ·invstd: a winner's `dz` is [`BnGradChannel::dz`] of its `z` plus `k2·dout`.
    pub k2: f32,
}

impl BnGrad<'_> {
    /// Channel `c`'s constants, the same expressions for every kernel (so the same bits).
    #[inline(always)]
    pub fn channel(&self, c: usize) -> BnGradChannel {
        BnGradChannel {
            k: self.gamma[c] * self.invstd[c] / self.count as f32,
            m: self.mean[c],
            s: self.invstd[c],
            sd: self.dsum[c] as f32,
            sdx: self.dxsum[c] as f32,
            k2: self.gamma[c] * self.invstd[c],
        }
    }
}

impl BnGradChannel {
    /// `dz` of an element with pre-BN value `z` that won no pool window.
    #[inline(always)]
    pub fn dz(&self, z: f32) -> f32 {
        -self.k * (self.sd + (z - self.m) * self.s * self.sdx)
    }
}

/// Where a pooled layer's outputs go: element (channel c, image i, pooled position q) is at
/// `c·channel + i·image + q`.
#[derive(Clone, Copy)]
pub struct Layout {
    pub channel: usize,
    pub image: usize,
}

simd_dispatch! {
    /// Batch-norm + pool backward into `dz` (`[ch][n][w·w]`), as [`BnGrad`] defines it; `g`'s
    /// pooled outputs are where `lay` says.
    pub fn bn_backward(
        z: &[f32],
        dz: &mut [f32],
        ch: usize,
        n: usize,
        w: usize,
        g: &BnGrad,
        lay: Layout,
    ) {
        let np = n * w * w;
        let q = (w / 2) * (w / 2);
        for c in 0..ch {
            let bn = g.channel(c);
            let d = &mut dz[c * np..][..np];
            for (d, &z) in d.iter_mut().zip(&z[c * np..][..np]) {
                *d = bn.dz(z);
            }
            for i in 0..n {
                for j in 0..q {
                    let o = c * lay.channel + i * lay.image + j;
                    // Branch-free: a pooled output without a winner adds 0 to element 0.
                    let a = g.arg[o];
                    let valid = a != NONE;
                    let at = if valid { a as usize } else { 0 };
                    d[at] += if valid { bn.k2 * g.dout[o] } else { 0.0 };
                }
            }
        }
    }
}
