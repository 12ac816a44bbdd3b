//! Batch-norm folding: each inference-form BN absorbed into the convolution before it (the
//! per-channel formula in `shared/fold.rs`, each network's fold in its folder as its
//! `TrainNet::fold`); here the tests of both folds.

#[cfg(test)]
mod tests {
    use crate::lenet::quant::fold_batch_norm;
    use crate::wide::quant::fold_batch_norm_wide;
    use fmnist_core::layers::{Conv2d, max_pool_2x2, relu};
    use fmnist_core::lenet::{LeNet, image_to_f32};
    use fmnist_core::testutil::{object_images, realistic_lenet_params, realistic_wide_params};

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
        let p = realistic_lenet_params(11);
        let f = fold_batch_norm(&p);
        // Hand check of one channel: k = gamma/sqrt(var+eps).
        let k = p.bn1.gamma[2] as f64 / (p.bn1.running_var[2] as f64 + 1e-5).sqrt();
        assert_eq!(
            f.conv1_weight[2][0][1][3],
            (p.conv1_weight[2][0][1][3] as f64 * k) as f32
        );
        assert_eq!(f.fc1_weight, p.fc1_weight);

        for img in object_images(5, 20) {
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
        let p = realistic_wide_params(13);
        let f = fold_batch_norm_wide(&p);
        let k = p.bn2.gamma[40] as f64 / (p.bn2.running_var[40] as f64 + 1e-5).sqrt();
        assert_eq!(
            f.conv2_weight[40][31][2][0],
            (p.conv2_weight[40][31][2][0] as f64 * k) as f32
        );
        assert_eq!(f.fc2_weight, p.fc2_weight);
        let (bn, folded) = (Wide::from(&*p), Wide::from(&*f));
        let mut same_class = 0;
        let images = object_images(7, 40);
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
        let p = realistic_lenet_params(12);
        let f = fold_batch_norm(&p);
        let (bn, folded) = (LeNet::from(&*p), LeNet::from(&*f));
        let mut same_class = 0;
        let images = object_images(6, 200);
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
