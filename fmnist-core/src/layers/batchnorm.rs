//! Batch normalisation in inference form, and the four tensors of one batch-norm layer.

use bytemuck::{Pod, Zeroable};

/// PyTorch's default batch-norm epsilon, used by every network here.
pub const BN_EPS: f32 = 1e-5;

/// Batch norm over `C` channels with running statistics:
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, evaluated in exactly that order.
///
/// # Shapes
/// Every tensor is `[f32; C]`, one value per channel.
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm<'a, const C: usize> {
    /// Scale (PyTorch `weight`).
    pub gamma: &'a [f32; C],
    /// Shift (PyTorch `bias`).
    pub beta: &'a [f32; C],
    /// Running mean.
    pub mean: &'a [f32; C],
    /// Running variance.
    pub var: &'a [f32; C],
    /// Added to the variance before the square root (PyTorch's default is 1e-5).
    pub eps: f32,
}

impl<const C: usize> BatchNorm<'_, C> {
    /// Normalises one value of channel `c`.
    #[inline(always)]
    pub fn apply(&self, c: usize, x: f32) -> f32 {
        (x - self.mean[c]) / libm::sqrtf(self.var[c] + self.eps) * self.gamma[c] + self.beta[c]
    }

    /// Normalises a `[C][N]` activation in place.
    pub fn forward<const N: usize>(&self, x: &mut [[f32; N]; C]) {
        for (c, plane) in x.iter_mut().enumerate() {
            for v in plane {
                *v = self.apply(c, *v);
            }
        }
    }
}

/// Batch-norm tensors of one layer, in PyTorch's state_dict order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BnParams<const C: usize> {
    /// `bnN.weight`.
    pub gamma: [f32; C],
    /// `bnN.bias`.
    pub beta: [f32; C],
    /// `bnN.running_mean`.
    pub running_mean: [f32; C],
    /// `bnN.running_var`.
    pub running_var: [f32; C],
}

// SAFETY: repr(C), four f32 arrays of equal length: no padding, every bit pattern valid.
unsafe impl<const C: usize> Zeroable for BnParams<C> {}
unsafe impl<const C: usize> Pod for BnParams<C> {}

impl<const C: usize> BnParams<C> {
    /// Identity-initialised batch norm (gamma 1, beta 0, mean 0, var 1), as PyTorch starts it.
    pub const fn identity() -> Self {
        Self {
            gamma: [1.0; C],
            beta: [0.0; C],
            running_mean: [0.0; C],
            running_var: [1.0; C],
        }
    }

    /// The inference-form layer over these tensors.
    pub fn layer(&self) -> BatchNorm<'_, C> {
        BatchNorm {
            gamma: &self.gamma,
            beta: &self.beta,
            mean: &self.running_mean,
            var: &self.running_var,
            eps: BN_EPS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_close;

    #[test]
    fn normalises_per_channel() {
        // Channel 0: (3 - 1) / sqrt(4 + 0) * 2 + 0.5 = 2.5; channel 1: identity.
        let bn = BatchNorm {
            gamma: &[2.0, 1.0],
            beta: &[0.5, 0.0],
            mean: &[1.0, 0.0],
            var: &[4.0, 1.0],
            eps: 0.0,
        };
        let mut x = [[3.0, 1.0], [-2.0, 7.0]];
        bn.forward(&mut x);
        assert_close!(x[0][0], 2.5);
        assert_close!(x[0][1], 0.5);
        assert_eq!(x[1], [-2.0, 7.0]);
    }
}
