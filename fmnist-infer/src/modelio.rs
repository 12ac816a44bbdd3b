//! Reading and writing FMNM model files on the host (see `fmnist_core::format`).

use std::fmt;
use std::path::{Path, PathBuf};

use fmnist_core::format::{self, Arch, FormatError, Kind, ModelFile};

use crate::atomic::write_atomic_with;

/// A model file read into memory, aligned so its tensors can be viewed in place.
pub struct LoadedModel {
    words: Vec<u32>,
    len: usize,
    /// Where it came from.
    pub path: PathBuf,
}

/// Why a model file could not be read.
#[derive(Debug)]
pub enum ModelIoError {
    /// The file could not be read or written.
    Io(PathBuf, std::io::Error),
    /// The bytes are not a valid model file.
    Format(PathBuf, FormatError),
}

impl fmt::Display for ModelIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelIoError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ModelIoError::Format(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ModelIoError {}

impl LoadedModel {
    /// Reads and checks a model file (magic, version, shapes, length, CRC).
    pub fn read(path: &Path) -> Result<Self, ModelIoError> {
        let bytes = crate::inputs::read(path).map_err(|e| ModelIoError::Io(path.to_owned(), e))?;
        let model = Self::from_bytes(&bytes, path);
        model
            .file()
            .map_err(|e| ModelIoError::Format(path.to_owned(), e))?;
        Ok(model)
    }

    /// Copies `bytes` into an aligned buffer (no checks yet).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Self {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        LoadedModel {
            words,
            len: bytes.len(),
            path: path.to_owned(),
        }
    }

    /// The raw file bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }

    /// The checked container.
    pub fn file(&self) -> Result<ModelFile<'_>, FormatError> {
        format::parse(self.bytes())
    }

    /// A format error about this file, with its path.
    pub fn error(&self, e: FormatError) -> ModelIoError {
        ModelIoError::Format(self.path.clone(), e)
    }
}

/// Encodes a complete model file (header, payload, CRC).
pub fn encode_model(arch: Arch, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let header = format::encode_header(arch, kind, payload.len() as u32);
    let crc = format::crc_of(&header, payload);
    let mut out = Vec::with_capacity(format::HEADER_LEN + payload.len() + format::TRAILER_LEN);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes a model file atomically.
pub fn write_model(
    path: &Path,
    arch: Arch,
    kind: Kind,
    payload: &[u8],
) -> Result<(), ModelIoError> {
    let bytes = encode_model(arch, kind, payload);
    write_atomic_with(path, |f| std::io::Write::write_all(f, &bytes))
        .map_err(|e| ModelIoError::Io(path.to_owned(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmnist_core::lenet::LeNetParams;

    #[test]
    fn f32_model_round_trips_in_place() {
        let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
        p.fc3_bias[3] = 1.25;
        p.bn2.running_var[15] = 0.5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.fmnm");
        write_model(&path, Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p)).unwrap();
        let m = LoadedModel::read(&path).unwrap();
        let back = m.file().unwrap().lenet_f32().unwrap();
        assert_eq!(back, &*p);
        assert!(matches!(
            m.file().unwrap().lenet_folded(),
            Err(FormatError::WrongModel {
                found_arch: Arch::LeNet,
                found_kind: Kind::F32
            })
        ));
    }

    #[test]
    fn flipped_byte_is_a_crc_error_naming_the_file() {
        let p: Box<LeNetParams> = bytemuck::zeroed_box();
        let mut bytes = encode_model(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
        bytes[1000] ^= 0x10;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.fmnm");
        std::fs::write(&path, &bytes).unwrap();
        let err = LoadedModel::read(&path).err().unwrap().to_string();
        assert!(
            err.contains("bad.fmnm") && err.contains("CRC mismatch"),
            "{err}"
        );
    }
}
