#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
//! `fmnist-core`: the inference half of fmnist, with no standard library and no heap.
//!
//! Everything here runs unchanged on the host and on a Cortex-M4F:
//!
//! * [`layers`]: f32 layers (conv, batch norm, ReLU, 2x2 max-pool, dense, softmax, argmax) as
//!   fixed-size types whose shapes are const generics, so a mismatched model does not compile;
//! * [`lenet`]: the LeNet-BN model built from them, reading its weights in place;
//! * [`wide`]: the wide CNN (1.6 M parameters) built from the same layers (its int8 twin is
//!   [`quant::WideQ`]);
//! * [`tensors`]: the named f32 tensors of each layout and the finiteness check every reader
//!   of f32 parameters runs;
//! * [`network`]: the [`network::Network`] trait, implemented once per network, and
//!   [`registry::dispatch`], the one list of networks, which picks one from a file header's
//!   [`arch::Arch`];
//! * [`classes`]: the ten Fashion-MNIST class names.
//!
//! Kernels cannot fail: they write into caller-provided buffers. `Result` appears only where bytes
//! from outside are parsed.

pub mod arch;
pub mod classes;
pub mod format;
pub mod layers;
pub mod lenet;
pub mod network;
pub mod quant;
pub mod registry;
pub mod tensors;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod wide;

pub use classes::{CLASS_NAMES, NUM_CLASSES};
