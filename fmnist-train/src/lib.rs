//! `fmnist-train`: load Fashion-MNIST, train LeNet-BN or the wide CNN, fold, quantize and
//! export them.
//!
//! Each network has a folder (`lenet/`, `wide/`); what they share is in `shared/`. The
//! modules `augment`, `config` and `log` are re-exported here under their old paths.

pub mod bench;
pub mod checkpoint;
pub mod distill;
pub mod export;
pub mod fold;
pub mod lenet;
pub mod plot;
pub mod quantize;
pub mod run;
pub mod run_dir;
pub mod shared;
pub mod summary;
pub mod trainer;
pub mod weights;
pub mod wide;

pub use shared::{augment, config, log};
