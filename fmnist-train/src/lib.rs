//! `fmnist-train`: load Fashion-MNIST, train LeNet-BN, fold, quantize and export it.

pub mod atomic;
pub mod augment;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod distill;
pub mod export;
pub mod fold;
pub mod inputs;
pub mod modelio;
pub mod nn;
pub mod outputs;
pub mod plot;
pub mod quantize;
pub mod run;
pub mod run_dir;
pub mod safetensors_io;
pub mod trainer;
pub mod wide_nn;
pub mod wide_trainer;
