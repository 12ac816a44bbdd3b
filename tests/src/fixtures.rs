//! Seeded pseudo-random models (valid, not trained) and the model-file container, built on
//! the shared generator of `fmnist_core::testutil`.

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::LeNetFoldedParams;
use fmnist_core::quant::{LeNetQParams, WideQParams};
pub use fmnist_core::testutil::Lcg;

/// Scales every 97th weight of the dense layers into the subnormal range, so that sums and
/// products on the device cross it: a flush-to-zero FPU would give different logits.
pub fn with_subnormals(p: &LeNetFoldedParams) -> Box<LeNetFoldedParams> {
    let mut q = Box::new(*p);
    for xs in [
        q.fc1_weight.as_flattened_mut(),
        q.fc2_weight.as_flattened_mut(),
        q.fc3_weight.as_flattened_mut(),
    ] {
        for (i, x) in xs.iter_mut().enumerate() {
            if i % 97 == 13 {
                *x *= 1e-38;
            }
        }
    }
    q
}

/// A complete model file (header, payload, CRC).
pub fn model_file(arch: Arch, kind: Kind, payload: &[u8]) -> Vec<u8> {
    fmnist_infer::modelio::encode_model(arch, kind, payload)
}

/// Valid pseudo-random int8 LeNet parameters (not a trained model): weights in −127..=127,
/// zero points chained, shifts chosen so activations spread over the int8 range
/// (`fmnist_core::testutil::random_qparams`, checked).
pub fn random_int8(seed: u32) -> Box<LeNetQParams> {
    let p = fmnist_core::testutil::random_qparams(seed);
    p.check().expect("random int8 parameters must be valid");
    p
}

/// Valid pseudo-random int8 wide-CNN parameters (not a trained model): weights in −127..=127,
/// zero points chained, shifts chosen for each layer's fan-in (9, 288, 3136, 512) so that
/// activations spread over the int8 range rather than saturate
/// (`fmnist_core::testutil::random_wide_qparams`, checked).
pub fn random_wide_int8(seed: u32) -> Box<WideQParams> {
    let p = fmnist_core::testutil::random_wide_qparams(seed);
    p.check()
        .expect("random wide int8 parameters must be valid");
    p
}

/// Pseudo-random BN-folded f32 LeNet weights (He-uniform per layer, not a trained model).
/// Every 97th weight is scaled into the subnormal range, so products and sums cross it: the
/// device must not flush subnormals to zero.
pub fn random_folded(seed: u32) -> Box<LeNetFoldedParams> {
    let mut r = Lcg(seed);
    let mut p: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
    let mut fill = |xs: &mut [f32], fan_in: usize| {
        let a = (6.0 / fan_in as f32).sqrt();
        for (i, x) in xs.iter_mut().enumerate() {
            *x = r.uniform(a);
            if i % 97 == 13 {
                *x *= 1e-38;
            }
        }
    };
    fill(bytemuck::cast_slice_mut(&mut p.conv1_weight), 25);
    fill(&mut p.conv1_bias, 25);
    fill(bytemuck::cast_slice_mut(&mut p.conv2_weight), 150);
    fill(&mut p.conv2_bias, 150);
    fill(p.fc1_weight.as_flattened_mut(), 400);
    fill(&mut p.fc1_bias, 400);
    fill(p.fc2_weight.as_flattened_mut(), 120);
    fill(&mut p.fc2_bias, 120);
    fill(p.fc3_weight.as_flattened_mut(), 84);
    fill(&mut p.fc3_bias, 84);
    p
}
