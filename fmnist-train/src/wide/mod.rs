//! The wide CNN, as the trainer sees it: its batched f32 kernels, init and evaluation
//! (`kernels.rs`, with the pieces both convolution algorithms share in `common.rs` and
//! Winograd F(2×2, 3×3) in `winograd.rs`), its run state and Adam step (`train.rs`), its BN
//! fold and its calibration and quantization (`quant.rs`).

mod common;
pub mod kernels;
pub mod quant;
pub mod train;
pub mod winograd;
