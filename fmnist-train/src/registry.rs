//! The networks this trainer knows, listed once: [`dispatch`] maps an [`Arch`] (from a recipe's
//! `--model`, a checkpoint or a model file) to the network's [`TrainNet`] implementation.
//! Adding a network adds its folder and one line here.

use fmnist_core::arch::Arch;

use crate::shared::net::TrainNetFn;

pub use crate::lenet::TrainLeNet;
pub use crate::wide::TrainWide;

/// Calls `f` with the network `arch` names.
#[inline]
pub fn dispatch<F: TrainNetFn>(arch: Arch, f: F) -> F::Output {
    match arch {
        Arch::LeNet => f.call::<TrainLeNet>(),
        Arch::Wide => f.call::<TrainWide>(),
    }
}
