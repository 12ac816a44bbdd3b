//! The one trainer: a run of any [`TrainNet`] from one recipe ([`TrainConfig`]). It owns the
//! parameters, the optimizer state, the data order and the RNG; each step loads a batch
//! (augmented when the recipe says so), gets the teachers' soft targets when it distils, runs the
//! network's forward and backward pass, the optimizer's update and the running statistics.
//!
//! Determinism: the same seed gives the same bytes whatever the thread count (the networks
//! reduce in chunk order, the optimizers update element by element, augmentation and dropout
//! are keyed by (seed, step)), and a resumed run continues bit-identically.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use crate::shared::augment::Augment;
use crate::shared::config::{TrainConfig, check_batch};
use crate::shared::distill::{Teacher, TeacherTargets};
use crate::shared::kernels::Evaluation;
use crate::shared::net::{
    Batch, Params, RunState, TrainNet, flat, flat_mut, param_count, params_from_flat,
};
use crate::shared::optim::Optim;
use crate::shared::step::{StartError, StepStats};

/// A training run of network `N` in memory.
pub struct Trainer<'d, N: TrainNet> {
    config: TrainConfig,
    opt: <N::Optim as Optim>::Config,
    step: u64,
    params: Box<Params<N>>,
    optim: N::Optim,
    rng: ChaCha8Rng,
    order: Vec<u32>,
    cursor: usize,
    train_seconds: f64,
    optim_seconds: f64,
    work: N::Work,
    indices: Vec<u32>,
    labels: Vec<u8>,
    augmented: Vec<[u8; IMAGE_PIXELS]>,
    teacher: Option<TeacherTargets>,
    pool: rayon::ThreadPool,
    train: &'d Dataset,
}

impl<'d, N: TrainNet> Trainer<'d, N> {
    /// A fresh run of `config` (refused when it does not pass [`TrainConfig::check`] and the
    /// network's [`TrainNet::check_conv`], names
    /// another network or optimizer, or does not fit `train`).
    pub fn new(
        config: TrainConfig,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        let params = N::init(config.seed);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(2);
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        order.shuffle(&mut rng);
        let state = RunState {
            config,
            step: 0,
            params: flat::<N>(&params).to_vec(),
            optim: N::Optim::new(param_count::<N>()),
            rng,
            order,
            cursor: 0,
            train_seconds: 0.0,
        };
        Self::resume(state, train, threads)
    }

    /// Continues from a saved state (checked against the network and the training set).
    pub fn resume(
        state: RunState<N>,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        let config = state.config;
        let opt = match N::Optim::config(&config.optimizer) {
            Some(opt) if config.model == N::MODEL => opt,
            _ => {
                return Err(
                    format!("is not a {} run with {}", N::MODEL.name(), N::Optim::NAME).into(),
                );
            }
        };
        config
            .check()
            .and_then(|()| N::check_conv(config.conv))
            .map_err(|why| format!("holds an impossible recipe: {why}"))?;
        let len = param_count::<N>();
        if state.params.len() != len || state.optim.lens().any(|n| n != len) {
            return Err(format!(
                "holds {} parameters, {} has {len}",
                state.params.len(),
                N::MODEL.name()
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
        check_batch(config.batch, train.len())
            .map_err(|why| format!("holds an impossible recipe: batch {why}"))?;
        let pool = thread_pool(threads)?;
        let params = params_from_flat::<N>(&state.params).expect("length checked above");
        Ok(Trainer {
            config,
            opt,
            step: state.step,
            params,
            optim: state.optim,
            rng: state.rng,
            order: state.order,
            cursor: state.cursor,
            train_seconds: state.train_seconds,
            optim_seconds: 0.0,
            work: N::workspace(config.batch),
            indices: Vec::with_capacity(config.batch),
            labels: Vec::with_capacity(config.batch),
            augmented: Vec::new(),
            teacher: None,
            pool,
            train,
        })
    }

    /// Gives a distilled run its teachers, which must be the ones its recipe was made with.
    /// Without augmentation their soft targets are computed here, once, for the whole
    /// training set.
    pub fn set_teacher(&mut self, teacher: Teacher) -> Result<(), String> {
        let Some(d) = self.config.distill else {
            return Err("the recipe does not distil".into());
        };
        let augmented = !self.config.augment.is_off();
        self.teacher = Some(TeacherTargets::new(
            teacher, d, self.train, augmented, &self.pool,
        )?);
        Ok(())
    }

    /// The recipe.
    pub fn config(&self) -> TrainConfig {
        self.config
    }

    /// The current parameters and running statistics.
    pub fn params(&self) -> &Params<N> {
        &self.params
    }

    /// Steps done.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Seconds spent in optimizer steps so far (over every resume).
    pub fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    /// Seconds spent in the optimizer's updates since this trainer started (a profile).
    pub fn optim_seconds(&self) -> f64 {
        self.optim_seconds
    }

    /// The step's workspace (its profile, for the benchmark).
    pub fn work(&self) -> &N::Work {
        &self.work
    }

    /// The workspace, mutable (to reset its profile).
    pub fn work_mut(&mut self) -> &mut N::Work {
        &mut self.work
    }

    /// Resets the optimizer's profile.
    pub fn reset_optim_seconds(&mut self) {
        self.optim_seconds = 0.0;
    }

    /// A copy of the run's state, to save in a checkpoint.
    pub fn state(&self) -> RunState<N> {
        RunState {
            config: self.config,
            step: self.step,
            params: flat::<N>(&self.params).to_vec(),
            optim: self.optim.clone(),
            rng: self.rng.clone(),
            order: self.order.clone(),
            cursor: self.cursor,
            train_seconds: self.train_seconds,
        }
    }

    /// Loads the next batch's indices, labels and (when augmenting) images, reshuffling at the
    /// end of an epoch.
    fn next_batch(&mut self) {
        if self.cursor >= self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let end = (self.cursor + self.config.batch).min(self.order.len());
        let train = self.train;
        self.indices.clear();
        self.indices
            .extend_from_slice(&self.order[self.cursor..end]);
        self.labels.clear();
        self.labels
            .extend(self.indices.iter().map(|&i| train.labels[i as usize]));
        self.augmented.clear();
        let aug = self.config.augment;
        if !aug.is_off() {
            let mut rng = Augment::rng(self.config.seed, self.step);
            self.augmented.extend(
                self.indices
                    .iter()
                    .map(|&i| aug.apply(&train.images[i as usize], &mut rng)),
            );
        }
        self.cursor = end;
    }

    /// One optimizer step over the next batch.
    pub fn step(&mut self) -> StepStats {
        let t0 = std::time::Instant::now();
        self.next_batch();
        let b = self.indices.len();
        let images: Vec<&[u8; IMAGE_PIXELS]> = if self.config.augment.is_off() {
            self.indices
                .iter()
                .map(|&i| &self.train.images[i as usize])
                .collect()
        } else {
            self.augmented.iter().collect()
        };
        assert!(
            self.config.distill.is_none() || self.teacher.is_some(),
            "a distilled run needs its teachers (Trainer::set_teacher)"
        );
        let soft = match &self.teacher {
            Some(t) => t.for_batch(&self.indices, &self.augmented, &self.labels, &self.pool),
            None => Vec::new(),
        };
        let batch = Batch {
            images: &images,
            labels: &self.labels,
            soft: &soft,
            config: &self.config,
            step: self.step,
        };
        let measured = N::forward_backward(&mut self.work, &self.params, &batch, &self.pool);

        let lr = self
            .config
            .schedule
            .lr_at(N::Optim::lr(&self.opt), self.step, self.config.steps);
        let t_optim = std::time::Instant::now();
        self.optim.update(
            &self.opt,
            lr,
            self.step,
            flat_mut::<N>(&mut self.params),
            flat::<N>(N::gradient(&self.work)),
            &N::trainable_ranges(),
            &self.pool,
        );
        self.optim_seconds += t_optim.elapsed().as_secs_f64();
        N::update_running(&mut self.params, &measured.bn);
        self.step += 1;
        self.train_seconds += t0.elapsed().as_secs_f64();
        StepStats {
            loss: measured.loss / b as f64,
            accuracy: measured.correct as f64 / b as f64,
            lr,
            images: b,
        }
    }

    /// Inference-mode evaluation (running statistics, no dropout): accuracy, mean loss and the
    /// logits of every image.
    pub fn evaluate(&mut self, data: &Dataset) -> Evaluation {
        N::evaluate(&self.params, data, &self.pool)
    }
}
