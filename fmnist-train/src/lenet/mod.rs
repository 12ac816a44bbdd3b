//! LeNet-BN, as the trainer sees it: its batched f32 kernels, init and evaluation
//! (`kernels.rs`), its run state and momentum-SGD step (`train.rs`), its BN fold and its
//! calibration and quantization (`quant.rs`).

pub mod kernels;
pub mod quant;
pub mod train;
