//! Trained f32 weights of either network, as `export` reads them and distillation's teachers
//! hold them.

use fmnist_core::lenet::LeNetParams;
use fmnist_core::wide::WideParams;

/// Trained f32 weights of either network.
pub enum TrainedWeights {
    /// LeNet-BN.
    Lenet(Box<LeNetParams>),
    /// The wide CNN.
    Wide(Box<WideParams>),
}
