//! Both networks on the shared kernels ([`super::kernels`]): weights packed once for a path,
//! and the forward pass through HWC buffers on the stack.
//!
//! Buffers, in elements of the path's activation type (LeNet-BN | wide CNN):
//!
//! ```text
//! image, padded            32x32x1 (+8)        | 30x30x1 (+8)
//! conv1 → pool             14x14x6 (+8)        | 16x16x32, padding 1 at conv2's input zero point
//! conv2 → pool             5x5x16 = fc1 input  | 7x7x64 = fc1 input
//! fc1, fc2, (fc3)          120, 88, 16 lanes   | 512, 16 lanes
//! ```
//!
//! fc1's columns are permuted at packing from PyTorch's C×H×W flatten to the HWC buffer.

use core::marker::PhantomData;

use super::kernels::{
    ConvPacked, DensePacked, LeNetConv1, Path, Vector, conv_pool, dense, load_image, pack_conv,
    pack_dense,
};
use crate::image::IMAGE_PIXELS;

/// A weight tensor's bytes as i8, in its order.
fn flat<T: bytemuck::Pod>(w: &T) -> &[i8] {
    bytemuck::cast_slice(core::slice::from_ref(w))
}
use crate::quant::{LeNetQParams, WideQParams};

/// Whether `P` runs on 16-lane vectors (its blocking differs: 32 registers, twice the lanes).
const fn wide_vectors<P: Path>() -> bool {
    <P::V as Vector>::LANES == 16
}

/// Vectors per block of the 10-output layers (one or two vectors: tiny either way).
const FC3_BLOCK: usize = 1;

/// LeNet-BN packed for path `P`.
pub(crate) struct LeNetX86<P: Path> {
    conv1: LeNetConv1,
    conv2: ConvPacked,
    fc1: DensePacked,
    fc2: DensePacked,
    fc3: DensePacked,
    _path: PhantomData<P>,
}

impl<P: Path> LeNetX86<P> {
    /// Packs checked parameters.
    pub(crate) fn new(p: &LeNetQParams) -> Self {
        let wide = |w, n| if wide_vectors::<P>() { w } else { n };
        LeNetX86 {
            conv1: LeNetConv1::new::<P>(&p.conv1_weight, &p.conv1),
            conv2: pack_conv::<P, 16>(flat(&p.conv2_weight), &p.conv2, 6, 5),
            // Buffer input (y·5 + x)·16 + c is PyTorch's column c·25 + y·5 + x.
            fc1: pack_dense::<P, 120>(
                p.fc1_weight.as_flattened(),
                &p.fc1,
                400,
                wide(8, 15),
                true,
                |i| (i % 16) * 25 + i / 16,
            ),
            fc2: pack_dense::<P, 84>(
                p.fc2_weight.as_flattened(),
                &p.fc2,
                120,
                wide(6, 11),
                true,
                |i| i,
            ),
            fc3: pack_dense::<P, 10>(
                p.fc3_weight.as_flattened(),
                &p.fc3,
                84,
                FC3_BLOCK,
                false,
                |i| i,
            ),
            _path: PhantomData,
        }
    }

    /// The int8 logits of one image.
    ///
    /// # Safety
    /// The CPU has `P`'s instructions and the caller is compiled with its target features.
    #[inline(always)]
    pub(crate) unsafe fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        let zero = P::act(0);
        let mut x1 = [zero; 14 * 14 * 6 + 8];
        let mut x2 = [zero; 400];
        // fc1, fc2, fc3 outputs, rounded up to 8 or 16 lanes.
        let mut x3 = [zero; 128];
        let mut x4 = [zero; 96];
        let mut x5 = [zero; 16];
        // SAFETY: the caller's promise; the buffers have the sizes the kernels assert.
        unsafe {
            P::lenet_conv1(&self.conv1, image, &mut x1);
            if wide_vectors::<P>() {
                conv_pool::<P, 6, 5, 14, 5, 5, 1, 5, 16, 0, 5>(&self.conv2, &x1, &mut x2);
                dense::<P, 400, 120, 8>(&self.fc1, &x2, &mut x3);
                dense::<P, 120, 84, 6>(&self.fc2, &x3, &mut x4);
            } else {
                conv_pool::<P, 6, 5, 14, 5, 5, 2, 1, 16, 0, 5>(&self.conv2, &x1, &mut x2);
                dense::<P, 400, 120, 15>(&self.fc1, &x2, &mut x3);
                dense::<P, 120, 84, 11>(&self.fc2, &x3, &mut x4);
            }
            dense::<P, 84, 10, { FC3_BLOCK }>(&self.fc3, &x4, &mut x5);
        }
        core::array::from_fn(|i| P::to_i8(x5[i]))
    }
}

/// The wide CNN packed for path `P`.
pub(crate) struct WideX86<P: Path> {
    conv1: ConvPacked,
    conv2: ConvPacked,
    fc1: DensePacked,
    fc2: DensePacked,
    /// conv2's input zero point: its padding.
    conv2_zp: i8,
    _path: PhantomData<P>,
}

impl<P: Path> WideX86<P> {
    /// Packs checked parameters.
    pub(crate) fn new(p: &WideQParams) -> Self {
        WideX86 {
            conv1: pack_conv::<P, 32>(flat(&p.conv1_weight), &p.conv1, 1, 3),
            conv2: pack_conv::<P, 64>(flat(&p.conv2_weight), &p.conv2, 32, 3),
            // Buffer input (y·7 + x)·64 + c is PyTorch's column c·49 + y·7 + x.
            fc1: pack_dense::<P, 512>(p.fc1_weight.as_flattened(), &p.fc1, 3136, 8, true, |i| {
                (i % 64) * 49 + i / 64
            }),
            fc2: pack_dense::<P, 10>(
                p.fc2_weight.as_flattened(),
                &p.fc2,
                512,
                FC3_BLOCK,
                false,
                |i| i,
            ),
            conv2_zp: p.conv2.input_zero_point,
            _path: PhantomData,
        }
    }

    /// The int8 logits of one image.
    ///
    /// # Safety
    /// The CPU has `P`'s instructions and the caller is compiled with its target features.
    #[inline(always)]
    pub(crate) unsafe fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        let zero = P::act(0);
        let mut x0 = [P::act(-128); 30 * 30 + 8];
        load_image::<P>(image, 30, 1, &mut x0);
        let mut x1 = [P::act(self.conv2_zp); 16 * 16 * 32 + 8];
        let mut x2 = [zero; 3136];
        let mut x3 = [zero; 512];
        let mut x4 = [zero; 16];
        // SAFETY: the caller's promise; the buffers have the sizes the kernels assert.
        unsafe {
            if wide_vectors::<P>() {
                conv_pool::<P, 1, 3, 30, 14, 14, 2, 2, 32, { 17 * 32 }, 16>(
                    &self.conv1,
                    &x0,
                    &mut x1,
                );
                conv_pool::<P, 32, 3, 16, 7, 7, 4, 1, 64, 0, 7>(&self.conv2, &x1, &mut x2);
            } else {
                conv_pool::<P, 1, 3, 30, 14, 14, 2, 1, 32, { 17 * 32 }, 16>(
                    &self.conv1,
                    &x0,
                    &mut x1,
                );
                conv_pool::<P, 32, 3, 16, 7, 7, 2, 1, 64, 0, 7>(&self.conv2, &x1, &mut x2);
            }
            dense::<P, 3136, 512, 8>(&self.fc1, &x2, &mut x3);
            dense::<P, 512, 10, { FC3_BLOCK }>(&self.fc2, &x3, &mut x4);
        }
        core::array::from_fn(|i| P::to_i8(x4[i]))
    }
}
