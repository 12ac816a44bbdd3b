//! LeNet-BN's training step: the batch cut into chunks of [`CHUNK`] images that run in
//! parallel, every cross-chunk sum (batch-norm statistics, gradients) reduced in chunk order;
//! and what its checkpoint holds ([`TrainState`]).

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use fmnist_core::lenet::LeNetParams;

use crate::lenet::kernels::{CHUNK, Chunk, Targets};
use crate::shared::config::TrainConfig;
use crate::shared::kernels::{BnBatch, reduce_sums};
use crate::shared::net::{Batch, Measured};
use crate::shared::step::BN_MOMENTUM;

/// Everything needed to continue a run bit-identically (what a checkpoint holds).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// The recipe.
    pub config: TrainConfig,
    /// Steps done.
    pub step: u64,
    /// Parameters and running statistics, `LeNetParams` as f32 in field order.
    pub params: Vec<f32>,
    /// Momentum buffers, same layout.
    pub momentum: Vec<f32>,
    /// The data-order RNG.
    pub rng: ChaCha8Rng,
    /// The current epoch's permutation of the training set.
    pub order: Vec<u32>,
    /// Position in `order` of the next batch.
    pub cursor: usize,
    /// Seconds spent in optimizer steps so far.
    pub train_seconds: f64,
}

impl std::fmt::Debug for TrainState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainState")
            .field("config", &self.config)
            .field("step", &self.step)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// Index ranges (in f32 units) of `LeNetParams` that hold trainable parameters: all but the
/// running statistics.
pub fn trainable_ranges() -> [std::ops::Range<usize>; 3] {
    let f = size_of::<f32>();
    let bn1 = std::mem::offset_of!(LeNetParams, bn1) / f;
    let bn2 = std::mem::offset_of!(LeNetParams, bn2) / f;
    let total = size_of::<LeNetParams>() / f;
    // Within BnParams<C>: gamma, beta (trainable), running_mean, running_var (not).
    [0..bn1 + 12, bn1 + 24..bn2 + 32, bn2 + 64..total]
}

/// The step's workspace: the chunks and the batch's gradient.
pub struct Work {
    chunks: Vec<Chunk>,
    grads: Box<LeNetParams>,
}

impl Work {
    /// For batches of up to `batch` images.
    pub fn new(batch: usize) -> Self {
        Work {
            chunks: (0..batch.div_ceil(CHUNK))
                .map(|_| Chunk::default())
                .collect(),
            grads: bytemuck::zeroed_box(),
        }
    }

    /// The gradient of the last step.
    pub fn grads(&self) -> &LeNetParams {
        &self.grads
    }
}

/// The batch-norm statistics of one step.
pub type BnStats = (BnBatch<6>, BnBatch<16>);

/// Forward and backward over `batch`: the gradient of the mean loss into `work.grads`.
pub fn forward_backward(
    work: &mut Work,
    p: &LeNetParams,
    batch: &Batch<'_>,
    pool: &rayon::ThreadPool,
) -> Measured<BnStats> {
    let (images, labels, soft) = (batch.images, batch.labels, batch.soft);
    let b = images.len();
    let nchunks = b.div_ceil(CHUNK);
    let targets = Targets {
        batch: b,
        smoothing: batch.config.label_smoothing,
        distill: batch.config.distill,
    };
    let chunks = &mut work.chunks[..nchunks];

    pool.install(|| {
        chunks.par_iter_mut().enumerate().for_each(|(ci, ch)| {
            let r = ci * CHUNK..((ci + 1) * CHUNK).min(b);
            bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *ch.grads))
                .fill(0.0);
            if !soft.is_empty() {
                ch.set_soft_targets(&soft[r.clone()]);
            }
            ch.conv1(p, &images[r.clone()], &labels[r]);
        })
    });
    let (s, q) = reduce_sums::<_, 6, 16>(chunks, |c| &c.sums);
    let bn1 = BnBatch::<6>::from_sums(&s, &q, b * 784);
    pool.install(|| chunks.par_iter_mut().for_each(|ch| ch.conv2(p, &bn1)));
    let (s, q) = reduce_sums::<_, 16, 16>(chunks, |c| &c.sums);
    let bn2 = BnBatch::<16>::from_sums(&s, &q, b * 100);
    pool.install(|| {
        chunks
            .par_iter_mut()
            .for_each(|ch| ch.head(p, &bn2, Some(targets)))
    });
    let (dsum2, dxsum2) = reduce_sums::<_, 16, 16>(chunks, |c| &c.sums);
    pool.install(|| {
        chunks
            .par_iter_mut()
            .for_each(|ch| ch.back_conv2(p, &bn1, &bn2, &dsum2, &dxsum2))
    });
    let (dsum1, dxsum1) = reduce_sums::<_, 6, 16>(chunks, |c| &c.sums);
    pool.install(|| {
        chunks
            .par_iter_mut()
            .for_each(|ch| ch.back_conv1(p, &bn1, &dsum1, &dxsum1))
    });

    // Gradients: the sum over chunks, in chunk order.
    let g = bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *work.grads));
    g.fill(0.0);
    for ch in chunks.iter() {
        let cg = bytemuck::cast_slice::<LeNetParams, f32>(std::slice::from_ref(&*ch.grads));
        for (a, &c) in g.iter_mut().zip(cg) {
            *a += c;
        }
    }
    let (loss, correct) = chunks
        .iter()
        .fold((0.0, 0), |(l, c), ch| (l + ch.loss, c + ch.correct));
    let grads = &mut *work.grads;
    for c in 0..6 {
        grads.bn1.gamma[c] = dxsum1[c] as f32;
        grads.bn1.beta[c] = dsum1[c] as f32;
    }
    for c in 0..16 {
        grads.bn2.gamma[c] = dxsum2[c] as f32;
        grads.bn2.beta[c] = dsum2[c] as f32;
    }
    Measured {
        loss,
        correct,
        bn: (bn1, bn2),
    }
}

/// Moves the running statistics towards the batch's (PyTorch's momentum).
pub fn update_running(p: &mut LeNetParams, (bn1, bn2): &BnStats) {
    let m = 1.0 - BN_MOMENTUM;
    for c in 0..6 {
        p.bn1.running_mean[c] = m * p.bn1.running_mean[c] + BN_MOMENTUM * bn1.mean[c];
        p.bn1.running_var[c] = m * p.bn1.running_var[c] + BN_MOMENTUM * bn1.var_unbiased[c];
    }
    for c in 0..16 {
        p.bn2.running_mean[c] = m * p.bn2.running_mean[c] + BN_MOMENTUM * bn2.mean[c];
        p.bn2.running_var[c] = m * p.bn2.running_var[c] + BN_MOMENTUM * bn2.var_unbiased[c];
    }
}
