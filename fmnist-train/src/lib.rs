//! `fmnist-train`: load Fashion-MNIST, train LeNet-BN, fold, quantize and export it.

pub mod atomic;
pub mod data;
pub mod fold;
pub mod modelio;
pub mod quantize;
pub mod safetensors_io;
