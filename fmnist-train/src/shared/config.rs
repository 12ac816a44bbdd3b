//! Training recipes: optimizer, schedule and presets.

use serde::{Deserialize, Serialize};

use fmnist_core::arch::Arch;

use crate::shared::augment::Augment;

/// Generates [`Model`] from the list of networks (`networks.rs`).
macro_rules! model_enum {
    ($( $(#[$attr:meta])* $variant:ident = $arch:ident => $net:path; )+) => {
        /// Which network to train: one value per line of the list of networks
        /// (`networks.rs`). The `--model` flag's values are the variants' names in lower case;
        /// a recipe encodes a variant by its position in the list (postcard), JSON by its name.
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize,
        )]
        pub enum Model {
            $( $(#[$attr])* $variant, )+
        }

        impl Model {
            /// Every network, in the list's order.
            pub const ALL: &[Model] = &[$(Model::$variant),+];

            /// The network's architecture, as model files and checkpoints name it.
            pub fn arch(self) -> Arch {
                match self {
                    $( Model::$variant => Arch::$arch, )+
                }
            }
        }
    };
}

crate::networks::train_networks!(model_enum);

impl Model {
    /// Display name.
    pub fn name(self) -> &'static str {
        self.arch().name()
    }
}

/// How the wide CNN's second convolution is computed in training (forward and backward).
///
/// The two give the same function up to float rounding, so the choice is part of the recipe: a
/// run continues bit-identically only with the arithmetic it started with. LeNet-BN has its own
/// direct kernels and takes only [`Conv::Direct`]. Serialized in lower case, as the
/// `--conv` flag spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conv {
    /// im2col + GEMM: the arithmetic of every run before checkpoint format 5.
    Direct,
    /// Winograd F(2×2, 3×3) for conv2: each 4×4 input tile gives a 2×2 output tile with 16
    /// multiplies instead of 36 (2.25× fewer), at slightly different rounding. Conv1 then runs
    /// by fused direct kernels (no im2col; its output recomputed where needed, never stored).
    #[default]
    Winograd,
}

impl Conv {
    /// The name the `--conv` flag takes.
    pub fn name(self) -> &'static str {
        match self {
            Conv::Direct => "direct",
            Conv::Winograd => "winograd",
        }
    }
}

/// Momentum SGD (`v = μ·v − lr·g; w += v`), as dfdx's `SgdConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Peak learning rate.
    pub lr: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// L2 penalty added to the gradient (0 = none).
    pub weight_decay: f32,
    /// Decoupled weight decay (SGDW, Loshchilov & Hutter): each step also does
    /// `w -= lr_t · decoupled_decay · w`, outside the momentum (0 = none).
    pub decoupled_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            decoupled_decay: 0.0,
        }
    }
}

/// Adam (Kingma & Ba) with PyTorch's bias correction; optional L2 and decoupled decay (AdamW).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Peak learning rate (the schedule scales it).
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// L2 penalty added to the gradient (`g += wd·w`, PyTorch's `Adam(weight_decay)`).
    pub weight_decay: f32,
    /// Decoupled decay (`w -= lr·wd·w` before the Adam step, PyTorch's `AdamW`).
    pub decoupled_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_decay: 0.0,
        }
    }
}

/// The optimizer of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    /// Momentum SGD (LeNet-BN).
    Sgd(SgdConfig),
    /// Adam (the wide CNN).
    Adam(AdamConfig),
}

impl Optimizer {
    /// The peak learning rate.
    pub fn lr_mut(&mut self) -> &mut f32 {
        match self {
            Optimizer::Sgd(c) => &mut c.lr,
            Optimizer::Adam(c) => &mut c.lr,
        }
    }

    /// The L2 penalty.
    pub fn weight_decay_mut(&mut self) -> &mut f32 {
        match self {
            Optimizer::Sgd(c) => &mut c.weight_decay,
            Optimizer::Adam(c) => &mut c.weight_decay,
        }
    }

    /// The decoupled weight decay.
    pub fn decoupled_decay_mut(&mut self) -> &mut f32 {
        match self {
            Optimizer::Sgd(c) => &mut c.decoupled_decay,
            Optimizer::Adam(c) => &mut c.decoupled_decay,
        }
    }
}

/// Learning rate over the run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The peak rate throughout.
    Constant,
    /// Linear warm-up over `warmup_steps`, then cosine decay to `final_fraction`·lr.
    Cosine {
        /// Steps of linear warm-up from 0.
        warmup_steps: u64,
        /// The rate at the last step, as a fraction of the peak.
        final_fraction: f32,
    },
}

impl Schedule {
    /// The learning rate at `step` (0-based) of `total` for a peak of `lr`.
    pub fn lr_at(self, lr: f32, step: u64, total: u64) -> f32 {
        match self {
            Schedule::Constant => lr,
            Schedule::Cosine {
                warmup_steps,
                final_fraction,
            } => {
                if step < warmup_steps {
                    return lr * (step + 1) as f32 / warmup_steps as f32;
                }
                let span = total.saturating_sub(warmup_steps).max(1) as f64;
                let t = ((step - warmup_steps) as f64 / span).min(1.0);
                let floor = lr as f64 * final_fraction as f64;
                (floor + 0.5 * (lr as f64 - floor) * (1.0 + (std::f64::consts::PI * t).cos()))
                    as f32
            }
        }
    }
}

/// A complete training recipe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub model: Model,
    /// Images per step.
    pub batch: usize,
    /// Total optimizer steps.
    pub steps: u64,
    /// Optimizer.
    pub optimizer: Optimizer,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Write a checkpoint (and measure test accuracy) every this many steps.
    pub checkpoint_every: u64,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// Training-time augmentation.
    pub augment: Augment,
    /// Label smoothing ε: the target is (1 − ε)·one-hot + ε/10 (0 = plain cross-entropy).
    pub label_smoothing: f32,
    /// Knowledge distillation from trained teachers (none = labels only).
    pub distill: Option<Distill>,
    /// The wide CNN's second-convolution algorithm; LeNet-BN recipes hold [`Conv::Direct`].
    /// Checkpoints older than format 5 read as `Direct`, the arithmetic they were made with.
    pub conv: Conv,
}

/// Largest batch a recipe may ask for (the training set's size).
pub const MAX_BATCH: usize = 60_000;

impl TrainConfig {
    /// Checks that every field is in its range (the network's rule on `conv` is its own:
    /// `TrainNet::check_conv`, checked with this by the trainer). A checkpoint's recipe is
    /// checked before resuming, so a corrupted or crafted file cannot ask for a batch of 2^60 images or a NaN
    /// learning rate.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!(
                "batch of {} images; it must be between 1 and {MAX_BATCH}",
                self.batch
            ));
        }
        if self.steps == 0 || self.checkpoint_every == 0 {
            return Err(format!(
                "{} steps with a checkpoint every {}; both must be at least 1",
                self.steps, self.checkpoint_every
            ));
        }
        let unit = |x: f32| x.is_finite() && (0.0..1.0).contains(&x);
        let non_negative = |x: f32| x.is_finite() && x >= 0.0;
        let (lr, wd, dd) = match self.optimizer {
            Optimizer::Sgd(c) => {
                if !unit(c.momentum) {
                    return Err(format!("momentum {} is outside [0, 1)", c.momentum));
                }
                (c.lr, c.weight_decay, c.decoupled_decay)
            }
            Optimizer::Adam(c) => {
                if !(unit(c.beta1) && unit(c.beta2)) {
                    return Err(format!(
                        "Adam betas ({}, {}) are outside [0, 1)",
                        c.beta1, c.beta2
                    ));
                }
                if !(c.eps.is_finite() && c.eps > 0.0) {
                    return Err(format!("Adam epsilon {} is not a positive number", c.eps));
                }
                (c.lr, c.weight_decay, c.decoupled_decay)
            }
        };
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("learning rate {lr} is not a positive number"));
        }
        if !(non_negative(wd) && non_negative(dd)) {
            return Err(format!("weight decays ({wd}, {dd}) must be numbers ≥ 0"));
        }
        if let Schedule::Cosine { final_fraction, .. } = self.schedule
            && !(final_fraction.is_finite() && (0.0..=1.0).contains(&final_fraction))
        {
            return Err(format!("cosine floor {final_fraction} is outside [0, 1]"));
        }
        if !unit(self.label_smoothing) {
            return Err(format!(
                "label smoothing {} is outside [0, 1)",
                self.label_smoothing
            ));
        }
        if let Some(d) = &self.distill {
            d.check()?;
        }
        self.augment.validate()
    }
}

/// The one batch rule, for a `--batch` flag, a preset's batch and a checkpoint's alike: at least
/// one image and no more than the training set's `n` images. `Err` completes a sentence about the
/// batch ("must be between 1 and 10 (the training set's size), got 64").
pub fn check_batch(batch: usize, n: usize) -> Result<(), String> {
    if (1..=n).contains(&batch) {
        Ok(())
    } else {
        Err(format!(
            "must be between 1 and {n} (the training set's size), got {batch}"
        ))
    }
}

/// Steps in one pass over `n` images with batches of `batch` (the last batch may be short).
pub fn steps_per_epoch(n: usize, batch: usize) -> u64 {
    n.div_ceil(batch) as u64
}

/// `--epochs`: the steps of `epochs` passes of `per_epoch` steps, refused (naming the flag)
/// when the product does not fit a step count rather than wrapping to a short run.
pub fn steps_for_epochs(epochs: u64, per_epoch: u64) -> Result<u64, String> {
    epochs.checked_mul(per_epoch).ok_or_else(|| {
        format!(
            "--epochs {epochs} is too many: {epochs} × {per_epoch} steps per epoch does not fit a step count"
        )
    })
}

/// `--warmup`: a warm-up of `epochs` (a finite number ≥ 0) in whole steps, refused (naming
/// the flag) when it does not fit a step count rather than saturating.
pub fn warmup_steps(epochs: f64, per_epoch: u64) -> Result<u64, String> {
    let steps = (epochs * per_epoch as f64).round();
    // 2^64 is the first f64 above every u64.
    if !(epochs.is_finite() && epochs >= 0.0 && steps < 18_446_744_073_709_551_616.0) {
        return Err(format!(
            "--warmup must be a number of epochs ≥ 0 that fits a step count, got {epochs:?}"
        ));
    }
    Ok(steps as u64)
}

/// Named recipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Preset {
    /// The original report's procedure: 5,000 steps, batch 64, lr 0.0005, momentum 0.9,
    /// test accuracy every 1,000 steps.
    Original,
    /// The best recipe found for this model and optimizer (see the README table).
    Default,
    /// The recipe that reaches 91 % within 30 s on 2 cores.
    Fast,
}

/// The distillation part of a recipe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distill {
    /// Weight α of the teacher term; the label term gets 1 − α.
    pub alpha: f32,
    /// Temperature T of both softmaxes in the teacher term.
    pub temperature: f32,
    /// Number of teacher models (their logits are averaged).
    pub teachers: u32,
    /// `distill::Teacher::fingerprint` of the teachers, so a resumed run checks it has the same ones.
    pub fingerprint: u64,
}

/// Largest temperature accepted.
pub const MAX_TEMPERATURE: f32 = 100.0;
/// Most teacher models accepted.
pub const MAX_TEACHERS: u32 = 16;

impl Distill {
    /// Checks that every field is in its range.
    pub fn check(&self) -> Result<(), String> {
        if !(self.alpha.is_finite() && (0.0..=1.0).contains(&self.alpha)) {
            return Err(format!(
                "distillation weight {} is outside [0, 1]",
                self.alpha
            ));
        }
        if !(self.temperature.is_finite()
            && self.temperature > 0.0
            && self.temperature <= MAX_TEMPERATURE)
        {
            return Err(format!(
                "distillation temperature {} is outside (0, {MAX_TEMPERATURE}]",
                self.temperature
            ));
        }
        if !(1..=MAX_TEACHERS).contains(&self.teachers) {
            return Err(format!(
                "{} teacher models; distillation takes 1 to {MAX_TEACHERS}",
                self.teachers
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_warms_up_then_decays_to_the_floor() {
        let s = Schedule::Cosine {
            warmup_steps: 10,
            final_fraction: 0.0,
        };
        assert!((s.lr_at(0.1, 0, 110) - 0.01).abs() < 1e-7);
        assert!((s.lr_at(0.1, 9, 110) - 0.1).abs() < 1e-7);
        assert!((s.lr_at(0.1, 10, 110) - 0.1).abs() < 1e-7);
        assert!((s.lr_at(0.1, 60, 110) - 0.05).abs() < 1e-6);
        assert!(s.lr_at(0.1, 110, 110).abs() < 1e-7);
        assert_eq!(Schedule::Constant.lr_at(0.3, 5, 10), 0.3);
    }

    /// A recipe that passes the check (LeNet-BN's `default`, written out).
    fn sample() -> TrainConfig {
        TrainConfig {
            model: Model::Lenet,
            batch: 64,
            steps: 18_760,
            optimizer: Optimizer::Sgd(SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 1e-3,
                decoupled_decay: 0.0,
            }),
            schedule: Schedule::Cosine {
                warmup_steps: 469,
                final_fraction: 0.0,
            },
            checkpoint_every: 938,
            seed: 1,
            augment: Augment::default(),
            label_smoothing: 0.0,
            distill: None,
            conv: Conv::Direct,
        }
    }

    #[test]
    fn each_bad_field_fails_the_recipe_check() {
        assert_eq!(sample().check(), Ok(()));
        let good = sample();
        type Spoil = fn(&mut TrainConfig);
        let bad: [(&str, Spoil); 9] = [
            ("batch", |c| c.batch = 0),
            ("batch", |c| c.batch = 1 << 40),
            ("steps", |c| c.steps = 0),
            ("learning rate", |c| *c.optimizer.lr_mut() = f32::NAN),
            ("learning rate", |c| *c.optimizer.lr_mut() = -1.0),
            ("weight decays", |c| {
                *c.optimizer.weight_decay_mut() = f32::INFINITY
            }),
            ("label smoothing", |c| c.label_smoothing = 1.0),
            ("rotate", |c| c.augment.rotate_deg = 90.0),
            ("cosine floor", |c| {
                c.schedule = Schedule::Cosine {
                    warmup_steps: 1,
                    final_fraction: f32::NAN,
                }
            }),
        ];
        for (what, spoil) in bad {
            let mut c = good;
            spoil(&mut c);
            let e = c.check().expect_err(what);
            assert!(e.contains(what), "{what}: {e}");
        }
        let mut adam = TrainConfig {
            optimizer: Optimizer::Adam(AdamConfig::default()),
            ..sample()
        };
        assert_eq!(adam.check(), Ok(()));
        if let Optimizer::Adam(a) = &mut adam.optimizer {
            a.beta2 = 1.0;
        }
        assert!(adam.check().unwrap_err().contains("betas"));
    }

    #[test]
    fn conv_names_are_the_flags() {
        assert_eq!(Conv::default(), Conv::Winograd);
        assert_eq!(
            (Conv::Direct.name(), Conv::Winograd.name()),
            ("direct", "winograd")
        );
        // JSON spells it as the flag does.
        assert_eq!(serde_json::to_string(&Conv::Direct).unwrap(), "\"direct\"");
    }

    #[test]
    fn epochs_and_warmup_are_whole_steps() {
        assert_eq!(steps_per_epoch(60_000, 64), 938);
        assert_eq!(steps_for_epochs(20, 938), Ok(18_760));
        // 2^58 · 938 > 2^64: unchecked, it wrapped to a short run.
        assert_eq!(
            steps_for_epochs(1 << 58, 938),
            Err("--epochs 288230376151711744 is too many: 288230376151711744 × 938 steps per epoch does not fit a step count".into())
        );
        assert_eq!(steps_for_epochs(u64::MAX, 1), Ok(u64::MAX));
        assert_eq!(warmup_steps(0.5, 938), Ok(469));
        assert_eq!(warmup_steps(0.0, 938), Ok(0));
        for bad in [1e30, f64::NAN, f64::INFINITY, -0.5] {
            assert!(
                warmup_steps(bad, 938).unwrap_err().starts_with("--warmup"),
                "{bad}"
            );
        }
    }

    #[test]
    fn check_refuses_out_of_range_recipes() {
        let ok = Distill {
            alpha: 0.9,
            temperature: 4.0,
            teachers: 2,
            fingerprint: 7,
        };
        assert!(ok.check().is_ok());
        for bad in [
            Distill { alpha: 1.5, ..ok },
            Distill {
                alpha: f32::NAN,
                ..ok
            },
            Distill {
                temperature: 0.0,
                ..ok
            },
            Distill {
                temperature: 1e9,
                ..ok
            },
            Distill { teachers: 0, ..ok },
            Distill {
                teachers: MAX_TEACHERS + 1,
                ..ok
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
