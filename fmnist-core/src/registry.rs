//! The networks this build knows, listed once: [`dispatch`] maps a header's [`Arch`] to the
//! network's [`Network`](crate::network::Network) implementation. Adding a network adds its
//! `Arch` value (`arch.rs`) and one line here.

use crate::arch::Arch;
use crate::network::NetworkFn;

pub use crate::quant::lenet::LeNetBn;
pub use crate::quant::wide::WideCnn;

/// Calls `f` with the network `arch` names.
#[inline]
pub fn dispatch<F: NetworkFn>(arch: Arch, f: F) -> F::Output {
    match arch {
        Arch::LeNet => f.call::<LeNetBn>(),
        Arch::Wide => f.call::<WideCnn>(),
    }
}
