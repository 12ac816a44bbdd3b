//! Integer-only int8 inference: no floating point, no heap, bit-identical on every machine.
//!
//! * [`requant`]: TensorFlow Lite's reference requantization (`MultiplyByQuantizedMultiplier`);
//! * [`params`]: the folded constants of one layer as stored in the model file;
//! * [`conv2d`], [`dense`]: plain reference kernels, one accumulator at a time;
//! * [`fast`]: the kernels the device runs (and the host benchmarks), bit-identical to the
//!   reference ones, with a Cortex-M4 dual-MAC path;
//! * [`lenet`]: the int8 LeNet, its model-file payload [`LeNetQParams`] and its forward pass
//!   (in the network's folder, `nets/lenet/int8.rs`);
//! * [`wide`]: the int8 wide CNN, its payload [`WideQParams`] and its forward pass [`WideQ`]
//!   (`nets/wide/int8.rs`).
//!
//! Max-pooling works on int8 directly with [`max_pool_2x2`]; argmax (ties to the lowest index)
//! with [`crate::layers::argmax`].
//!
//! # Measured cost (LeNet, 416,520 MACs per image; figures as of this commit)
//! * Host, one thread, batch 1 (SSE2 baseline, no `target-cpu`): about 299 k x86-64
//!   instructions per image (callgrind, `lenet::bench_fused_only`); 43–44 k images/s on the
//!   shared 2-core EPYC VM at load average 4.4, 9x the reference kernels in the same run
//!   (`cargo test --release -p fmnist-core --lib -- --ignored --nocapture int8_throughput`,
//!   thread CPU time).
//! * Host with the `std` feature on x86-64 (`fast::host`): the CPU's integer dot products,
//!   chosen at run time, same bits: about 102 k (AVX2), 198 k (AVX-VNNI) and 273 k (AVX-512
//!   VNNI) images per CPU-second on the same VM (`fmnist-infer bench --int8-kernel K`; README,
//!   "int8 on x86-64").
//! * Cortex-M4 (QEMU mps2-an386, `-icount`, firmware `bench`, fixed pattern, MSE-calibrated
//!   model): 450,520 instructions per inference (conv1 151,080; conv2 210,640; fc1 69,640;
//!   fc2 16,200; fc3 2,080), 1.08 per MAC (was 720,720). Inner loops: conv1 90 and conv2 465
//!   instructions per 2x2 window and channel (100 and 600 MACs: `LDRD` + `SMLAD`, no patch
//!   gathering), dense 44 per 32 MACs; the rest is the 1,790 requantizations (~19 instructions,
//!   none for a ReLU output whose accumulator is ≤ 0, so the count depends slightly on the
//!   input), max-pooling, data layout and loop control.
//! * Bit-exactness: `fast::tests` (both paths vs the reference, host), `lenet::tests`, and
//!   `lenet::external_logits` (QEMU `verify` logits vs host, 800 test images, identical).
//!
//! # Measured cost (wide CNN, 5.44 M MACs per image; figures as of this commit)
//! * Cortex-M4 (QEMU mps2-an386, `-icount`, fmnist-core at opt-level 3 without overflow checks,
//!   a random valid model, measured by a scratch program outside this repository): 6.93 M
//!   instructions per inference (conv1 609 k, conv2 4.08 M, fc1 2.23 M, fc2 10 k). conv2's
//!   inner loop ([`fast::conv_relu_pool`]) is 15 instructions per 16 MACs; the rest of conv2 is
//!   building the im2col patches (about 9 k instructions per pooling window) and
//!   requantization. The same program found the DSP kernels (conv 1→32 and 32→64, dense
//!   3136/512/400/120/84 inputs) equal to the reference kernels on the real instruction set.
//! * Host, one thread (SSE2 portable path), about 1.1–1.9 k images/s on the shared 2-core VM,
//!   6x the reference kernels (`wide::bench`).

pub mod conv2d;
pub mod dense;
pub mod fast;
pub mod params;
pub mod requant;

// Each network's int8 half, in its folder, under its old path.
pub use crate::nets::lenet::int8 as lenet;
pub use crate::nets::wide::int8 as wide;

pub use crate::layers::{argmax, max_pool_2x2};
pub use conv2d::QConv2d;
pub use dense::QDense;
pub use lenet::{LeNetQ, LeNetQParams, QTrace};
pub use params::{QLayerParams, QParamsError};
pub use requant::{Requant, multiply_by_quantized_multiplier};
pub use wide::{WideQ, WideQParams, WideQTrace};
