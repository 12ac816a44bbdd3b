//! Batch-norm folding: each inference-form BN absorbed into the convolution before it.

use fmnist_core::lenet::{BN_EPS, BnParams, LeNetFoldedParams, LeNetParams};
use fmnist_core::wide::{WideFoldedParams, WideParams};

/// Folds `bn` into a convolution's weights and bias, per output channel `c`:
/// `k = γ/√(var+ε)`, `w' = w·k`, `b' = (b − mean)·k + β`. Computed in f64, rounded once to f32.
fn fold_conv<const OC: usize, const N: usize>(
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

/// LeNet-BN with `bn1` folded into `conv1` and `bn2` into `conv2`; the dense layers are copied.
/// The result computes the same function up to f32 rounding (see the tests).
pub fn fold_batch_norm(p: &LeNetParams) -> Box<LeNetFoldedParams> {
    let mut f: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
    fold_conv::<6, 25>(
        bytemuck::cast_ref(&p.conv1_weight),
        &p.conv1_bias,
        &p.bn1,
        bytemuck::cast_mut(&mut f.conv1_weight),
        &mut f.conv1_bias,
    );
    fold_conv::<16, 150>(
        bytemuck::cast_ref(&p.conv2_weight),
        &p.conv2_bias,
        &p.bn2,
        bytemuck::cast_mut(&mut f.conv2_weight),
        &mut f.conv2_bias,
    );
    f.fc1_weight = p.fc1_weight;
    f.fc1_bias = p.fc1_bias;
    f.fc2_weight = p.fc2_weight;
    f.fc2_bias = p.fc2_bias;
    f.fc3_weight = p.fc3_weight;
    f.fc3_bias = p.fc3_bias;
    f
}

/// The wide CNN with `bn1` folded into `conv1` and `bn2` into `conv2` (the same per-channel
/// formula as [`fold_batch_norm`]); the dense layers are copied.
pub fn fold_batch_norm_wide(p: &WideParams) -> Box<WideFoldedParams> {
    let mut f: Box<WideFoldedParams> = bytemuck::zeroed_box();
    fold_conv::<32, 9>(
        bytemuck::cast_ref(&p.conv1_weight),
        &p.conv1_bias,
        &p.bn1,
        bytemuck::cast_mut(&mut f.conv1_weight),
        &mut f.conv1_bias,
    );
    fold_conv::<64, 288>(
        bytemuck::cast_ref(&p.conv2_weight),
        &p.conv2_bias,
        &p.bn2,
        bytemuck::cast_mut(&mut f.conv2_weight),
        &mut f.conv2_bias,
    );
    f.fc1_weight = p.fc1_weight;
    f.fc1_bias = p.fc1_bias;
    f.fc2_weight = p.fc2_weight;
    f.fc2_bias = p.fc2_bias;
    f
}

/// Pseudo-random wide-CNN parameters with realistic magnitudes (tests only): He-scaled weights
/// (uniform with variance 2/fan-in) and BN statistics away from the identity.
#[cfg(test)]
pub(crate) fn lcg_wide_params(seed: u32) -> Box<WideParams> {
    let mut s = seed;
    let mut uniform = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    let mut p: Box<WideParams> = bytemuck::zeroed_box();
    let mut fill = |xs: &mut [f32], scale: f32| xs.iter_mut().for_each(|x| *x = uniform() * scale);
    // Uniform(-a, a) has variance a²/3: a = sqrt(6 / fan_in).
    let he = |fan_in: f32| (6.0 / fan_in).sqrt();
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

/// Pseudo-random LeNet-BN parameters with realistic magnitudes (tests only): He-scaled weights
/// and BN statistics far from the identity, so folding actually changes things.
#[cfg(test)]
pub(crate) fn lcg_params(seed: u32) -> Box<LeNetParams> {
    let mut s = seed;
    let mut uniform = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
    let mut fill = |xs: &mut [f32], scale: f32| xs.iter_mut().for_each(|x| *x = uniform() * scale);
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

/// Images with Fashion-MNIST-like structure (tests only): a bright object on a dark ground.
#[cfg(test)]
pub(crate) fn lcg_images(seed: u32, n: usize) -> Vec<[u8; 784]> {
    let mut s = seed;
    let mut next = move |m: u32| {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) % m
    };
    (0..n)
        .map(|_| {
            let (cx, cy) = (8 + next(12) as i32, 8 + next(12) as i32);
            let (rx, ry) = (3 + next(8) as i32, 3 + next(8) as i32);
            let level = 120 + next(136);
            let mut img = [0u8; 784];
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

#[cfg(test)]
mod tests {
    use super::*;
    use fmnist_core::layers::{Conv2d, max_pool_2x2, relu};
    use fmnist_core::lenet::{LeNet, image_to_f32};

    /// `|a − b| ≤ tol · max|reference|` elementwise over a map.
    fn assert_rel_close(a: &[f32], b: &[f32], tol: f32) {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.1, "degenerate activations");
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale,
                "[{i}] folded {x} vs conv->BN {y} (scale {scale})"
            );
        }
    }

    #[test]
    fn folded_convs_match_conv_then_bn() {
        let p = lcg_params(11);
        let f = fold_batch_norm(&p);
        // Hand check of one channel: k = gamma/sqrt(var+eps).
        let k = p.bn1.gamma[2] as f64 / (p.bn1.running_var[2] as f64 + 1e-5).sqrt();
        assert_eq!(
            f.conv1_weight[2][0][1][3],
            (p.conv1_weight[2][0][1][3] as f64 * k) as f32
        );
        assert_eq!(f.fc1_weight, p.fc1_weight);

        for img in lcg_images(5, 20) {
            let x = image_to_f32(&img);
            // conv1 -> BN vs folded conv1 on the image.
            let conv1 = Conv2d::<1, 6, 5, 2> {
                weight: &p.conv1_weight,
                bias: &p.conv1_bias,
            };
            let mut a = [[[0.0f32; 28]; 28]; 6];
            conv1.forward(&x, &mut a);
            p.bn1
                .layer()
                .forward(bytemuck::cast_mut::<_, [[f32; 784]; 6]>(&mut a));
            let folded1 = Conv2d::<1, 6, 5, 2> {
                weight: &f.conv1_weight,
                bias: &f.conv1_bias,
            };
            let mut b = [[[0.0f32; 28]; 28]; 6];
            folded1.forward(&x, &mut b);
            assert_rel_close(
                b.as_flattened().as_flattened(),
                a.as_flattened().as_flattened(),
                1e-5,
            );
            // conv2 -> BN vs folded conv2 on real pool1 activations.
            relu(a.as_flattened_mut().as_flattened_mut());
            let mut p1 = [[[0.0f32; 14]; 14]; 6];
            max_pool_2x2(&a, &mut p1);
            let conv2 = Conv2d::<6, 16, 5, 0> {
                weight: &p.conv2_weight,
                bias: &p.conv2_bias,
            };
            let mut c = [[[0.0f32; 10]; 10]; 16];
            conv2.forward(&p1, &mut c);
            p.bn2
                .layer()
                .forward(bytemuck::cast_mut::<_, [[f32; 100]; 16]>(&mut c));
            let folded2 = Conv2d::<6, 16, 5, 0> {
                weight: &f.conv2_weight,
                bias: &f.conv2_bias,
            };
            let mut d = [[[0.0f32; 10]; 10]; 16];
            folded2.forward(&p1, &mut d);
            assert_rel_close(
                d.as_flattened().as_flattened(),
                c.as_flattened().as_flattened(),
                1e-5,
            );
        }
    }

    #[test]
    fn folded_wide_logits_match() {
        use fmnist_core::wide::Wide;
        let p = lcg_wide_params(13);
        let f = fold_batch_norm_wide(&p);
        let k = p.bn2.gamma[40] as f64 / (p.bn2.running_var[40] as f64 + 1e-5).sqrt();
        assert_eq!(
            f.conv2_weight[40][31][2][0],
            (p.conv2_weight[40][31][2][0] as f64 * k) as f32
        );
        assert_eq!(f.fc2_weight, p.fc2_weight);
        let (bn, folded) = (Wide::from(&*p), Wide::from(&*f));
        let mut same_class = 0;
        let images = lcg_images(7, 40);
        for img in &images {
            let a = bn.forward(img);
            let b = folded.forward(img);
            assert_rel_close(&b, &a, 1e-4);
            same_class +=
                (fmnist_core::layers::argmax(&a) == fmnist_core::layers::argmax(&b)) as usize;
        }
        assert!(same_class >= 39, "{same_class}/40");
    }

    #[test]
    fn folded_lenet_logits_match() {
        let p = lcg_params(12);
        let f = fold_batch_norm(&p);
        let (bn, folded) = (LeNet::from(&*p), LeNet::from(&*f));
        let mut same_class = 0;
        let images = lcg_images(6, 200);
        for img in &images {
            let a = bn.forward(img);
            let b = folded.forward(img);
            assert_rel_close(&b, &a, 1e-4);
            same_class +=
                (fmnist_core::layers::argmax(&a) == fmnist_core::layers::argmax(&b)) as usize;
        }
        assert!(same_class >= 199, "{same_class}/200");
    }
}
