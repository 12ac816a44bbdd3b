//! Trained f32 weights of any network, as `export` reads them and distillation's teachers hold
//! them: the architecture and the values in field order.

use fmnist_core::arch::Arch;
use fmnist_core::network::Network;
use fmnist_infer::data::Dataset;

use crate::shared::net::{Params, TrainNet, flat, param_count};

/// Trained f32 weights of some network.
pub struct TrainedWeights {
    arch: Arch,
    values: Vec<f32>,
    logits: fn(&[f32], &Dataset, &rayon::ThreadPool) -> Vec<[f32; 10]>,
}

impl TrainedWeights {
    /// Weights of `N`, in field order (`None` when the count is not `N`'s).
    pub fn new<N: TrainNet>(values: Vec<f32>) -> Option<Self> {
        (values.len() == param_count::<N>()).then_some(TrainedWeights {
            arch: N::Core::ARCH,
            values,
            logits: logits_of::<N>,
        })
    }

    /// Weights of `N`.
    pub fn of<N: TrainNet>(p: &Params<N>) -> Self {
        Self::new::<N>(flat::<N>(p).to_vec()).expect("a whole parameter set")
    }

    /// The network.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The values as bytes (native order).
    pub fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.values)
    }

    /// The weights as `N`'s parameters, when they are `N`'s.
    pub fn typed<N: TrainNet>(&self) -> Option<&Params<N>> {
        (self.arch == N::Core::ARCH).then(|| bytemuck::from_bytes(self.bytes()))
    }

    /// Inference-mode logits of every image of `data`.
    pub fn logits(&self, data: &Dataset, pool: &rayon::ThreadPool) -> Vec<[f32; 10]> {
        (self.logits)(&self.values, data, pool)
    }
}

fn logits_of<N: TrainNet>(
    values: &[f32],
    data: &Dataset,
    pool: &rayon::ThreadPool,
) -> Vec<[f32; 10]> {
    let p: &Params<N> = bytemuck::from_bytes(bytemuck::cast_slice(values));
    N::evaluate(p, data, pool).logits
}
