//! The training loop state: parameters, momentum, data order, RNG, and one optimizer step.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use fmnist_core::lenet::{IMAGE_PIXELS, LeNetParams};
use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use crate::distill::{Teacher, TeacherTargets};
use crate::lenet::kernels::{CHUNK, Chunk, Targets, evaluate_with, init_params};
use crate::shared::augment::Augment;
use crate::shared::config::{Model, Optimizer, SgdConfig, TrainConfig};
use crate::shared::kernels::{BnBatch, Evaluation};
use crate::shared::step::{BN_MOMENTUM, StartError, StepStats};

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

/// A training run in memory.
pub struct Trainer<'d> {
    /// The run's state.
    pub state: TrainState,
    params: Box<LeNetParams>,
    momentum: Box<LeNetParams>,
    grads: Box<LeNetParams>,
    chunks: Vec<Chunk>,
    pool: rayon::ThreadPool,
    train: &'d Dataset,
    sgd: SgdConfig,
    teacher: Option<TeacherTargets>,
}

impl<'d> Trainer<'d> {
    /// A fresh run (refused when `config` fails [`TrainConfig::check`]).
    pub fn new(
        config: TrainConfig,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        let params = init_params(config.seed);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(2);
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        order.shuffle(&mut rng);
        let state = TrainState {
            config,
            step: 0,
            params: bytemuck::cast_slice(std::slice::from_ref(&*params)).to_vec(),
            momentum: vec![0.0; size_of::<LeNetParams>() / 4],
            rng,
            order,
            cursor: 0,
            train_seconds: 0.0,
        };
        Self::resume(state, train, threads)
    }

    /// Continues from a saved state.
    pub fn resume(
        state: TrainState,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        let (Model::Lenet, Optimizer::Sgd(sgd)) = (state.config.model, state.config.optimizer)
        else {
            return Err("is not a LeNet-BN run with momentum SGD".into());
        };
        state
            .config
            .check()
            .map_err(|why| format!("holds an impossible recipe: {why}"))?;
        let len = size_of::<LeNetParams>() / 4;
        if state.params.len() != len || state.momentum.len() != len {
            return Err(format!(
                "holds {} parameters, LeNet-BN has {len}",
                state.params.len()
            )
            .into());
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
        crate::shared::config::check_batch(state.config.batch, train.len())
            .map_err(|why| format!("holds an impossible recipe: batch {why}"))?;
        let pool = thread_pool(threads)?;
        let mut params: Box<LeNetParams> = bytemuck::zeroed_box();
        bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *params))
            .copy_from_slice(&state.params);
        let mut momentum: Box<LeNetParams> = bytemuck::zeroed_box();
        bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *momentum))
            .copy_from_slice(&state.momentum);
        let chunks = (0..state.config.batch.div_ceil(CHUNK))
            .map(|_| Chunk::default())
            .collect();
        Ok(Trainer {
            state,
            params,
            momentum,
            grads: bytemuck::zeroed_box(),
            chunks,
            pool,
            train,
            sgd,
            teacher: None,
        })
    }

    /// Gives a distilled run its teachers, which must be the ones its recipe was made with.
    /// Without augmentation their soft targets are computed here, once, for the whole
    /// training set.
    pub fn set_teacher(&mut self, teacher: Teacher) -> Result<(), String> {
        let cfg = self.state.config;
        let Some(d) = cfg.distill else {
            return Err("the recipe does not distil".into());
        };
        let augmented = !cfg.augment.is_off();
        self.teacher = Some(TeacherTargets::new(
            teacher, d, self.train, augmented, &self.pool,
        )?);
        Ok(())
    }

    /// The current parameters.
    pub fn params(&self) -> &LeNetParams {
        &self.params
    }

    /// Copies parameters and momentum into `state` (call before saving).
    pub fn sync_state(&mut self) {
        self.state
            .params
            .copy_from_slice(bytemuck::cast_slice(std::slice::from_ref(&*self.params)));
        self.state
            .momentum
            .copy_from_slice(bytemuck::cast_slice(std::slice::from_ref(&*self.momentum)));
    }

    /// The next batch's indices, reshuffling at the end of an epoch.
    fn next_batch(&mut self) -> Vec<u32> {
        let s = &mut self.state;
        if s.cursor >= s.order.len() {
            s.order.shuffle(&mut s.rng);
            s.cursor = 0;
        }
        let end = (s.cursor + s.config.batch).min(s.order.len());
        let batch = s.order[s.cursor..end].to_vec();
        s.cursor = end;
        batch
    }

    /// One optimizer step.
    pub fn step(&mut self) -> StepStats {
        let t0 = std::time::Instant::now();
        let batch = self.next_batch();
        let b = batch.len();
        let nchunks = b.div_ceil(CHUNK);
        let aug = self.state.config.augment;
        let augmented: Vec<[u8; IMAGE_PIXELS]> = if aug.is_off() {
            Vec::new()
        } else {
            let mut rng = Augment::rng(self.state.config.seed, self.state.step);
            batch
                .iter()
                .map(|&i| aug.apply(&self.train.images[i as usize], &mut rng))
                .collect()
        };
        let images: Vec<&[u8; IMAGE_PIXELS]> = if aug.is_off() {
            batch
                .iter()
                .map(|&i| &self.train.images[i as usize])
                .collect()
        } else {
            augmented.iter().collect()
        };
        let labels: Vec<u8> = batch
            .iter()
            .map(|&i| self.train.labels[i as usize])
            .collect();
        let distill = self.state.config.distill;
        assert!(
            distill.is_none() || self.teacher.is_some(),
            "a distilled run needs its teachers (Trainer::set_teacher)"
        );
        let soft = match &self.teacher {
            Some(t) => t.for_batch(&batch, &augmented, &labels, &self.pool),
            None => Vec::new(),
        };
        let soft = &soft[..];
        let targets = Targets {
            batch: b,
            smoothing: self.state.config.label_smoothing,
            distill,
        };
        let p = &*self.params;
        let chunks = &mut self.chunks[..nchunks];
        let pool = &self.pool;

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
        let (s, q) = reduce_sums::<6>(chunks);
        let bn1 = BnBatch::<6>::from_sums(&s, &q, b * 784);
        pool.install(|| chunks.par_iter_mut().for_each(|ch| ch.conv2(p, &bn1)));
        let (s, q) = reduce_sums::<16>(chunks);
        let bn2 = BnBatch::<16>::from_sums(&s, &q, b * 100);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .for_each(|ch| ch.head(p, &bn2, Some(targets)))
        });
        let (dsum2, dxsum2) = reduce_sums::<16>(chunks);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .for_each(|ch| ch.back_conv2(p, &bn1, &bn2, &dsum2, &dxsum2))
        });
        let (dsum1, dxsum1) = reduce_sums::<6>(chunks);
        pool.install(|| {
            chunks
                .par_iter_mut()
                .for_each(|ch| ch.back_conv1(p, &bn1, &dsum1, &dxsum1))
        });

        // Gradients: the sum over chunks, in chunk order.
        let g =
            bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *self.grads));
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
        let grads = &mut *self.grads;
        for c in 0..6 {
            grads.bn1.gamma[c] = dxsum1[c] as f32;
            grads.bn1.beta[c] = dsum1[c] as f32;
        }
        for c in 0..16 {
            grads.bn2.gamma[c] = dxsum2[c] as f32;
            grads.bn2.beta[c] = dsum2[c] as f32;
        }

        let cfg = self.state.config;
        let sgd = self.sgd;
        let lr = cfg.schedule.lr_at(sgd.lr, self.state.step, cfg.steps);
        let (mu, wd) = (sgd.momentum, sgd.weight_decay);
        // Decoupled decay follows the schedule: lr_t · λ.
        let shrink = lr * sgd.decoupled_decay;
        {
            let w = bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(
                &mut *self.params,
            ));
            let v = bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(
                &mut *self.momentum,
            ));
            let g = bytemuck::cast_slice::<LeNetParams, f32>(std::slice::from_ref(&*self.grads));
            for r in trainable_ranges() {
                for i in r {
                    let gi = g[i] + wd * w[i];
                    v[i] = mu * v[i] - lr * gi;
                    if shrink != 0.0 {
                        w[i] -= shrink * w[i];
                    }
                    w[i] += v[i];
                }
            }
        }
        let p = &mut *self.params;
        let m = 1.0 - BN_MOMENTUM;
        for c in 0..6 {
            p.bn1.running_mean[c] = m * p.bn1.running_mean[c] + BN_MOMENTUM * bn1.mean[c];
            p.bn1.running_var[c] = m * p.bn1.running_var[c] + BN_MOMENTUM * bn1.var_unbiased[c];
        }
        for c in 0..16 {
            p.bn2.running_mean[c] = m * p.bn2.running_mean[c] + BN_MOMENTUM * bn2.mean[c];
            p.bn2.running_var[c] = m * p.bn2.running_var[c] + BN_MOMENTUM * bn2.var_unbiased[c];
        }
        self.state.step += 1;
        self.state.train_seconds += t0.elapsed().as_secs_f64();
        StepStats {
            loss: loss / b as f64,
            accuracy: correct as f64 / b as f64,
            lr,
        }
    }

    /// Test-set evaluation with the running statistics.
    pub fn evaluate(&mut self, data: &Dataset) -> Evaluation {
        evaluate_with(&self.params, data, &self.pool)
    }
}

fn reduce_sums<const C: usize>(chunks: &[Chunk]) -> ([f64; C], [f64; C]) {
    let (mut s, mut q) = ([0.0; C], [0.0; C]);
    for ch in chunks {
        for c in 0..C {
            s[c] += ch.sums[0][c];
            q[c] += ch.sums[1][c];
        }
    }
    (s, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::{Preset, Schedule};
    use rand::RngExt;

    fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Dataset {
            images: (0..n)
                .map(|_| std::array::from_fn(|_| rng.random::<u8>()))
                .collect(),
            labels: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
        }
    }

    fn recipe(steps: u64) -> TrainConfig {
        let mut c = Preset::Default.config(200, 3);
        c.batch = 40;
        c.steps = steps;
        c.schedule = Schedule::Cosine {
            warmup_steps: 2,
            final_fraction: 0.0,
        };
        c.augment = Augment {
            shift: 2,
            flip: true,
            rotate_deg: 10.0,
            noise: 0.03,
            erase: 0.25,
        };
        c.label_smoothing = 0.1;
        *c.optimizer.decoupled_decay_mut() = 0.01;
        c
    }

    fn weights(t: &Trainer) -> Vec<u8> {
        bytemuck::bytes_of(t.params()).to_vec()
    }

    fn teachers() -> Teacher {
        use crate::weights::TrainedWeights;
        Teacher::from_weights(vec![
            TrainedWeights::Lenet(init_params(11)),
            TrainedWeights::Wide(crate::wide::kernels::init_wide_params(12)),
        ])
    }

    #[test]
    fn distilled_runs_stay_thread_independent_and_resume_bit_identically() {
        let data = synthetic(200, 1);
        for augment in [Augment::default(), recipe(1).augment] {
            let mut cfg = recipe(6);
            cfg.augment = augment;
            cfg.distill = Some(teachers().recipe(0.7, 3.0));
            let start = |threads: usize| {
                let mut t = Trainer::new(cfg, &data, threads).unwrap();
                t.set_teacher(teachers()).unwrap();
                t
            };
            let run = |threads: usize| {
                let mut t = start(threads);
                (0..6).for_each(|_| {
                    t.step();
                });
                weights(&t)
            };
            let one = run(1);
            assert!(one == run(2), "thread count changed the weights");
            let mut first = start(2);
            (0..4).for_each(|_| {
                first.step();
            });
            first.sync_state();
            let mut resumed = Trainer::resume(first.state.clone(), &data, 1).unwrap();
            resumed.set_teacher(teachers()).unwrap();
            (0..2).for_each(|_| {
                resumed.step();
            });
            assert!(weights(&resumed) == one, "resume changed the weights");

            // The teacher term is not ignored, and other teachers are refused.
            let mut plain = cfg;
            plain.distill = None;
            let mut t = Trainer::new(plain, &data, 2).unwrap();
            (0..6).for_each(|_| {
                t.step();
            });
            assert!(weights(&t) != one);
            let other =
                Teacher::from_weights(vec![crate::weights::TrainedWeights::Lenet(init_params(13))]);
            let why = Trainer::new(cfg, &data, 1)
                .unwrap()
                .set_teacher(other)
                .unwrap_err();
            assert!(why.contains("distils from 2 teacher model(s)"), "{why}");
        }
    }

    #[test]
    fn every_improvement_on_stays_thread_independent_and_resumes_bit_identically() {
        let data = synthetic(200, 1);
        let run = |threads: usize| {
            let mut t = Trainer::new(recipe(8), &data, threads).unwrap();
            (0..8).for_each(|_| {
                t.step();
            });
            weights(&t)
        };
        let one = run(1);
        assert!(one == run(3), "thread count changed the weights");

        let mut first = Trainer::new(recipe(8), &data, 2).unwrap();
        (0..5).for_each(|_| {
            first.step();
        });
        first.sync_state();
        let mut resumed = Trainer::resume(first.state.clone(), &data, 1).unwrap();
        (0..3).for_each(|_| {
            resumed.step();
        });
        assert!(resumed.state.step == 8 && weights(&resumed) == one);

        // And augmentation changes what is learned (the flags are not ignored).
        let mut plain = recipe(8);
        plain.augment = Augment::default();
        let mut t = Trainer::new(plain, &data, 2).unwrap();
        (0..8).for_each(|_| {
            t.step();
        });
        assert!(weights(&t) != one);
    }

    #[test]
    fn decoupled_decay_shrinks_each_weight_by_lr_times_lambda() {
        let data = synthetic(64, 2);
        let mut cfg = recipe(1);
        cfg.augment = Augment::default();
        cfg.schedule = Schedule::Constant;
        cfg.batch = 64;
        let lambda = 0.05;
        let w0 = init_params(cfg.seed);
        *cfg.optimizer.decoupled_decay_mut() = 0.0;
        let mut plain = Trainer::new(cfg, &data, 1).unwrap();
        *cfg.optimizer.decoupled_decay_mut() = lambda;
        let mut decayed = Trainer::new(cfg, &data, 1).unwrap();
        let lr = plain.step().lr;
        decayed.step();
        let f = |p: &LeNetParams| {
            bytemuck::cast_slice::<LeNetParams, f32>(std::slice::from_ref(p)).to_vec()
        };
        let (a, b, w) = (f(plain.params()), f(decayed.params()), f(&w0));
        let mut checked = 0;
        for r in trainable_ranges() {
            for i in r {
                let expect = a[i] - lr * lambda * w[i];
                assert!(
                    (b[i] - expect).abs() <= 1e-6 * (1.0 + expect.abs()),
                    "parameter {i}: {} vs {expect}",
                    b[i]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, fmnist_core::lenet::LENET_PARAMETERS);
        // Running statistics are not parameters: untouched by the decay.
        assert_eq!(
            plain.params().bn1.running_var,
            decayed.params().bn1.running_var
        );
    }
}
