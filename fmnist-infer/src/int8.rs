//! The int8 model: a checked FMNM kind-3 file (LeNet-BN or the wide CNN, by the header's
//! architecture) run with fmnist-core's integer-only kernels.

use fmnist_core::format::Arch;
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::quant::{LeNetQ, WideQ};

use crate::error::{Error, Result};
use crate::modelio::LoadedModel;

/// The kernel view of either network.
#[derive(Clone, Copy, Debug)]
enum Net {
    LeNet(LeNetQ<'static>),
    Wide(WideQ<'static>),
}

/// A loaded, checked int8 model.
///
/// The parameters (65 KB for LeNet, 1.6 MB for the wide CNN) are copied once and kept for the
/// life of the process, so the kernel view is built (and its overflow-safety check run) once
/// rather than per image.
#[derive(Clone, Copy, Debug)]
pub struct Int8Model {
    net: Net,
}

/// A leaked copy of `p`, byte-wise (a 1.6 MB payload never passes through the stack).
fn leak_copy<T: bytemuck::Pod>(p: &T) -> &'static T {
    let mut owned: Box<T> = bytemuck::zeroed_box();
    bytemuck::bytes_of_mut(&mut *owned).copy_from_slice(bytemuck::bytes_of(p));
    Box::leak(owned)
}

impl Int8Model {
    /// Checks that `file` holds an int8 LeNet or wide CNN the kernels accept.
    pub fn new(file: LoadedModel) -> Result<Self> {
        let parsed = file.file().map_err(|e| Error::bad(&file.path, e))?;
        let bad = |e| Error::bad(&file.path, e);
        let net = match parsed.header.arch {
            Arch::LeNet => {
                let p = leak_copy(parsed.lenet_int8().map_err(bad)?);
                Net::LeNet(LeNetQ::new(p).map_err(|e| Error::bad(&file.path, e))?)
            }
            Arch::Wide => {
                let p = leak_copy(parsed.wide_int8().map_err(bad)?);
                Net::Wide(WideQ::new(p).map_err(|e| Error::bad(&file.path, e))?)
            }
        };
        Ok(Int8Model { net })
    }

    /// The network the file holds.
    pub fn arch(&self) -> Arch {
        match self.net {
            Net::LeNet(_) => Arch::LeNet,
            Net::Wide(_) => Arch::Wide,
        }
    }

    /// The LeNet kernel view (`None` for the wide CNN).
    pub fn lenet(&self) -> Option<&LeNetQ<'static>> {
        match &self.net {
            Net::LeNet(n) => Some(n),
            Net::Wide(_) => None,
        }
    }

    /// The wide-CNN kernel view (`None` for LeNet).
    pub fn wide(&self) -> Option<&WideQ<'static>> {
        match &self.net {
            Net::Wide(n) => Some(n),
            Net::LeNet(_) => None,
        }
    }

    /// The int8 logits of one image (the fused kernels the device runs).
    #[inline]
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        match &self.net {
            Net::LeNet(n) => n.forward(image),
            Net::Wide(n) => n.forward(image),
        }
    }

    /// The int8 logits through the plain reference kernels (bit-identical to [`Self::forward`]).
    pub fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        match &self.net {
            Net::LeNet(n) => n.forward_reference(image),
            Net::Wide(n) => n.forward_reference(image),
        }
    }

    /// Output scale and zero point of the logits (the last layer's output quantization: fc3
    /// for LeNet, fc2 for the wide CNN).
    pub fn output_quant(&self) -> (f32, i8) {
        let (scale, zp) = match &self.net {
            Net::LeNet(n) => (
                n.params().fc3.output_scale,
                n.params().fc3.output_zero_point,
            ),
            Net::Wide(n) => (
                n.params().fc2.output_scale,
                n.params().fc2.output_zero_point,
            ),
        };
        (scale, zp)
    }

    /// `scale · (q − zero_point)` with the logits' output scale and zero point.
    pub fn dequantize(&self, q: &[i8; 10]) -> [f32; 10] {
        let (scale, zp) = self.output_quant();
        q.map(|v| scale * (v as i32 - zp as i32) as f32)
    }
}
