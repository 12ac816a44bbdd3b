//! Models that classify, built once per test process: a briefly trained LeNet-BN and a wide CNN
//! with random features and a fitted readout.

use std::sync::OnceLock;
use std::time::Instant;

use fmnist_core::lenet::{LeNetFoldedParams, LeNetParams};
use fmnist_core::quant::{LeNetQParams, WideQParams};
use fmnist_core::testutil::Lcg;
use fmnist_core::wide::{WIDE_FLAT, WIDE_HIDDEN, WideFoldedParams};

use crate::linalg::solve_spd;

/// Optimizer steps of the short deterministic training run behind [`trained`].
pub const TRAIN_STEPS: u64 = 300;

/// A briefly trained LeNet-BN as trained and in the two forms the device runs.
pub struct Trained {
    /// As trained, batch norm separate (`Kind::F32`).
    pub params: Box<LeNetParams>,
    /// BN folded into the convolutions (`Kind::F32Folded`).
    pub folded: Box<LeNetFoldedParams>,
    /// Quantized (`Kind::Int8`), calibrated min/max on 1,000 training images.
    pub int8: Box<LeNetQParams>,
}

/// Trains LeNet-BN for [`TRAIN_STEPS`] steps (batch 64, SGD lr 0.05 momentum 0.9, constant
/// rate, seed 7: deterministic, a few seconds), folds and quantizes it. Once per process.
pub fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        use fmnist_infer::data;
        use fmnist_train::config::{Model, Preset, Schedule};
        use fmnist_train::quantize;
        use fmnist_train::registry::TrainLeNet;
        use fmnist_train::shared::net::TrainNet;
        use fmnist_train::shared::trainer::Trainer;
        let t = Instant::now();
        let dir = data::locate(None).unwrap_or_else(|e| panic!("{e}"));
        let train = data::load(&dir, data::Split::Train).unwrap_or_else(|e| panic!("{e}"));
        let mut config = Preset::Fast.config_for(Model::Lenet, train.len(), 7);
        config.steps = TRAIN_STEPS;
        config.schedule = Schedule::Constant;
        let mut tr = Trainer::<TrainLeNet>::new(config, &train, 2).unwrap();
        for _ in 0..TRAIN_STEPS {
            tr.step();
        }
        let p = tr.params();
        let folded = TrainLeNet::fold(p);
        let int8 = quantize::quantize::<TrainLeNet>(
            p,
            &train.images[..1000],
            quantize::Calibration::MinMax,
        )
        .expect("quantizing the trained model");
        eprintln!(
            "trained LeNet-BN for {TRAIN_STEPS} steps in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut params: Box<LeNetParams> = bytemuck::zeroed_box();
        *params = *p;
        Trained {
            params,
            folded,
            int8,
        }
    })
}

/// Training images the wide CNN's readout is fitted on and its activations calibrated on.
pub const WIDE_FIT_IMAGES: usize = 2000;

/// A wide CNN that classifies, in the two forms the host has for it, built without training
/// (seconds instead of the minutes a wide training run takes).
pub struct WideModel {
    /// BN-folded f32 weights: He-uniform random convolutions and fc1, fc2 fitted.
    pub folded: Box<WideFoldedParams>,
    /// Their int8 quantization.
    pub int8: Box<WideQParams>,
}

/// Builds [`WideModel`] once per process, deterministically (an LCG, fixed images):
///
/// 1. conv1, conv2 and fc1 are He-uniform random f32 (random features: ReLU and pooling keep
///    them informative), biases small;
/// 2. fc2 is the ridge-regression fit of one-hot labels on the fc1 activations of
///    [`WIDE_FIT_IMAGES`] evenly spaced training images (f64 normal equations, Cholesky);
/// 3. activation ranges are the min/max over those images of the f32 forward pass
///    (`fmnist_core::wide::Wide`), and fmnist-train's quantizer
///    (`quantize::quantize_wide_with_ranges`: weights symmetric per channel, activations per
///    tensor, zero-point-folded int32 biases, TFLite multipliers, `WideQParams::check`) makes
///    the int8 model.
///
/// Its int8 test accuracy is around 80 %: logits spread over the int8 range and every class
/// is predicted, which a purely random int8 model does not do (its ReLUs clamp, one class wins).
pub fn wide_model() -> &'static WideModel {
    static MODEL: OnceLock<WideModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        use fmnist_infer::data;
        let t = Instant::now();
        let dir = data::locate(None).unwrap_or_else(|e| panic!("{e}"));
        let train = data::load(&dir, data::Split::Train).unwrap_or_else(|e| panic!("{e}"));
        let step = train.len() / WIDE_FIT_IMAGES;
        let fit: Vec<usize> = (0..WIDE_FIT_IMAGES).map(|i| i * step).collect();

        let mut r = Lcg(0x3a1d_e001);
        let mut f: Box<WideFoldedParams> = bytemuck::zeroed_box();
        let mut fill = |xs: &mut [f32], fan_in: usize, scale: f32| {
            let a = scale * (6.0 / fan_in as f32).sqrt();
            xs.iter_mut().for_each(|x| *x = r.uniform(a));
        };
        fill(bytemuck::cast_slice_mut(&mut f.conv1_weight), 9, 1.0);
        fill(&mut f.conv1_bias, 9, 0.1);
        fill(bytemuck::cast_slice_mut(&mut f.conv2_weight), 288, 1.0);
        fill(&mut f.conv2_bias, 288, 0.1);
        fill(f.fc1_weight.as_flattened_mut(), WIDE_FLAT, 1.0);
        fill(&mut f.fc1_bias, WIDE_FLAT, 0.1);

        // fc1 activations and the ranges of pool1, pool2 and fc1, in two threads.
        struct Part {
            h: Vec<[f32; WIDE_HIDDEN]>,
            max: [f32; 3],
        }
        let net = fmnist_core::wide::Wide::from(&*f);
        let run = |idx: &[usize]| {
            let mut part = Part {
                h: Vec::with_capacity(idx.len()),
                max: [0.0; 3],
            };
            for &i in idx {
                let t = Box::new(net.trace(&train.images[i]));
                let m = |xs: &[f32], m: f32| xs.iter().fold(m, |m, &x| m.max(x));
                part.max[0] = m(t.pool1.as_flattened().as_flattened(), part.max[0]);
                part.max[1] = m(&t.flat, part.max[1]);
                part.max[2] = m(&t.fc1, part.max[2]);
                part.h.push(t.fc1);
            }
            part
        };
        let (a, b) = fit.split_at(fit.len() / 2);
        let parts = std::thread::scope(|s| {
            let ha = s.spawn(|| run(a));
            let hb = s.spawn(|| run(b));
            [ha.join().unwrap(), hb.join().unwrap()]
        });
        let max: [f32; 3] = std::array::from_fn(|k| parts[0].max[k].max(parts[1].max[k]));
        let h: Vec<&[f32; WIDE_HIDDEN]> = parts.iter().flat_map(|p| &p.h).collect();

        // Ridge regression of one-hot labels on [h, 1].
        const N: usize = WIDE_HIDDEN + 1;
        let mut g = vec![0f64; N * N];
        let mut hy = vec![[0f64; 10]; N];
        let mut row = [0f64; N];
        for (hi, &i) in h.iter().zip(&fit) {
            for (d, &v) in row.iter_mut().zip(hi.iter()) {
                *d = v as f64;
            }
            row[N - 1] = 1.0;
            for j in 0..N {
                if row[j] != 0.0 {
                    for k in j..N {
                        g[j * N + k] += row[j] * row[k];
                    }
                    hy[j][train.labels[i] as usize] += row[j];
                }
            }
        }
        let mean_diag = (0..N).map(|j| g[j * N + j]).sum::<f64>() / N as f64;
        for j in 0..N {
            g[j * N + j] += 1e-3 * mean_diag;
            for k in 0..j {
                g[j * N + k] = g[k * N + j];
            }
        }
        let w = solve_spd(&mut g, &hy);
        for (c, (row, bias)) in f.fc2_weight.iter_mut().zip(&mut f.fc2_bias).enumerate() {
            for (d, wj) in row.iter_mut().zip(&w) {
                *d = wj[c] as f32;
            }
            *bias = w[N - 1][c] as f32;
        }
        let (mut lo, mut hi) = (0f32, 0f32);
        for hi_row in &h {
            for c in 0..10 {
                let z =
                    (0..WIDE_HIDDEN).fold(f.fc2_bias[c], |z, j| z + hi_row[j] * f.fc2_weight[c][j]);
                lo = lo.min(z);
                hi = hi.max(z);
            }
        }

        use fmnist_train::quantize::{ActQuant, WideActRanges, quantize_wide_with_ranges};
        let ranges = WideActRanges {
            conv1: ActQuant::from_range(0.0, max[0]),
            conv2: ActQuant::from_range(0.0, max[1]),
            fc1: ActQuant::from_range(0.0, max[2]),
            fc2: ActQuant::from_range(lo, hi),
        };
        let int8 = quantize_wide_with_ranges(&f, &ranges).expect("quantizing the wide CNN");
        eprintln!(
            "built the wide CNN (random features, fitted readout) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        WideModel { folded: f, int8 }
    })
}
