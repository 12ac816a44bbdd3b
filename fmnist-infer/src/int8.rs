//! The int8 model: a checked FMNM kind-3 file run with fmnist-core's integer-only kernels.

use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::quant::{LeNetQ, LeNetQParams};
use fmnist_train::modelio::LoadedModel;

use crate::error::{Error, Result};

/// A loaded, checked int8 LeNet.
///
/// The parameters (65 KB) are copied once and kept for the life of the process, so the kernel
/// view is built (and its overflow-safety check run) once rather than per image.
#[derive(Clone, Copy, Debug)]
pub struct Int8Model {
    net: LeNetQ<'static>,
}

impl Int8Model {
    /// Checks that `file` holds an int8 LeNet the kernels accept.
    pub fn new(file: LoadedModel) -> Result<Self> {
        let parsed = file.file().map_err(|e| Error::bad(&file.path, e))?;
        let p = parsed.lenet_int8().map_err(|e| Error::bad(&file.path, e))?;
        let mut owned: Box<LeNetQParams> = bytemuck::zeroed_box();
        bytemuck::bytes_of_mut(&mut *owned).copy_from_slice(bytemuck::bytes_of(p));
        let owned: &'static LeNetQParams = Box::leak(owned);
        let net = LeNetQ::new(owned).map_err(|e| Error::bad(&file.path, e))?;
        Ok(Int8Model { net })
    }

    /// The kernel view.
    pub fn net(&self) -> &LeNetQ<'static> {
        &self.net
    }

    /// The int8 logits of one image (the fused kernels the device runs).
    #[inline]
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        self.net.forward(image)
    }

    /// The int8 logits through the plain reference kernels (bit-identical to [`Self::forward`]).
    pub fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        self.net.forward_reference(image)
    }

    /// Output scale and zero point of the logits (fc3's output quantization).
    pub fn output_quant(&self) -> (f32, i8) {
        let q = &self.net.params().fc3;
        (q.output_scale, q.output_zero_point)
    }

    /// `scale · (q − zero_point)` with fc3's output scale and zero point.
    pub fn dequantize(&self, q: &[i8; 10]) -> [f32; 10] {
        let (scale, zp) = self.output_quant();
        q.map(|v| scale * (v as i32 - zp as i32) as f32)
    }
}
