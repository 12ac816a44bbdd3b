//! The model region: a model file flashed at a fixed address, apart from the program.
//!
//! | profile            | region start  | size    |
//! |--------------------|---------------|---------|
//! | QEMU mps2-an386    | `0x0002_0000` | 896 KiB |
//! | STM32F407 / F405   | `0x0802_0000` | 896 KiB |
//!
//! (`memory/*.x`). At boot [`load`] checks the file there with `fmnist_core::format::parse`
//! (magic, version, header, architecture, kind, shapes, length, CRC-32) and returns the weights
//! as references into flash: nothing is copied to RAM.

use fmnist_core::format::{self, Arch, FormatError, Kind, ModelFile};
#[cfg(feature = "f32")]
use fmnist_core::lenet::LeNetFoldedParams;
#[cfg(feature = "int8")]
use fmnist_core::quant::LeNetQParams;

unsafe extern "C" {
    static _model_start: u8;
    static _model_len: u8;
}

/// Start address of the model region.
pub fn region_start() -> usize {
    &raw const _model_start as usize
}

/// Size of the model region in bytes (the linker symbol's address is the size).
pub fn region_len() -> usize {
    &raw const _model_len as usize
}

/// With `embed-model`, the model file named by `FMNIST_MODEL` at build time is linked into the
/// model region, for a one-file demo.
#[cfg(feature = "embed-model")]
#[unsafe(link_section = ".model")]
#[used]
static EMBEDDED: [u8; include_bytes!(env!("FMNIST_MODEL")).len()] =
    *include_bytes!(env!("FMNIST_MODEL"));

/// The weights of a checked model, in place.
#[derive(Clone, Copy)]
pub enum Weights {
    /// Integer-only int8 LeNet (parameters checked: the kernels cannot overflow).
    #[cfg(feature = "int8")]
    Int8(&'static LeNetQParams),
    /// Batch norm folded f32 LeNet.
    #[cfg(feature = "f32")]
    F32(&'static LeNetFoldedParams),
}

/// A short human reason for a refused model (the `defmt::Format` of the error adds the details).
pub fn reason(e: &FormatError) -> &'static str {
    match e {
        FormatError::TooShort { .. } => "too short for a model file",
        FormatError::BadMagic => "bad magic, no model file in the region",
        FormatError::UnsupportedVersion { .. } => "unsupported format version",
        FormatError::BadHeaderLength { .. } => "bad header length",
        FormatError::UnknownArch { .. } => "unknown architecture",
        FormatError::UnknownKind { .. } => "unknown model kind",
        FormatError::WrongLength { .. } => "wrong length",
        FormatError::CrcMismatch { .. } => "CRC mismatch, the file is corrupt",
        FormatError::WrongModel { .. } => {
            if cfg!(all(feature = "int8", feature = "f32")) {
                "wrong model: this firmware runs LeNet-BN int8 or f32 (BN folded)"
            } else if cfg!(feature = "int8") {
                "wrong model: this firmware runs LeNet-BN int8"
            } else {
                "wrong model: this firmware runs LeNet-BN f32 (BN folded)"
            }
        }
        FormatError::ShapeMismatch => "layer shapes differ from the architecture's",
        FormatError::Misaligned => "model not 4-byte aligned",
        FormatError::BadQuantParams(_) => "invalid int8 parameters",
    }
}

/// The model region as a byte slice, as long as the header says (bounded by the region).
fn region() -> &'static [u8] {
    let start = region_start() as *const u8;
    let max = region_len();
    // SAFETY: the region is flash (or, under QEMU, memory) reserved for the model by the linker
    // script; it is never written while the firmware runs.
    let all = unsafe { core::slice::from_raw_parts(start, max) };
    let payload_len = u32::from_le_bytes([all[12], all[13], all[14], all[15]]) as usize;
    let len = payload_len
        .saturating_add(format::HEADER_LEN + format::TRAILER_LEN)
        .min(max);
    &all[..len]
}

/// Checks the model file in the region and returns its weights.
pub fn load() -> Result<(ModelFile<'static>, Weights), FormatError> {
    let file = format::parse(region())?;
    let weights = match (file.header.arch, file.header.kind) {
        #[cfg(feature = "int8")]
        (Arch::LeNet, Kind::Int8) => Weights::Int8(file.lenet_int8()?),
        #[cfg(feature = "f32")]
        (Arch::LeNet, Kind::F32Folded) => Weights::F32(file.lenet_folded()?),
        (found_arch, found_kind) => {
            return Err(FormatError::WrongModel {
                found_arch,
                found_kind,
            });
        }
    };
    Ok((file, weights))
}
