//! int8 2-D convolution, stride 1, padding at the input zero point, with requantization.

use super::params::QLayerParams;
use super::requant::clamp_floor;

/// An int8 convolution with `IC` input channels, `OC` output channels, a `K`x`K` kernel,
/// stride 1 and `P` pixels of padding on every side. The plain reference kernel: one
/// accumulator per output, in the documented order.
///
/// # Arithmetic
/// `acc = bias[oc] + Σ_ic Σ_ky Σ_kx w·x` in ascending `ic`, `ky`, `kx` (the order does not
/// matter: integer addition is exact). Padding taps take `x = input_zero_point`, i.e. real 0:
/// the bias already holds `−zp_in·Σw`, so a padding tap adds `w·zp_in` and cancels its share.
/// `out = clamp(MultiplyByQuantizedMultiplier(acc, m[oc], s[oc]) + zp_out, lo, 127)`, with
/// `lo = zp_out` when ReLU is fused and −128 otherwise.
///
/// # Shapes
/// * weight: `[OC][IC][K][K]` (PyTorch's layout), `q`: the folded constants of `OC` channels;
/// * input `[IC][H][W]` → output `[OC][OH][OW]` with `OH = H + 2P − K + 1`, `OW = W + 2P − K + 1`.
#[derive(Clone, Copy, Debug)]
pub struct QConv2d<'a, const IC: usize, const OC: usize, const K: usize, const P: usize> {
    /// `[OC][IC][K][K]` weights, −127..=127.
    pub weight: &'a [[[[i8; K]; K]; IC]; OC],
    /// Bias, requantization and zero points.
    pub q: &'a QLayerParams<OC>,
}

impl<const IC: usize, const OC: usize, const K: usize, const P: usize> QConv2d<'_, IC, OC, K, P> {
    /// The i32 accumulator of channel `oc` at (`oy`, `ox`).
    #[inline(always)]
    pub fn accumulate<const H: usize, const W: usize>(
        &self,
        input: &[[[i8; W]; H]; IC],
        oc: usize,
        oy: usize,
        ox: usize,
    ) -> i32 {
        let zp = self.q.input_zero_point as i32;
        let mut acc = self.q.bias[oc];
        for (plane, kernel) in input.iter().zip(&self.weight[oc]) {
            for (ky, krow) in kernel.iter().enumerate() {
                let iy = (oy + ky).checked_sub(P).filter(|&iy| iy < H);
                for (kx, &w) in krow.iter().enumerate() {
                    let ix = (ox + kx).checked_sub(P).filter(|&ix| ix < W);
                    let x = match (iy, ix) {
                        (Some(iy), Some(ix)) => plane[iy][ix] as i32,
                        _ => zp,
                    };
                    acc += w as i32 * x;
                }
            }
        }
        acc
    }

    /// The requantized convolution of `input` into `out`, ReLU fused when `relu`.
    pub fn forward<const H: usize, const W: usize, const OH: usize, const OW: usize>(
        &self,
        input: &[[[i8; W]; H]; IC],
        relu: bool,
        out: &mut [[[i8; OW]; OH]; OC],
    ) {
        const { assert!(OH + K == H + 2 * P + 1 && OW + K == W + 2 * P + 1) };
        let lo = clamp_floor(self.q.output_zero_point, relu);
        let zp_out = self.q.output_zero_point as i32;
        for (oc, plane) in out.iter_mut().enumerate() {
            let r = self.q.requant(oc);
            for (oy, row) in plane.iter_mut().enumerate() {
                for (ox, o) in row.iter_mut().enumerate() {
                    *o = r.to_i8(self.accumulate(input, oc, oy, ox), zp_out, lo);
                }
            }
        }
    }

    /// Convolution, ReLU and 2x2 max-pool in one pass: the maximum of the four accumulators of
    /// each window is requantized once. Bit-identical to [`QConv2d::forward`] followed by
    /// [`super::max_pool_2x2`] because requantization and the clamp are monotone
    /// non-decreasing (multiplier ≥ 0), so they commute with `max`.
    ///
    /// # Shapes
    /// input `[IC][H][W]` → output `[OC][PH][PW]` with `PH = OH / 2`, `PW = OW / 2`.
    pub fn forward_relu_pool<const H: usize, const W: usize, const PH: usize, const PW: usize>(
        &self,
        input: &[[[i8; W]; H]; IC],
        out: &mut [[[i8; PW]; PH]; OC],
    ) {
        const { assert!(2 * PH + K == H + 2 * P + 1 && 2 * PW + K == W + 2 * P + 1) };
        let lo = clamp_floor(self.q.output_zero_point, true);
        let zp_out = self.q.output_zero_point as i32;
        for (oc, plane) in out.iter_mut().enumerate() {
            let r = self.q.requant(oc);
            for (py, row) in plane.iter_mut().enumerate() {
                for (px, o) in row.iter_mut().enumerate() {
                    let mut best = i32::MIN;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        best = best.max(self.accumulate(input, oc, 2 * py + dy, 2 * px + dx));
                    }
                    *o = r.to_i8(best, zp_out, lo);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::max_pool_2x2;

    fn params<const C: usize>(bias: [i32; C], zp_in: i8, zp_out: i8) -> QLayerParams<C> {
        QLayerParams {
            input_scale: 1.0,
            output_scale: 1.0,
            input_zero_point: zp_in,
            output_zero_point: zp_out,
            _pad: [0; 2],
            bias,
            multiplier: [1 << 30; C], // 0.5
            shift: [0; C],
            weight_scale: [1.0; C],
        }
    }

    #[test]
    fn hand_checked_3x3_with_padding_at_the_zero_point() {
        // Kernel of ones, input zp 10, so padding taps add 10 each. Input 3x3 = 11..=19.
        // Bias 0. Centre: 11+..+19 = 135; corner (0,0): 11+12+14+15 + 5 padding taps·10 = 102;
        // edge (0,1): 11+..+16 + 3 padding taps·10 = 111.
        // Requant ×0.5 (positive ties round up), output zp -5, no ReLU.
        let weight = [[[[1i8; 3]; 3]]];
        let q = params([0], 10, -5);
        let conv = QConv2d::<1, 1, 3, 1> {
            weight: &weight,
            q: &q,
        };
        let input = [[[11, 12, 13], [14, 15, 16], [17, 18, 19]]];
        let mut out = [[[0i8; 3]; 3]];
        conv.forward(&input, false, &mut out);
        // accumulators: [[102, 111, 106], [117, 135, 123], [114, 129, 118]]
        assert_eq!(conv.accumulate(&input, 0, 0, 0), 102);
        assert_eq!(conv.accumulate(&input, 0, 0, 1), 111);
        assert_eq!(conv.accumulate(&input, 0, 1, 1), 135);
        // ×0.5 -> 51, 55.5->56, 53 / 58.5->59, 67.5->68, 61.5->62 / 57, 64.5->65, 59; then -5.
        assert_eq!(out[0], [[46, 51, 48], [54, 63, 57], [52, 60, 54]]);
    }

    #[test]
    fn hand_checked_negative_weights_relu_clamps_at_zero_point() {
        // Two input channels, 2x2 kernel, no padding; oc0 = ch0 - ch1, bias -3.
        let weight = [[[[1i8, 1], [1, 1]], [[-1, -1], [-1, -1]]]];
        let q = params([-3], 0, 7);
        let conv = QConv2d::<2, 1, 2, 0> {
            weight: &weight,
            q: &q,
        };
        let input = [[[1i8, 2, 3], [4, 5, 6]], [[1, 1, 1], [1, 1, 30]]];
        // acc(0,0) = -3 + 12 - 4 = 5 -> 2.5 -> 3 -> +7 = 10;
        // acc(0,1) = -3 + 16 - 33 = -20 -> -10 -> -3, ReLU -> 7 (the zero point).
        let mut out = [[[0i8; 2]; 1]];
        conv.forward(&input, true, &mut out);
        assert_eq!(out, [[[10, 7]]]);
        conv.forward(&input, false, &mut out);
        assert_eq!(out, [[[10, -3]]]);
    }

    #[test]
    fn fused_pool_equals_conv_then_pool() {
        let mut r = crate::testutil::Lcg(0xdead_beef);
        let mut next = || (r.next_u32() >> 24) as u8 as i8;
        for trial in 0..20 {
            let mut weight = [[[[0i8; 5]; 5]; 2]; 3];
            weight
                .iter_mut()
                .flatten()
                .flatten()
                .flatten()
                .for_each(|w| *w = next().max(-127));
            let mut q = params([0; 3], next(), next());
            for c in 0..3 {
                q.bias[c] = next() as i32 * 300;
                q.multiplier[c] = (1 << 30) + (next() as i32).abs() * 1_000_000;
                q.shift[c] = -(trial % 12);
            }
            let mut input = [[[0i8; 12]; 12]; 2];
            input
                .iter_mut()
                .flatten()
                .flatten()
                .for_each(|x| *x = next());
            let conv = QConv2d::<2, 3, 5, 2> {
                weight: &weight,
                q: &q,
            };
            let mut full = [[[0i8; 12]; 12]; 3];
            conv.forward(&input, true, &mut full);
            let mut pooled = [[[0i8; 6]; 6]; 3];
            max_pool_2x2(&full, &mut pooled);
            let mut fused = [[[0i8; 6]; 6]; 3];
            conv.forward_relu_pool(&input, &mut fused);
            assert_eq!(pooled, fused, "trial {trial}");
        }
    }
}
