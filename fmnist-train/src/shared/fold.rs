//! Batch-norm folding of one convolution, for every network.

use fmnist_core::lenet::{BN_EPS, BnParams};

/// Folds `bn` into a convolution's weights and bias, per output channel `c`:
/// `k = γ/√(var+ε)`, `w' = w·k`, `b' = (b − mean)·k + β`. Computed in f64, rounded once to f32.
pub fn fold_conv<const OC: usize, const N: usize>(
    weight: &[[f32; N]; OC],
    bias: &[f32; OC],
    bn: &BnParams<OC>,
    weight_out: &mut [[f32; N]; OC],
    bias_out: &mut [f32; OC],
) {
    for c in 0..OC {
        let k = bn.gamma[c] as f64 / (bn.running_var[c] as f64 + BN_EPS as f64).sqrt();
        for (o, &w) in weight_out[c].iter_mut().zip(&weight[c]) {
            *o = (w as f64 * k) as f32;
        }
        bias_out[c] = ((bias[c] as f64 - bn.running_mean[c] as f64) * k + bn.beta[c] as f64) as f32;
    }
}
