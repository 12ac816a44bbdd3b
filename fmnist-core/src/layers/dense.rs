//! Fully connected layer.

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
    pub fn forward(&self, x: &[f32; I], out: &mut [f32; O]) {
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
}
