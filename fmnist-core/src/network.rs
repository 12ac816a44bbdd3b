//! One network, as inference sees it: the [`Network`] trait, implemented once per network
//! (LeNet-BN in `nets/lenet/int8.rs`, the wide CNN in `nets/wide/int8.rs`), and [`NetworkFn`], a
//! function generic over the network, which [`crate::registry::dispatch`] calls with the
//! network a file header names.
//!
//! Everything is static: a generic function over `N: Network` is compiled once per network,
//! with no indirect calls.

use bytemuck::Pod;

use crate::arch::{Arch, Kind};
use crate::image::IMAGE_PIXELS;
use crate::quant::params::QParamsError;
use crate::tensors::Tensors;

/// A network: its parameter types, its f32 and int8 forward passes, and its place in the
/// model-file format.
pub trait Network: 'static {
    /// The header's architecture value.
    const ARCH: Arch;
    /// Short name for reports and benchmark kernel names (`LeNet`, `Wide`).
    const NAME: &'static str;

    /// f32 parameters as trained (batch norm separate): model-file kind 1.
    type Trained: Tensors + Send + Sync;
    /// f32 parameters with batch norm folded into the convolutions: model-file kind 2.
    type Folded: Tensors + Send + Sync;
    /// int8 parameters: model-file kind 3.
    type QParams: Pod + Send + Sync;
    /// The f32 network over parameters held elsewhere (either f32 kind).
    type F32<'a>: Copy + Send + Sync;
    /// The integer-only network over checked int8 parameters held elsewhere.
    type Int8<'a>: Copy + Send + Sync;

    /// The f32 network over trained parameters.
    fn f32_trained(p: &Self::Trained) -> Self::F32<'_>;
    /// The f32 network over BN-folded parameters.
    fn f32_folded(p: &Self::Folded) -> Self::F32<'_>;
    /// The fused f32 forward pass.
    fn forward(net: &Self::F32<'_>, image: &[u8; IMAGE_PIXELS]) -> [f32; 10];
    /// The layer-by-layer f32 reference pass (bit-identical to [`Network::forward`]).
    fn forward_layers(net: &Self::F32<'_>, image: &[u8; IMAGE_PIXELS]) -> [f32; 10];

    /// The int8 parameter check the kernels' overflow proof depends on.
    fn check_int8(p: &Self::QParams) -> Result<(), QParamsError>;
    /// Checks `p` ([`Network::check_int8`]) and wraps it as the int8 network.
    fn int8(p: &Self::QParams) -> Result<Self::Int8<'_>, QParamsError>;
    /// The int8 logits of one image (the fused kernels the device runs).
    fn int8_forward(net: &Self::Int8<'_>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10];
    /// The int8 logits layer by layer, each layer's step run inside [`LayerProbe::layer`]
    /// (the firmware's bench times them one by one); bit-identical to
    /// [`Network::int8_forward`], whose steps it takes in the same order.
    fn int8_forward_probed<P: LayerProbe>(
        net: &Self::Int8<'_>,
        image: &[u8; IMAGE_PIXELS],
        probe: &mut P,
    ) -> [i8; 10];
    /// The int8 logits through the plain reference kernels (bit-identical).
    fn int8_forward_reference(net: &Self::Int8<'_>, image: &[u8; IMAGE_PIXELS]) -> [i8; 10];
    /// Output scale and zero point of the logits (the last layer's output quantization).
    fn output_quant(p: &Self::QParams) -> (f32, i8);

    /// Payload bytes of a model file of this network and `kind`.
    fn layout_len(kind: Kind) -> usize {
        match kind {
            Kind::F32 => size_of::<Self::Trained>(),
            Kind::F32Folded => size_of::<Self::Folded>(),
            Kind::Int8 => size_of::<Self::QParams>(),
        }
    }
}

/// Runs the steps of a layer-by-layer pass ([`Network::int8_forward_probed`]), e.g. timing
/// each one.
pub trait LayerProbe {
    /// Runs `step`, the layer named `layer` (`conv1+relu+pool`, `fc1+relu`, …), and returns
    /// its result.
    fn layer<R>(&mut self, layer: &'static str, step: impl FnOnce() -> R) -> R;
}

/// A function generic over the network, for [`crate::registry::dispatch`] (a closure cannot be
/// generic): write `call` once and it is compiled once per network.
pub trait NetworkFn {
    /// What the function returns.
    type Output;
    /// The function, for network `N`.
    fn call<N: Network>(self) -> Self::Output;
}
