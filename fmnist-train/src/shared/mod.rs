//! Training machinery every network shares, none of it knowing a network: the [`net::TrainNet`]
//! trait a network implements (`net.rs`), the one trainer (`trainer.rs`), the optimizers
//! (`optim.rs`), recipes and schedules (`config.rs`), augmentation (`augment.rs`),
//! distillation's teachers (`distill.rs`, `weights.rs`), kernels and deterministic reductions
//! (`kernels.rs`: GEMM, batch-norm statistics, loss gradients, SIMD dispatch), the GEMM itself
//! (`gemm.rs`) and products by a mostly-zero matrix (`sparse.rs`), what a step reports
//! (`step.rs`), what every benchmark shares (`bench.rs`), the log record (`log.rs`) and its
//! TensorBoard twin (`tensorboard.rs`), calibration and quantization of one layer (`quant.rs`)
//! and the BN fold of one convolution (`fold.rs`).

pub mod augment;
pub mod bench;
pub mod config;
pub mod distill;
pub mod fold;
pub mod gemm;
pub mod kernels;
pub mod log;
pub mod net;
pub mod optim;
pub mod quant;
pub mod sparse;
pub mod step;
pub mod tensorboard;
pub mod trainer;
pub mod weights;
