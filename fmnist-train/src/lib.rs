//! `fmnist-train`: load Fashion-MNIST, train LeNet-BN, fold, quantize and export it.

pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod distill;
pub mod export;
pub mod fold;
pub mod kernels;
pub mod log;
pub mod nn;
pub mod plot;
pub mod quantize;
pub mod run;
pub mod run_dir;
pub mod summary;
pub mod tensorboard;
pub mod trainer;
pub mod weights;
pub mod wide_nn;
pub mod wide_trainer;
