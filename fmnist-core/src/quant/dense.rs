//! int8 fully connected layer with requantization.

use super::params::QLayerParams;
use super::requant::clamp_floor;

/// `out = requant(W·x + bias)` with `I` inputs and `O` outputs, weights read in place. The plain
/// reference kernel.
///
/// # Arithmetic
/// `acc[o] = bias[o] + Σ_i w[o][i]·x[i]` (exact in i32, see the overflow proof in
/// `quant::lenet`), then `out[o] = clamp(MultiplyByQuantizedMultiplier(acc, m[o], s[o]) + zp_out,
/// lo, 127)` with `lo = zp_out` when ReLU is fused and −128 otherwise.
///
/// # Shapes
/// weight `[O][I]` (PyTorch's `Linear.weight`), input `[I]`, output `[O]`.
#[derive(Clone, Copy, Debug)]
pub struct QDense<'a, const I: usize, const O: usize> {
    /// `[O][I]` weights, −127..=127.
    pub weight: &'a [[i8; I]; O],
    /// Bias, requantization and zero points.
    pub q: &'a QLayerParams<O>,
}

impl<const I: usize, const O: usize> QDense<'_, I, O> {
    /// The i32 accumulator of output `o`.
    #[inline(always)]
    pub fn accumulate(&self, x: &[i8; I], o: usize) -> i32 {
        let mut acc = self.q.bias[o];
        for (&w, &v) in self.weight[o].iter().zip(x) {
            acc += w as i32 * v as i32;
        }
        acc
    }

    /// `out = requant(W·x + bias)`, ReLU fused when `relu`.
    pub fn forward(&self, x: &[i8; I], relu: bool, out: &mut [i8; O]) {
        let lo = clamp_floor(self.q.output_zero_point, relu);
        let zp_out = self.q.output_zero_point as i32;
        for (o, y) in out.iter_mut().enumerate() {
            *y = self.q.requant(o).to_i8(self.accumulate(x, o), zp_out, lo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // W = [[1, 2, 3], [-127, 0, 127]], bias [10, -5], x = [4, -5, 6].
        // acc0 = 10 + 4 - 10 + 18 = 22; acc1 = -5 - 508 + 762 = 249.
        // Requant: channel 0 ×0.75 (shift 0): 16.5 -> 17; channel 1 ×0.75·2^-4: 11.67 -> 12.
        // Output zp 3: [20, 15]; channel 1 with zp 120 saturates at 127.
        let q = QLayerParams {
            input_scale: 1.0,
            output_scale: 1.0,
            input_zero_point: 0,
            output_zero_point: 3,
            _pad: [0; 2],
            bias: [10, -5],
            multiplier: [1_610_612_736; 2],
            shift: [0, -4],
            weight_scale: [1.0; 2],
        };
        let layer = QDense {
            weight: &[[1, 2, 3], [-127, 0, 127]],
            q: &q,
        };
        let x = [4, -5, 6];
        assert_eq!(layer.accumulate(&x, 0), 22);
        assert_eq!(layer.accumulate(&x, 1), 249);
        let mut out = [0i8; 2];
        layer.forward(&x, false, &mut out);
        assert_eq!(out, [20, 15]);
        // Negative result with and without ReLU: x' = -x gives acc0 = 10 - 12 = -2; ×0.75 = -1.5,
        // a high-mul tie, goes toward +inf: -1, + 3 = 2.
        let mut out2 = [0i8; 2];
        layer.forward(&[-4, 5, -6], false, &mut out2);
        // acc1 = -5 + 508 - 762 = -259 -> -12.14 -> -12 -> -9.
        assert_eq!(out2, [2, -9]);
        layer.forward(&[-4, 5, -6], true, &mut out2);
        assert_eq!(out2, [3, 3]);
        let q_hi = QLayerParams {
            output_zero_point: 120,
            ..q
        };
        let layer = QDense {
            weight: layer.weight,
            q: &q_hi,
        };
        layer.forward(&x, true, &mut out);
        assert_eq!(out, [127, 127]);
    }
}
