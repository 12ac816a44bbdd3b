//! The model region: a model file flashed at a fixed address, apart from the program.
//!
//! | profile            | region start  | size      | holds                                  |
//! |--------------------|---------------|-----------|----------------------------------------|
//! | QEMU mps2-an386    | `0x0002_0000` | 3,968 KiB | LeNet-BN int8 / f32, wide CNN int8     |
//! | STM32F407 / F405   | `0x0802_0000` | 896 KiB   | LeNet-BN int8 / f32                    |
//!
//! (`memory/*.x`). At boot [`load`] checks the file there with `fmnist_core::format::parse`
//! (magic, version, header, architecture, kind, shapes, length, CRC-32); `net::start` picks the
//! network by the header's architecture and kind and reads the weights as references into
//! flash: nothing is copied to RAM. A file whose header declares more bytes than the region holds (the
//! wide CNN in f32, 6.5 MB; the wide CNN in int8, 1.6 MB, on the STM32F407) is refused as such.

use defmt::error;
use fmnist_core::format::{self, Arch, FormatError, Kind, ModelFile};

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

/// Why the model in the region is not run.
#[derive(Clone, Copy, defmt::Format)]
pub enum Refusal {
    /// Not a usable model file for this build (`fmnist_core::format`).
    Format(FormatError),
    /// A well-formed header declaring a file longer than the model region.
    TooLarge {
        /// The header's architecture.
        arch: Arch,
        /// The header's kind.
        kind: Kind,
        /// Header + payload + CRC, as the header declares.
        file_len: usize,
    },
}

/// Logs why the model is refused (one line: region, reason, details).
pub fn log_refusal(r: &Refusal) {
    match r {
        Refusal::Format(e) => error!(
            "model refused (region {=usize:#010x}): {=str}: {}",
            region_start(),
            reason(e),
            e
        ),
        Refusal::TooLarge {
            arch,
            kind,
            file_len,
        } => error!(
            "model refused (region {=usize:#010x}): {=str}: the header declares {=str} {=str}, \
             {=usize} bytes, and the model region holds {=usize}",
            region_start(),
            too_large_reason(*arch, *kind),
            arch.name(),
            kind.name(),
            file_len,
            region_len()
        ),
    }
}

fn too_large_reason(arch: Arch, kind: Kind) -> &'static str {
    match (arch, kind) {
        (Arch::Wide, Kind::F32 | Kind::F32Folded) => {
            "does not fit the model region: the wide CNN in f32 is 6.5 MB, more than the \
             4 MiB code memory; export it as int8 (1.6 MB)"
        }
        (Arch::Wide, Kind::Int8) if cfg!(feature = "board") => {
            "does not fit the model region: the wide CNN in int8 is 1.6 MB and the STM32F407 \
             has 1 MiB of flash; run it under QEMU mps2-an386"
        }
        _ => "does not fit the model region",
    }
}

/// What this build runs, for a wrong-model refusal.
const RUNS: &str = if cfg!(all(feature = "f32", feature = "wide")) {
    "wrong model: this firmware runs LeNet-BN int8 or f32 (BN folded) and the wide CNN int8"
} else if cfg!(feature = "wide") {
    "wrong model: this firmware runs LeNet-BN int8 and the wide CNN int8"
} else if cfg!(all(feature = "int8", feature = "f32")) {
    "wrong model: this firmware runs LeNet-BN int8 or f32 (BN folded)"
} else if cfg!(feature = "int8") {
    "wrong model: this firmware runs LeNet-BN int8"
} else {
    "wrong model: this firmware runs LeNet-BN f32 (BN folded)"
};

fn wrong_model_reason(arch: Arch, kind: Kind) -> &'static str {
    match (arch, kind) {
        (Arch::Wide, Kind::F32 | Kind::F32Folded) => {
            "wrong model: the wide CNN runs in int8 only (its f32 weights, 6.5 MB, fit no \
             model region)"
        }
        (Arch::Wide, Kind::Int8) if !cfg!(feature = "wide") => {
            if cfg!(feature = "board") {
                "wrong model: the board build has no wide CNN (its 1.6 MB of int8 weights do \
                 not fit the STM32F407's 1 MiB flash)"
            } else {
                "wrong model: this build has no wide CNN (cargo feature `wide`)"
            }
        }
        _ => RUNS,
    }
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
        FormatError::WrongModel {
            found_arch,
            found_kind,
        } => wrong_model_reason(*found_arch, *found_kind),
        FormatError::ShapeMismatch => "layer shapes differ from the architecture's",
        FormatError::Misaligned => "model not 4-byte aligned",
        FormatError::BadQuantParams(_) => "invalid int8 parameters",
        FormatError::BadParams(_) => "invalid f32 parameters (NaN, infinity or negative variance)",
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

/// Checks the model file in the region (`format::parse`: header, length, CRC, shapes) and
/// returns it; [`crate::net::start`] then checks the weights for the network and kind the
/// header names, and runs them.
pub fn load() -> Result<ModelFile<'static>, Refusal> {
    let bytes = region();
    format::parse(bytes).map_err(|e| match e {
        // `parse` has checked magic, version, header length, architecture and kind before the
        // length: a file longer than the region is a well-formed header for too big a model.
        FormatError::WrongLength { expected, .. } if expected > region_len() => {
            let field = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            match (Arch::from_u16(field(8)), Kind::from_u16(field(10))) {
                (Some(arch), Some(kind)) => Refusal::TooLarge {
                    arch,
                    kind,
                    file_len: expected,
                },
                _ => Refusal::Format(e),
            }
        }
        e => Refusal::Format(e),
    })
}
