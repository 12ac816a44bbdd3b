//! The network the model file holds, run from flash through `fmnist_core::network::Network`:
//! [`start`] goes from the header's architecture to the network's implementation with
//! `fmnist_core::registry::dispatch`, checks the weights for the header's kind, and runs the
//! program ([`crate::run`]) on an [`Int8`] or [`F32`] network, generic over the network: each
//! (network, kind) this build runs is compiled once. The program's loops take a `&dyn Net`
//! (one copy of them, whatever the number of networks; a build with one network devirtualizes
//! the call), and the inference itself makes no indirect call.
//!
//! Which (network, kind) pairs a build runs is [`RUNS`]'s table of cargo features; the others
//! are compiled out and their files refused.

use core::hint::black_box;

use defmt::info;
use fmnist_core::format::{Arch, FormatError, Kind, ModelFile};
use fmnist_core::layers::argmax;
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::network::{LayerProbe, Network, NetworkFn};
use fmnist_core::registry::dispatch;

use crate::cost::{UNIT, measure};
use crate::model;

/// Most bytes of logits one inference produces (10 little-endian f32, or 10 i8).
#[cfg(feature = "f32")]
pub const MAX_LOGIT_BYTES: usize = 40;
/// Most bytes of logits one inference produces (10 i8).
#[cfg(not(feature = "f32"))]
pub const MAX_LOGIT_BYTES: usize = 10;

/// What this build runs: the name a (network, kind) has in the log, or `None` when its
/// feature is off (its code is not compiled in). One line per pair a firmware build can run.
pub const fn runs(arch: Arch, kind: Kind) -> Option<&'static str> {
    match (arch, kind) {
        (Arch::LeNet, Kind::Int8) if cfg!(feature = "int8") => Some("int8"),
        (Arch::LeNet, Kind::F32Folded) if cfg!(feature = "f32") => Some("f32"),
        (Arch::Wide, Kind::Int8) if cfg!(feature = "wide") => Some("wide-int8"),
        _ => None,
    }
}

const fn name_of(arch: Arch, kind: Kind) -> &'static str {
    match runs(arch, kind) {
        Some(n) => n,
        None => "",
    }
}

/// A model ready to run, weights in place.
pub trait Net {
    /// Short name for logs (`int8`, `f32`, `wide-int8`).
    fn name(&self) -> &'static str;
    /// Bytes of logits per image: 10 (int8) or 40 (f32 bits, little-endian).
    #[cfg_attr(feature = "board", allow(dead_code))]
    fn logit_bytes(&self) -> usize;
    /// Runs one image; writes the logits' bytes to `out[..logit_bytes()]`, returns the class.
    fn infer(&self, image: &[u8; IMAGE_PIXELS], out: &mut [u8]) -> usize;
    /// Runs one image layer by layer, logging each layer's cost; returns the sum. Panics if
    /// the layer-by-layer logits differ from [`Net::infer`]'s.
    fn bench(&self, image: &[u8; IMAGE_PIXELS]) -> u32;
}

/// Network `N` in int8 (`Network::int8_forward`).
pub struct Int8<N: Network>(N::Int8<'static>);

/// Network `N` in f32, batch norm folded (`Network::forward`).
pub struct F32<N: Network>(N::F32<'static>);

impl<N: Network> Net for Int8<N> {
    fn name(&self) -> &'static str {
        const { name_of(N::ARCH, Kind::Int8) }
    }

    fn logit_bytes(&self) -> usize {
        10
    }

    #[inline(never)]
    fn infer(&self, image: &[u8; IMAGE_PIXELS], out: &mut [u8]) -> usize {
        let logits = N::int8_forward(&self.0, image);
        for (dst, &v) in out.iter_mut().zip(&logits) {
            *dst = v as u8;
        }
        argmax(&logits)
    }

    /// The steps of `int8_forward`, in the same order, timed one by one
    /// (`Network::int8_forward_probed`).
    #[inline(never)]
    fn bench(&self, image: &[u8; IMAGE_PIXELS]) -> u32 {
        let mut timer = LayerTimer(0);
        let logits = N::int8_forward_probed(&self.0, image, &mut timer);
        if logits != N::int8_forward(&self.0, image) {
            defmt::panic!("bench: layer-by-layer logits differ from forward()");
        }
        timer.0
    }
}

impl<N: Network> Net for F32<N> {
    fn name(&self) -> &'static str {
        const { name_of(N::ARCH, Kind::F32Folded) }
    }

    fn logit_bytes(&self) -> usize {
        40
    }

    #[inline(never)]
    fn infer(&self, image: &[u8; IMAGE_PIXELS], out: &mut [u8]) -> usize {
        let logits = N::forward(&self.0, image);
        for (dst, v) in out.chunks_exact_mut(4).zip(&logits) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        argmax(&logits)
    }

    /// f32 has no per-layer breakdown: its layers are generic functions, and instantiating
    /// them here (at this crate's opt-level "s") would, after LTO merges identical instances,
    /// also replace the opt-level-3 copies `forward` runs. Only the whole inference is timed.
    #[inline(never)]
    fn bench(&self, image: &[u8; IMAGE_PIXELS]) -> u32 {
        let (logits, c) = measure(|| N::forward(&self.0, black_box(image)));
        black_box(logits);
        report("forward", c)
    }
}

/// Times each layer of a probed pass and sums the costs.
struct LayerTimer(u32);

impl LayerProbe for LayerTimer {
    #[inline(always)]
    fn layer<R>(&mut self, layer: &'static str, step: impl FnOnce() -> R) -> R {
        let (r, c) = measure(step);
        self.0 += report(layer, c);
        r
    }
}

fn report(layer: &str, cost: u32) -> u32 {
    info!("bench {=str}: {=u32} {=str}", layer, cost, UNIT);
    cost
}

/// Checks the weights of `file` (already `format::parse`d) for the network and kind its header
/// names, logs the model, and runs the program on it. Refuses a (network, kind) this build does
/// not run (`FormatError::WrongModel`) or weights that fail their check.
pub fn start(file: &ModelFile<'static>) -> Result<(), FormatError> {
    dispatch(file.header.arch, Start(file))
}

struct Start<'f>(&'f ModelFile<'static>);

impl NetworkFn for Start<'_> {
    type Output = Result<(), FormatError>;

    fn call<N: Network>(self) -> Self::Output {
        let file = self.0;
        match file.header.kind {
            Kind::Int8 if const { runs(N::ARCH, Kind::Int8).is_some() } => {
                let p = file.view::<N::QParams>(N::ARCH, Kind::Int8)?;
                let net = N::int8(p).map_err(FormatError::BadQuantParams)?;
                loaded(file);
                crate::run(&Int8::<N>(net));
            }
            Kind::F32Folded if const { runs(N::ARCH, Kind::F32Folded).is_some() } => {
                let net = N::f32_folded(file.folded::<N>()?);
                loaded(file);
                crate::run(&F32::<N>(net));
            }
            found_kind => {
                return Err(FormatError::WrongModel {
                    found_arch: N::ARCH,
                    found_kind,
                });
            }
        }
        Ok(())
    }
}

fn loaded(file: &ModelFile<'static>) {
    info!(
        "model: {=str} {=str}, {=u32} bytes of weights in place at {=usize:#010x}",
        file.header.arch.name(),
        file.header.kind.name(),
        file.header.payload_len,
        model::region_start()
    );
}
