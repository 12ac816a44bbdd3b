//! Training machinery every network shares: recipes and schedules (`config.rs`), augmentation
//! (`augment.rs`), the kernels and deterministic reductions (`kernels.rs`: GEMM, batch-norm
//! statistics, loss gradients, SIMD dispatch), what a step reports (`step.rs`), the
//! log record (`log.rs`), calibration and quantization of one layer (`quant.rs`) and the BN
//! fold of one convolution (`fold.rs`). Nothing here knows a network.

pub mod augment;
pub mod config;
pub mod fold;
pub mod kernels;
pub mod log;
pub mod quant;
pub mod step;
