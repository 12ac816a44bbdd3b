//! Fully connected layer.

/// Rows [`Dense::forward`] computes together: independent accumulators hide the latency of the
/// additions.
const BLOCK: usize = 8;

/// `out = W·x + b` with `I` inputs and `O` outputs, weights read in place.
///
/// # Shapes
/// weight `[O][I]` (PyTorch's `Linear.weight`), bias `[O]`, input `[I]`, output `[O]`.
///
/// # Summation order
/// `out[o] = bias[o] + Σ_i w[o][i]·x[i]` in ascending `i`.
#[derive(Clone, Copy, Debug)]
pub struct Dense<'a, const I: usize, const O: usize> {
    /// `[O][I]` weights.
    pub weight: &'a [[f32; I]; O],
    /// `[O]` biases.
    pub bias: &'a [f32; O],
}

impl<const I: usize, const O: usize> Dense<'_, I, O> {
    /// `out = W·x + b`.
    ///
    /// Eight rows are summed side by side, each in its own accumulator and still in the
    /// documented order (bias, then ascending `i`), so the result is bit-identical to
    /// [`Dense::forward_reference`].
    pub fn forward(&self, x: &[f32; I], out: &mut [f32; O]) {
        let mut o = 0;
        while o + BLOCK <= O {
            let rows: [&[f32; I]; BLOCK] = core::array::from_fn(|r| &self.weight[o + r]);
            let mut acc: [f32; BLOCK] = core::array::from_fn(|r| self.bias[o + r]);
            for (i, &v) in x.iter().enumerate() {
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a += row[i] * v;
                }
            }
            out[o..o + BLOCK].copy_from_slice(&acc);
            o += BLOCK;
        }
        for ((dst, row), &b) in out[o..]
            .iter_mut()
            .zip(&self.weight[o..])
            .zip(&self.bias[o..])
        {
            let mut acc = b;
            for (&w, &v) in row.iter().zip(x) {
                acc += w * v;
            }
            *dst = acc;
        }
    }

    /// `out = W·x + b`, one row at a time: the plain definition.
    pub fn forward_reference(&self, x: &[f32; I], out: &mut [f32; O]) {
        for ((o, row), &b) in out.iter_mut().zip(self.weight).zip(self.bias) {
            let mut acc = b;
            for (&w, &v) in row.iter().zip(x) {
                acc += w * v;
            }
            *o = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        // [1 2 3; -1 0 0.5] · [1, 0.5, 2] + [0.25, -1] = [8.25, -1]
        let layer = Dense {
            weight: &[[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]],
            bias: &[0.25, -1.0],
        };
        let mut out = [0.0; 2];
        layer.forward(&[1.0, 0.5, 2.0], &mut out);
        assert_eq!(out, [8.25, -1.0]);
    }

    #[test]
    fn blocked_is_bit_identical_to_reference() {
        // 21 rows: two blocks of 8 and a remainder of 5; values from an LCG.
        let mut r = crate::testutil::Lcg(0x9e37_79b9);
        let mut next = || r.centered();
        let mut weight = [[0.0f32; 37]; 21];
        weight.iter_mut().flatten().for_each(|w| *w = next());
        let bias: [f32; 21] = core::array::from_fn(|_| next());
        let x: [f32; 37] = core::array::from_fn(|_| next() * 100.0);
        let layer = Dense {
            weight: &weight,
            bias: &bias,
        };
        let (mut a, mut b) = ([0.0; 21], [0.0; 21]);
        layer.forward(&x, &mut a);
        layer.forward_reference(&x, &mut b);
        assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
    }
}
