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

/// One row of the backward of BN → ReLU → 2×2 max-pool: for x in 0..w (w = 14 or 28),
/// `dz[x] = bn.dz(z[x])`, plus `bn.k2·dout[x/2]` when x won its window (`arg[x/2] == first + x`,
/// the winner's index in its channel's plane). Each element wins at most one window, so this is
/// the same arithmetic, element by element, as computing every `dz` and then adding each
/// window's gradient into its winner. `dout` and `arg` hold the row's w/2 pooled outputs.
#[inline(always)]
pub fn bn_pool_grad_row(
    bn: &BnGradChannel,
    z: &[f32],
    dout: &[f32],
    arg: &[u32],
    first: u32,
    dz: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { bn_pool_grad_row_avx2(bn, z, dout, arg, first, dz) };
        }
    }
    bn_pool_grad_row_portable(bn, z, dout, arg, first, dz)
}

#[inline(always)]
fn bn_pool_grad_row_portable(
    bn: &BnGradChannel,
    z: &[f32],
    dout: &[f32],
    arg: &[u32],
    first: u32,
    dz: &mut [f32],
) {
    let w = z.len();
    assert!(w.is_multiple_of(2) && dz.len() >= w && dout.len() >= w / 2 && arg.len() >= w / 2);
    for x in 0..w {
        let d = bn.dz(z[x]);
        dz[x] = if arg[x / 2] == first + x as u32 {
            d + bn.k2 * dout[x / 2]
        } else {
            d
        };
    }
}

/// [`bn_pool_grad_row_portable`] with AVX2, eight elements at a time: each window's winner and
/// gradient are duplicated to its two columns and the winning lane picked by a compare, instead
/// of a scalar read-modify-write per window into a row just written by vector stores (which
/// stalls on store forwarding). The same operations per lane, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bn_pool_grad_row_avx2(
    bn: &BnGradChannel,
    z: &[f32],
    dout: &[f32],
    arg: &[u32],
    first: u32,
    dz: &mut [f32],
) {
    use std::arch::x86_64::*;
    let w = z.len();
    assert!(
        w.is_multiple_of(2)
            && w <= 32
            && dz.len() >= w
            && dout.len() >= w / 2
            && arg.len() >= w / 2
    );
    // The row, its windows and its result padded to whole vectors.
    let (mut zs, mut out) = ([0.0f32; 32], [0.0f32; 32]);
    let (mut ds, mut args) = ([0.0f32; 16], [NONE; 16]);
    zs[..w].copy_from_slice(z);
    ds[..w / 2].copy_from_slice(&dout[..w / 2]);
    args[..w / 2].copy_from_slice(&arg[..w / 2]);
    let (negk, m, s, sd, sdx, k2) = (
        _mm256_set1_ps(-bn.k),
        _mm256_set1_ps(bn.m),
        _mm256_set1_ps(bn.s),
        _mm256_set1_ps(bn.sd),
        _mm256_set1_ps(bn.sdx),
        _mm256_set1_ps(bn.k2),
    );
    let pairs = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for x0 in (0..w).step_by(8) {
        let q0 = x0 / 2;
        // SAFETY: x0 + 8 <= 32 and q0 + 4 <= 16: inside the padded copies.
        unsafe {
            let zv = _mm256_loadu_ps(zs.as_ptr().add(x0));
            let d = _mm256_mul_ps(
                negk,
                _mm256_add_ps(
                    sd,
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(zv, m), s), sdx),
                ),
            );
            let a = _mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadu_si128(args.as_ptr().add(q0).cast())),
                pairs,
            );
            let g = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(_mm_loadu_ps(ds.as_ptr().add(q0))),
                pairs,
            );
            let at = _mm256_add_epi32(_mm256_set1_epi32((first + x0 as u32) as i32), lane);
            let won = _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, at));
            let r = _mm256_blendv_ps(d, _mm256_add_ps(d, _mm256_mul_ps(k2, g)), won);
            _mm256_storeu_ps(out.as_mut_ptr().add(x0), r);
        }
    }
    dz[..w].copy_from_slice(&out[..w]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_grad_row_vector_kernel_matches_its_portable_definition() {
        let vals = |len: usize, seed: u32| -> Vec<f32> {
            (0..len as u32)
                .map(|i| {
                    (((i * 2_654_435_761) ^ seed).wrapping_mul(40_503) % 2001) as f32 / 1000.0 - 1.0
                })
                .collect()
        };
        let (mean, invstd, gamma) = ([0.1f32], [1.7f32], [0.8f32]);
        let (dsum, dxsum) = ([3.25f64], [-1.5f64]);
        for w in [14usize, 28] {
            let z = vals(w, 1);
            let dout = vals(w / 2, 2);
            let first = 5 * 784 + 3 * w as u32;
            // Windows won by each of their two columns in this row, or by the other row (an
            // index outside it), or by none.
            let arg: Vec<u32> = (0..w / 2)
                .map(|q| match q % 4 {
                    0 => first + 2 * q as u32,
                    1 => first + 2 * q as u32 + 1,
                    2 => first + w as u32 + 2 * q as u32,
                    _ => NONE,
                })
                .collect();
            let g = BnGrad {
                mean: &mean,
                invstd: &invstd,
                gamma: &gamma,
                count: 1000,
                dsum: &dsum,
                dxsum: &dxsum,
                dout: &dout,
                arg: &arg,
            };
            let bn = g.channel(0);
            let (mut a, mut b) = (vec![0.0f32; w], vec![0.0f32; w]);
            bn_pool_grad_row(&bn, &z, &dout, &arg, first, &mut a);
            bn_pool_grad_row_portable(&bn, &z, &dout, &arg, first, &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            // By definition: the winners got their window's gradient, the others only dz.
            for x in 0..w {
                let mut want = bn.dz(z[x]);
                if arg[x / 2] == first + x as u32 {
                    want += bn.k2 * dout[x / 2];
                }
                assert_eq!(b[x].to_bits(), want.to_bits(), "x = {x}");
            }
        }
    }
}
