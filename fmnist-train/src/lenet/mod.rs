//! LeNet-BN, as the trainer sees it: its batched f32 kernels, init and evaluation
//! (`kernels.rs`), its training step and checkpoint payload (`train.rs`), its BN fold,
//! calibration and quantization (`quant.rs`), and here its [`TrainNet`] implementation.

pub mod kernels;
pub mod quant;
pub mod train;

use fmnist_core::lenet::LeNetParams;
use fmnist_core::network::Network;
use fmnist_core::quant::LeNetQParams;
use fmnist_core::registry::LeNetBn;
use fmnist_infer::data::Dataset;

use crate::shared::config::Model;
use crate::shared::kernels::Evaluation;
use crate::shared::net::{Batch, Measured, RunState, TrainNet};
use crate::shared::optim::Momentum;
use crate::shared::quant::{Calibration, QuantizeError};

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
