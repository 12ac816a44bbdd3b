//! The wide CNN's training step, and what its checkpoint holds ([`WideRun`]).
//!
//! Determinism: the convolutional part runs in fixed chunks of [`CHUNK`] images whose partial
//! sums are reduced in chunk order; the dense part runs as whole-batch GEMMs cut into fixed
//! blocks (see [`crate::wide::kernels`]); dropout masks come from a counter-based hash of
//! (seed, step, position in the batch).

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use fmnist_core::wide::{WIDE_FLAT, WIDE_HIDDEN, WideParams};

use crate::shared::config::{AdamConfig, Schedule, TrainConfig};
use crate::shared::kernels::{BnBatch, reduce_sums};
use crate::shared::net::{Batch, Measured};
use crate::shared::step::BN_MOMENTUM;
use crate::wide::kernels::{Arith, CHUNK, Head, WideChunk};

/// f32 values in `WideParams`.
const LEN: usize = size_of::<WideParams>() / 4;

/// A wide-CNN run as its checkpoint holds it: the recipe and the trainer's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WideRun {
    /// The whole recipe.
    pub config: TrainConfig,
    /// Parameters, Adam moments, data order.
    pub state: WideState,
}

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

/// Index ranges (in f32 units) of `WideParams` that hold trainable parameters: all but the
/// running statistics.
pub fn wide_trainable_ranges() -> [std::ops::Range<usize>; 3] {
    let bn1 = std::mem::offset_of!(WideParams, bn1) / 4;
    let bn2 = std::mem::offset_of!(WideParams, bn2) / 4;
    // Within BnParams<C>: gamma, beta (trainable), running_mean, running_var (not).
    [0..bn1 + 64, bn1 + 128..bn2 + 128, bn2 + 256..LEN]
}

/// Names of the stages [`Work::stage_seconds`] times, the optimizer's last.
pub const STAGES: [&str; 8] = [
    "conv1",
    "bn1 pool1 conv2",
    "bn2 pool2 dense forward",
    "dense backward",
    "bn2 backward sums",
    "conv2 backward",
    "conv1 backward",
    "adam",
];

/// The step's workspace: the chunks of the convolutional part, the dense head over the whole
/// batch, the gradient, and a profile of the stages.
pub struct Work {
    chunks: Vec<WideChunk>,
    /// The dense part over the whole batch.
    pub head: Head,
    grads: Box<WideParams>,
    /// Wall seconds spent so far in each stage but the optimizer's (a profile).
    pub stage_seconds: [f64; 7],
    /// Non-zero entries of fc1's output gradient dH over the steps so far, and all its
    /// entries: the share of fc1's backward products that is computed (see
    /// [`crate::shared::sparse`]).
    pub dh_nonzeros: [u64; 2],
}

impl Work {
    /// For batches of up to `batch` images.
    pub fn new(batch: usize) -> Self {
        Work {
            chunks: (0..batch.div_ceil(CHUNK))
                .map(|_| WideChunk::default())
                .collect(),
            head: Head::new(batch),
            grads: bytemuck::zeroed_box(),
            stage_seconds: [0.0; 7],
            dh_nonzeros: [0; 2],
        }
    }

    /// The gradient of the last step.
    pub fn grads(&self) -> &WideParams {
        &self.grads
    }
}

/// The batch-norm statistics of one step.
pub type BnStats = (BnBatch<32>, BnBatch<64>);

/// Adds `src` into `dst` element by element.
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (a, &b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

/// Forward and backward over `batch`: the gradient of the mean loss into `work`'s gradient,
/// with dropout keyed by (seed, step).
pub fn forward_backward(
    work: &mut Work,
    p: &WideParams,
    batch: &Batch<'_>,
    pool: &rayon::ThreadPool,
) -> Measured<BnStats> {
    gradients(work, p, batch, Some((batch.config.seed, batch.step)), pool)
}

/// [`forward_backward`] with dropout keyed by `dropout` = (seed, step), or none.
pub fn gradients(
    work: &mut Work,
    p: &WideParams,
    batch: &Batch<'_>,
    dropout: Option<(u64, u64)>,
    pool: &rayon::ThreadPool,
) -> Measured<BnStats> {
    let (images, labels) = (batch.images, batch.labels);
    let b = images.len();
    let nchunks = b.div_ceil(CHUNK);
    let head = &mut work.head;
    head.smoothing = batch.config.label_smoothing;
    head.distill = None;
    if !batch.soft.is_empty() {
        head.soft[..b * 10].copy_from_slice(batch.soft.as_flattened());
        head.distill = batch.config.distill;
    }
    let chunks = &mut work.chunks[..nchunks];
    // conv2's transformed weights, when Winograd: once per step, serially, before the
    // stages are timed (2,048 small transforms).
    let mut filters = None;
    let arith = Arith::new(batch.config.conv, &p.conv2_weight, &mut filters);
    let grads = &mut *work.grads;
    let f = WIDE_FLAT;
    let stage = &mut work.stage_seconds;
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
    let (s, q) = reduce_sums::<_, 32, 64>(chunks, |c| &c.sums);
    let bn1 = BnBatch::<32>::from_sums(&s, &q, b * 28 * 28);
    lap(0);
    pool.install(|| {
        chunks
            .par_iter_mut()
            .for_each(|ch| ch.conv2(p, &bn1, arith))
    });
    let (s, q) = reduce_sums::<_, 64, 64>(chunks, |c| &c.sums);
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
    work.dh_nonzeros[0] += head.dh_nonzeros() as u64;
    work.dh_nonzeros[1] += (b * WIDE_HIDDEN) as u64;
    pool.install(|| {
        chunks
            .par_iter_mut()
            .zip(head.dx.par_chunks(CHUNK * f))
            .for_each(|(ch, dx)| ch.bn2_sums(&bn2, dx));
    });
    let (dsum2, dxsum2) = reduce_sums::<_, 64, 64>(chunks, |c| &c.sums);
    lap(4);
    pool.install(|| {
        chunks
            .par_iter_mut()
            .zip(head.dx.par_chunks(CHUNK * f))
            .for_each(|(ch, dx)| ch.back_conv2(p, &bn1, &bn2, &dsum2, &dxsum2, dx, arith))
    });
    let (dsum1, dxsum1) = reduce_sums::<_, 32, 64>(chunks, |c| &c.sums);
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
    Measured {
        loss: head.loss,
        correct: head.correct,
        bn: (bn1, bn2),
    }
}

/// Moves the running statistics towards the batch's (PyTorch's momentum).
pub fn update_running(p: &mut WideParams, (bn1, bn2): &BnStats) {
    let k = 1.0 - BN_MOMENTUM;
    for c in 0..32 {
        p.bn1.running_mean[c] = k * p.bn1.running_mean[c] + BN_MOMENTUM * bn1.mean[c];
        p.bn1.running_var[c] = k * p.bn1.running_var[c] + BN_MOMENTUM * bn1.var_unbiased[c];
    }
    for c in 0..64 {
        p.bn2.running_mean[c] = k * p.bn2.running_mean[c] + BN_MOMENTUM * bn2.mean[c];
        p.bn2.running_var[c] = k * p.bn2.running_var[c] + BN_MOMENTUM * bn2.var_unbiased[c];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::Conv;
    use fmnist_infer::data::Dataset;
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

    fn flat(p: &WideParams) -> &[f32] {
        bytemuck::cast_slice(std::slice::from_ref(p))
    }

    /// A recipe of the wide CNN with conv2 by `conv`, plain cross-entropy.
    fn recipe(conv: Conv) -> TrainConfig {
        let mut c = crate::shared::config::Preset::Fast.config_for(
            crate::shared::config::Model::Wide,
            100,
            3,
        );
        c.conv = conv;
        c.augment = crate::shared::augment::Augment::default();
        c.label_smoothing = 0.0;
        c
    }

    fn gradients_match_finite_differences_with(conv: Conv) {
        // 10 images: two chunks (8 + 2), so the cross-chunk reductions are checked too.
        let data = synthetic(10, 7);
        let mut p = crate::wide::kernels::init_wide_params(3);
        // Non-identity batch norm, so its parameters' gradients are checked in general.
        for c in 0..32 {
            p.bn1.gamma[c] = 1.0 + 0.02 * c as f32;
            p.bn1.beta[c] = 0.01 * c as f32 - 0.1;
        }
        for c in 0..64 {
            p.bn2.gamma[c] = 0.8 + 0.01 * c as f32;
            p.bn2.beta[c] = 0.05 - 0.002 * c as f32;
        }
        let config = recipe(conv);
        let refs: Vec<&[u8; 784]> = data.images.iter().collect();
        let batch = Batch {
            images: &refs,
            labels: &data.labels,
            soft: &[],
            config: &config,
            step: 0,
        };
        let mut work = Work::new(10);
        let pool = fmnist_infer::pool::thread_pool(2).unwrap();
        gradients(&mut work, &p, &batch, None, &pool);
        let images = data.images.clone();
        let labels = data.labels.clone();
        let g = flat(work.grads()).to_vec();
        let mut w: Vec<f64> = flat(&p).iter().map(|&v| v as f64).collect();
        // The analytic loss is the f32 forward's; it must agree with the f64 reference.
        let (l64, _) = naive(&w, &images, &labels, true);
        assert!(
            (work.head.loss / 10.0 - l64).abs() < 1e-4,
            "{} vs {l64}",
            work.head.loss / 10.0
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
        let mut p = crate::wide::kernels::init_wide_params(5);
        // Running statistics away from identity.
        for c in 0..32 {
            p.bn1.running_mean[c] = 0.01 * c as f32 - 0.1;
            p.bn1.running_var[c] = 0.5 + 0.03 * c as f32;
        }
        for c in 0..64 {
            p.bn2.running_mean[c] = 0.05 - 0.002 * c as f32;
            p.bn2.running_var[c] = 0.7 + 0.01 * c as f32;
        }
        let pool = fmnist_infer::pool::thread_pool(2).unwrap();
        let test = synthetic(21, 12);
        let e = crate::wide::kernels::evaluate_wide(&p, &test, &pool);
        let w: Vec<f32> = flat(&p).to_vec();
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
}
