//! Loading a model file of any supported kind, detected by content, and running it on one image.
//!
//! * `FMNM` container (see `fmnist_core::format`): LeNet-BN or the wide CNN (by the header's
//!   architecture), kind 1 (f32 with BN), 2 (f32, BN folded) or 3 (int8);
//! * a safetensors file with PyTorch's `state_dict` of LeNet-BN or the wide CNN (see
//!   `crate::safetensors_io`), run as the f32 model.
//!
//! Anything else, a truncated or corrupt file included, is bad input naming the file.

use std::path::{Path, PathBuf};

use fmnist_core::format::{self, Arch, Kind};
use fmnist_core::layers::{argmax, softmax};
use fmnist_core::lenet::IMAGE_PIXELS;
#[cfg(target_arch = "x86_64")]
use fmnist_core::lenet::x86::{LeNetX86, Simd};
#[cfg(target_arch = "x86_64")]
use fmnist_core::lenet::{LeNet, LeNetFoldedParams, LeNetParams};
use fmnist_core::network::{Network, NetworkFn};
#[cfg(target_arch = "x86_64")]
use fmnist_core::registry::LeNetBn;
use fmnist_core::registry::dispatch;

use crate::error::{Error, Result};
use crate::int8::Int8Model;
use crate::modelio::LoadedModel;
use crate::safetensors_io;

/// The logits of one image, in the model's own number type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Logits {
    /// An f32 model's logits.
    F32([f32; 10]),
    /// An int8 model's quantized logits.
    I8([i8; 10]),
}

/// What a model file held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// FMNM kind 1: f32 with batch norm.
    F32,
    /// FMNM kind 2: f32 with batch norm folded.
    F32Folded,
    /// FMNM kind 3: int8.
    Int8,
    /// A PyTorch-named safetensors file (f32 with batch norm).
    Safetensors,
}

impl ModelKind {
    /// Name used in reports and JSON: `f32`, `f32-folded`, `int8`, `safetensors-f32`.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::F32 => "f32",
            ModelKind::F32Folded => "f32-folded",
            ModelKind::Int8 => "int8",
            ModelKind::Safetensors => "safetensors-f32",
        }
    }

    /// True for the int8 model.
    pub fn is_int8(self) -> bool {
        self == ModelKind::Int8
    }
}

/// One network's f32 parameters (either kind), behind [`F32Net`].
trait F32Weights: Send + Sync {
    /// The forward pass through the chosen kernel.
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10];
    fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10];
    fn name(&self) -> &'static str;
    /// The kernel [`F32Weights::forward`] runs ([`F32Kernel::name`] of a concrete one).
    fn kernel(&self) -> &'static str {
        "portable"
    }
    /// Chooses the kernel; a network with only the portable one refuses the others.
    fn set_kernel(&mut self, kernel: F32Kernel) -> std::result::Result<(), String> {
        match kernel {
            F32Kernel::Auto | F32Kernel::Portable => Ok(()),
            k => Err(format!(
                "--f32-kernel {}: the {} f32 forward pass has only the portable kernel",
                k.name(),
                self.name()
            )),
        }
    }
}

/// Which implementation runs an f32 model's forward pass (`--f32-kernel`). Every one gives the
/// same bits; they differ only in speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum F32Kernel {
    /// The fastest this CPU has for the model (AVX-512F, else AVX2, else portable).
    #[default]
    Auto,
    /// The portable code the device runs (`fmnist_core`'s fused forward pass).
    Portable,
    /// x86-64 AVX2 (LeNet-BN f32).
    Avx2,
    /// x86-64 AVX-512F (LeNet-BN f32).
    Avx512,
}

impl F32Kernel {
    /// The name on the command line and in reports: `auto`, `portable`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            F32Kernel::Auto => "auto",
            F32Kernel::Portable => "portable",
            F32Kernel::Avx2 => "avx2",
            F32Kernel::Avx512 => "avx512",
        }
    }

    /// Every concrete kernel (not [`F32Kernel::Auto`]).
    pub const CONCRETE: [F32Kernel; 3] = [F32Kernel::Portable, F32Kernel::Avx2, F32Kernel::Avx512];

    /// Whether this CPU can run the kernel (the portable one runs anywhere).
    pub fn on_this_cpu(self) -> bool {
        match self {
            F32Kernel::Auto | F32Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2 => Simd::avx2().is_some(),
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => Simd::avx512().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            F32Kernel::Avx2 | F32Kernel::Avx512 => false,
        }
    }
}

/// Network `N`'s trained f32 parameters.
struct Trained<N: Network>(Box<N::Trained>);
/// Network `N`'s BN-folded f32 parameters.
struct Folded<N: Network>(Box<N::Folded>);

impl<N: Network> F32Weights for Trained<N> {
    #[inline]
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        N::forward(&N::f32_trained(&self.0), image)
    }
    fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        N::forward_layers(&N::f32_trained(&self.0), image)
    }
    fn name(&self) -> &'static str {
        N::NAME
    }
}

impl<N: Network> Trained<N> {
    /// Behind [`F32Weights`]; LeNet-BN's with its x86 layout beside it.
    fn boxed(self) -> Box<dyn F32Weights> {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = as_lenet::<N, _, LeNetParams>(&*self.0) {
            let x86 = LeNetHost::<Self>::layout(&LeNet::from(p));
            return Box::new(LeNetHost::new(self, x86));
        }
        Box::new(self)
    }
}

impl<N: Network> Folded<N> {
    /// Behind [`F32Weights`]; LeNet-BN's with its x86 layout beside it.
    fn boxed(self) -> Box<dyn F32Weights> {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = as_lenet::<N, _, LeNetFoldedParams>(&*self.0) {
            let x86 = LeNetHost::<Self>::layout(&LeNet::from(p));
            return Box::new(LeNetHost::new(self, x86));
        }
        Box::new(self)
    }
}

/// `p` as LeNet-BN's parameter struct `T` when `N` is LeNet-BN (`P` is then `T`: the cast is
/// the identity), `None` for any other network.
#[cfg(target_arch = "x86_64")]
fn as_lenet<N: Network, P: bytemuck::Pod, T: bytemuck::Pod>(p: &P) -> Option<&T> {
    (std::any::TypeId::of::<N>() == std::any::TypeId::of::<LeNetBn>())
        .then(|| bytemuck::from_bytes(bytemuck::bytes_of(p)))
}

/// LeNet-BN's f32 weights (`W`, either kind) with their x86 SIMD layout
/// ([`fmnist_core::lenet::x86`]): `forward` runs AVX-512F, AVX2 or the portable kernel,
/// all bit-identical.
#[cfg(target_arch = "x86_64")]
struct LeNetHost<W> {
    portable: W,
    x86: Box<LeNetX86>,
    /// The SIMD kernel `forward` runs; `None`: the portable one.
    simd: Option<Simd>,
}

#[cfg(target_arch = "x86_64")]
impl<W> LeNetHost<W> {
    fn layout(net: &LeNet<'_>) -> Box<LeNetX86> {
        let mut x: Box<LeNetX86> = bytemuck::zeroed_box();
        x.prepare(net);
        x
    }

    fn new(portable: W, x86: Box<LeNetX86>) -> Self {
        LeNetHost {
            portable,
            x86,
            simd: Simd::best(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<W: F32Weights> F32Weights for LeNetHost<W> {
    #[inline]
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        match self.simd {
            Some(simd) => self.x86.forward(simd, image),
            None => self.portable.forward(image),
        }
    }
    fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        self.portable.forward_layers(image)
    }
    fn name(&self) -> &'static str {
        self.portable.name()
    }
    fn kernel(&self) -> &'static str {
        self.simd.map_or("portable", Simd::name)
    }
    fn set_kernel(&mut self, kernel: F32Kernel) -> std::result::Result<(), String> {
        let missing = |isa: &str| format!("--f32-kernel {}: this CPU has no {isa}", kernel.name());
        self.simd = match kernel {
            F32Kernel::Auto => Simd::best(),
            F32Kernel::Portable => None,
            F32Kernel::Avx2 => Some(Simd::avx2().ok_or_else(|| missing("AVX2"))?),
            F32Kernel::Avx512 => Some(Simd::avx512().ok_or_else(|| missing("AVX-512F"))?),
        };
        Ok(())
    }
}

impl<N: Network> F32Weights for Folded<N> {
    #[inline]
    fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        N::forward(&N::f32_folded(&self.0), image)
    }
    fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        N::forward_layers(&N::f32_folded(&self.0), image)
    }
    fn name(&self) -> &'static str {
        N::NAME
    }
}

enum Weights {
    F32(Box<dyn F32Weights>),
    Int8(Int8Model),
}

/// The f32 forward pass of the model's network.
#[derive(Clone, Copy)]
pub struct F32Net<'a>(&'a dyn F32Weights);

impl std::fmt::Debug for F32Net<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("F32Net").field(&self.name()).finish()
    }
}

impl F32Net<'_> {
    /// The fused forward pass.
    pub fn forward(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        self.0.forward(image)
    }

    /// The layer-by-layer reference pass (bit-identical to [`F32Net::forward`]; the wide CNN's
    /// needs about 200 KB of stack).
    pub fn forward_layers(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        self.0.forward_layers(image)
    }

    /// The benchmark's names for [`F32Net::forward`] and [`F32Net::forward_layers`]
    /// (`f32 LeNet::forward (avx512)`, `f32 LeNet::forward_layers (reference)`).
    pub fn kernel_names(&self) -> [&'static str; 2] {
        let name = self.name();
        [
            format!("f32 {name}::forward ({})", self.kernel()),
            format!("f32 {name}::forward_layers (reference)"),
        ]
        .map(|s| &*Box::leak(s.into_boxed_str()))
    }

    /// The kernel [`F32Net::forward`] runs: `portable`, `avx2` or `avx512`.
    pub fn kernel(&self) -> &'static str {
        self.0.kernel()
    }

    /// The network's short name ([`Network::NAME`]: `LeNet`, `Wide`), for reports.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// Reads the f32 or int8 model of the network the header names.
struct Load<'a> {
    file: format::ModelFile<'a>,
    loaded: &'a LoadedModel,
    path: &'a Path,
}

impl NetworkFn for Load<'_> {
    type Output = Result<(ModelKind, Weights)>;
    fn call<N: Network>(self) -> Self::Output {
        let bad = |e| Error::bad(self.path, e);
        let file = self.file;
        Ok(match file.header.kind {
            Kind::F32 => (
                ModelKind::F32,
                Weights::F32(Trained::<N>(boxed_copy(file.trained::<N>().map_err(bad)?)).boxed()),
            ),
            Kind::F32Folded => (
                ModelKind::F32Folded,
                Weights::F32(Folded::<N>(boxed_copy(file.folded::<N>().map_err(bad)?)).boxed()),
            ),
            Kind::Int8 => (ModelKind::Int8, Weights::Int8(Int8Model::new(self.loaded)?)),
        })
    }
}

/// A loaded, checked model.
pub struct Model {
    /// The file it came from.
    pub path: PathBuf,
    /// What it holds.
    pub kind: ModelKind,
    /// Which network.
    pub arch: Arch,
    /// CRC-32 identifying the file: the FMNM trailer, or the CRC-32 of a safetensors file's bytes.
    pub crc: u32,
    weights: Weights,
}

fn boxed_copy<T: bytemuck::Pod>(v: &T) -> Box<T> {
    let mut b: Box<T> = bytemuck::zeroed_box();
    bytemuck::bytes_of_mut(&mut *b).copy_from_slice(bytemuck::bytes_of(v));
    b
}

impl Model {
    /// Reads `path` and detects its kind by content.
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = crate::inputs::read(path).map_err(|e| Error::bad(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses model bytes that came from `path` (used in messages).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Model> {
        let is_st_name = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        if bytes.starts_with(&format::MAGIC)
            || !(is_st_name || safetensors_io::looks_like_safetensors(bytes))
        {
            if bytes.is_empty() {
                return Err(Error::bad(path, "empty file (0 bytes), not a model"));
            }
            return Self::from_fmnm(path, bytes);
        }
        let params = safetensors_io::decode_params(bytes).map_err(|e| Error::bad(path, e))?;
        /// Network `N`'s trained weights from their values.
        struct FromValues<'a>(&'a [f32]);
        impl NetworkFn for FromValues<'_> {
            type Output = Box<dyn F32Weights>;
            fn call<N: Network>(self) -> Self::Output {
                let mut p: Box<N::Trained> = bytemuck::zeroed_box();
                bytemuck::cast_slice_mut(std::slice::from_mut(&mut *p)).copy_from_slice(self.0);
                Trained::<N>(p).boxed()
            }
        }
        Ok(Model {
            path: path.to_owned(),
            kind: ModelKind::Safetensors,
            arch: params.arch,
            crc: format::CRC32.checksum(bytes),
            weights: Weights::F32(dispatch(params.arch, FromValues(&params.values))),
        })
    }

    fn from_fmnm(path: &Path, bytes: &[u8]) -> Result<Model> {
        let loaded = LoadedModel::from_bytes(bytes, path);
        let file = loaded.file().map_err(|e| {
            if e == format::FormatError::BadMagic {
                Error::bad(
                    path,
                    "not a model file: neither an fmnist model (magic \"FMNM\") nor safetensors",
                )
            } else {
                Error::bad(path, e)
            }
        })?;
        let crc_at = file.payload.len() + format::HEADER_LEN;
        let crc = u32::from_le_bytes(bytes[crc_at..crc_at + 4].try_into().unwrap());
        let arch = file.header.arch;
        let (kind, weights) = dispatch(
            arch,
            Load {
                file,
                loaded: &loaded,
                path,
            },
        )?;
        Ok(Model {
            path: path.to_owned(),
            kind,
            arch,
            crc,
            weights,
        })
    }

    /// The logits of one image.
    #[inline]
    pub fn logits(&self, image: &[u8; IMAGE_PIXELS]) -> Logits {
        match (&self.weights, self.f32_net()) {
            (Weights::Int8(m), _) => Logits::I8(m.forward(image)),
            (_, Some(net)) => Logits::F32(net.forward(image)),
            (_, None) => unreachable!("every f32 model has an f32 net"),
        }
    }

    /// The predicted class: argmax of the model's own logits (ties: lowest index).
    #[inline]
    pub fn class(&self, image: &[u8; IMAGE_PIXELS]) -> usize {
        match self.logits(image) {
            Logits::F32(l) => argmax(&l),
            Logits::I8(l) => argmax(&l),
        }
    }

    /// f32 logits: the model's own, or an int8 model's dequantized as
    /// `scale · (q − zero_point)`.
    pub fn logits_f32(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        match (self.logits(image), &self.weights) {
            (Logits::F32(l), _) => l,
            (Logits::I8(q), Weights::Int8(m)) => m.dequantize(&q),
            (Logits::I8(_), _) => unreachable!("only the int8 model gives i8 logits"),
        }
    }

    /// Class probabilities: f32 softmax of [`Model::logits_f32`].
    pub fn probabilities(&self, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
        softmax(&self.logits_f32(image))
    }

    /// The f32 forward pass of this model (`None` for an int8 model).
    pub fn f32_net(&self) -> Option<F32Net<'_>> {
        match &self.weights {
            Weights::F32(w) => Some(F32Net(&**w)),
            Weights::Int8(_) => None,
        }
    }

    /// Chooses the kernel an f32 model's forward pass runs (see [`F32Kernel`]): refused, as bad
    /// input, when this CPU or this network has no such kernel. An int8 model ignores it.
    pub fn set_f32_kernel(&mut self, kernel: F32Kernel) -> Result<()> {
        match &mut self.weights {
            Weights::F32(w) => w.set_kernel(kernel).map_err(|e| Error::bad(&self.path, e)),
            Weights::Int8(_) => Ok(()),
        }
    }

    /// Runs an int8 model on `kernel` (available: see [`crate::int8::parse_kernel`]); an f32
    /// model is left as it is.
    pub fn set_int8_kernel(&mut self, kernel: crate::int8::Kernel) {
        if let Weights::Int8(m) = &mut self.weights {
            *m = m.with_kernel(kernel);
        }
    }

    /// The int8 model (`None` for an f32 model).
    pub fn int8(&self) -> Option<&Int8Model> {
        match &self.weights {
            Weights::Int8(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelio::encode_model;
    use fmnist_core::format::Arch;
    use fmnist_core::testutil::random_lenet_params;

    #[test]
    fn fmnm_and_safetensors_give_the_same_logits() {
        let p = random_lenet_params(4);
        let fmnm = encode_model(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
        let st = safetensors_io::encode(&p, 0);
        let a = Model::from_bytes(Path::new("a.fmnm"), &fmnm).unwrap();
        let b = Model::from_bytes(Path::new("b.bin"), &st).unwrap();
        assert_eq!(a.kind, ModelKind::F32);
        assert_eq!(b.kind, ModelKind::Safetensors);
        let img: [u8; 784] = std::array::from_fn(|i| (i * 7 % 256) as u8);
        assert_eq!(a.logits(&img), b.logits(&img));
        let pr = a.probabilities(&img);
        assert!((pr.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn bad_files_are_bad_input_naming_the_file() {
        let p = random_lenet_params(4);
        let good = encode_model(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.fmnm", vec![], "empty file"),
            (
                "trunc.fmnm",
                good[..good.len() - 100].to_vec(),
                "wrong length",
            ),
            (
                "text.fmnm",
                b"hello, this is a text file\n".to_vec(),
                "not a model file",
            ),
            (
                "flip.fmnm",
                {
                    let mut b = good.clone();
                    b[5000] ^= 1;
                    b
                },
                "CRC mismatch",
            ),
            ("x.safetensors", b"{}".to_vec(), "safetensors"),
        ];
        for (name, bytes, want) in cases {
            let e = Model::from_bytes(Path::new(name), &bytes).err().unwrap();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.message.starts_with(name) && e.message.contains(want),
                "{e}"
            );
        }
    }
}
