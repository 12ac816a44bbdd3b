#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
//! `fmnist-core`: the inference half of fmnist, with no standard library and no heap.
//!
//! Everything here runs unchanged on the host and on a Cortex-M4F:
//!
//! * [`layers`]: f32 layers (conv, batch norm, ReLU, 2x2 max-pool, dense, softmax, argmax) as
//!   fixed-size types whose shapes are const generics, so a mismatched model does not compile;
//! * [`nets`]: one folder per network, each the whole network (f32 model, int8 twin and its
//!   [`network::Network`] implementation, tensor-name table): [`lenet`], the LeNet-BN model
//!   built from those layers, reading its weights in place; [`wide`], the wide CNN (1.6 M
//!   parameters) built from the same layers (its int8 twin is [`quant::WideQ`]);
//! * [`image`]: the input every network takes (28x28 u8, its f32 and int8 forms);
//! * [`tensors`]: the finiteness check every reader of f32 parameters runs, naming the tensor
//!   through each layout's name table;
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
pub mod image;
pub mod layers;
pub mod nets;
pub mod network;
pub mod quant;
pub mod registry;
pub mod tensors;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub use classes::{CLASS_NAMES, NUM_CLASSES};
// Each network's folder under its old path (`fmnist_core::lenet::*`, `fmnist_core::wide::*`).
pub use nets::{lenet, wide};
