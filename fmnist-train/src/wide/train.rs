//! Training the wide CNN with Adam: parameters, moments, data order, one optimizer step,
//! evaluation, and the serialisable state that resumes a run bit-identically.
//!
//! Determinism: the same seed gives the same bytes whatever the thread count. The convolutional
//! part runs in fixed chunks of [`CHUNK`] images whose partial sums are reduced in chunk order;
//! the dense part runs as whole-batch GEMMs cut into fixed blocks (see [`crate::wide_nn`]);
//! dropout masks come from a counter-based hash of (seed, step, position in the batch); the Adam
//! update is element-wise.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::wide::{WIDE_FLAT, WideParams};
use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use crate::distill::TeacherTargets;
use crate::shared::augment::Augment;
use crate::shared::config::{Conv, Schedule};
use crate::shared::kernels::{BnBatch, Evaluation};
use crate::shared::step::{BN_MOMENTUM, StartError, StepStats};
use crate::wide::kernels::{Arith, CHUNK, Head, WideChunk, evaluate_wide, init_wide_params};

pub use crate::shared::config::AdamConfig;

/// Everything needed to continue a wide-CNN run bit-identically (what a checkpoint holds).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct WideState {
    /// The optimizer.
    pub adam: AdamConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Images per step.
    pub batch: usize,
    /// Total optimizer steps of the run (for the schedule).
    pub steps: u64,
    /// Seed of initialisation, data order and dropout.
    pub seed: u64,
    /// Steps done.
    pub step: u64,
    /// Parameters and running statistics, `WideParams` as f32 in field order.
    pub params: Vec<f32>,
    /// Adam's first moments, same layout (0 at the running statistics).
    pub m: Vec<f32>,
    /// Adam's second moments, same layout.
    pub v: Vec<f32>,
    /// The data-order RNG.
    pub rng: ChaCha8Rng,
    /// The current epoch's permutation of the training set.
    pub order: Vec<u32>,
    /// Position in `order` of the next batch.
    pub cursor: usize,
    /// Seconds spent in optimizer steps so far.
    pub train_seconds: f64,
}

impl std::fmt::Debug for WideState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WideState")
            .field("adam", &self.adam)
            .field("schedule", &self.schedule)
            .field("batch", &self.batch)
            .field("steps", &self.steps)
            .field("seed", &self.seed)
            .field("step", &self.step)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// f32 values in `WideParams`.
const LEN: usize = size_of::<WideParams>() / 4;

/// Index ranges (in f32 units) of `WideParams` that hold trainable parameters: all but the
/// running statistics.
pub fn wide_trainable_ranges() -> [std::ops::Range<usize>; 3] {
    let bn1 = std::mem::offset_of!(WideParams, bn1) / 4;
    let bn2 = std::mem::offset_of!(WideParams, bn2) / 4;
    // Within BnParams<C>: gamma, beta (trainable), running_mean, running_var (not).
    [0..bn1 + 64, bn1 + 128..bn2 + 128, bn2 + 256..LEN]
}

fn flat(p: &WideParams) -> &[f32] {
    bytemuck::cast_slice(std::slice::from_ref(p))
}

fn flat_mut(p: &mut WideParams) -> &mut [f32] {
    bytemuck::cast_slice_mut(std::slice::from_mut(p))
}

/// A wide-CNN training run in memory.
pub struct WideTrainer<'d> {
    adam: AdamConfig,
    schedule: Schedule,
    batch: usize,
    steps: u64,
    seed: u64,
    step: u64,
    params: Box<WideParams>,
    m: Vec<f32>,
    v: Vec<f32>,
    rng: ChaCha8Rng,
    order: Vec<u32>,
    cursor: usize,
    train_seconds: f64,
    grads: Box<WideParams>,
    chunks: Vec<WideChunk>,
    head: Head,
    images: Vec<[u8; IMAGE_PIXELS]>,
    labels: Vec<u8>,
    indices: Vec<u32>,
    augment: Augment,
    teacher: Option<TeacherTargets>,
    /// How conv2 is computed.
    conv: Conv,
    pool: rayon::ThreadPool,
    train: &'d Dataset,
    stage_seconds: [f64; 8],
}

/// Σ over chunks, in chunk order, of the first `C` of their two per-channel sums.
fn reduce_sums<const C: usize>(chunks: &[WideChunk]) -> ([f64; C], [f64; C]) {
    let (mut s, mut q) = ([0.0; C], [0.0; C]);
    for ch in chunks {
        for c in 0..C {
            s[c] += ch.sums[0][c];
            q[c] += ch.sums[1][c];
        }
    }
    (s, q)
}

/// Adds `src` into `dst` element by element.
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (a, &b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

impl<'d> WideTrainer<'d> {
    /// A fresh run of `steps` optimizer steps with batches of `batch` images (refused when
    /// `train` is empty or `batch` is 0, or when the worker threads cannot start).
    pub fn new(
        adam: AdamConfig,
        schedule: Schedule,
        batch: usize,
        steps: u64,
        seed: u64,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        let params = init_wide_params(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(2);
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        order.shuffle(&mut rng);
        let state = WideState {
            adam,
            schedule,
            batch,
            steps,
            seed,
            step: 0,
            params: flat(&params).to_vec(),
            m: vec![0.0; LEN],
            v: vec![0.0; LEN],
            rng,
            order,
            cursor: 0,
            train_seconds: 0.0,
        };
        Self::resume(state, train, threads)
    }

    /// Continues from a saved state (checked against the model and the training set).
    pub fn resume(
        state: WideState,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        if state.params.len() != LEN || state.m.len() != LEN || state.v.len() != LEN {
            return Err(format!(
                "holds {} parameters, the wide CNN has {LEN}",
                state.params.len()
            )
            .into());
        }
        if train.is_empty() {
            return Err("the training set is empty".into());
        }
        if state.batch == 0 {
            return Err("batch size 0".into());
        }
        if state.order.len() != train.len() || state.cursor > train.len() {
            return Err(format!(
                "was made for a training set of {} images, this one has {}",
                state.order.len(),
                train.len()
            )
            .into());
        }
        if state.order.iter().any(|&i| i as usize >= train.len()) {
            return Err("data order points past the training set".into());
        }
        let pool = thread_pool(threads)?;
        let mut params: Box<WideParams> = bytemuck::zeroed_box();
        flat_mut(&mut params).copy_from_slice(&state.params);
        let batch = state.batch.min(train.len()).max(1);
        Ok(WideTrainer {
            adam: state.adam,
            schedule: state.schedule,
            batch: state.batch,
            steps: state.steps,
            seed: state.seed,
            step: state.step,
            params,
            m: state.m,
            v: state.v,
            rng: state.rng,
            order: state.order,
            cursor: state.cursor,
            train_seconds: state.train_seconds,
            grads: bytemuck::zeroed_box(),
            chunks: (0..batch.div_ceil(CHUNK))
                .map(|_| WideChunk::default())
                .collect(),
            head: Head::new(batch),
            images: Vec::with_capacity(batch),
            augment: Augment::default(),
            teacher: None,
            conv: Conv::Direct,
            labels: Vec::with_capacity(batch),
            indices: Vec::with_capacity(batch),
            pool,
            train,
            stage_seconds: [0.0; 8],
        })
    }

    /// The current parameters and running statistics.
    pub fn params(&self) -> &WideParams {
        &self.params
    }

    /// Steps done.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Seconds spent in optimizer steps so far.
    pub fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    /// Wall seconds spent so far in each stage of the optimizer steps (a profile).
    pub fn stage_seconds(&self) -> [(&'static str, f64); 8] {
        let names = [
            "conv1",
            "bn1 pool1 conv2",
            "bn2 pool2 dense forward",
            "dense backward",
            "bn2 backward sums",
            "conv2 backward",
            "conv1 backward",
            "adam",
        ];
        std::array::from_fn(|i| (names[i], self.stage_seconds[i]))
    }

    /// A copy of the run's state, to save in a checkpoint.
    pub fn state(&self) -> WideState {
        WideState {
            adam: self.adam,
            schedule: self.schedule,
            batch: self.batch,
            steps: self.steps,
            seed: self.seed,
            step: self.step,
            params: flat(&self.params).to_vec(),
            m: self.m.clone(),
            v: self.v.clone(),
            rng: self.rng.clone(),
            order: self.order.clone(),
            cursor: self.cursor,
            train_seconds: self.train_seconds,
        }
    }

    /// Loads the next batch into `images`/`labels`, reshuffling at the end of an epoch.
    fn next_batch(&mut self) {
        if self.cursor >= self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let end = (self.cursor + self.batch).min(self.order.len());
        let train = self.train;
        self.images.clear();
        self.labels.clear();
        self.indices.clear();
        self.indices
            .extend_from_slice(&self.order[self.cursor..end]);
        let mut rng = (!self.augment.is_off()).then(|| Augment::rng(self.seed, self.step));
        for &i in &self.order[self.cursor..end] {
            let image = &train.images[i as usize];
            self.images.push(match &mut rng {
                Some(rng) => self.augment.apply(image, rng),
                None => *image,
            });
            self.labels.push(train.labels[i as usize]);
        }
        self.cursor = end;
    }

    /// Forward and backward over the loaded batch: the gradient of the mean loss into `grads`
    /// (with dropout keyed by `dropout` = (seed, step), or none). Returns the batch statistics.
    fn compute_gradients(&mut self, dropout: Option<(u64, u64)>) -> (BnBatch<32>, BnBatch<64>) {
        let b = self.images.len();
        let nchunks = b.div_ceil(CHUNK);
        let images: Vec<&[u8; IMAGE_PIXELS]> = self.images.iter().collect();
        let images = &images[..];
        let labels = &self.labels[..];
        let p = &*self.params;
        let chunks = &mut self.chunks[..nchunks];
        // conv2's transformed weights, when Winograd: once per step, serially, before the
        // stages are timed (2,048 small transforms).
        let mut filters = None;
        let arith = Arith::new(self.conv, &p.conv2_weight, &mut filters);
        let head = &mut self.head;
        let grads = &mut *self.grads;
        let pool = &self.pool;
        let f = WIDE_FLAT;
        let stage = &mut self.stage_seconds;
        let mut t = std::time::Instant::now();
        let mut lap = |i: usize| {
            let now = std::time::Instant::now();
            stage[i] += (now - t).as_secs_f64();
            t = now;
        };

        pool.install(|| {
            chunks.par_iter_mut().enumerate().for_each(|(ci, ch)| {
                let r = ci * CHUNK..((ci + 1) * CHUNK).min(b);
                ch.conv1(p, &images[r], arith);
            })
        });
        let (s, q) = reduce_sums::<32>(chunks);
        let bn1 = BnBatch::<32>::from_sums(&s, &q, b * 28 * 28);
        lap(0);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .for_each(|ch| ch.conv2(p, &bn1, arith))
        });
        let (s, q) = reduce_sums::<64>(chunks);
        let bn2 = BnBatch::<64>::from_sums(&s, &q, b * 14 * 14);
        lap(1);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .zip(head.x.par_chunks_mut(CHUNK * f))
                .for_each(|(ch, x)| ch.pool2(p, &bn2, x));
            head.forward(p, b, labels, dropout);
        });
        lap(2);
        pool.install(|| head.backward(p, b, grads));
        lap(3);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .zip(head.dx.par_chunks(CHUNK * f))
                .for_each(|(ch, dx)| ch.bn2_sums(&bn2, dx));
        });
        let (dsum2, dxsum2) = reduce_sums::<64>(chunks);
        lap(4);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .zip(head.dx.par_chunks(CHUNK * f))
                .for_each(|(ch, dx)| ch.back_conv2(p, &bn1, &bn2, &dsum2, &dxsum2, dx, arith))
        });
        let (dsum1, dxsum1) = reduce_sums::<32>(chunks);
        lap(5);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .for_each(|ch| ch.back_conv1(p, &bn1, &dsum1, &dxsum1, arith))
        });

        lap(6);
        // Convolution gradients: the sum over chunks, in chunk order.
        let g = grads;
        g.conv1_weight = bytemuck::Zeroable::zeroed();
        g.conv1_bias = [0.0; 32];
        g.conv2_weight = bytemuck::Zeroable::zeroed();
        g.conv2_bias = [0.0; 64];
        for ch in chunks.iter() {
            add_into(bytemuck::cast_slice_mut(&mut g.conv1_weight), &ch.g_conv1_w);
            add_into(&mut g.conv1_bias, &ch.g_conv1_b);
            add_into(bytemuck::cast_slice_mut(&mut g.conv2_weight), &ch.g_conv2_w);
            add_into(&mut g.conv2_bias, &ch.g_conv2_b);
        }
        for c in 0..32 {
            g.bn1.gamma[c] = dxsum1[c] as f32;
            g.bn1.beta[c] = dsum1[c] as f32;
        }
        for c in 0..64 {
            g.bn2.gamma[c] = dxsum2[c] as f32;
            g.bn2.beta[c] = dsum2[c] as f32;
        }
        (bn1, bn2)
    }

    /// Sets the augmentation and label smoothing of the following steps (neither is part of
    /// [`WideState`]: the caller's recipe holds them).
    pub fn set_regularisation(&mut self, augment: Augment, label_smoothing: f32) {
        self.augment = augment;
        self.head.smoothing = label_smoothing;
    }

    /// Distils the following steps from `teacher` with `distill`'s weight and temperature
    /// (neither is part of [`WideState`]: the caller's recipe holds them), after checking they
    /// belong together. Call after [`WideTrainer::set_regularisation`]: without augmentation
    /// the soft targets are computed here, once, for the whole training set.
    pub fn set_teacher(
        &mut self,
        teacher: crate::distill::Teacher,
        distill: crate::shared::config::Distill,
    ) -> Result<(), String> {
        let augmented = !self.augment.is_off();
        self.teacher = Some(TeacherTargets::new(
            teacher, distill, self.train, augmented, &self.pool,
        )?);
        self.head.distill = Some(distill);
        Ok(())
    }

    /// Computes conv2 of the following steps by `conv` (im2col + GEMM until this is called).
    /// Not part of [`WideState`]: the caller's recipe holds it.
    pub fn set_conv(&mut self, conv: Conv) {
        self.conv = conv;
    }

    /// One optimizer step over the next batch.
    pub fn step(&mut self) -> StepStats {
        let t0 = std::time::Instant::now();
        self.next_batch();
        let b = self.images.len();
        if let Some(t) = &self.teacher {
            let soft = t.for_batch(&self.indices, &self.images, &self.labels, &self.pool);
            self.head.soft[..b * 10].copy_from_slice(soft.as_flattened());
        }
        let (bn1, bn2) = self.compute_gradients(Some((self.seed, self.step)));
        let (loss, correct) = (self.head.loss, self.head.correct);

        let t_adam = std::time::Instant::now();
        let a = self.adam;
        let lr = self.schedule.lr_at(a.lr, self.step, self.steps);
        let t = (self.step + 1) as i32;
        let bc1 = (1.0 - (a.beta1 as f64).powi(t)) as f32;
        let bc2_sqrt = ((1.0 - (a.beta2 as f64).powi(t)) as f32).sqrt();
        let step_size = lr / bc1;
        let decay = 1.0 - lr * a.decoupled_decay;
        {
            let w = flat_mut(&mut self.params);
            let g = flat(&self.grads);
            let (m, v) = (&mut self.m, &mut self.v);
            const BLOCK: usize = 1 << 15;
            self.pool.install(|| {
                for r in wide_trainable_ranges() {
                    w[r.clone()]
                        .par_chunks_mut(BLOCK)
                        .zip(m[r.clone()].par_chunks_mut(BLOCK))
                        .zip(v[r.clone()].par_chunks_mut(BLOCK))
                        .zip(g[r].par_chunks(BLOCK))
                        .for_each(|(((w, m), v), g)| {
                            for i in 0..w.len() {
                                let gi = g[i] + a.weight_decay * w[i];
                                let wi = w[i] * decay;
                                m[i] = a.beta1 * m[i] + (1.0 - a.beta1) * gi;
                                v[i] = a.beta2 * v[i] + (1.0 - a.beta2) * gi * gi;
                                let denom = v[i].sqrt() / bc2_sqrt + a.eps;
                                w[i] = wi - step_size * m[i] / denom;
                            }
                        });
                }
            });
        }
        self.stage_seconds[7] += t_adam.elapsed().as_secs_f64();
        let p = &mut *self.params;
        let k = 1.0 - BN_MOMENTUM;
        for c in 0..32 {
            p.bn1.running_mean[c] = k * p.bn1.running_mean[c] + BN_MOMENTUM * bn1.mean[c];
            p.bn1.running_var[c] = k * p.bn1.running_var[c] + BN_MOMENTUM * bn1.var_unbiased[c];
        }
        for c in 0..64 {
            p.bn2.running_mean[c] = k * p.bn2.running_mean[c] + BN_MOMENTUM * bn2.mean[c];
            p.bn2.running_var[c] = k * p.bn2.running_var[c] + BN_MOMENTUM * bn2.var_unbiased[c];
        }
        self.step += 1;
        self.train_seconds += t0.elapsed().as_secs_f64();
        StepStats {
            loss: loss / b as f64,
            accuracy: correct as f64 / b as f64,
            lr,
        }
    }

    /// Evaluation with the running statistics (no dropout): accuracy, mean loss and the logits
    /// of every image.
    pub fn evaluate(&mut self, data: &Dataset) -> Evaluation {
        evaluate_wide(&self.params, data, &self.pool)
    }
}

/// Training throughput of the two conv2 algorithms, measured in the same run: `windows`
/// windows of `steps` optimizer steps each (batch 128, default Adam) on `train` with `threads`
/// threads, after one warm-up step each, the two trainers taking turns window by window so
/// that both see the same machine. Returns the images/s of each window for im2col + GEMM and
/// for Winograd, and the seconds spent in each stage of the Winograd steps.
pub fn bench_wide(
    train: &Dataset,
    threads: usize,
    steps: usize,
    windows: usize,
) -> Result<WideBench, StartError> {
    let batch = 128;
    let total = steps
        .checked_mul(windows)
        .and_then(|n| n.checked_add(1))
        .ok_or("too many benchmark steps")? as u64;
    let trainer = |conv: Conv| -> Result<WideTrainer<'_>, StartError> {
        let mut t = WideTrainer::new(
            AdamConfig::default(),
            Schedule::Constant,
            batch,
            total,
            1,
            train,
            threads,
        )?;
        t.set_conv(conv);
        t.step();
        t.stage_seconds = [0.0; 8];
        Ok(t)
    };
    let mut pair = [trainer(Conv::Direct)?, trainer(Conv::Winograd)?];
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..windows {
        for (t, r) in pair.iter_mut().zip(&mut rates) {
            let t0 = std::time::Instant::now();
            let mut images = 0usize;
            for _ in 0..steps {
                t.step();
                images += t.images.len();
            }
            r.push(images as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let [direct, winograd] = rates;
    Ok(WideBench {
        direct,
        winograd,
        stages: pair[1].stage_seconds(),
    })
}

/// What [`bench_wide`] measured.
pub struct WideBench {
    /// Images/s of each window with conv2 by im2col + GEMM.
    pub direct: Vec<f64>,
    /// Images/s of each window with conv2 by Winograd F(2×2, 3×3).
    pub winograd: Vec<f64>,
    /// Seconds in each stage over the Winograd windows.
    pub stages: [(&'static str, f64); 8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Arithmetic the naive reference needs, for f32 and f64.
    trait Real:
        Copy
        + PartialOrd
        + From<f32>
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Mul<Output = Self>
        + std::ops::Div<Output = Self>
    {
        fn sqrt(self) -> Self;
        fn exp(self) -> Self;
        fn ln(self) -> Self;
    }
    impl Real for f32 {
        fn sqrt(self) -> Self {
            f32::sqrt(self)
        }
        fn exp(self) -> Self {
            f32::exp(self)
        }
        fn ln(self) -> Self {
            f32::ln(self)
        }
    }
    impl Real for f64 {
        fn sqrt(self) -> Self {
            f64::sqrt(self)
        }
        fn exp(self) -> Self {
            f64::exp(self)
        }
        fn ln(self) -> Self {
            f64::ln(self)
        }
    }

    fn off(field: usize) -> usize {
        field / 4
    }

    /// Naive 3x3 pad-1 convolution of `x` (`[cin][w][w]`) into `[cout][w][w]`.
    fn conv<T: Real>(
        x: &[T],
        cin: usize,
        cout: usize,
        w: usize,
        p: &[T],
        wo: usize,
        bo: usize,
    ) -> Vec<T> {
        let mut out = vec![T::from(0.0); cout * w * w];
        for o in 0..cout {
            for y in 0..w {
                for xx in 0..w {
                    let mut acc = p[bo + o];
                    for i in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (sy, sx) = (y + ky, xx + kx);
                                if sy == 0 || sx == 0 || sy > w || sx > w {
                                    continue;
                                }
                                acc = acc
                                    + p[wo + ((o * cin + i) * 3 + ky) * 3 + kx]
                                        * x[(i * w + sy - 1) * w + sx - 1];
                            }
                        }
                    }
                    out[(o * w + y) * w + xx] = acc;
                }
            }
        }
        out
    }

    /// Batch norm over images (`[c][w·w]` each) with batch or running statistics.
    fn bn<T: Real>(acts: &mut [Vec<T>], c: usize, plane: usize, p: &[T], o: usize, train: bool) {
        let eps = T::from(fmnist_core::lenet::BN_EPS);
        for ch in 0..c {
            let (mean, var) = if train {
                let n = T::from((acts.len() * plane) as f32);
                let mut s = T::from(0.0);
                for a in acts.iter() {
                    for &v in &a[ch * plane..][..plane] {
                        s = s + v;
                    }
                }
                let mean = s / n;
                let mut q = T::from(0.0);
                for a in acts.iter() {
                    for &v in &a[ch * plane..][..plane] {
                        q = q + (v - mean) * (v - mean);
                    }
                }
                (mean, q / n)
            } else {
                (p[o + 2 * c + ch], p[o + 3 * c + ch])
            };
            let (g, b) = (p[o + ch], p[o + c + ch]);
            let sd = (var + eps).sqrt();
            for a in acts.iter_mut() {
                for v in &mut a[ch * plane..][..plane] {
                    *v = (*v - mean) / sd * g + b;
                }
            }
        }
    }

    fn relu_pool<T: Real>(x: &[T], c: usize, w: usize) -> Vec<T> {
        let h = w / 2;
        let mut out = vec![T::from(0.0); c * h * h];
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..h {
                    let mut m = T::from(0.0);
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let v = x[(ch * w + 2 * y + dy) * w + 2 * xx + dx];
                        if v > m {
                            m = v;
                        }
                    }
                    out[(ch * h + y) * h + xx] = m;
                }
            }
        }
        out
    }

    fn dense<T: Real>(x: &[T], p: &[T], wo: usize, bo: usize, out: usize) -> Vec<T> {
        (0..out)
            .map(|o| {
                let mut acc = p[bo + o];
                for (i, &v) in x.iter().enumerate() {
                    acc = acc + p[wo + o * x.len() + i] * v;
                }
                acc
            })
            .collect()
    }

    /// The textbook forward of the wide CNN (no dropout) over `WideParams` as a flat slice of
    /// `T`: mean cross-entropy and the logits.
    fn naive<T: Real>(
        p: &[T],
        images: &[[u8; 784]],
        labels: &[u8],
        train: bool,
    ) -> (T, Vec<Vec<T>>) {
        let mut a1: Vec<Vec<T>> = images
            .iter()
            .map(|img| {
                let x: Vec<T> = img
                    .iter()
                    .map(|&v| T::from(fmnist_core::lenet::pixel_to_f32(v)))
                    .collect();
                conv(
                    &x,
                    1,
                    32,
                    28,
                    p,
                    off(offset_of!(WideParams, conv1_weight)),
                    off(offset_of!(WideParams, conv1_bias)),
                )
            })
            .collect();
        bn(&mut a1, 32, 784, p, off(offset_of!(WideParams, bn1)), train);
        let mut a2: Vec<Vec<T>> = a1
            .iter()
            .map(|a| {
                let x = relu_pool(a, 32, 28);
                conv(
                    &x,
                    32,
                    64,
                    14,
                    p,
                    off(offset_of!(WideParams, conv2_weight)),
                    off(offset_of!(WideParams, conv2_bias)),
                )
            })
            .collect();
        bn(&mut a2, 64, 196, p, off(offset_of!(WideParams, bn2)), train);
        let mut loss = T::from(0.0);
        let mut all = Vec::new();
        for (a, &y) in a2.iter().zip(labels) {
            let x = relu_pool(a, 64, 14);
            let h: Vec<T> = dense(
                &x,
                p,
                off(offset_of!(WideParams, fc1_weight)),
                off(offset_of!(WideParams, fc1_bias)),
                512,
            )
            .into_iter()
            .map(|v| if v > T::from(0.0) { v } else { T::from(0.0) })
            .collect();
            let l = dense(
                &h,
                p,
                off(offset_of!(WideParams, fc2_weight)),
                off(offset_of!(WideParams, fc2_bias)),
                10,
            );
            let mut m = l[0];
            for &v in &l {
                if v > m {
                    m = v;
                }
            }
            let mut s = T::from(0.0);
            for &v in &l {
                s = s + (v - m).exp();
            }
            loss = loss + (m + s.ln() - l[y as usize]);
            all.push(l);
        }
        (loss / T::from(images.len() as f32), all)
    }

    /// `n` pseudo-random images (smooth blobs plus noise) with labels 0..10.
    fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut images = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let mut img = [0u8; 784];
            let label = (crate::wide::kernels::dropout_bits(seed, 0, i, 99) % 10) as u8;
            for (k, px) in img.iter_mut().enumerate() {
                let (y, x) = ((k / 28) as f32, (k % 28) as f32);
                let r = crate::wide::kernels::dropout_bits(seed, 1, i, k);
                let blob = ((y - 4.0 - 2.0 * label as f32).powi(2) + (x - 14.0).powi(2)) < 40.0;
                *px = if blob {
                    150 + (r % 100) as u8
                } else {
                    (r % 60) as u8
                };
            }
            images.push(img);
            labels.push(label);
        }
        Dataset { images, labels }
    }

    /// The tensors of `WideParams` that are trained: (name, start, len).
    fn tensors() -> Vec<(&'static str, usize, usize)> {
        let bn1 = off(offset_of!(WideParams, bn1));
        let bn2 = off(offset_of!(WideParams, bn2));
        vec![
            (
                "conv1.weight",
                off(offset_of!(WideParams, conv1_weight)),
                288,
            ),
            ("conv1.bias", off(offset_of!(WideParams, conv1_bias)), 32),
            ("bn1.weight", bn1, 32),
            ("bn1.bias", bn1 + 32, 32),
            (
                "conv2.weight",
                off(offset_of!(WideParams, conv2_weight)),
                18_432,
            ),
            ("conv2.bias", off(offset_of!(WideParams, conv2_bias)), 64),
            ("bn2.weight", bn2, 64),
            ("bn2.bias", bn2 + 64, 64),
            (
                "fc1.weight",
                off(offset_of!(WideParams, fc1_weight)),
                1_605_632,
            ),
            ("fc1.bias", off(offset_of!(WideParams, fc1_bias)), 512),
            ("fc2.weight", off(offset_of!(WideParams, fc2_weight)), 5_120),
            ("fc2.bias", off(offset_of!(WideParams, fc2_bias)), 10),
        ]
    }

    #[test]
    fn tensors_cover_the_trainable_parameters() {
        let total: usize = tensors().iter().map(|t| t.2).sum();
        assert_eq!(total, fmnist_core::wide::WIDE_PARAMETERS);
        let ranges: usize = wide_trainable_ranges().iter().map(|r| r.len()).sum();
        assert_eq!(ranges, total);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for conv in [Conv::Direct, Conv::Winograd] {
            gradients_match_finite_differences_with(conv);
        }
    }

    fn gradients_match_finite_differences_with(conv: Conv) {
        // 10 images: two chunks (8 + 2), so the cross-chunk reductions are checked too.
        let data = synthetic(10, 7);
        let mut t = WideTrainer::new(
            AdamConfig::default(),
            Schedule::Constant,
            10,
            1,
            3,
            &data,
            2,
        )
        .unwrap();
        t.set_conv(conv);
        // Non-identity batch norm, so its parameters' gradients are checked in general.
        for c in 0..32 {
            t.params.bn1.gamma[c] = 1.0 + 0.02 * c as f32;
            t.params.bn1.beta[c] = 0.01 * c as f32 - 0.1;
        }
        for c in 0..64 {
            t.params.bn2.gamma[c] = 0.8 + 0.01 * c as f32;
            t.params.bn2.beta[c] = 0.05 - 0.002 * c as f32;
        }
        t.next_batch();
        t.compute_gradients(None);
        let images: Vec<[u8; 784]> = t.images.clone();
        let labels = t.labels.clone();
        let g = flat(&t.grads).to_vec();
        let mut w: Vec<f64> = flat(&t.params).iter().map(|&v| v as f64).collect();
        // The analytic loss is the f32 forward's; it must agree with the f64 reference.
        let (l64, _) = naive(&w, &images, &labels, true);
        assert!(
            (t.head.loss / 10.0 - l64).abs() < 1e-4,
            "{} vs {l64}",
            t.head.loss / 10.0
        );
        // Small: a ReLU or max-pool kink inside ±eps would bias the difference.
        let eps = 1e-6;
        for (name, start, len) in tensors() {
            let gs = &g[start..start + len];
            let gmax = gs.iter().fold(0.0f32, |a, &v| a.max(v.abs())) as f64;
            let biggest = (0..len)
                .max_by(|&a, &b| gs[a].abs().total_cmp(&gs[b].abs()))
                .unwrap();
            let picks = [biggest, (len * 7) / 13, (len * 11) / 17];
            for &k in &picks {
                let i = start + k;
                let keep = w[i];
                w[i] = keep + eps;
                let (lp, _) = naive(&w, &images, &labels, true);
                w[i] = keep - eps;
                let (lm, _) = naive(&w, &images, &labels, true);
                w[i] = keep;
                let fd = (lp - lm) / (2.0 * eps);
                let an = g[i] as f64;
                let tol = 5e-3 * fd.abs().max(an.abs()) + 1e-3 * gmax + 1e-6;
                assert!(
                    (an - fd).abs() <= tol,
                    "{conv:?} {name}[{k}]: analytic {an:e}, finite difference {fd:e}"
                );
            }
        }
    }

    #[test]
    fn eval_forward_matches_a_naive_implementation() {
        let data = synthetic(40, 11);
        let mut t = WideTrainer::new(
            AdamConfig::default(),
            Schedule::Constant,
            16,
            3,
            5,
            &data,
            2,
        )
        .unwrap();
        for _ in 0..3 {
            t.step();
        }
        // Running statistics moved away from identity.
        assert!(
            t.params
                .bn2
                .running_var
                .iter()
                .any(|&v| (v - 1.0).abs() > 1e-3)
        );
        let test = synthetic(21, 12);
        let e = t.evaluate(&test);
        let w: Vec<f32> = flat(&t.params).to_vec();
        let (loss, logits) = naive(&w, &test.images, &test.labels, false);
        let mut worst = 0.0f32;
        for (a, b) in e.logits.iter().zip(&logits) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs() / (1.0 + y.abs()));
            }
        }
        assert!(worst < 1e-4, "worst relative difference {worst}");
        assert!((e.loss - loss as f64).abs() < 1e-4);
    }

    /// A fresh run of 10 steps of batch 40 (seed 9).
    fn fresh(data: &Dataset, threads: usize) -> WideTrainer<'_> {
        WideTrainer::new(
            AdamConfig::default(),
            Schedule::Constant,
            40,
            10,
            9,
            data,
            threads,
        )
        .unwrap()
    }

    fn run(threads: usize, steps: usize, data: &Dataset, conv: Conv) -> WideState {
        let mut t = fresh(data, threads);
        t.set_conv(conv);
        for _ in 0..steps {
            t.step();
        }
        WideState {
            train_seconds: 0.0,
            ..t.state()
        }
    }

    #[test]
    fn same_bytes_for_any_thread_count() {
        // 100 images in batches of 40: an epoch boundary and a short batch within 4 steps.
        let data = synthetic(100, 13);
        let mut each = Vec::new();
        for conv in [Conv::Direct, Conv::Winograd] {
            let one = run(1, 4, &data, conv);
            assert!(one == run(2, 4, &data, conv), "{conv:?}");
            assert!(one == run(3, 4, &data, conv), "{conv:?}");
            assert_ne!(one.params, run(1, 3, &data, conv).params);
            each.push(one);
        }
        // Winograd rounds differently: the two algorithms really are two code paths.
        assert_ne!(each[0].params, each[1].params);
    }

    #[test]
    fn distilled_runs_stay_thread_independent_and_resume_bit_identically() {
        use crate::distill::Teacher;
        use crate::weights::TrainedWeights;
        let data = synthetic(100, 13);
        let teacher = || {
            Teacher::from_weights(vec![TrainedWeights::Lenet(
                crate::lenet::kernels::init_params(4),
            )])
        };
        let distill = teacher().recipe(0.8, 2.0);
        for augment in [
            Augment::default(),
            Augment {
                flip: true,
                shift: 1,
                ..Augment::default()
            },
        ] {
            let start = |threads: usize| {
                let mut t = fresh(&data, threads);
                t.set_regularisation(augment, 0.0);
                t.set_teacher(teacher(), distill).unwrap();
                t
            };
            let state = |t: &WideTrainer| WideState {
                train_seconds: 0.0,
                ..t.state()
            };
            let mut a = start(1);
            let mut b = start(2);
            for _ in 0..4 {
                a.step();
                b.step();
            }
            assert!(state(&a) == state(&b), "thread count changed the weights");
            let mut plain = fresh(&data, 1);
            plain.set_regularisation(augment, 0.0);
            for _ in 0..4 {
                plain.step();
            }
            assert_ne!(
                state(&a).params,
                state(&plain).params,
                "the teacher is ignored"
            );

            let mut first = start(2);
            first.step();
            first.step();
            let mut resumed = WideTrainer::resume(first.state(), &data, 1).unwrap();
            resumed.set_regularisation(augment, 0.0);
            resumed.set_teacher(teacher(), distill).unwrap();
            resumed.step();
            resumed.step();
            assert!(state(&resumed) == state(&a), "resume changed the weights");
        }
    }

    #[test]
    fn resume_is_bit_identical() {
        let data = synthetic(100, 13);
        for conv in [Conv::Direct, Conv::Winograd] {
            let straight = run(2, 5, &data, conv);
            let mut t = fresh(&data, 2);
            t.set_conv(conv);
            t.step();
            t.step();
            let bytes = postcard::to_allocvec(&t.state()).unwrap();
            drop(t);
            let state: WideState = postcard::from_bytes(&bytes).unwrap();
            let mut t = WideTrainer::resume(state, &data, 3).unwrap();
            t.set_conv(conv);
            for _ in 0..3 {
                t.step();
            }
            assert!(
                straight
                    == WideState {
                        train_seconds: 0.0,
                        ..t.state()
                    },
                "{conv:?}"
            );
        }
    }

    #[test]
    fn the_bench_times_both_algorithms_window_by_window() {
        let data = synthetic(300, 17);
        let b = bench_wide(&data, 1, 2, 3).unwrap();
        assert_eq!((b.direct.len(), b.winograd.len()), (3, 3));
        let positive = |r: &[f64]| r.iter().all(|&v| v.is_finite() && v > 0.0);
        assert!(positive(&b.direct) && positive(&b.winograd));
        // The stages of the timed Winograd steps, after the warm-up was dropped.
        assert!(b.stages.iter().all(|s| s.1 >= 0.0) && b.stages.iter().any(|s| s.1 > 0.0));
    }

    #[test]
    fn resume_rejects_a_foreign_state() {
        let data = synthetic(100, 13);
        let state = fresh(&data, 1).state();
        let other = synthetic(50, 13);
        assert!(WideTrainer::resume(state.clone(), &other, 1).is_err());
        let short = WideState {
            m: vec![0.0; 3],
            ..state
        };
        assert!(WideTrainer::resume(short, &data, 1).is_err());
    }

    fn real_data() -> (Dataset, Dataset) {
        fmnist_infer::data::load_both(None)
            .expect("Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    }

    /// `cargo test --release -p fmnist-train wide_one_epoch -- --ignored --nocapture`
    #[test]
    #[ignore = "one epoch on the real data (60,000 images: slow on a busy machine)"]
    fn wide_one_epoch() {
        let (train, test) = real_data();
        let steps = crate::shared::config::steps_per_epoch(train.len(), 128);
        let mut t = WideTrainer::new(
            AdamConfig::default(),
            Schedule::Constant,
            128,
            steps,
            1,
            &train,
            2,
        )
        .unwrap();
        for _ in 0..steps {
            t.step();
        }
        let e = t.evaluate(&test);
        let ips = train.len() as f64 / t.train_seconds();
        println!(
            "wide: 1 epoch, test accuracy {:.2} %, loss {:.4}, {ips:.0} images/s on 2 threads",
            100.0 * e.accuracy,
            e.loss
        );
        assert!(e.accuracy >= 0.87, "test accuracy {}", e.accuracy);
    }
}
