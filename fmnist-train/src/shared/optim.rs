//! The optimizers: momentum SGD (LeNet-BN) and Adam (the wide CNN), each with its
//! per-parameter state. Both update element by element over the trainable ranges, so the result
//! does not depend on the thread count.

use std::ops::Range;

use fmnist_core::tensors::{Rule, Slot, check_flat};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::shared::config::{AdamConfig, Optimizer, SgdConfig};
use crate::shared::kernels::simd_dispatch;

/// An optimizer's per-parameter state and its update.
pub trait Optim: Sized + Send + Clone {
    /// Its name in messages.
    const NAME: &'static str;
    /// The optimizer's settings in a recipe.
    type Config: Copy;
    /// The settings, when `o` names this optimizer.
    fn config(o: &Optimizer) -> Option<Self::Config>;
    /// The peak learning rate (the schedule scales it).
    fn lr(c: &Self::Config) -> f32;
    /// Zero state for `len` parameters.
    fn new(len: usize) -> Self;
    /// Values per state vector.
    fn lens(&self) -> impl Iterator<Item = usize>;
    /// One update of `w` by the gradient `g` over `ranges` at learning rate `lr`, for step
    /// `step` (0-based).
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        c: &Self::Config,
        lr: f32,
        step: u64,
        w: &mut [f32],
        g: &[f32],
        ranges: &[Range<usize>],
        pool: &rayon::ThreadPool,
    );
    /// Refuses state no run produces (laid out as `table`), naming the vector.
    fn check(&self, table: &'static [Slot]) -> Result<(), String>;
}

/// Momentum SGD's state: the velocity of every parameter (0 at the running statistics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Momentum {
    /// Velocity, laid out as the parameters.
    pub v: Vec<f32>,
}

impl Optim for Momentum {
    const NAME: &'static str = "momentum SGD";
    type Config = SgdConfig;

    fn config(o: &Optimizer) -> Option<SgdConfig> {
        match o {
            Optimizer::Sgd(c) => Some(*c),
            Optimizer::Adam(_) => None,
        }
    }

    fn lr(c: &SgdConfig) -> f32 {
        c.lr
    }

    fn new(len: usize) -> Self {
        Momentum { v: vec![0.0; len] }
    }

    fn lens(&self) -> impl Iterator<Item = usize> {
        [self.v.len()].into_iter()
    }

    /// `v = μ·v − lr·(g + wd·w)`, `w −= lr·λ·w` (decoupled decay follows the schedule), `w += v`.
    fn update(
        &mut self,
        c: &SgdConfig,
        lr: f32,
        _step: u64,
        w: &mut [f32],
        g: &[f32],
        ranges: &[Range<usize>],
        _pool: &rayon::ThreadPool,
    ) {
        let (mu, wd) = (c.momentum, c.weight_decay);
        let shrink = lr * c.decoupled_decay;
        let v = &mut self.v;
        for r in ranges {
            for i in r.clone() {
                let gi = g[i] + wd * w[i];
                v[i] = mu * v[i] - lr * gi;
                if shrink != 0.0 {
                    w[i] -= shrink * w[i];
                }
                w[i] += v[i];
            }
        }
    }

    fn check(&self, table: &'static [Slot]) -> Result<(), String> {
        check_flat(table, &self.v, Rule::Finite).map_err(|e| format!("momentum: {e}"))
    }
}

/// Adam's state: first and second moments of every parameter (0 at the running statistics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// First moments, laid out as the parameters.
    pub m: Vec<f32>,
    /// Second moments, same layout.
    pub v: Vec<f32>,
}

impl Optim for Moments {
    const NAME: &'static str = "Adam";
    type Config = AdamConfig;

    fn config(o: &Optimizer) -> Option<AdamConfig> {
        match o {
            Optimizer::Adam(c) => Some(*c),
            Optimizer::Sgd(_) => None,
        }
    }

    fn lr(c: &AdamConfig) -> f32 {
        c.lr
    }

    fn new(len: usize) -> Self {
        Moments {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    fn lens(&self) -> impl Iterator<Item = usize> {
        [self.m.len(), self.v.len()].into_iter()
    }

    /// Adam with PyTorch's bias correction, L2 added to the gradient and decoupled decay
    /// applied before the step; in parallel over fixed blocks (element-wise, so any thread
    /// count gives the same bits).
    fn update(
        &mut self,
        a: &AdamConfig,
        lr: f32,
        step: u64,
        w: &mut [f32],
        g: &[f32],
        ranges: &[Range<usize>],
        pool: &rayon::ThreadPool,
    ) {
        let a = *a;
        let t = (step + 1) as i32;
        let bc1 = (1.0 - (a.beta1 as f64).powi(t)) as f32;
        let bc2_sqrt = ((1.0 - (a.beta2 as f64).powi(t)) as f32).sqrt();
        let step_size = lr / bc1;
        let decay = 1.0 - lr * a.decoupled_decay;
        let (m, v) = (&mut self.m, &mut self.v);
        const BLOCK: usize = 1 << 15;
        pool.install(|| {
            for r in ranges {
                w[r.clone()]
                    .par_chunks_mut(BLOCK)
                    .zip(m[r.clone()].par_chunks_mut(BLOCK))
                    .zip(v[r.clone()].par_chunks_mut(BLOCK))
                    .zip(g[r.clone()].par_chunks(BLOCK))
                    .for_each(|(((w, m), v), g)| {
                        adam_block(w, m, v, g, a, (decay, bc2_sqrt, step_size))
                    });
            }
        });
    }

    fn check(&self, table: &'static [Slot]) -> Result<(), String> {
        check_flat(table, &self.m, Rule::Finite).map_err(|e| format!("Adam first moment: {e}"))?;
        check_flat(table, &self.v, Rule::NonNegative)
            .map_err(|e| format!("Adam second moment: {e}"))
    }
}

simd_dispatch! {
    /// One block of [`Moments::update`]'s Adam step, element by element: zipped slices (no
    /// bounds checks) compiled for AVX2 where the CPU has it, so the loop runs eight lanes wide.
    /// Square root and division are correctly rounded in every width, and nothing is fused, so
    /// the same bits as one element at a time.
    fn adam_block(
        w: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        a: AdamConfig,
        k: (f32, f32, f32),
    ) {
        let (decay, bc2_sqrt, step_size) = k;
        for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
            let gi = g + a.weight_decay * *w;
            let wi = *w * decay;
            *m = a.beta1 * *m + (1.0 - a.beta1) * gi;
            *v = a.beta2 * *v + (1.0 - a.beta2) * gi * gi;
            let denom = v.sqrt() / bc2_sqrt + a.eps;
            *w = wi - step_size * *m / denom;
        }
    }
}
