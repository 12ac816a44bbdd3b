//! 2-D convolution, stride 1, zero padding.

use super::BatchNorm;

/// A convolution with `IC` input channels, `OC` output channels, a `K`x`K` kernel, stride 1 and
/// `P` pixels of zero padding on every side. Weights are read in place (they may sit in flash).
///
/// # Shapes
/// * weight: `[OC][IC][K][K]` (PyTorch's `Conv2d.weight` layout), bias: `[OC]`;
/// * input `[IC][H][W]` → output `[OC][OH][OW]` with `OH = H + 2P - K + 1`, `OW = W + 2P - K + 1`.
///
/// # Summation order
/// `out = bias + Σ_ic Σ_ky Σ_kx w·x` in ascending `ic`, `ky`, `kx`; padding taps are skipped.
#[derive(Clone, Copy, Debug)]
pub struct Conv2d<'a, const IC: usize, const OC: usize, const K: usize, const P: usize> {
    /// `[OC][IC][K][K]` weights.
    pub weight: &'a [[[[f32; K]; K]; IC]; OC],
    /// `[OC]` biases.
    pub bias: &'a [f32; OC],
}

impl<const IC: usize, const OC: usize, const K: usize, const P: usize> Conv2d<'_, IC, OC, K, P> {
    /// One output value: channel `oc` at (`oy`, `ox`).
    #[inline(always)]
    pub fn output_at<const H: usize, const W: usize>(
        &self,
        input: &[[[f32; W]; H]; IC],
        oc: usize,
        oy: usize,
        ox: usize,
    ) -> f32 {
        let mut acc = self.bias[oc];
        for (plane, kernel) in input.iter().zip(&self.weight[oc]) {
            for (ky, krow) in kernel.iter().enumerate() {
                // Padded rows and columns are skipped, never added as zeros (-0 + 0 = +0).
                let Some(iy) = (oy + ky).checked_sub(P).filter(|&iy| iy < H) else {
                    continue;
                };
                for (kx, &w) in krow.iter().enumerate() {
                    if let Some(ix) = (ox + kx).checked_sub(P).filter(|&ix| ix < W) {
                        acc += w * plane[iy][ix];
                    }
                }
            }
        }
        acc
    }

    /// The convolution of `input` into `out`.
    pub fn forward<const H: usize, const W: usize, const OH: usize, const OW: usize>(
        &self,
        input: &[[[f32; W]; H]; IC],
        out: &mut [[[f32; OW]; OH]; OC],
    ) {
        const { assert!(OH + K == H + 2 * P + 1 && OW + K == W + 2 * P + 1) };
        for (oc, plane) in out.iter_mut().enumerate() {
            for (oy, row) in plane.iter_mut().enumerate() {
                for (ox, o) in row.iter_mut().enumerate() {
                    *o = self.output_at(input, oc, oy, ox);
                }
            }
        }
    }

    /// Two output rows `oy0` and `oy0 + 1` of channel `oc`, every column, into `acc[dy][..ow]`.
    ///
    /// Columns whose taps all lie inside the input (no horizontal padding) are computed
    /// [`LANES`] at a time for both rows, the 2 x [`LANES`] accumulators held in registers
    /// across every tap; the few edge columns go through [`Conv2d::output_at`]. The last block
    /// may overlap the one before it (a value computed twice is the same value). For any one
    /// output the terms arrive in the documented order (bias, then ascending ic, ky, kx, padding
    /// taps skipped), so each value is bit-identical to [`Conv2d::output_at`].
    #[inline(always)]
    fn two_rows<const H: usize, const W: usize>(
        &self,
        input: &[[[f32; W]; H]; IC],
        oc: usize,
        oy0: usize,
        ow: usize,
        acc: &mut [[f32; MAX_ROW]; 2],
    ) {
        // Output columns ox with every tap ix = ox + kx - P inside 0..W.
        let lo = P;
        let hi = ow.min((W + P + 1).saturating_sub(K));
        if hi < lo + LANES {
            for (dy, row) in acc.iter_mut().enumerate() {
                for (ox, o) in row[..ow].iter_mut().enumerate() {
                    *o = self.output_at(input, oc, oy0 + dy, ox);
                }
            }
            return;
        }
        let b = self.bias[oc];
        let mut next = lo;
        loop {
            let start = next.min(hi - LANES);
            let mut block = [[b; LANES]; 2];
            for (plane, kernel) in input.iter().zip(&self.weight[oc]) {
                for (ky, krow) in kernel.iter().enumerate() {
                    for (dy, brow) in block.iter_mut().enumerate() {
                        let Some(iy) = (oy0 + dy + ky).checked_sub(P).filter(|&iy| iy < H) else {
                            continue;
                        };
                        let irow = &plane[iy];
                        for (kx, &w) in krow.iter().enumerate() {
                            let at = start + kx - P;
                            let xs: &[f32; LANES] = irow[at..at + LANES].try_into().unwrap();
                            for (a, &x) in brow.iter_mut().zip(xs) {
                                *a += w * x;
                            }
                        }
                    }
                }
            }
            for (row, brow) in acc.iter_mut().zip(&block) {
                row[start..start + LANES].copy_from_slice(brow);
            }
            if start + LANES >= hi {
                break;
            }
            next = start + LANES;
        }
        // The edge columns (at most P on each side, plus any not covered above), all of them
        // and both rows side by side so their sums do not wait on one another.
        let mut edges = [0usize; MAX_EDGES];
        let mut n = 0;
        for ox in (0..lo).chain(hi..ow) {
            edges[n] = ox;
            n += 1;
        }
        let edges = &edges[..n];
        let mut eacc = [[b; MAX_EDGES]; 2];
        for (plane, kernel) in input.iter().zip(&self.weight[oc]) {
            for (ky, krow) in kernel.iter().enumerate() {
                for (dy, erow) in eacc.iter_mut().enumerate() {
                    let Some(iy) = (oy0 + dy + ky).checked_sub(P).filter(|&iy| iy < H) else {
                        continue;
                    };
                    let irow = &plane[iy];
                    for (kx, &w) in krow.iter().enumerate() {
                        for (a, &ox) in erow.iter_mut().zip(edges) {
                            if let Some(ix) = (ox + kx).checked_sub(P).filter(|&ix| ix < W) {
                                *a += w * irow[ix];
                            }
                        }
                    }
                }
            }
        }
        for (row, erow) in acc.iter_mut().zip(&eacc) {
            for (&ox, &v) in edges.iter().zip(erow) {
                row[ox] = v;
            }
        }
    }

    /// Convolution, optional batch norm, ReLU and 2x2 max-pool in one pass, so the full-size
    /// convolution output never exists (two rows of one channel at a time). Bit-identical to
    /// running the four layers one by one: every convolution output is computed in the same
    /// order, batch norm is the same expression (its square root computed once per channel, the
    /// same value), and max/ReLU are exact.
    ///
    /// # Shapes
    /// input `[IC][H][W]` → output `[OC][PH][PW]` with `PH = OH / 2`, `PW = OW / 2`.
    pub fn forward_bn_relu_pool<
        const H: usize,
        const W: usize,
        const PH: usize,
        const PW: usize,
    >(
        &self,
        input: &[[[f32; W]; H]; IC],
        bn: Option<&BatchNorm<'_, OC>>,
        out: &mut [[[f32; PW]; PH]; OC],
    ) {
        const { assert!(2 * PH + K == H + 2 * P + 1 && 2 * PW + K == W + 2 * P + 1) };
        const { assert!(2 * PW <= MAX_ROW && 2 * P + K <= MAX_EDGES) };
        let mut acc = [[0.0f32; MAX_ROW]; 2];
        for (oc, plane) in out.iter_mut().enumerate() {
            // Same value as BatchNorm::apply's denominator.
            let bn_c = bn.map(|bn| {
                (
                    bn.mean[oc],
                    libm::sqrtf(bn.var[oc] + bn.eps),
                    bn.gamma[oc],
                    bn.beta[oc],
                )
            });
            for (py, row) in plane.iter_mut().enumerate() {
                self.two_rows(input, oc, 2 * py, 2 * PW, &mut acc);
                if let Some((mean, sd, gamma, beta)) = bn_c {
                    for v in acc.iter_mut().flat_map(|r| &mut r[..2 * PW]) {
                        *v = (*v - mean) / sd * gamma + beta;
                    }
                }
                for (px, o) in row.iter_mut().enumerate() {
                    let mut best = 0.0f32; // ReLU floor
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let v = acc[dy][2 * px + dx];
                        if v > best {
                            best = v;
                        }
                    }
                    *o = best;
                }
            }
        }
    }
}

/// Output columns computed together by the fused pass (per row; two rows at a time).
pub const LANES: usize = 8;

/// Most edge columns (padding on either side) one output row may have.
const MAX_EDGES: usize = 16;

/// Longest output row [`Conv2d::forward_bn_relu_pool`] handles (its scratch is two such rows).
pub const MAX_ROW: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{max_pool_2x2, relu};

    /// The worked example of `docs/model-format.md` section 8.1: conv1 channel 0 at (14, 14)
    /// of the first test image, with the weights of a 60-step training run, step by step. The
    /// 5x5 window lies inside the image, so a 5x5 input without padding gives the same sum.
    #[test]
    fn model_format_doc_worked_example() {
        const W: [u32; 25] = [
            0x3daa3e4c, 0xbf5b382f, 0xbba7d0bc, 0xbef6e68f, 0x3e978852, 0xbe6d36a6, 0x3e97dff7,
            0x3e3a7ebe, 0x3ea720d5, 0xbe4b4ea1, 0xbe04c6eb, 0x3f0a9109, 0xbb54baa2, 0x3ecd8e50,
            0xbe6bdc8c, 0x3ee1b805, 0xbdc70cd0, 0xbe85c2fd, 0xbe19219b, 0xbd91699a, 0x3d34155a,
            0xbe63bd4a, 0x3e4e828a, 0x3e29e820, 0x3e6f0ee7,
        ];
        const PIXELS: [u8; 25] = [
            0, 0, 115, 114, 106, 0, 89, 139, 90, 94, 98, 136, 110, 109, 110, 117, 99, 111, 117,
            136, 103, 115, 129, 134, 143,
        ];
        let f = f32::from_bits;
        let weight: [[[[f32; 5]; 5]; 1]; 1] = [[core::array::from_fn(|ky| {
            core::array::from_fn(|kx| f(W[ky * 5 + kx]))
        })]];
        let input: [[[f32; 5]; 5]; 1] = [core::array::from_fn(|y| {
            core::array::from_fn(|x| crate::lenet::pixel_to_f32(PIXELS[y * 5 + x]))
        })];
        assert_eq!(input[0][0][2].to_bits(), 0x3ee6e6e7, "115 / 255");
        let conv = Conv2d::<1, 1, 5, 0> {
            weight: &weight,
            bias: &[f(0x330183cd)],
        };
        let acc = conv.output_at(&input, 0, 0, 0);
        assert_eq!(acc.to_bits(), 0x3f243f23);

        let (mean, var, gamma, beta) = (
            [f(0x3e15940c)],
            [f(0x3d93c473)],
            [f(0x3f8146cc)],
            [f(0x3cea662e)],
        );
        let bn = BatchNorm {
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            var: &var,
            eps: crate::lenet::BN_EPS,
        };
        assert_eq!(crate::lenet::BN_EPS.to_bits(), 0x3727c5ac);
        assert_eq!(libm::sqrtf(var[0] + bn.eps).to_bits(), 0x3e8989dd);
        assert_eq!(bn.apply(0, acc).to_bits(), 0x3ff22064);

        // The fold of section 9.1, in f64, rounded once.
        let k = gamma[0] as f64 / (var[0] as f64 + bn.eps as f64).sqrt();
        let folded: [[[[f32; 5]; 5]; 1]; 1] =
            weight.map(|c| c.map(|p| p.map(|r| r.map(|w| (w as f64 * k) as f32))));
        let bias = (f(0x330183cd) as f64 - mean[0] as f64) * k + beta[0] as f64;
        let bias = [bias as f32];
        assert_eq!(bias[0].to_bits(), 0xbf0544a2);
        let conv = Conv2d::<1, 1, 5, 0> {
            weight: &folded,
            bias: &bias,
        };
        assert_eq!(conv.output_at(&input, 0, 0, 0).to_bits(), 0x3ff2205f);
    }

    #[test]
    fn hand_checked_3x3_with_padding() {
        // One 3x3 kernel of ones, bias 0.5, padding 1 over a 3x3 input 1..=9:
        // each output is 0.5 + the sum of its (zero-padded) 3x3 neighbourhood.
        let weight = [[[[1.0; 3]; 3]]];
        let conv = Conv2d::<1, 1, 3, 1> {
            weight: &weight,
            bias: &[0.5],
        };
        let input = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]];
        let mut out = [[[0.0; 3]; 3]];
        conv.forward(&input, &mut out);
        assert_eq!(
            out[0],
            [[12.5, 21.5, 16.5], [27.5, 45.5, 33.5], [24.5, 39.5, 28.5]]
        );
    }

    #[test]
    fn hand_checked_two_channels_no_padding() {
        // 2 input channels, 2x2 kernel, no padding, 2 output channels.
        // oc0 sums channel 0 and subtracts channel 1; oc1 takes the top-left tap of channel 1.
        let weight = [
            [[[1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [-1.0, -1.0]]],
            [[[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]],
        ];
        let conv = Conv2d::<2, 2, 2, 0> {
            weight: &weight,
            bias: &[0.0, 1.0],
        };
        let input = [
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            [[1.0, 1.0, 1.0], [1.0, 1.0, 2.0]],
        ];
        let mut out = [[[0.0; 2]; 1]; 2];
        conv.forward(&input, &mut out);
        assert_eq!(out, [[[8.0, 11.0]], [[2.0, 2.0]]]);
    }

    #[test]
    fn fused_equals_layer_by_layer_bitwise() {
        // Pseudo-random weights and inputs (an LCG), BN with odd statistics.
        let mut r = crate::testutil::Lcg(0x1234_5678);
        let mut next = || r.centered();
        let mut weight = [[[[0.0; 5]; 5]; 2]; 3];
        weight
            .iter_mut()
            .flatten()
            .flatten()
            .flatten()
            .for_each(|w| *w = next());
        let bias = [next(), next(), next()];
        let mut input = [[[0.0; 12]; 12]; 2];
        input
            .iter_mut()
            .flatten()
            .flatten()
            .for_each(|x| *x = next());
        let conv = Conv2d::<2, 3, 5, 2> {
            weight: &weight,
            bias: &bias,
        };
        let bn = BatchNorm {
            gamma: &[1.5, -0.7, 0.3],
            beta: &[0.1, 0.2, -0.3],
            mean: &[0.05, -0.1, 0.0],
            var: &[0.9, 1.7, 0.01],
            eps: 1e-5,
        };

        let mut full = [[[0.0; 12]; 12]; 3];
        conv.forward(&input, &mut full);
        bn.forward(unsafe_flat(&mut full));
        relu(full.as_flattened_mut().as_flattened_mut());
        let mut pooled = [[[0.0; 6]; 6]; 3];
        max_pool_2x2(&full, &mut pooled);

        let mut fused = [[[0.0; 6]; 6]; 3];
        conv.forward_bn_relu_pool(&input, Some(&bn), &mut fused);
        let bits = |a: &[[[f32; 6]; 6]; 3]| {
            a.as_flattened()
                .as_flattened()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&pooled), bits(&fused));
    }

    #[test]
    fn fused_unpadded_equals_layer_by_layer_bitwise() {
        // The P = 0 path (whole plane at a time), 3 -> 4 channels, 5x5 over 14x14 -> 10x10 -> 5x5.
        let mut r = crate::testutil::Lcg(0x0bad_f00d);
        let mut next = || r.centered();
        let mut weight = [[[[0.0; 5]; 5]; 3]; 4];
        weight
            .iter_mut()
            .flatten()
            .flatten()
            .flatten()
            .for_each(|w| *w = next());
        let bias = [next(), next(), next(), next()];
        let mut input = [[[0.0; 14]; 14]; 3];
        input
            .iter_mut()
            .flatten()
            .flatten()
            .for_each(|x| *x = next());
        let conv = Conv2d::<3, 4, 5, 0> {
            weight: &weight,
            bias: &bias,
        };
        let bn = BatchNorm {
            gamma: &[1.5, -0.7, 0.3, 1.0],
            beta: &[0.1, 0.2, -0.3, 0.0],
            mean: &[0.05, -0.1, 0.0, 0.2],
            var: &[0.9, 1.7, 0.01, 2.0],
            eps: 1e-5,
        };
        for bn in [Some(&bn), None] {
            let mut full = [[[0.0; 10]; 10]; 4];
            conv.forward(&input, &mut full);
            if let Some(bn) = bn {
                bn.forward(bytemuck::cast_mut::<_, [[f32; 100]; 4]>(&mut full));
            }
            relu(full.as_flattened_mut().as_flattened_mut());
            let mut pooled = [[[0.0; 5]; 5]; 4];
            max_pool_2x2(&full, &mut pooled);
            let mut fused = [[[0.0; 5]; 5]; 4];
            conv.forward_bn_relu_pool(&input, bn, &mut fused);
            let bits = |a: &[[[f32; 5]; 5]; 4]| {
                a.as_flattened()
                    .as_flattened()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&pooled), bits(&fused));
        }
    }

    /// Views `[C][H][W]` as `[C][H*W]` for the per-channel BN.
    fn unsafe_flat(x: &mut [[[f32; 12]; 12]; 3]) -> &mut [[f32; 144]; 3] {
        bytemuck::cast_mut(x)
    }
}
