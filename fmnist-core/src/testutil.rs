//! Seeded test fixtures shared by every crate's tests: one generator ([`Lcg`]) and the
//! pseudo-random models and images built from it (valid, not trained).
//!
//! Compiled for fmnist-core's own tests and, behind the `testutil` feature (off by default),
//! for the crates that enable it as a dev-dependency feature (and the `fmnist-tests` crate).
//! Every fixture is a pure function of its seed; tests that compare against recorded values
//! depend on the exact sequence, so the generator and the builders must not change.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::lenet::{IMAGE_PIXELS, LeNetParams};
use crate::quant::lenet::INPUT_ZERO_POINT;
use crate::quant::{LeNetQParams, QLayerParams, WideQParams};
use crate::wide::WideParams;

/// A 32-bit LCG (Numerical Recipes constants: `s ← 1664525·s + 1013904223`): reproducible
/// test data with no dependency.
#[derive(Clone, Debug)]
pub struct Lcg(pub u32);

impl Lcg {
    /// The next state, which is also the raw output.
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0
    }

    /// Uniform in `lo..=hi` (from the top 24 bits).
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + ((self.next_u32() >> 8) % (hi - lo + 1) as u32) as i32
    }

    /// Uniform in `0..m` (from the top 24 bits).
    pub fn below(&mut self, m: u32) -> u32 {
        (self.next_u32() >> 8) % m
    }

    /// Uniform in `[0, 1)` with 24 bits.
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    /// Uniform in `[-0.5, 0.5)`: `unit() − 0.5`.
    pub fn centered(&mut self) -> f32 {
        self.unit() - 0.5
    }

    /// Uniform in `[-a, a)`: `(2·unit() − 1)·a`.
    pub fn uniform(&mut self, a: f32) -> f32 {
        (self.unit() * 2.0 - 1.0) * a
    }
}

fn fill_layer<const C: usize>(
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

/// Valid random int8 LeNet parameters: weights −127..=127, scales chosen so activations
/// spread over the int8 range rather than saturate, random zero points chained correctly.
pub fn random_qparams(seed: u32) -> Box<LeNetQParams> {
    let mut r = Lcg(seed);
    let mut p: Box<LeNetQParams> = bytemuck::zeroed_box();
    for w in bytemuck::bytes_of_mut(&mut p.conv1_weight) {
        *w = r.range(-127, 127) as i8 as u8;
    }
    for w in bytemuck::bytes_of_mut(&mut p.conv2_weight) {
        *w = r.range(-127, 127) as i8 as u8;
    }
    for w in bytemuck::bytes_of_mut(&mut p.fc1_weight) {
        *w = r.range(-127, 127) as i8 as u8;
    }
    for w in bytemuck::bytes_of_mut(&mut p.fc2_weight) {
        *w = r.range(-127, 127) as i8 as u8;
    }
    for w in bytemuck::bytes_of_mut(&mut p.fc3_weight) {
        *w = r.range(-127, 127) as i8 as u8;
    }
    let zps: [i8; 5] = core::array::from_fn(|_| r.range(-128, -90) as i8);
    fill_layer(&mut r, &mut p.conv1, INPUT_ZERO_POINT, zps[0], (-10, -6));
    fill_layer(&mut r, &mut p.conv2, zps[0], zps[1], (-13, -9));
    fill_layer(&mut r, &mut p.fc1, zps[1], zps[2], (-14, -10));
    fill_layer(&mut r, &mut p.fc2, zps[2], zps[3], (-13, -9));
    fill_layer(&mut r, &mut p.fc3, zps[3], zps[4], (-12, -8));
    p
}

/// A random image with some structure (a bright blob on noise).
pub fn random_image(r: &mut Lcg) -> [u8; IMAGE_PIXELS] {
    let cx = r.range(6, 21);
    let cy = r.range(6, 21);
    let rad = r.range(3, 9);
    core::array::from_fn(|i| {
        let (y, x) = ((i / 28) as i32, (i % 28) as i32);
        let inside = (y - cy).pow(2) + (x - cx).pow(2) <= rad * rad;
        let noise = r.range(0, 60);
        if inside {
            (195 + noise) as u8
        } else {
            (noise / 2) as u8
        }
    })
}

/// Valid random int8 wide-CNN parameters: weights −127..=127, shifts chosen so activations
/// spread over the int8 range rather than saturate, random zero points chained correctly.
pub fn random_wide_qparams(seed: u32) -> Box<WideQParams> {
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
    let zps: [i8; 4] = core::array::from_fn(|_| r.range(-128, -90) as i8);
    fill_layer(&mut r, &mut p.conv1, INPUT_ZERO_POINT, zps[0], (-9, -5));
    fill_layer(&mut r, &mut p.conv2, zps[0], zps[1], (-14, -10));
    fill_layer(&mut r, &mut p.fc1, zps[1], zps[2], (-16, -12));
    fill_layer(&mut r, &mut p.fc2, zps[2], zps[3], (-15, -11));
    p
}

/// Every f32 of a parameter struct `centered() · scale`, in memory order (callers make the
/// BN variances positive as their test needs).
pub fn uniform_params<T: bytemuck::Pod>(seed: u32, scale: f32) -> Box<T> {
    let mut r = Lcg(seed);
    let mut p: Box<T> = bytemuck::zeroed_box();
    for v in bytemuck::cast_slice_mut::<T, f32>(core::slice::from_mut(&mut *p)) {
        *v = r.centered() * scale;
    }
    p
}

/// LeNet-BN parameters uniform in `[-0.2, 0.2)` ([`uniform_params`]), BN variances
/// `|v| + 0.5`.
pub fn random_lenet_params(seed: u32) -> Box<LeNetParams> {
    let mut p: Box<LeNetParams> = uniform_params(seed, 0.4);
    p.bn1
        .running_var
        .iter_mut()
        .for_each(|v| *v = v.abs() + 0.5);
    p.bn2
        .running_var
        .iter_mut()
        .for_each(|v| *v = v.abs() + 0.5);
    p
}

/// Pseudo-random wide-CNN parameters of a sensible scale (He-like per layer), with
/// positive variances: activations neither vanish nor blow up through the layers.
pub fn random_wide_params(seed: u32) -> Box<WideParams> {
    let mut p: Box<WideParams> = bytemuck::zeroed_box();
    let mut r = Lcg(seed);
    let mut next = move || r.centered();
    let fill = |xs: &mut [f32], scale: f32, next: &mut dyn FnMut() -> f32| {
        xs.iter_mut().for_each(|v| *v = next() * scale)
    };
    // Uniform(-0.5, 0.5)·a has variance a²/12; a = sqrt(24 / fan_in) gives 2 / fan_in.
    let he = |fan_in: f32| libm::sqrtf(24.0 / fan_in);
    fill(
        bytemuck::cast_slice_mut(&mut p.conv1_weight),
        he(9.0),
        &mut next,
    );
    fill(&mut p.conv1_bias, 0.2, &mut next);
    fill(
        bytemuck::cast_slice_mut(&mut p.conv2_weight),
        he(288.0),
        &mut next,
    );
    fill(&mut p.conv2_bias, 0.2, &mut next);
    fill(p.fc1_weight.as_flattened_mut(), he(3136.0), &mut next);
    fill(&mut p.fc1_bias, 0.2, &mut next);
    fill(p.fc2_weight.as_flattened_mut(), he(512.0), &mut next);
    fill(&mut p.fc2_bias, 0.2, &mut next);
    for bn in [&mut p.bn1.gamma[..], &mut p.bn2.gamma[..]] {
        bn.iter_mut().for_each(|g| *g = 1.0 + next() * 0.4);
    }
    for bn in [&mut p.bn1.beta[..], &mut p.bn2.beta[..]] {
        bn.iter_mut().for_each(|b| *b = next() * 0.2);
    }
    for m in [&mut p.bn1.running_mean[..], &mut p.bn2.running_mean[..]] {
        m.iter_mut().for_each(|m| *m = next() * 0.2);
    }
    for v in [&mut p.bn1.running_var[..], &mut p.bn2.running_var[..]] {
        v.iter_mut().for_each(|v| *v = 0.5 + next().abs());
    }
    p
}

/// Pseudo-random LeNet-BN parameters with realistic magnitudes (tests only): He-scaled weights
/// and BN statistics far from the identity, so folding actually changes things.
pub fn realistic_lenet_params(seed: u32) -> Box<LeNetParams> {
    let mut r = Lcg(seed);
    let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
    let mut fill = |xs: &mut [f32], scale: f32| xs.iter_mut().for_each(|x| *x = r.uniform(scale));
    fill(bytemuck::cast_slice_mut(&mut p.conv1_weight), 0.5);
    fill(&mut p.conv1_bias, 0.1);
    fill(bytemuck::cast_slice_mut(&mut p.conv2_weight), 0.2);
    fill(&mut p.conv2_bias, 0.1);
    fill(bytemuck::cast_slice_mut(&mut p.fc1_weight), 0.12);
    fill(&mut p.fc1_bias, 0.05);
    fill(bytemuck::cast_slice_mut(&mut p.fc2_weight), 0.2);
    fill(&mut p.fc2_bias, 0.05);
    fill(bytemuck::cast_slice_mut(&mut p.fc3_weight), 0.25);
    fill(&mut p.fc3_bias, 0.05);
    for bn in [&mut p.bn1.gamma[..], &mut p.bn2.gamma[..]] {
        fill(bn, 0.5);
        bn.iter_mut().for_each(|g| *g += 1.0);
    }
    fill(&mut p.bn1.beta, 0.3);
    fill(&mut p.bn2.beta, 0.3);
    fill(&mut p.bn1.running_mean, 0.4);
    fill(&mut p.bn2.running_mean, 1.0);
    fill(&mut p.bn1.running_var, 0.2);
    fill(&mut p.bn2.running_var, 1.5);
    p.bn1
        .running_var
        .iter_mut()
        .for_each(|v| *v = v.abs() + 0.05);
    p.bn2
        .running_var
        .iter_mut()
        .for_each(|v| *v = v.abs() + 0.3);
    p
}

/// Pseudo-random wide-CNN parameters with realistic magnitudes (tests only): He-scaled weights
/// (uniform with variance 2/fan-in) and BN statistics away from the identity.
pub fn realistic_wide_params(seed: u32) -> Box<WideParams> {
    let mut r = Lcg(seed);
    let mut p: Box<WideParams> = bytemuck::zeroed_box();
    let mut fill = |xs: &mut [f32], scale: f32| xs.iter_mut().for_each(|x| *x = r.uniform(scale));
    // Uniform(-a, a) has variance a²/3: a = sqrt(6 / fan_in).
    let he = |fan_in: f32| libm::sqrtf(6.0 / fan_in);
    fill(bytemuck::cast_slice_mut(&mut p.conv1_weight), he(9.0));
    fill(&mut p.conv1_bias, 0.1);
    fill(bytemuck::cast_slice_mut(&mut p.conv2_weight), he(288.0));
    fill(&mut p.conv2_bias, 0.1);
    fill(p.fc1_weight.as_flattened_mut(), he(3136.0));
    fill(&mut p.fc1_bias, 0.05);
    fill(p.fc2_weight.as_flattened_mut(), he(512.0));
    fill(&mut p.fc2_bias, 0.05);
    for bn in [&mut p.bn1.gamma[..], &mut p.bn2.gamma[..]] {
        fill(bn, 0.3);
        bn.iter_mut().for_each(|g| *g += 1.0);
    }
    fill(&mut p.bn1.beta, 0.2);
    fill(&mut p.bn2.beta, 0.2);
    fill(&mut p.bn1.running_mean, 0.2);
    fill(&mut p.bn2.running_mean, 0.5);
    fill(&mut p.bn1.running_var, 0.1);
    fill(&mut p.bn2.running_var, 1.0);
    p.bn1
        .running_var
        .iter_mut()
        .for_each(|v| *v = v.abs() + 0.05);
    p.bn2
        .running_var
        .iter_mut()
        .for_each(|v| *v = v.abs() + 0.3);
    p
}

/// Images with Fashion-MNIST-like structure (tests only): a bright object on a dark ground.
pub fn object_images(seed: u32, n: usize) -> Vec<[u8; IMAGE_PIXELS]> {
    let mut r = Lcg(seed);
    let mut next = move |m: u32| r.below(m);
    (0..n)
        .map(|_| {
            let (cx, cy) = (8 + next(12) as i32, 8 + next(12) as i32);
            let (rx, ry) = (3 + next(8) as i32, 3 + next(8) as i32);
            let level = 120 + next(136);
            let mut img = [0u8; IMAGE_PIXELS];
            for (i, px) in img.iter_mut().enumerate() {
                let (y, x) = ((i / 28) as i32, (i % 28) as i32);
                let d = (x - cx).pow(2) * ry * ry + (y - cy).pow(2) * rx * rx;
                if d <= rx * rx * ry * ry {
                    *px = (level - next(40)).min(255) as u8;
                } else if next(10) == 0 {
                    *px = next(30) as u8;
                }
            }
            img
        })
        .collect()
}
