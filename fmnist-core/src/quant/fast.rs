//! The kernels the device runs: fused, and bit-identical to the reference kernels.

use super::conv2d::QConv2d;
use super::dense::QDense;
use super::lenet::image_to_i8;
use super::params::QLayerParams;
use crate::lenet::IMAGE_PIXELS;

/// conv1 (6@5x5, padding 2) → requant → ReLU → 2x2 max-pool, straight from the u8 image.
pub fn conv1_relu_pool(
    weight: &[[[[i8; 5]; 5]; 1]; 6],
    q: &QLayerParams<6>,
    image: &[u8; IMAGE_PIXELS],
    out: &mut [[[i8; 14]; 14]; 6],
) {
    let x = image_to_i8(image);
    QConv2d::<1, 6, 5, 2> { weight, q }.forward_relu_pool(&x, out);
}

/// conv2 (16@5x5) → requant → ReLU → 2x2 max-pool.
pub fn conv2_relu_pool(
    weight: &[[[[i8; 5]; 5]; 6]; 16],
    q: &QLayerParams<16>,
    x: &[[[i8; 14]; 14]; 6],
    out: &mut [[[i8; 5]; 5]; 16],
) {
    QConv2d::<6, 16, 5, 0> { weight, q }.forward_relu_pool(x, out);
}

/// Dense → requant (→ ReLU).
pub fn dense<const I: usize, const O: usize>(
    weight: &[[i8; I]; O],
    q: &QLayerParams<O>,
    x: &[i8; I],
    relu: bool,
    out: &mut [i8; O],
) {
    QDense { weight, q }.forward(x, relu, out);
}
