//! The `convert` command: a model from one file format to another.
//!
//! Input: an FMNM file (any kind), a PyTorch-named safetensors file or an ONNX file, told apart
//! by content (FMNM magic, safetensors header) and, for ONNX, by the `.onnx` name or a graph
//! that decodes. Output: FMNM (every kind), safetensors (f32 as trained: the documented PyTorch
//! module's `state_dict`) or ONNX (f32 as trained or BN-folded), from `--format` or the output's
//! extension. The output is checked before any work and written atomically: a failed command
//! leaves no file behind and an existing file as it was.

use std::fmt;
use std::path::Path;

use fmnist_core::format::{self, Arch, Kind};
use fmnist_core::network::{Network, NetworkFn};
use fmnist_core::registry::dispatch;

use crate::error::{Error, Result};
use crate::modelio::LoadedModel;
use crate::params::{F32Params, describe};
use crate::{onnx, outputs, safetensors_io};

/// A model file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// fmnist's own model file (`.fmnm`): every kind, what the firmware runs.
    Fmnm,
    /// PyTorch `state_dict` (`.safetensors`): f32 as trained.
    Safetensors,
    /// ONNX graph, opset 13 (`.onnx`): f32 as trained or BN-folded.
    Onnx,
}

impl Format {
    /// The format a file name's extension names (`.fmnm`, `.safetensors`, `.onnx`, any case).
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "fmnm" => Some(Format::Fmnm),
            "safetensors" => Some(Format::Safetensors),
            "onnx" => Some(Format::Onnx),
            _ => None,
        }
    }

    /// `FMNM`, `safetensors`, `ONNX`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Fmnm => "FMNM",
            Format::Safetensors => "safetensors",
            Format::Onnx => "ONNX",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model read from any of the formats.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// An f32 model (kind 1 or 2).
    F32(F32Params),
    /// An int8 model: its checked FMNM payload.
    Int8 {
        /// The network.
        arch: Arch,
        /// The payload bytes.
        payload: Vec<u8>,
    },
}

impl Source {
    /// The network.
    pub fn arch(&self) -> Arch {
        match self {
            Source::F32(p) => p.arch,
            Source::Int8 { arch, .. } => *arch,
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Source::F32(p) => p.kind,
            Source::Int8 { .. } => Kind::Int8,
        }
    }
}

/// The checked model of an FMNM file.
fn from_fmnm(path: &Path, bytes: &[u8]) -> Result<Source> {
    let loaded = LoadedModel::from_bytes(bytes, path);
    let file = loaded.file().map_err(|e| Error::bad(path, e))?;
    if let Some(p) = F32Params::from_file(&file) {
        return Ok(Source::F32(p.map_err(|e| Error::bad(path, e))?));
    }
    struct CheckInt8<'a, 'b>(&'b format::ModelFile<'a>);
    impl NetworkFn for CheckInt8<'_, '_> {
        type Output = std::result::Result<(), format::FormatError>;
        fn call<N: Network>(self) -> Self::Output {
            self.0.int8::<N>().map(drop)
        }
    }
    dispatch(file.header.arch, CheckInt8(&file)).map_err(|e| Error::bad(path, e))?;
    Ok(Source::Int8 {
        arch: file.header.arch,
        payload: file.payload.to_vec(),
    })
}

/// Reads a model file of any format, detected by content (and, for ONNX and safetensors, by
/// the name): the format and the model.
pub fn read(path: &Path) -> Result<(Format, Source)> {
    let bytes = crate::inputs::read(path).map_err(|e| Error::bad(path, e))?;
    let named = Format::from_extension(path);
    if bytes.is_empty() {
        return Err(Error::bad(path, "empty file (0 bytes), not a model"));
    }
    let st = safetensors_io::looks_like_safetensors(&bytes);
    if bytes.starts_with(&format::MAGIC) || (named == Some(Format::Fmnm) && !st) {
        return Ok((Format::Fmnm, from_fmnm(path, &bytes)?));
    }
    if st || named == Some(Format::Safetensors) {
        let p = safetensors_io::decode_params(&bytes).map_err(|e| Error::bad(path, e))?;
        return Ok((Format::Safetensors, Source::F32(p)));
    }
    if named == Some(Format::Onnx) || onnx::looks_like_onnx(&bytes) {
        let p = onnx::decode(&bytes).map_err(|e| Error::bad(path, e))?;
        return Ok((Format::Onnx, Source::F32(p)));
    }
    Err(Error::bad(
        path,
        "not a model file: neither an fmnist model (magic \"FMNM\"), safetensors nor ONNX",
    ))
}

/// The bytes of `source` in `format`, or why that format cannot hold it.
pub fn encode(source: &Source, format: Format) -> std::result::Result<Vec<u8>, String> {
    match (format, source) {
        (Format::Fmnm, Source::F32(p)) => Ok(p.to_fmnm()),
        (Format::Fmnm, Source::Int8 { arch, payload }) => {
            Ok(crate::modelio::encode_model(*arch, Kind::Int8, payload))
        }
        (Format::Safetensors, Source::F32(p)) => {
            safetensors_io::encode_params(p, 0).map_err(|e| e.to_string())
        }
        (Format::Safetensors, Source::Int8 { arch, .. }) => Err(
            safetensors_io::SafetensorsError::NotTrained(describe(*arch, Kind::Int8)).to_string(),
        ),
        (Format::Onnx, Source::F32(p)) => Ok(onnx::encode(p)),
        (Format::Onnx, Source::Int8 { arch, .. }) => Err(format!(
            "ONNX export holds the f32 models (as trained or BN-folded), not {}",
            describe(*arch, Kind::Int8)
        )),
    }
}

/// What [`convert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    /// The input's format.
    pub from: Format,
    /// The output's format.
    pub to: Format,
    /// The network.
    pub arch: Arch,
    /// The kind.
    pub kind: Kind,
    /// Bytes written.
    pub bytes: usize,
}

/// The output format: `format` if given, else the one `out`'s extension names.
pub fn output_format(out: &Path, format: Option<Format>) -> Result<Format> {
    if let Some(f) = format {
        return Ok(f);
    }
    Format::from_extension(out).ok_or_else(|| {
        Error::bad(
            out,
            "unknown output format: name the file .fmnm, .safetensors or .onnx, or give --format",
        )
    })
}

/// Converts `model` to `out` (see the module documentation).
pub fn convert(model: &Path, out: &Path, format: Option<Format>) -> Result<Converted> {
    let to = output_format(out, format)?;
    outputs::check(&[("--out", out)], &[("--model", model)])?;
    let (from, source) = read(model)?;
    let bytes = encode(&source, to)
        .map_err(|why| Error::bad(out, format!("{why} (from {})", model.display())))?;
    outputs::write_all(&[(out, &bytes)])?;
    Ok(Converted {
        from,
        to,
        arch: source.arch(),
        kind: source.kind(),
        bytes: bytes.len(),
    })
}

impl Converted {
    /// One line for the terminal.
    pub fn to_text(&self, model: &Path, out: &Path) -> String {
        format!(
            "{}: {} as {}, {} bytes (from {} {})",
            out.display(),
            describe(self.arch, self.kind),
            self.to,
            self.bytes,
            self.from,
            model.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::table;
    use fmnist_core::tensors::total;

    fn params(arch: Arch, kind: Kind, seed: u32) -> F32Params {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut p = F32Params {
            arch,
            kind,
            values: (0..total(table(arch, kind)))
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect(),
        };
        // Running variances must be >= 0.
        let mut at = 0;
        let slots = table(arch, kind);
        for slot in slots {
            if slot.name.ends_with("running_var") {
                p.values[at..at + slot.len]
                    .iter_mut()
                    .for_each(|v| *v = v.abs());
            }
            at += slot.len;
        }
        p
    }

    /// Every f32 kind of every network through every format it fits and back, bit for bit.
    #[test]
    fn every_format_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        for &arch in crate::params::ARCHS {
            for kind in [Kind::F32, Kind::F32Folded] {
                let p = params(arch, kind, arch as u32 * 10 + kind as u32);
                let src = dir.path().join("src.fmnm");
                std::fs::write(&src, p.to_fmnm()).unwrap();
                for (ext, fits) in [
                    ("fmnm", true),
                    ("safetensors", kind == Kind::F32),
                    ("onnx", true),
                ] {
                    let out = dir.path().join(format!("{arch:?}-{kind:?}.{ext}"));
                    let r = convert(&src, &out, None);
                    if !fits {
                        let e = r.unwrap_err();
                        assert_eq!(e.exit_code(), 2);
                        assert!(!out.exists());
                        continue;
                    }
                    let c = r.unwrap();
                    assert_eq!((c.arch, c.kind), (arch, kind));
                    let (_, back) = read(&out).unwrap();
                    assert_eq!(back, Source::F32(p.clone()), "{arch:?} {kind:?} {ext}");
                    // And back to FMNM: the same bytes as the source.
                    let again = dir
                        .path()
                        .join(format!("back-{arch:?}-{kind:?}-{ext}.fmnm"));
                    convert(&out, &again, None).unwrap();
                    assert_eq!(std::fs::read(&again).unwrap(), p.to_fmnm());
                }
            }
        }
    }

    #[test]
    fn format_comes_from_the_flag_or_the_extension() {
        let p = Path::new("x.ONNX");
        assert_eq!(output_format(p, None).unwrap(), Format::Onnx);
        assert_eq!(
            output_format(Path::new("x.bin"), Some(Format::Safetensors)).unwrap(),
            Format::Safetensors
        );
        let e = output_format(Path::new("out/x.bin"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "out/x.bin: unknown output format: name the file .fmnm, .safetensors or .onnx, or give --format"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
