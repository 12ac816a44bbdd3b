//! The network the model file holds, run from flash: one forward pass, and a per-layer
//! cost breakdown for the bench mode.

use core::hint::black_box;

use defmt::info;
use fmnist_core::layers::argmax;
use fmnist_core::lenet::IMAGE_PIXELS;
#[cfg(feature = "f32")]
use fmnist_core::lenet::LeNet;
#[cfg(feature = "int8")]
use fmnist_core::quant::LeNetQ;
#[cfg(feature = "wide")]
use fmnist_core::quant::WideQ;

use crate::cost::{UNIT, measure};
use crate::model::Weights;

/// Most bytes of logits one inference produces (10 little-endian f32, or 10 i8).
#[cfg(feature = "f32")]
pub const MAX_LOGIT_BYTES: usize = 40;
/// Most bytes of logits one inference produces (10 i8).
#[cfg(not(feature = "f32"))]
pub const MAX_LOGIT_BYTES: usize = 10;

/// A model ready to run, weights in place.
pub enum Net {
    /// Integer-only: `fmnist_core::quant::LeNetQ`.
    #[cfg(feature = "int8")]
    Int8(LeNetQ<'static>),
    /// f32, batch norm folded: `fmnist_core::lenet::LeNet`.
    #[cfg(feature = "f32")]
    F32(LeNet<'static>),
    /// The wide CNN, integer-only: `fmnist_core::quant::WideQ`.
    #[cfg(feature = "wide")]
    Wide(WideQ<'static>),
}

impl Net {
    /// The network for checked weights.
    pub fn new(w: Weights) -> Self {
        match w {
            #[cfg(feature = "int8")]
            Weights::Int8(p) => match LeNetQ::new(p) {
                Ok(m) => Net::Int8(m),
                // `ModelFile::lenet_int8` already ran the same check.
                Err(_) => defmt::unreachable!(),
            },
            #[cfg(feature = "f32")]
            Weights::F32(p) => Net::F32(LeNet::from(p)),
            #[cfg(feature = "wide")]
            Weights::WideInt8(p) => match WideQ::new(p) {
                Ok(m) => Net::Wide(m),
                // `ModelFile::wide_int8` already ran the same check.
                Err(_) => defmt::unreachable!(),
            },
        }
    }

    /// Short name for logs (`int8`, `f32`, `wide-int8`).
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "int8")]
            Net::Int8(_) => "int8",
            #[cfg(feature = "f32")]
            Net::F32(_) => "f32",
            #[cfg(feature = "wide")]
            Net::Wide(_) => "wide-int8",
        }
    }

    /// Bytes of logits per image: 10 (int8, LeNet or wide) or 40 (f32 bits, little-endian).
    #[cfg_attr(feature = "board", allow(dead_code))]
    pub fn logit_bytes(&self) -> usize {
        match self {
            #[cfg(feature = "int8")]
            Net::Int8(_) => 10,
            #[cfg(feature = "f32")]
            Net::F32(_) => 40,
            #[cfg(feature = "wide")]
            Net::Wide(_) => 10,
        }
    }

    /// Runs one image; writes the logits' bytes to `out[..logit_bytes()]`, returns the class.
    #[inline(never)]
    pub fn infer(&self, image: &[u8; IMAGE_PIXELS], out: &mut [u8]) -> usize {
        match self {
            #[cfg(feature = "int8")]
            Net::Int8(m) => {
                let logits = m.forward(image);
                for (dst, &v) in out.iter_mut().zip(&logits) {
                    *dst = v as u8;
                }
                argmax(&logits)
            }
            #[cfg(feature = "f32")]
            Net::F32(m) => {
                let logits = m.forward(image);
                for (dst, v) in out.chunks_exact_mut(4).zip(&logits) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
                argmax(&logits)
            }
            #[cfg(feature = "wide")]
            Net::Wide(m) => {
                let logits = m.forward(image);
                for (dst, &v) in out.iter_mut().zip(&logits) {
                    *dst = v as u8;
                }
                argmax(&logits)
            }
        }
    }

    /// Runs one image layer by layer, logging each layer's cost; returns the sum. Panics if
    /// the layer-by-layer logits differ from [`Net::infer`]'s.
    #[inline(never)]
    pub fn bench(&self, image: &[u8; IMAGE_PIXELS]) -> u32 {
        match self {
            #[cfg(feature = "int8")]
            Net::Int8(m) => bench_int8(m, image),
            #[cfg(feature = "f32")]
            Net::F32(m) => bench_f32(m, image),
            #[cfg(feature = "wide")]
            Net::Wide(m) => bench_wide(m, image),
        }
    }
}

fn report(layer: &str, cost: u32) -> u32 {
    info!("bench {=str}: {=u32} {=str}", layer, cost, UNIT);
    cost
}

/// The steps of `LeNetQ::forward`, in the same order, timed one by one.
#[cfg(feature = "int8")]
#[inline(never)]
fn bench_int8(m: &LeNetQ<'static>, image: &[u8; IMAGE_PIXELS]) -> u32 {
    let image = black_box(image);
    let mut total = 0;
    let mut pool1 = [[[0i8; 14]; 14]; 6];
    let ((), c) = measure(|| m.conv1_relu_pool(image, black_box(&mut pool1)));
    total += report("conv1+relu+pool", c);
    let mut flat = [0i8; 400];
    let ((), c) = measure(|| m.conv2_relu_pool(&pool1, black_box(&mut flat)));
    total += report("conv2+relu+pool", c);
    let mut h1 = [0i8; 120];
    let ((), c) = measure(|| m.fc1(&flat, black_box(&mut h1)));
    total += report("fc1+relu", c);
    let mut h2 = [0i8; 84];
    let ((), c) = measure(|| m.fc2(&h1, black_box(&mut h2)));
    total += report("fc2+relu", c);
    let mut logits = [0i8; 10];
    let ((), c) = measure(|| m.fc3(&h2, black_box(&mut logits)));
    total += report("fc3", c);
    if logits != m.forward(image) {
        defmt::panic!("bench: layer-by-layer logits differ from forward()");
    }
    total
}

/// The steps of `WideQ::forward`, in the same order, timed one by one.
#[cfg(feature = "wide")]
#[inline(never)]
fn bench_wide(m: &WideQ<'static>, image: &[u8; IMAGE_PIXELS]) -> u32 {
    use fmnist_core::wide::{WIDE_FLAT, WIDE_HIDDEN};
    let image = black_box(image);
    let mut total = 0;
    let mut pool1 = [[[0i8; 14]; 14]; 32];
    let ((), c) = measure(|| m.conv1_relu_pool(image, black_box(&mut pool1)));
    total += report("conv1+relu+pool", c);
    let mut flat = [0i8; WIDE_FLAT];
    let ((), c) = measure(|| m.conv2_relu_pool(&pool1, black_box(&mut flat)));
    total += report("conv2+relu+pool", c);
    let mut h1 = [0i8; WIDE_HIDDEN];
    let ((), c) = measure(|| m.fc1(&flat, black_box(&mut h1)));
    total += report("fc1+relu", c);
    let mut logits = [0i8; 10];
    let ((), c) = measure(|| m.fc2(&h1, black_box(&mut logits)));
    total += report("fc2", c);
    if logits != m.forward(image) {
        defmt::panic!("bench: layer-by-layer logits differ from forward()");
    }
    total
}

/// f32 has no per-layer breakdown: its layers are generic functions, and instantiating them
/// here (at this crate's opt-level "s") would, after LTO merges identical instances, also
/// replace the opt-level-3 copies `LeNet::forward` runs. Only the whole inference is timed.
#[cfg(feature = "f32")]
#[inline(never)]
fn bench_f32(m: &LeNet<'static>, image: &[u8; IMAGE_PIXELS]) -> u32 {
    let (logits, c) = measure(|| m.forward(black_box(image)));
    black_box(logits);
    report("forward", c)
}
