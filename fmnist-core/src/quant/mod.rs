//! Integer-only int8 inference: no floating point, no heap, bit-identical on every machine.
//!
//! * [`requant`]: TensorFlow Lite's reference requantization (`MultiplyByQuantizedMultiplier`);
//! * [`params`]: the folded constants of one layer as stored in the model file;
//! * [`conv2d`], [`dense`]: plain reference kernels, one accumulator at a time;
//! * [`fast`]: the kernels the device runs (and the host benchmarks), bit-identical to the
//!   reference ones, with a Cortex-M4 dual-MAC path;
//! * [`lenet`]: the int8 LeNet, its model-file payload [`LeNetQParams`] and its forward pass.
//!
//! Max-pooling works on int8 directly with [`max_pool_2x2`]; argmax (ties to the lowest index)
//! with [`crate::layers::argmax`].

pub mod conv2d;
pub mod dense;
pub mod fast;
pub mod lenet;
pub mod params;
pub mod requant;

pub use crate::layers::{argmax, max_pool_2x2};
pub use conv2d::QConv2d;
pub use dense::QDense;
pub use lenet::{LeNetQ, LeNetQParams, QTrace};
pub use params::{QLayerParams, QParamsError};
pub use requant::{Requant, multiply_by_quantized_multiplier};
