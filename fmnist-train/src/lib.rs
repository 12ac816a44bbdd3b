//! `fmnist-train`: load Fashion-MNIST, train LeNet-BN or the wide CNN, fold, quantize and
//! export them.
//!
//! Each network has a folder (`lenet/`, `wide/`) with its [`shared::net::TrainNet`]
//! implementation; `networks.rs` lists them once (one line each), [`registry`] dispatches
//! to them; what they share (the one
//! [`shared::trainer::Trainer`], optimizers, recipes, augmentation, distillation, kernels) is
//! in `shared/`. The shared modules `augment`, `config`, `distill`, `log` and `weights` are
//! re-exported here under their old paths.

pub mod bench;
pub mod checkpoint;
pub mod export;
pub mod fold;
pub mod lenet;
mod networks;
pub mod plot;
pub mod quantize;
pub mod registry;
pub mod run;
pub mod run_dir;
pub mod shared;
pub mod summary;
pub mod trainer;
pub mod wide;

pub use shared::{augment, config, distill, log, tensorboard, weights};
