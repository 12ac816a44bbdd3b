//! The int8 model: a checked FMNM kind-3 file (any registered network, by the header's
//! architecture) run with fmnist-core's integer-only kernels, the implementation chosen at run
//! time ([`Kernel`]: the best this CPU has, or the one `FMNIST_INT8_KERNEL` or
//! `--int8-kernel` names). Every kernel gives the same bits.

use std::any::Any;

use fmnist_core::format::Arch;
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::network::{Network, NetworkFn};
pub use fmnist_core::quant::fast::host::Kernel;
use fmnist_core::quant::fast::host::{self, HostNet};
use fmnist_core::quant::{LeNetQ, WideQ};
use fmnist_core::registry::{LeNetBn, WideCnn, dispatch};

use crate::error::{Error, Result};
use crate::modelio::LoadedModel;

/// One network's int8 kernel view, behind [`Int8Model`].
trait Int8Net: Send + Sync {
    fn arch(&self) -> Arch;
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10];
    fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10];
    fn output_quant(&self) -> (f32, i8);
    fn as_any(&self) -> &dyn Any;
    fn kernel(&self) -> Kernel;
    /// The same network on `kernel` (packed anew, leaked).
    fn repack(&self, kernel: Kernel) -> &'static dyn Int8Net;
}

/// Network `N`'s int8 network over leaked parameters, and its weights packed for the chosen
/// kernel (`None`: the portable kernels, `N::int8_forward`).
struct Kernels<N: Network> {
    params: &'static N::QParams,
    net: N::Int8<'static>,
    host: Option<Box<dyn HostNet>>,
}

impl<N: Network> Kernels<N> {
    /// Packs for `kernel` (the portable kernels when `N` has no packed ones).
    fn new(params: &'static N::QParams, net: N::Int8<'static>, kernel: Kernel) -> &'static Self {
        let host = host::pack(params, kernel);
        Box::leak(Box::new(Kernels { params, net, host }))
    }
}

impl<N: Network> Int8Net for Kernels<N> {
    fn arch(&self) -> Arch {
        N::ARCH
    }
    #[inline]
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        match &self.host {
            Some(h) => h.forward(image),
            None => N::int8_forward(&self.net, image),
        }
    }
    fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        N::int8_forward_reference(&self.net, image)
    }
    fn output_quant(&self) -> (f32, i8) {
        N::output_quant(self.params)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn kernel(&self) -> Kernel {
        self.host.as_ref().map_or(Kernel::Portable, |h| h.kernel())
    }
    fn repack(&self, kernel: Kernel) -> &'static dyn Int8Net {
        Kernels::<N>::new(self.params, self.net, kernel)
    }
}

/// The environment variable that picks the int8 kernel (`portable`, `avx2`, `avx-vnni`,
/// `avx512-vnni`); unset or empty: [`Kernel::detect`].
pub const KERNEL_ENV: &str = "FMNIST_INT8_KERNEL";

/// The kernel named `name`, if this CPU runs it (the `--int8-kernel` parser; the message names
/// the choices).
pub fn parse_kernel(name: &str) -> std::result::Result<Kernel, String> {
    let names = Kernel::ALL.map(Kernel::name).join(", ");
    let k = Kernel::from_name(name)
        .ok_or_else(|| format!("unknown int8 kernel {name:?} (one of: {names})"))?;
    if !k.is_available() {
        let have: Vec<_> = Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .map(Kernel::name)
            .collect();
        return Err(format!(
            "int8 kernel {name} needs instructions this CPU lacks (it runs: {})",
            have.join(", ")
        ));
    }
    Ok(k)
}

/// The kernel `FMNIST_INT8_KERNEL` names, else the fastest this CPU runs.
pub fn default_kernel() -> Result<Kernel> {
    match std::env::var(KERNEL_ENV) {
        Ok(v) if !v.is_empty() => {
            parse_kernel(&v).map_err(|e| Error::bad_msg(format!("{KERNEL_ENV}: {e}")))
        }
        _ => Ok(Kernel::detect()),
    }
}

/// A loaded, checked int8 model.
///
/// The parameters (65 KB for LeNet, 1.6 MB for the wide CNN) are copied once and kept for the
/// life of the process, so the kernel view is built (and its overflow-safety check run) once
/// rather than per image.
#[derive(Clone, Copy)]
pub struct Int8Model {
    net: &'static dyn Int8Net,
}

impl std::fmt::Debug for Int8Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8Model")
            .field("arch", &self.net.arch())
            .finish_non_exhaustive()
    }
}

/// A leaked copy of `p`, byte-wise (a 1.6 MB payload never passes through the stack).
fn leak_copy<T: bytemuck::Pod>(p: &T) -> &'static T {
    let mut owned: Box<T> = bytemuck::zeroed_box();
    bytemuck::bytes_of_mut(&mut *owned).copy_from_slice(bytemuck::bytes_of(p));
    Box::leak(owned)
}

/// Loads the int8 network the header names.
struct Load<'a>(&'a LoadedModel);

impl NetworkFn for Load<'_> {
    type Output = Result<&'static dyn Int8Net>;
    fn call<N: Network>(self) -> Self::Output {
        let path = &self.0.path;
        let parsed = self.0.file().map_err(|e| Error::bad(path, e))?;
        let params = leak_copy(parsed.int8::<N>().map_err(|e| Error::bad(path, e))?);
        let net = N::int8(params).map_err(|e| Error::bad(path, e))?;
        Ok(Kernels::<N>::new(params, net, default_kernel()?))
    }
}

impl Int8Model {
    /// Checks that `file` holds an int8 network the kernels accept.
    pub fn new(file: &LoadedModel) -> Result<Self> {
        let parsed = file.file().map_err(|e| Error::bad(&file.path, e))?;
        let net = dispatch(parsed.header.arch, Load(file))?;
        Ok(Int8Model { net })
    }

    /// The network the file holds.
    pub fn arch(&self) -> Arch {
        self.net.arch()
    }

    /// The kernel [`Int8Model::forward`] runs.
    pub fn kernel(&self) -> Kernel {
        self.net.kernel()
    }

    /// The same model on `kernel` (which must be available: see [`parse_kernel`]; a network
    /// without packed kernels stays on the portable ones). Packs the weights anew.
    pub fn with_kernel(&self, kernel: Kernel) -> Int8Model {
        Int8Model {
            net: self.net.repack(kernel),
        }
    }

    /// Network `N`'s kernel view (`None` when the file holds another network).
    pub fn kernels<N: Network>(&self) -> Option<&N::Int8<'static>> {
        self.net
            .as_any()
            .downcast_ref::<Kernels<N>>()
            .map(|k| &k.net)
    }

    /// The LeNet kernel view (`None` for the wide CNN): [`Int8Model::kernels`] for LeNet-BN.
    pub fn lenet(&self) -> Option<&LeNetQ<'static>> {
        self.kernels::<LeNetBn>()
    }

    /// The wide-CNN kernel view (`None` for LeNet): [`Int8Model::kernels`] for the wide CNN.
    pub fn wide(&self) -> Option<&WideQ<'static>> {
        self.kernels::<WideCnn>()
    }

    /// The int8 logits of one image, on [`Int8Model::kernel`] (bit-identical on every kernel).
    #[inline]
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        self.net.forward(image)
    }

    /// The int8 logits through the plain reference kernels (bit-identical to [`Self::forward`]).
    pub fn forward_reference(&self, image: &[u8; IMAGE_PIXELS]) -> [i8; 10] {
        self.net.forward_reference(image)
    }

    /// Output scale and zero point of the logits (the last layer's output quantization: fc3
    /// for LeNet, fc2 for the wide CNN).
    pub fn output_quant(&self) -> (f32, i8) {
        self.net.output_quant()
    }

    /// `scale · (q − zero_point)` with the logits' output scale and zero point.
    pub fn dequantize(&self, q: &[i8; 10]) -> [f32; 10] {
        let (scale, zp) = self.output_quant();
        q.map(|v| scale * (v as i32 - zp as i32) as f32)
    }
}
