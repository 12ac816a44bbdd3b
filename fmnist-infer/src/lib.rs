#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! * [`model`]: load any model file (FMNM f32 / f32-folded / int8, or PyTorch-named safetensors),
//!   detected by content;
//! * [`eval`]: accuracy, per-class accuracy and confusion matrix on the test set, multi-threaded;
//! * [`confusion`]: that confusion matrix as a PNG heat map;
//! * [`preprocess`]: any PNG or JPEG to a 28x28 Fashion-MNIST-like input (steps documented there);
//! * [`golden`]: the golden-output file the firmware test compares against (format documented there);
//! * [`bench`](mod@bench): single-thread batch-1 throughput next to the naive reference kernels;
//! * [`error`]: the CLI's error convention (exit 2 for bad input, 1 otherwise).

pub mod bench;
pub mod confusion;
pub mod error;
pub mod eval;
pub mod golden;
pub mod int8;
pub mod model;
pub mod preprocess;

pub use error::{Error, ErrorKind, Result};
pub use model::{Logits, Model, ModelKind};
