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
//!
//! And the host pieces both tools use (`fmnist-train` depends on this crate, never the reverse):
//!
//! * [`data`]: the Fashion-MNIST IDX loader;
//! * [`modelio`]: reading and writing model files; [`safetensors_io`]: PyTorch's safetensors;
//!   [`onnx`]: ONNX graphs; [`params`]: f32 models as named tensors; [`convert`]: the
//!   `convert` command between the three;
//! * [`inputs`], [`outputs`], [`atomic`]: reading input files, writing outputs all-or-none,
//!   crash-safe single-file writes;
//! * [`canvas`]: the figures' canvas (embedded font, deterministic PNG);
//! * [`cli`]: command-line parsing with one-line usage errors, `--threads`; [`pool`]: the
//!   worker threads.

pub mod atomic;
pub mod bench;
pub mod canvas;
pub mod cli;
pub mod confusion;
pub mod convert;
pub mod data;
pub mod error;
pub mod eval;
pub mod golden;
pub mod inputs;
pub mod int8;
pub mod model;
pub mod modelio;
pub mod onnx;
pub mod outputs;
pub mod params;
pub mod pool;
pub mod preprocess;
pub mod safetensors_io;

pub use error::{Error, ErrorKind, Result};
pub use model::{F32Kernel, Logits, Model, ModelKind};
