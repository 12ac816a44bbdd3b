//! Post-training static quantization of a trained LeNet-BN to the integer-only int8 model of
//! `fmnist_core::quant` (the model-file payload [`LeNetQParams`](fmnist_core::quant::LeNetQParams)).
//!
//! 1. Fold batch norm ([`TrainNet::fold`], each network's in its folder).
//! 2. Weights: int8, symmetric per output channel, zero point 0, range −127..=127,
//!    `s_w[c] = max|w[c]| / 127`, `w_q = round(w / s_w[c])`.
//! 3. Activations: int8 per tensor, ranges calibrated by running the folded f32 model on
//!    calibration images ([`Calibration`]). The input is fixed: `q = p − 128`, scale 1/255, zero
//!    point −128. After ReLU the range is `[0, r]`: scale `r/255`, zero point −128. The logits
//!    take `[lo, hi] ∋ 0`: scale `(hi − lo)/255`, zero point `round(−128 − lo/scale)`.
//! 4. Biases: int32 at `s_in·s_w[c]`, `b_q = round(b / (s_in·s_w[c]))`, stored with the
//!    zero-point term folded in: `b_q − zp_in·Σ w_q[c]`.
//! 5. Requantization: `M = s_in·s_w[c] / s_out` as TFLite's `QuantizeMultiplier` does it
//!    ([`quantize_multiplier`]).
//!
//! The result is refused ([`QuantizeError`]) rather than produced if any accumulator could
//! overflow (the proof in `fmnist_core::quant::lenet`).
//!
//! Every network goes through the same steps ([`quantize`]): the per-layer code is in
//! `shared/quant.rs`, each network's calibration and layer list in its folder (`lenet/quant.rs`,
//! `wide/quant.rs`).

use fmnist_core::layers::argmax;
use fmnist_core::network::Network;

pub use crate::lenet::quant::*;
use crate::shared::net::{Folded, Params, QParams, TrainNet, flat};
pub use crate::shared::quant::*;
pub use crate::wide::quant::*;

/// Folds BN, calibrates on `calibration` images with `method` and quantizes: the int8 payload
/// of network `N` (refused when a parameter is not a finite number).
pub fn quantize<N: TrainNet>(
    p: &Params<N>,
    calibration: &[[u8; 784]],
    method: Calibration,
) -> Result<Box<QParams<N>>, QuantizeError> {
    if flat::<N>(p).iter().any(|v| !v.is_finite()) {
        return Err(QuantizeError::NonFinite {
            tensor: "f32 parameters",
        });
    }
    let f = N::fold(p);
    N::calibrate_and_quantize(&f, calibration, method)
}

/// The real-valued logits of int8 logits: `scale · (q − zero point)` of the last layer's
/// output.
pub fn dequantize_logits<N: TrainNet>(q: &QParams<N>, logits: &[i8; 10]) -> [f32; 10] {
    let (scale, zero_point) = N::Core::output_quant(q);
    logits.map(|v| scale * (v as i32 - zero_point as i32) as f32)
}

/// Fraction of `images` the int8 network classifies as `labels` (fast kernels,
/// multi-threaded).
///
/// # Panics
/// If `q` fails its check (parameters from [`quantize`] never do) or the lengths differ.
pub fn int8_accuracy<N: TrainNet>(q: &QParams<N>, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = N::Core::int8(q).expect("int8 parameters fail their check");
    accuracy_of(images, labels, |img| {
        argmax(&N::Core::int8_forward(&model, img))
    })
}

/// Fraction of `images` the trained f32 network classifies as `labels` (multi-threaded).
pub fn f32_accuracy<N: TrainNet>(p: &Params<N>, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = N::Core::f32_trained(p);
    accuracy_of(images, labels, |img| argmax(&N::Core::forward(&model, img)))
}

/// Fraction of `images` the BN-folded f32 network classifies as `labels` (multi-threaded).
pub fn folded_accuracy<N: TrainNet>(f: &Folded<N>, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = N::Core::f32_folded(f);
    accuracy_of(images, labels, |img| argmax(&N::Core::forward(&model, img)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{TrainLeNet, TrainWide};
    use fmnist_core::lenet::LeNetParams;
    use fmnist_core::quant::LeNetQParams;

    /// [`quantize`] for LeNet-BN.
    fn quantize_lenet(
        p: &LeNetParams,
        calibration: &[[u8; 784]],
        method: Calibration,
    ) -> Result<Box<LeNetQParams>, QuantizeError> {
        quantize::<TrainLeNet>(p, calibration, method)
    }
    use fmnist_core::layers::argmax;
    use fmnist_core::lenet::LeNet;
    use fmnist_core::quant::{LeNetQ, Requant, WideQ, multiply_by_quantized_multiplier};
    use fmnist_core::testutil::{object_images, realistic_lenet_params};
    use fmnist_core::wide::Wide;

    #[test]
    fn quantize_multiplier_hand_checked() {
        let r = |m, s| Requant {
            multiplier: m,
            shift: s,
        };
        assert_eq!(quantize_multiplier(0.0), r(0, 0));
        assert_eq!(quantize_multiplier(0.5), r(1 << 30, 0));
        assert_eq!(quantize_multiplier(0.75), r(1_610_612_736, 0));
        // 1.0 = 0.5 · 2^1.
        assert_eq!(quantize_multiplier(1.0), r(1 << 30, 1));
        assert_eq!(quantize_multiplier(0.09375), r(1_610_612_736, -3));
        // 1/3 = 0.666.. · 2^-1: round(0.6666.. · 2^31) = 1431655765.
        assert_eq!(quantize_multiplier(1.0 / 3.0), r(1_431_655_765, -1));
        // q rounds up to 2^31: halve it and bump the shift.
        assert_eq!(quantize_multiplier(1.0 - 1e-12), r(1 << 30, 1));
        // Underflow flushes to zero; overflow saturates.
        assert_eq!(quantize_multiplier(2f64.powi(-40)), r(0, 0));
        assert_eq!(quantize_multiplier(2f64.powi(40)), r(i32::MAX, 30));
        // The smallest representable: 2^-32 = 0.5 · 2^-31.
        assert_eq!(quantize_multiplier(2f64.powi(-32)), r(1 << 30, -31));
    }

    #[test]
    fn quantized_multiplier_approximates_the_real_product() {
        let mut r = fmnist_core::testutil::Lcg(42);
        let mut next = || r.next_u32();
        for _ in 0..10_000 {
            let real = (next() as f64 / u32::MAX as f64) * 2f64.powi(-((next() % 20) as i32));
            let x = (next() as i32) >> 8;
            let r = quantize_multiplier(real);
            let got = multiply_by_quantized_multiplier(x, r.multiplier, r.shift) as f64;
            let want = x as f64 * real;
            // Two roundings of half a unit each, plus the multiplier's 2^-31 relative error.
            assert!(
                (got - want).abs() <= 1.0 + want.abs() * 1e-9,
                "{x} · {real}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn act_quant_from_range() {
        // After ReLU: [0, 2.55] -> scale 0.01, zp -128.
        let a = ActQuant::from_range(0.0, 2.55);
        assert_eq!(a.zero_point, -128);
        assert!((a.scale - 0.01).abs() < 1e-9);
        // Symmetric [-1, 1]: scale 2/255, zp round(-128 + 127.5) = round(-0.5) = -1 (half away).
        let b = ActQuant::from_range(-1.0, 1.0);
        assert_eq!(b.zero_point, -1);
        // Negative-only range is widened to include 0: zp = 127.
        assert_eq!(ActQuant::from_range(-3.0, -1.0).zero_point, 127);
    }

    #[test]
    fn percentile_and_mse_clip_inside_min_max() {
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.push(50.0); // one outlier
        let (_, hi_mm) = choose_range(&mut v.clone(), Calibration::MinMax);
        assert_eq!(hi_mm, 50.0);
        let (_, hi_p) = choose_range(&mut v.clone(), Calibration::Percentile(99.9));
        assert!((0.99..=1.0).contains(&hi_p), "{hi_p}");
        // MSE: one outlier costs its squared clipping error, so clipping it away does not pay
        // here; whatever it picks must not be worse than min/max or the percentile.
        let mse = |lo: f32, hi: f32| {
            let a = ActQuant::from_range(lo, hi);
            let (sc, z) = (a.scale as f64, a.zero_point as f64);
            v.iter()
                .map(|&x| {
                    let q = (x as f64 / sc + z).round().clamp(-128.0, 127.0);
                    (x as f64 - sc * (q - z)).powi(2)
                })
                .sum::<f64>()
        };
        let (lo_mse, hi_mse) = choose_range(&mut v.clone(), Calibration::Mse);
        assert!(mse(lo_mse, hi_mse) <= mse(0.0, hi_mm) * 1.001);
        assert!(mse(lo_mse, hi_mse) <= mse(0.0, hi_p));
        // Many mid-size outliers: now clipping pays, and MSE clips.
        let mut w: Vec<f32> = (0..10_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        w.extend((0..5).map(|i| 20.0 + i as f32));
        let (_, hi_w) = choose_range(&mut w, Calibration::Mse);
        assert!(hi_w < 24.0, "{hi_w}");
    }

    #[test]
    fn int8_model_tracks_f32_on_lcg_model() {
        let p = realistic_lenet_params(21);
        let calib = object_images(100, 300);
        let test = object_images(200, 400);
        let f = fold_batch_norm(&p);
        let f32_model = LeNet::from(&*f);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.99),
            Calibration::Mse,
        ] {
            let q = quantize_lenet(&p, &calib, method).unwrap();
            assert_eq!(q.conv1.input_zero_point, -128);
            assert_eq!(q.conv1.input_scale, 1.0 / 255.0);
            assert_eq!(q.conv1.output_zero_point, -128);
            assert_eq!(q.fc2.output_zero_point, -128);
            let model = LeNetQ::new(&q).unwrap();
            let mut agree = 0;
            let mut max_err = 0.0f32;
            let mut max_logit = 0.0f32;
            for img in &test {
                let logits = model.forward(img);
                assert_eq!(logits, model.forward_reference(img));
                let want = f32_model.forward(img);
                let got = dequantize_logits::<TrainLeNet>(&q, &logits);
                agree += (argmax(&logits) == argmax(&want)) as usize;
                for (a, b) in got.iter().zip(&want) {
                    max_err = max_err.max((a - b).abs());
                    max_logit = max_logit.max(b.abs());
                }
            }
            // Labels are the f32 model's own predictions: int8 must agree on nearly all.
            let labels: Vec<u8> = test
                .iter()
                .map(|i| argmax(&f32_model.forward(i)) as u8)
                .collect();
            let acc = int8_accuracy::<TrainLeNet>(&q, &test, &labels);
            assert_eq!(acc, agree as f64 / test.len() as f64);
            assert!(acc >= 0.95, "{method}: int8 agrees with f32 on {acc}");
            assert!(
                max_err < 0.1 * max_logit,
                "{method}: {max_err} vs {max_logit}"
            );
        }
        assert_eq!(
            folded_accuracy::<TrainLeNet>(&f, &test, &vec![0; test.len()]),
            f32_accuracy::<TrainLeNet>(&p, &test, &vec![0; test.len()])
        );
    }

    /// A randomly initialised but sensibly scaled wide CNN: int8 tracks the folded f32 model
    /// (same class on nearly every image, logits within a tenth of their range), and the fast
    /// kernels equal the reference ones on the quantized model.
    #[test]
    fn wide_int8_tracks_f32_on_lcg_model() {
        use fmnist_core::testutil::realistic_wide_params;
        let p = realistic_wide_params(21);
        let calib = object_images(100, 120);
        let test = object_images(200, 120);
        let f = fold_batch_norm_wide(&p);
        let f32_model = Wide::from(&*f);
        let want: Vec<[f32; 10]> = test.iter().map(|i| f32_model.forward(i)).collect();
        let labels: Vec<u8> = want.iter().map(|l| argmax(l) as u8).collect();
        for method in [Calibration::MinMax, Calibration::Mse] {
            let q = quantize::<TrainWide>(&p, &calib, method).unwrap();
            assert_eq!(q.conv1.input_zero_point, -128);
            assert_eq!(q.conv1.input_scale, 1.0 / 255.0);
            assert_eq!(q.conv1.output_zero_point, -128);
            assert_eq!(q.fc1.output_zero_point, -128);
            let model = WideQ::new(&q).unwrap();
            let mut max_err = 0.0f32;
            let mut max_logit = 0.0f32;
            for (img, want) in test.iter().zip(&want).take(20) {
                let logits = model.forward(img);
                assert_eq!(logits, model.forward_reference(img));
                for (a, b) in dequantize_logits::<TrainWide>(&q, &logits).iter().zip(want) {
                    max_err = max_err.max((a - b).abs());
                    max_logit = max_logit.max(b.abs());
                }
            }
            let acc = int8_accuracy::<TrainWide>(&q, &test, &labels);
            assert!(acc >= 0.95, "{method}: int8 agrees with f32 on {acc}");
            assert!(
                max_err < 0.1 * max_logit,
                "{method}: {max_err} vs {max_logit}"
            );
        }
        assert_eq!(folded_accuracy::<TrainWide>(&f, &test, &labels), 1.0);
        assert!(f32_accuracy::<TrainWide>(&p, &test, &labels) >= 0.97);
        assert_eq!(
            quantize::<TrainWide>(&p, &[], Calibration::MinMax),
            Err(QuantizeError::NoCalibrationImages)
        );
    }

    #[test]
    fn refuses_what_it_cannot_quantize() {
        let p = realistic_lenet_params(3);
        assert_eq!(
            quantize_lenet(&p, &[], Calibration::MinMax),
            Err(QuantizeError::NoCalibrationImages)
        );
        let mut bad = p.clone();
        bad.fc2_bias[5] = f32::NAN;
        assert!(matches!(
            quantize_lenet(&bad, &object_images(1, 4), Calibration::MinMax),
            Err(QuantizeError::NonFinite { .. })
        ));
        // A bias of 1e6 at s_in·s_w ~ 1e-5 needs ~1e11: cannot be an int32 accumulator start.
        let mut big = p.clone();
        big.fc1_bias[7] = 1e6;
        assert!(matches!(
            quantize_lenet(&big, &object_images(1, 8), Calibration::MinMax),
            Err(QuantizeError::BiasOutOfRange {
                layer: "fc1",
                channel: 7,
                ..
            })
        ));
    }
}

/// Accuracy of a real trained model under each calibration method (a measurement, not a
/// check): `FMNIST_F32_MODEL=path/model.fmnm cargo test --release -p fmnist-train --lib --
/// --ignored --nocapture calibration_methods_on_real_model`. Data from `FMNIST_DATA` or the
/// default locations; calibrates on the first `FMNIST_CALIB` (default 2,000) training images.
#[cfg(test)]
mod real_model {
    use super::*;
    use crate::registry::TrainLeNet;
    use fmnist_core::registry::LeNetBn;

    #[test]
    #[ignore = "needs a trained model file and the data set"]
    fn calibration_methods_on_real_model() {
        let path = std::env::var("FMNIST_F32_MODEL").expect("set FMNIST_F32_MODEL");
        let m = fmnist_infer::modelio::LoadedModel::read(std::path::Path::new(&path)).unwrap();
        let p = m.file().unwrap().trained::<LeNetBn>().unwrap();
        let (train, test) = fmnist_infer::data::load_both(None).unwrap();
        let n: usize = std::env::var("FMNIST_CALIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        let f32_acc = f32_accuracy::<TrainLeNet>(p, &test.images, &test.labels);
        println!("f32 test accuracy: {:.2} %", 100.0 * f32_acc);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.99),
            Calibration::Percentile(99.999),
            Calibration::Mse,
        ] {
            let q = quantize::<TrainLeNet>(p, &train.images[..n], method).unwrap();
            let acc = int8_accuracy::<TrainLeNet>(&q, &test.images, &test.labels);
            println!(
                "int8 {method} ({n} calibration images): {:.2} % ({:+.2} points)",
                100.0 * acc,
                100.0 * (acc - f32_acc)
            );
        }
    }
}
