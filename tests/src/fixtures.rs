//! Seeded pseudo-random models (valid, not trained) and the model-file container.

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::LeNetFoldedParams;
use fmnist_core::quant::{LeNetQParams, QLayerParams, WideQParams};

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
    fmnist_train::modelio::encode_model(arch, kind, payload)
}

/// A 32-bit LCG (Numerical Recipes constants): reproducible test data with no dependency.
pub struct Lcg(pub u32);

impl Lcg {
    /// The next raw value.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + ((self.next_u32() >> 8) % (hi - lo + 1) as u32) as i32
    }

    /// Uniform in `[-a, a)`.
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * a
    }
}

/// Valid pseudo-random int8 LeNet parameters (not a trained model): weights in −127..=127,
/// zero points chained, shifts chosen so activations spread over the int8 range.
pub fn random_int8(seed: u32) -> Box<LeNetQParams> {
    let mut r = Lcg(seed);
    let mut p: Box<LeNetQParams> = bytemuck::zeroed_box();
    for w in bytemuck::bytes_of_mut(&mut p.conv1_weight)
        .iter_mut()
        .chain(bytemuck::bytes_of_mut(&mut p.conv2_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc1_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc2_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc3_weight))
    {
        *w = r.range(-127, 127) as i8 as u8;
    }
    let zps: [i8; 5] = std::array::from_fn(|_| r.range(-128, -90) as i8);
    let input_zp = fmnist_core::quant::lenet::INPUT_ZERO_POINT;
    random_layer(&mut r, &mut p.conv1, input_zp, zps[0], (-10, -6));
    random_layer(&mut r, &mut p.conv2, zps[0], zps[1], (-13, -9));
    random_layer(&mut r, &mut p.fc1, zps[1], zps[2], (-14, -10));
    random_layer(&mut r, &mut p.fc2, zps[2], zps[3], (-13, -9));
    random_layer(&mut r, &mut p.fc3, zps[3], zps[4], (-12, -8));
    p.check().expect("random int8 parameters must be valid");
    p
}

fn random_layer<const C: usize>(
    r: &mut Lcg,
    q: &mut QLayerParams<C>,
    zp_in: i8,
    zp_out: i8,
    shifts: (i32, i32),
) {
    q.input_zero_point = zp_in;
    q.output_zero_point = zp_out;
    q.input_scale = 0.01;
    q.output_scale = 0.02;
    for c in 0..C {
        q.bias[c] = r.range(-300_000, 300_000);
        q.multiplier[c] = r.range(1 << 30, i32::MAX);
        q.shift[c] = r.range(shifts.0, shifts.1);
        q.weight_scale[c] = 0.001;
    }
}

/// Valid pseudo-random int8 wide-CNN parameters (not a trained model): weights in −127..=127,
/// zero points chained, shifts chosen for each layer's fan-in (9, 288, 3136, 512) so that
/// activations spread over the int8 range rather than saturate.
pub fn random_wide_int8(seed: u32) -> Box<WideQParams> {
    let mut r = Lcg(seed);
    let mut p: Box<WideQParams> = bytemuck::zeroed_box();
    for w in bytemuck::bytes_of_mut(&mut p.conv1_weight)
        .iter_mut()
        .chain(bytemuck::bytes_of_mut(&mut p.conv2_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc1_weight))
        .chain(bytemuck::bytes_of_mut(&mut p.fc2_weight))
    {
        *w = r.range(-127, 127) as i8 as u8;
    }
    let zps: [i8; 4] = std::array::from_fn(|_| r.range(-128, -90) as i8);
    let input_zp = fmnist_core::quant::lenet::INPUT_ZERO_POINT;
    random_layer(&mut r, &mut p.conv1, input_zp, zps[0], (-9, -5));
    random_layer(&mut r, &mut p.conv2, zps[0], zps[1], (-14, -10));
    random_layer(&mut r, &mut p.fc1, zps[1], zps[2], (-16, -12));
    random_layer(&mut r, &mut p.fc2, zps[2], zps[3], (-15, -11));
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
