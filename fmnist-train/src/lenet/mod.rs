//! LeNet-BN, as the trainer sees it: its batched f32 kernels, init and evaluation
//! (`kernels.rs`), its training step and checkpoint payload (`train.rs`), its BN fold,
//! calibration and quantization (`quant.rs`), and here its [`TrainNet`] implementation.

pub mod kernels;
pub mod quant;
pub mod train;

use std::time::Instant;

use fmnist_core::lenet::LeNetParams;
use fmnist_core::network::Network;
use fmnist_core::quant::LeNetQParams;
use fmnist_core::registry::LeNetBn;
use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use crate::shared::augment::Augment;
use crate::shared::bench::{BenchError, BenchReport, median};
use crate::shared::config::{
    Conv, Model, Optimizer, Preset, Schedule, SgdConfig, TrainConfig, check_batch, steps_per_epoch,
};
use crate::shared::kernels::Evaluation;
use crate::shared::net::{Batch, Measured, RunState, TrainNet};
use crate::shared::optim::Momentum;
use crate::shared::quant::{Calibration, QuantizeError};
use crate::shared::trainer::Trainer;

/// LeNet-BN, trained with momentum SGD.
#[derive(Clone, Copy, Debug)]
pub enum TrainLeNet {}

impl TrainNet for TrainLeNet {
    type Core = LeNetBn;
    type Optim = Momentum;
    type Work = train::Work;
    type BnStats = train::BnStats;
    type Saved = train::TrainState;

    const MODEL: Model = Model::Lenet;
    const CONVS: &'static [Conv] = &[Conv::Direct];

    fn preset(preset: Preset, n: usize, seed: u64) -> TrainConfig {
        match preset {
            Preset::Original => TrainConfig {
                model: Model::Lenet,
                batch: 64,
                steps: 5_000,
                optimizer: Optimizer::Sgd(SgdConfig {
                    lr: 0.0005,
                    momentum: 0.9,
                    weight_decay: 0.0,
                    decoupled_decay: 0.0,
                }),
                schedule: Schedule::Constant,
                checkpoint_every: 1_000,
                seed,
                augment: Augment::default(),
                label_smoothing: 0.0,
                distill: None,
                conv: Conv::Direct,
            },
            // The two tuned recipes differ only in length.
            Preset::Default => cosine_recipe(n, 20, seed),
            Preset::Fast => cosine_recipe(n, 7, seed),
        }
    }

    fn check_conv(conv: Conv) -> Result<(), String> {
        match conv {
            Conv::Direct => Ok(()),
            c => Err(format!(
                "conv {} is for the wide CNN (--model wide); LeNet-BN takes only --conv direct",
                c.name()
            )),
        }
    }

    /// Training with the `default` preset and evaluation, medians of the timed windows.
    fn bench(
        train: &Dataset,
        test: &Dataset,
        steps: u64,
        repeats: usize,
        threads: usize,
    ) -> Result<BenchReport, BenchError> {
        let (batch, tr, ev) = throughput(train, test, steps, repeats, threads)?;
        Ok(BenchReport {
            json: serde_json::json!({"threads": threads, "batch": batch, "train_images_per_second": tr, "eval_images_per_second": ev, "repeats": repeats, "steps_per_repeat": steps}),
            text: vec![
                format!(
                    "threads {threads}, batch {batch}: training {tr:.0} images/s, evaluation {ev:.0} images/s (median of {repeats})"
                ),
                "PyTorch on this machine, in the same run: python3 scripts/bench_pytorch.py --model lenet (needs PyTorch); the original NumPy code: ~205 images/s".into(),
            ],
        })
    }

    fn init(seed: u64) -> Box<LeNetParams> {
        kernels::init_params(seed)
    }

    fn trainable_ranges() -> [std::ops::Range<usize>; 3] {
        train::trainable_ranges()
    }

    fn workspace(batch: usize) -> train::Work {
        train::Work::new(batch)
    }

    fn forward_backward(
        work: &mut train::Work,
        p: &LeNetParams,
        batch: &Batch<'_>,
        pool: &rayon::ThreadPool,
    ) -> Measured<train::BnStats> {
        train::forward_backward(work, p, batch, pool)
    }

    fn gradient(work: &train::Work) -> &LeNetParams {
        work.grads()
    }

    fn update_running(p: &mut LeNetParams, bn: &train::BnStats) {
        train::update_running(p, bn)
    }

    fn evaluate(p: &LeNetParams, data: &Dataset, pool: &rayon::ThreadPool) -> Evaluation {
        kernels::evaluate_with(p, data, pool)
    }

    fn fold(p: &LeNetParams) -> Box<<LeNetBn as Network>::Folded> {
        quant::fold_batch_norm(p)
    }

    fn calibrate_and_quantize(
        f: &<LeNetBn as Network>::Folded,
        images: &[[u8; 784]],
        method: Calibration,
    ) -> Result<Box<LeNetQParams>, QuantizeError> {
        let ranges = quant::calibrate(f, images, method)?;
        quant::quantize_with_ranges(f, &ranges)
    }

    fn layer_table() -> Vec<(&'static str, &'static str, usize)> {
        let p: Box<LeNetParams> = bytemuck::zeroed_box();
        let n = |s: usize| s / 4;
        vec![
            (
                "conv1 (Conv2d 1→6, 5x5, pad 2)",
                "[6, 28, 28]",
                n(size_of_val(&p.conv1_weight) + size_of_val(&p.conv1_bias)),
            ),
            (
                "bn1 (BatchNorm2d)",
                "[6, 28, 28]",
                n(size_of_val(&p.bn1.gamma) + size_of_val(&p.bn1.beta)),
            ),
            ("relu1 + maxpool1 (2x2)", "[6, 14, 14]", 0),
            (
                "conv2 (Conv2d 6→16, 5x5)",
                "[16, 10, 10]",
                n(size_of_val(&p.conv2_weight) + size_of_val(&p.conv2_bias)),
            ),
            (
                "bn2 (BatchNorm2d)",
                "[16, 10, 10]",
                n(size_of_val(&p.bn2.gamma) + size_of_val(&p.bn2.beta)),
            ),
            ("relu2 + maxpool2 (2x2)", "[16, 5, 5]", 0),
            ("flatten", "[400]", 0),
            (
                "fc1 (Linear 400→120) + ReLU",
                "[120]",
                n(size_of_val(&p.fc1_weight) + size_of_val(&p.fc1_bias)),
            ),
            (
                "fc2 (Linear 120→84) + ReLU",
                "[84]",
                n(size_of_val(&p.fc2_weight) + size_of_val(&p.fc2_bias)),
            ),
            (
                "fc3 (Linear 84→10)",
                "[10]",
                n(size_of_val(&p.fc3_weight) + size_of_val(&p.fc3_bias)),
            ),
        ]
    }

    fn save(run: &RunState<Self>) -> train::TrainState {
        train::TrainState {
            config: run.config,
            step: run.step,
            params: run.params.clone(),
            momentum: run.optim.v.clone(),
            rng: run.rng.clone(),
            order: run.order.clone(),
            cursor: run.cursor,
            train_seconds: run.train_seconds,
        }
    }

    fn restore(s: train::TrainState) -> Result<RunState<Self>, String> {
        Ok(RunState {
            config: s.config,
            step: s.step,
            params: s.params,
            optim: Momentum { v: s.momentum },
            rng: s.rng,
            order: s.order,
            cursor: s.cursor,
            train_seconds: s.train_seconds,
        })
    }
}

/// `epochs` of batch 64, cosine from lr 0.05 after half an epoch of warm-up, L2 1e-3, a
/// checkpoint every epoch.
fn cosine_recipe(n: usize, epochs: u64, seed: u64) -> TrainConfig {
    let epoch = steps_per_epoch(n, 64);
    TrainConfig {
        model: Model::Lenet,
        batch: 64,
        steps: epochs * epoch,
        optimizer: Optimizer::Sgd(SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-3,
            decoupled_decay: 0.0,
        }),
        schedule: Schedule::Cosine {
            warmup_steps: epoch / 2,
            final_fraction: 0.0,
        },
        checkpoint_every: epoch,
        seed,
        augment: Augment::default(),
        label_smoothing: 0.0,
        distill: None,
        conv: Conv::Direct,
    }
}

/// (images per step, training images/s, evaluation images/s): LeNet-BN's training (the `default` preset) and evaluation throughput, median of `repeats`
/// timed windows of `steps` steps (and of one pass over `test`) each.
fn throughput(
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
) -> Result<(usize, f64, f64), BenchError> {
    let mut cfg = TrainLeNet::preset(Preset::Default, train.len(), 1);
    cfg.steps = u64::MAX;
    check_batch(cfg.batch, train.len()).map_err(BenchError::Batch)?;
    let mut t = Trainer::<TrainLeNet>::new(cfg, train, threads).map_err(BenchError::Start)?;
    for _ in 0..20 {
        t.step(); // warm-up
    }
    let mut train_rates = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        for _ in 0..steps {
            t.step();
        }
        train_rates.push(steps as f64 * cfg.batch as f64 / t0.elapsed().as_secs_f64());
    }
    let pool = thread_pool(threads).map_err(BenchError::Pool)?;
    let mut eval_rates = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        TrainLeNet::evaluate(t.params(), test, &pool);
        eval_rates.push(test.len() as f64 / t0.elapsed().as_secs_f64());
    }
    Ok((cfg.batch, median(train_rates), median(eval_rates)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuned_presets_differ_only_in_length() {
        let (d, f) = (
            TrainLeNet::preset(Preset::Default, 60_000, 1),
            TrainLeNet::preset(Preset::Fast, 60_000, 1),
        );
        assert_eq!((d.steps, f.steps), (20 * 938, 7 * 938));
        assert_eq!(TrainConfig { steps: 0, ..d }, TrainConfig { steps: 0, ..f });
        assert_eq!(
            d.optimizer,
            Optimizer::Sgd(SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 1e-3,
                decoupled_decay: 0.0
            })
        );
        assert_eq!(
            d.schedule,
            Schedule::Cosine {
                warmup_steps: 469,
                final_fraction: 0.0
            }
        );
    }

    #[test]
    fn original_preset_is_the_report_procedure() {
        let c = TrainLeNet::preset(Preset::Original, 60_000, 1);
        assert_eq!((c.batch, c.steps, c.checkpoint_every), (64, 5_000, 1_000));
        assert_eq!(
            c.optimizer,
            Optimizer::Sgd(SgdConfig {
                lr: 0.0005,
                momentum: 0.9,
                weight_decay: 0.0,
                decoupled_decay: 0.0
            })
        );
    }
}
