//! The model file: one self-checking container for a deployable model, read in place.
//!
//! The byte-by-byte description is `docs/model-format.md`; in short:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FMNM"
//! 4       2     format version (u16, = 1)
//! 6       2     header length (u16, = 64)
//! 8       2     architecture (u16): 1 = LeNet-BN, 2 = wide CNN
//! 10      2     kind (u16): 1 = f32 trained (BN separate), 2 = f32 BN-folded, 3 = int8
//! 12      4     payload length in bytes (u32)
//! 16      48    shape descriptor: 24 x u16, the architecture's layer shapes, zero-padded
//! 64      n     payload: the tensors in a fixed order for (architecture, kind)
//! 64+n    4     CRC-32 (ISO-HDLC, as zlib/PNG) of bytes 0 .. 64+n
//! ```
//! All integers and floats are little-endian. The payload starts 64 bytes into the file; the file
//! itself must start at a 4-byte-aligned address for the tensors to be read in place.

use bytemuck::Pod;

pub use crate::arch::{Arch, Kind, SHAPE_SLOTS};
use crate::lenet::{LeNetFoldedParams, LeNetParams};
use crate::network::{Network, NetworkFn};
use crate::quant::{LeNetQParams, QParamsError, WideQParams};
use crate::registry::{LeNetBn, WideCnn, dispatch};
use crate::tensors::{ParamsError, Tensors};
use crate::wide::{WideFoldedParams, WideParams};

/// The four magic bytes.
pub const MAGIC: [u8; 4] = *b"FMNM";
/// The format version this code reads and writes.
pub const VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 64;
/// Bytes after the payload (the CRC).
pub const TRAILER_LEN: usize = 4;

/// The CRC used by the trailer: CRC-32/ISO-HDLC (zlib, PNG, Ethernet), with the crate's
/// 1 KiB lookup table.
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The same CRC computed bit by bit, without the table: what [`parse`] uses with the cargo
/// feature `crc-no-table` (1 KiB less flash, about 8x more instructions; it runs once per
/// boot).
pub const CRC32_NO_TABLE: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// The trailer's CRC of `bytes`, by [`CRC32`], or by [`CRC32_NO_TABLE`] with the feature
/// `crc-no-table` (the same value).
fn crc32(bytes: &[u8]) -> u32 {
    if cfg!(feature = "crc-no-table") {
        CRC32_NO_TABLE.checksum(bytes)
    } else {
        CRC32.checksum(bytes)
    }
}

/// Why a byte slice is not a usable model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FormatError {
    /// Shorter than a header and a CRC.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The first four bytes are not `FMNM`.
    BadMagic,
    /// A format version this code does not read.
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
    },
    /// The header length field is not 64.
    BadHeaderLength {
        /// The value in the file.
        found: u16,
    },
    /// An architecture number this code does not know.
    UnknownArch {
        /// The value in the file.
        found: u16,
    },
    /// A kind number this code does not know.
    UnknownKind {
        /// The value in the file.
        found: u16,
    },
    /// The file length disagrees with the header's payload length.
    WrongLength {
        /// Header + payload + CRC according to the header (or the layout).
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The CRC-32 of header and payload does not match the stored one.
    CrcMismatch {
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The file holds another architecture (or another kind) than the caller needs.
    WrongModel {
        /// What the file holds.
        found_arch: Arch,
        /// Its kind.
        found_kind: Kind,
    },
    /// The shape descriptor differs from this architecture's.
    ShapeMismatch,
    /// The bytes do not start at a 4-byte-aligned address, so tensors cannot be read in place.
    Misaligned,
    /// An int8 payload whose constants break what the kernels rely on (weight −128, shift out
    /// of range, negative multiplier, a bias that could overflow the accumulator, a broken
    /// zero-point chain).
    BadQuantParams(QParamsError),
    /// f32 parameters that are not a model: a NaN or infinite value, or a negative batch-norm
    /// running variance (see [`crate::tensors`]).
    BadParams(ParamsError),
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            FormatError::TooShort { len } => {
                write!(
                    f,
                    "too short for a model file: {len} bytes, need at least {}",
                    HEADER_LEN + TRAILER_LEN
                )
            }
            FormatError::BadMagic => {
                write!(f, "not an fmnist model file (bad magic; expected \"FMNM\")")
            }
            FormatError::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported format version {found} (this build reads version {VERSION})"
                )
            }
            FormatError::BadHeaderLength { found } => {
                write!(f, "bad header length {found} (expected {HEADER_LEN})")
            }
            FormatError::UnknownArch { found } => write!(f, "unknown architecture id {found}"),
            FormatError::UnknownKind { found } => write!(f, "unknown model kind {found}"),
            FormatError::WrongLength { expected, found } => {
                write!(f, "wrong length: expected {expected} bytes, found {found}")
            }
            FormatError::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch: stored {stored:#010x}, computed {computed:#010x} (the file is corrupt)"
                )
            }
            FormatError::WrongModel {
                found_arch,
                found_kind,
            } => write!(
                f,
                "holds a {} {} model, which this command cannot use",
                found_arch.name(),
                found_kind.name()
            ),
            FormatError::ShapeMismatch => write!(f, "layer shapes differ from the architecture's"),
            FormatError::Misaligned => write!(f, "model bytes are not 4-byte aligned"),
            FormatError::BadQuantParams(e) => write!(f, "invalid int8 parameters: {e}"),
            FormatError::BadParams(e) => write!(f, "invalid f32 parameters: {e}"),
        }
    }
}

impl core::error::Error for FormatError {}

/// The decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The network.
    pub arch: Arch,
    /// The weight form.
    pub kind: Kind,
    /// Payload bytes.
    pub payload_len: u32,
}

/// A checked model file: header decoded, length and CRC verified, payload borrowed in place.
#[derive(Clone, Copy, Debug)]
pub struct ModelFile<'a> {
    /// The decoded header.
    pub header: Header,
    /// The payload bytes (4-byte aligned).
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Bytes of the payload for an (architecture, kind), when this build knows its layout (it
/// knows every registered network's three kinds: [`Network::layout_len`]).
pub fn layout_len(arch: Arch, kind: Kind) -> Option<usize> {
    struct LayoutLen(Kind);
    impl NetworkFn for LayoutLen {
        type Output = usize;
        fn call<N: Network>(self) -> usize {
            N::layout_len(self.0)
        }
    }
    Some(dispatch(arch, LayoutLen(kind)))
}

/// Checks a model file: magic, version, header, architecture, kind, shapes, length, CRC,
/// alignment — in that order, so the first problem found is the one reported.
pub fn parse(bytes: &[u8]) -> Result<ModelFile<'_>, FormatError> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        if bytes.len() >= 4 && bytes[..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        return Err(FormatError::TooShort { len: bytes.len() });
    }
    if bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16_at(bytes, 4);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    let header_len = u16_at(bytes, 6);
    if header_len as usize != HEADER_LEN {
        return Err(FormatError::BadHeaderLength { found: header_len });
    }
    let arch_raw = u16_at(bytes, 8);
    let arch = Arch::from_u16(arch_raw).ok_or(FormatError::UnknownArch { found: arch_raw })?;
    let kind_raw = u16_at(bytes, 10);
    let kind = Kind::from_u16(kind_raw).ok_or(FormatError::UnknownKind { found: kind_raw })?;
    let payload_len = u32_at(bytes, 12);
    let expected = HEADER_LEN + payload_len as usize + TRAILER_LEN;
    if bytes.len() != expected {
        return Err(FormatError::WrongLength {
            expected,
            found: bytes.len(),
        });
    }
    let crc_at = HEADER_LEN + payload_len as usize;
    let stored = u32_at(bytes, crc_at);
    let computed = crc32(&bytes[..crc_at]);
    if stored != computed {
        return Err(FormatError::CrcMismatch { stored, computed });
    }
    // Only now, with the bytes known intact, compare shapes and the layout size.
    let mut shapes = [0u16; SHAPE_SLOTS];
    for (i, s) in shapes.iter_mut().enumerate() {
        *s = u16_at(bytes, 16 + 2 * i);
    }
    if shapes != arch.shape_descriptor() {
        return Err(FormatError::ShapeMismatch);
    }
    if let Some(layout) = layout_len(arch, kind)
        && layout != payload_len as usize
    {
        return Err(FormatError::WrongLength {
            expected: HEADER_LEN + layout + TRAILER_LEN,
            found: bytes.len(),
        });
    }
    if !(bytes.as_ptr() as usize).is_multiple_of(4) {
        return Err(FormatError::Misaligned);
    }
    Ok(ModelFile {
        header: Header {
            arch,
            kind,
            payload_len,
        },
        payload: &bytes[HEADER_LEN..crc_at],
    })
}

impl<'a> ModelFile<'a> {
    /// The payload as `T`, in place, when the file is `(arch, kind)`.
    pub fn view<T: Pod>(&self, arch: Arch, kind: Kind) -> Result<&'a T, FormatError> {
        if self.header.arch != arch || self.header.kind != kind {
            return Err(FormatError::WrongModel {
                found_arch: self.header.arch,
                found_kind: self.header.kind,
            });
        }
        bytemuck::try_from_bytes(self.payload).map_err(|e| match e {
            bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned => {
                FormatError::Misaligned
            }
            _ => FormatError::WrongLength {
                expected: HEADER_LEN + size_of::<T>() + TRAILER_LEN,
                found: HEADER_LEN + self.payload.len() + TRAILER_LEN,
            },
        })
    }

    /// The payload as f32 tensors `T`, in place, after [`Tensors::check`] (every value finite,
    /// every running variance ≥ 0).
    fn checked_f32<T: Tensors>(&self, arch: Arch, kind: Kind) -> Result<&'a T, FormatError> {
        let p: &'a T = self.view(arch, kind)?;
        p.check().map_err(FormatError::BadParams)?;
        Ok(p)
    }

    /// Network `N`'s trained f32 tensors, checked ([`Tensors::check`]).
    pub fn trained<N: Network>(&self) -> Result<&'a N::Trained, FormatError> {
        self.checked_f32(N::ARCH, Kind::F32)
    }

    /// Network `N`'s BN-folded f32 tensors, checked ([`Tensors::check`]).
    pub fn folded<N: Network>(&self) -> Result<&'a N::Folded, FormatError> {
        self.checked_f32(N::ARCH, Kind::F32Folded)
    }

    /// Network `N`'s int8 tensors, in place, after [`Network::check_int8`] (the kernels'
    /// overflow proof depends on it). Wrap them with [`Network::int8`].
    pub fn int8<N: Network>(&self) -> Result<&'a N::QParams, FormatError> {
        let p: &'a N::QParams = self.view(N::ARCH, Kind::Int8)?;
        N::check_int8(p).map_err(FormatError::BadQuantParams)?;
        Ok(p)
    }

    /// [`ModelFile::trained`] for LeNet-BN.
    pub fn lenet_f32(&self) -> Result<&'a LeNetParams, FormatError> {
        self.trained::<LeNetBn>()
    }

    /// [`ModelFile::folded`] for LeNet-BN.
    pub fn lenet_folded(&self) -> Result<&'a LeNetFoldedParams, FormatError> {
        self.folded::<LeNetBn>()
    }

    /// [`ModelFile::int8`] for LeNet-BN.
    pub fn lenet_int8(&self) -> Result<&'a LeNetQParams, FormatError> {
        self.int8::<LeNetBn>()
    }

    /// [`ModelFile::trained`] for the wide CNN.
    pub fn wide_f32(&self) -> Result<&'a WideParams, FormatError> {
        self.trained::<WideCnn>()
    }

    /// [`ModelFile::folded`] for the wide CNN.
    pub fn wide_folded(&self) -> Result<&'a WideFoldedParams, FormatError> {
        self.folded::<WideCnn>()
    }

    /// [`ModelFile::int8`] for the wide CNN.
    pub fn wide_int8(&self) -> Result<&'a WideQParams, FormatError> {
        self.int8::<WideCnn>()
    }
}

/// The 64-byte header for a payload of `payload_len` bytes.
pub fn encode_header(arch: Arch, kind: Kind, payload_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[8..10].copy_from_slice(&(arch as u16).to_le_bytes());
    h[10..12].copy_from_slice(&(kind as u16).to_le_bytes());
    h[12..16].copy_from_slice(&payload_len.to_le_bytes());
    for (i, s) in arch.shape_descriptor().iter().enumerate() {
        h[16 + 2 * i..18 + 2 * i].copy_from_slice(&s.to_le_bytes());
    }
    h
}

/// The CRC trailer for a header and payload.
pub fn crc_of(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut d = CRC32.digest();
    d.update(header);
    d.update(payload);
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::LeNetQ;
    use crate::testutil::random_qparams;

    /// A complete file (header, payload, CRC) for a payload, as the writer produces it.
    fn encode(arch: Arch, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let header = encode_header(arch, kind, payload.len() as u32);
        let mut out = header.to_vec();
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc_of(&header, payload).to_le_bytes());
        out
    }

    /// Recomputes the CRC trailer after an edit, so the edit itself is what `parse` sees.
    fn fix_crc(file: &mut [u8]) {
        let n = file.len() - TRAILER_LEN;
        let crc = CRC32.checksum(&file[..n]);
        file[n..].copy_from_slice(&crc.to_le_bytes());
    }

    /// Copies bytes to a 4-byte-aligned buffer at byte offset `shift` and parses them there.
    fn parse_at<R>(
        bytes: &[u8],
        shift: usize,
        f: impl FnOnce(Result<ModelFile<'_>, FormatError>) -> R,
    ) -> R {
        let mut words = vec![0u32; (bytes.len() + shift).div_ceil(4) + 1];
        let buf = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[shift..shift + bytes.len()];
        buf.copy_from_slice(bytes);
        f(parse(buf))
    }

    fn parse_aligned(bytes: &[u8]) -> Result<(Header, usize), FormatError> {
        parse_at(bytes, 0, |r| r.map(|m| (m.header, m.payload.len())))
    }

    fn int8_file() -> Vec<u8> {
        encode(
            Arch::LeNet,
            Kind::Int8,
            bytemuck::bytes_of(&*random_qparams(3)),
        )
    }

    #[test]
    fn int8_round_trip_is_zero_copy() {
        let p = random_qparams(3);
        let file = int8_file();
        assert_eq!(file.len(), HEADER_LEN + 65_308 + TRAILER_LEN);
        assert_eq!(layout_len(Arch::LeNet, Kind::Int8), Some(65_308));
        parse_at(&file, 0, |r| {
            let m = r.unwrap();
            assert_eq!(
                m.header,
                Header {
                    arch: Arch::LeNet,
                    kind: Kind::Int8,
                    payload_len: 65_308
                }
            );
            let q = m.lenet_int8().unwrap();
            assert_eq!(q, &*p);
            // In place: the struct is the payload bytes.
            assert_eq!(q as *const LeNetQParams as *const u8, m.payload.as_ptr());
            let img = [77u8; 784];
            assert_eq!(
                LeNetQ::new(q).unwrap().forward(&img),
                LeNetQ::new(&p).unwrap().forward(&img)
            );
        });
    }

    #[test]
    fn too_short() {
        assert_eq!(parse_aligned(&[]), Err(FormatError::TooShort { len: 0 }));
        assert_eq!(
            parse_aligned(&int8_file()[..HEADER_LEN + TRAILER_LEN - 1]),
            Err(FormatError::TooShort { len: 67 })
        );
        // Short and not even ours: the magic is the more useful message.
        assert_eq!(parse_aligned(b"PK\x03\x04rest"), Err(FormatError::BadMagic));
    }

    #[test]
    fn bad_magic() {
        let mut f = int8_file();
        f[3] = b'X';
        assert_eq!(parse_aligned(&f), Err(FormatError::BadMagic));
    }

    #[test]
    fn unsupported_version() {
        let mut f = int8_file();
        f[4..6].copy_from_slice(&2u16.to_le_bytes());
        fix_crc(&mut f);
        assert_eq!(
            parse_aligned(&f),
            Err(FormatError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn bad_header_length() {
        let mut f = int8_file();
        f[6..8].copy_from_slice(&60u16.to_le_bytes());
        fix_crc(&mut f);
        assert_eq!(
            parse_aligned(&f),
            Err(FormatError::BadHeaderLength { found: 60 })
        );
    }

    #[test]
    fn unknown_arch() {
        let mut f = int8_file();
        f[8..10].copy_from_slice(&9u16.to_le_bytes());
        fix_crc(&mut f);
        assert_eq!(
            parse_aligned(&f),
            Err(FormatError::UnknownArch { found: 9 })
        );
    }

    #[test]
    fn unknown_kind() {
        let mut f = int8_file();
        f[10..12].copy_from_slice(&7u16.to_le_bytes());
        fix_crc(&mut f);
        assert_eq!(
            parse_aligned(&f),
            Err(FormatError::UnknownKind { found: 7 })
        );
    }

    #[test]
    fn wrong_length() {
        // Truncated: the header promises more than is there.
        let f = int8_file();
        assert_eq!(
            parse_aligned(&f[..f.len() - 1]),
            Err(FormatError::WrongLength {
                expected: f.len(),
                found: f.len() - 1
            })
        );
        // Trailing garbage.
        let mut g = f.clone();
        g.push(0);
        assert_eq!(
            parse_aligned(&g),
            Err(FormatError::WrongLength {
                expected: f.len(),
                found: f.len() + 1
            })
        );
        // Self-consistent and CRC-valid, but the payload is not the int8 LeNet's size.
        let short = encode(Arch::LeNet, Kind::Int8, &[0u8; 65_304]);
        assert_eq!(
            parse_aligned(&short),
            Err(FormatError::WrongLength {
                expected: HEADER_LEN + 65_308 + TRAILER_LEN,
                found: HEADER_LEN + 65_304 + TRAILER_LEN
            })
        );
    }

    #[test]
    fn crc_mismatch() {
        let mut f = int8_file();
        let n = f.len() - TRAILER_LEN;
        let stored = u32::from_le_bytes(f[n..].try_into().unwrap());
        f[HEADER_LEN + 1000] ^= 0x01;
        let computed = CRC32.checksum(&f[..n]);
        assert_ne!(stored, computed);
        assert_eq!(
            parse_aligned(&f),
            Err(FormatError::CrcMismatch { stored, computed })
        );
        // A flipped CRC byte is caught the same way.
        let mut g = int8_file();
        let last = g.len() - 1;
        g[last] ^= 0x80;
        assert!(matches!(
            parse_aligned(&g),
            Err(FormatError::CrcMismatch { .. })
        ));
    }

    /// The table-free CRC (feature `crc-no-table`) gives the table's value on every length and
    /// alignment of a model file's bytes.
    #[test]
    fn crc_without_table_equals_the_table() {
        let file = int8_file();
        for n in [0, 1, 3, 4, 7, 64, 1000, file.len() - 4, file.len()] {
            for start in 0..4 {
                let b = &file[start..n.max(start)];
                assert_eq!(
                    CRC32_NO_TABLE.checksum(b),
                    CRC32.checksum(b),
                    "{start}..{n}"
                );
                assert_eq!(crc32(b), CRC32.checksum(b));
            }
        }
    }

    #[test]
    fn shape_mismatch() {
        let mut f = int8_file();
        // conv1's output channels (slot 3) 6 -> 8.
        f[16 + 2 * 3..16 + 2 * 4].copy_from_slice(&8u16.to_le_bytes());
        fix_crc(&mut f);
        assert_eq!(parse_aligned(&f), Err(FormatError::ShapeMismatch));
        // The wide CNN's descriptor under the LeNet id.
        let mut g = int8_file();
        for (i, s) in Arch::Wide.shape_descriptor().iter().enumerate() {
            g[16 + 2 * i..18 + 2 * i].copy_from_slice(&s.to_le_bytes());
        }
        fix_crc(&mut g);
        assert_eq!(parse_aligned(&g), Err(FormatError::ShapeMismatch));
    }

    #[test]
    fn wrong_model() {
        let f32_file = encode(Arch::LeNet, Kind::F32, &[0u8; size_of::<LeNetParams>()]);
        parse_at(&f32_file, 0, |r| {
            let m = r.unwrap();
            assert_eq!(
                m.lenet_int8(),
                Err(FormatError::WrongModel {
                    found_arch: Arch::LeNet,
                    found_kind: Kind::F32
                })
            );
            assert!(m.lenet_f32().is_ok());
        });
        parse_at(&int8_file(), 0, |r| {
            assert_eq!(
                r.unwrap().lenet_folded().err(),
                Some(FormatError::WrongModel {
                    found_arch: Arch::LeNet,
                    found_kind: Kind::Int8
                })
            );
        });
    }

    #[test]
    fn misaligned() {
        let f = int8_file();
        for shift in 1..4 {
            parse_at(&f, shift, |r| {
                assert_eq!(r.err(), Some(FormatError::Misaligned), "shift {shift}");
            });
        }
        parse_at(&f, 0, |r| assert!(r.is_ok()));
    }

    #[test]
    fn int8_constants_that_could_overflow_are_refused() {
        let mut p = random_qparams(3);
        p.conv2_weight[2][1][0][4] = -128;
        let f = encode(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*p));
        parse_at(&f, 0, |r| {
            assert_eq!(
                r.unwrap().lenet_int8(),
                Err(FormatError::BadQuantParams(
                    QParamsError::WeightOutOfRange {
                        layer: "conv2",
                        channel: 2
                    }
                ))
            );
        });
    }

    #[test]
    fn int8_scales_must_be_positive_and_finite() {
        for (bad, field) in [
            (f32::NAN, "output_scale"),
            (-0.02, "output_scale"),
            (0.0, "output_scale"),
            (f32::INFINITY, "output_scale"),
        ] {
            let mut p = random_qparams(3);
            p.fc3.output_scale = bad;
            let f = encode(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*p));
            parse_at(&f, 0, |r| {
                assert_eq!(
                    r.unwrap().lenet_int8(),
                    Err(FormatError::BadQuantParams(QParamsError::BadScale {
                        layer: "fc3",
                        field
                    })),
                    "{bad}"
                );
            });
        }
        let mut p = random_qparams(3);
        p.conv1.input_scale = f32::NAN;
        assert_eq!(
            p.check(),
            Err(QParamsError::BadScale {
                layer: "conv1",
                field: "input_scale"
            })
        );
        let mut p = random_qparams(3);
        p.fc1.weight_scale[119] = -1.0;
        assert_eq!(
            p.check(),
            Err(QParamsError::BadScale {
                layer: "fc1",
                field: "weight_scale"
            })
        );
    }

    /// Every f32 view runs the tensor check: NaN, ±inf or a negative running variance is
    /// refused with the tensor's name, in files whose CRC is intact.
    #[test]
    fn f32_views_refuse_non_finite_values_and_negative_variance() {
        use crate::tensors::ParamsError;
        let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
        p.fc1_weight[2][3] = f32::NAN;
        let f = encode(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
        parse_at(&f, 0, |r| {
            assert_eq!(
                r.unwrap().lenet_f32(),
                Err(FormatError::BadParams(ParamsError::NonFinite {
                    tensor: "fc1.weight",
                    index: 803
                }))
            );
        });
        let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
        p.bn1.running_var[2] = -0.5;
        let f = encode(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
        parse_at(&f, 0, |r| {
            assert_eq!(
                r.unwrap().lenet_f32(),
                Err(FormatError::BadParams(ParamsError::Negative {
                    tensor: "bn1.running_var",
                    index: 2
                }))
            );
        });
        let mut q: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
        q.conv2_bias[15] = f32::NEG_INFINITY;
        let f = encode(Arch::LeNet, Kind::F32Folded, bytemuck::bytes_of(&*q));
        parse_at(&f, 0, |r| {
            assert_eq!(
                r.unwrap().lenet_folded(),
                Err(FormatError::BadParams(ParamsError::NonFinite {
                    tensor: "conv2.bias",
                    index: 15
                }))
            );
        });
        let mut w: Box<WideParams> = bytemuck::zeroed_box();
        w.bn2.running_var[63] = f32::NAN;
        let f = encode(Arch::Wide, Kind::F32, bytemuck::bytes_of(&*w));
        parse_at(&f, 0, |r| {
            assert_eq!(
                r.unwrap().wide_f32(),
                Err(FormatError::BadParams(ParamsError::NonFinite {
                    tensor: "bn2.running_var",
                    index: 63
                }))
            );
        });
        let mut w: Box<WideFoldedParams> = bytemuck::zeroed_box();
        w.fc2_weight[0][0] = f32::INFINITY;
        let f = encode(Arch::Wide, Kind::F32Folded, bytemuck::bytes_of(&*w));
        parse_at(&f, 0, |r| {
            let e = r.unwrap().wide_folded().unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid f32 parameters: tensor `fc2.weight` holds a non-finite value at flat index 0"
            );
        });
    }

    /// The wide CNN's files go through the same checks in the same order.
    mod wide {
        use super::*;
        use crate::quant::WideQ;
        use crate::testutil::random_wide_qparams;

        fn wide_int8_file() -> Vec<u8> {
            encode(
                Arch::Wide,
                Kind::Int8,
                bytemuck::bytes_of(&*random_wide_qparams(3)),
            )
        }

        #[test]
        fn int8_round_trip_is_zero_copy() {
            let p = random_wide_qparams(3);
            let file = wide_int8_file();
            assert_eq!(file.len(), HEADER_LEN + 1_639_408 + TRAILER_LEN);
            assert_eq!(layout_len(Arch::Wide, Kind::Int8), Some(1_639_408));
            parse_at(&file, 0, |r| {
                let m = r.unwrap();
                assert_eq!(
                    m.header,
                    Header {
                        arch: Arch::Wide,
                        kind: Kind::Int8,
                        payload_len: 1_639_408
                    }
                );
                let q = m.wide_int8().unwrap();
                assert_eq!(q, &*p);
                assert_eq!(q as *const WideQParams as *const u8, m.payload.as_ptr());
                let img = [77u8; 784];
                assert_eq!(
                    WideQ::new(q).unwrap().forward(&img),
                    WideQ::new(&p).unwrap().forward(&img)
                );
            });
        }

        #[test]
        fn f32_round_trips_are_zero_copy() {
            let mut p: Box<WideParams> = bytemuck::zeroed_box();
            p.fc2_bias[3] = 1.5;
            p.bn2.running_var[63] = 2.0;
            let f = encode(Arch::Wide, Kind::F32, bytemuck::bytes_of(&*p));
            assert_eq!(f.len(), HEADER_LEN + 6_521_896 + TRAILER_LEN);
            parse_at(&f, 0, |r| {
                let m = r.unwrap();
                assert_eq!(m.wide_f32().unwrap(), &*p);
                assert!(matches!(
                    m.wide_folded(),
                    Err(FormatError::WrongModel { .. })
                ));
            });
            let mut q: Box<WideFoldedParams> = bytemuck::zeroed_box();
            q.conv2_bias[7] = -0.25;
            let f = encode(Arch::Wide, Kind::F32Folded, bytemuck::bytes_of(&*q));
            assert_eq!(f.len(), HEADER_LEN + 6_520_360 + TRAILER_LEN);
            parse_at(&f, 0, |r| {
                let m = r.unwrap();
                assert_eq!(m.wide_folded().unwrap(), &*q);
                assert_eq!(
                    m.wide_int8().err(),
                    Some(FormatError::WrongModel {
                        found_arch: Arch::Wide,
                        found_kind: Kind::F32Folded
                    })
                );
            });
        }

        #[test]
        fn header_errors_in_order() {
            let f = wide_int8_file();
            let mut g = f.clone();
            g[0] = b'X';
            assert_eq!(parse_aligned(&g), Err(FormatError::BadMagic));
            let mut g = f.clone();
            g[4..6].copy_from_slice(&3u16.to_le_bytes());
            fix_crc(&mut g);
            assert_eq!(
                parse_aligned(&g),
                Err(FormatError::UnsupportedVersion { found: 3 })
            );
            let mut g = f.clone();
            g[6..8].copy_from_slice(&0u16.to_le_bytes());
            fix_crc(&mut g);
            assert_eq!(
                parse_aligned(&g),
                Err(FormatError::BadHeaderLength { found: 0 })
            );
            let mut g = f.clone();
            g[8..10].copy_from_slice(&3u16.to_le_bytes());
            fix_crc(&mut g);
            assert_eq!(
                parse_aligned(&g),
                Err(FormatError::UnknownArch { found: 3 })
            );
            let mut g = f.clone();
            g[10..12].copy_from_slice(&0u16.to_le_bytes());
            fix_crc(&mut g);
            assert_eq!(
                parse_aligned(&g),
                Err(FormatError::UnknownKind { found: 0 })
            );
            assert_eq!(
                parse_aligned(&f[..f.len() - 4]),
                Err(FormatError::WrongLength {
                    expected: f.len(),
                    found: f.len() - 4
                })
            );
            let mut g = f.clone();
            g[HEADER_LEN + 1_000_000] ^= 0x10;
            assert!(matches!(
                parse_aligned(&g),
                Err(FormatError::CrcMismatch { .. })
            ));
            // conv2's kernel (slot 7) 3 -> 5.
            let mut g = f.clone();
            g[16 + 2 * 7..16 + 2 * 8].copy_from_slice(&5u16.to_le_bytes());
            fix_crc(&mut g);
            assert_eq!(parse_aligned(&g), Err(FormatError::ShapeMismatch));
            // The LeNet descriptor under the wide id.
            let mut g = f.clone();
            for (i, s) in Arch::LeNet.shape_descriptor().iter().enumerate() {
                g[16 + 2 * i..18 + 2 * i].copy_from_slice(&s.to_le_bytes());
            }
            fix_crc(&mut g);
            assert_eq!(parse_aligned(&g), Err(FormatError::ShapeMismatch));
            for shift in 1..4 {
                parse_at(&f, shift, |r| {
                    assert_eq!(r.err(), Some(FormatError::Misaligned), "shift {shift}")
                });
            }
        }

        #[test]
        fn payload_of_another_layout_size_is_refused() {
            // Self-consistent and CRC-valid, but each payload is the LeNet one of that kind
            // (or 4 bytes short of the wide int8 one).
            for (kind, n) in [
                (Kind::F32, size_of::<LeNetParams>()),
                (Kind::F32Folded, size_of::<LeNetFoldedParams>()),
                (Kind::Int8, 1_639_404),
            ] {
                let f = encode(Arch::Wide, kind, &vec![0u8; n]);
                let want = layout_len(Arch::Wide, kind).unwrap();
                assert_eq!(
                    parse_aligned(&f),
                    Err(FormatError::WrongLength {
                        expected: HEADER_LEN + want + TRAILER_LEN,
                        found: HEADER_LEN + n + TRAILER_LEN
                    }),
                    "{kind:?}"
                );
            }
        }

        #[test]
        fn wrong_model_both_ways() {
            parse_at(&wide_int8_file(), 0, |r| {
                let m = r.unwrap();
                assert_eq!(
                    m.lenet_int8(),
                    Err(FormatError::WrongModel {
                        found_arch: Arch::Wide,
                        found_kind: Kind::Int8
                    })
                );
                assert!(m.wide_f32().is_err());
            });
            parse_at(&int8_file(), 0, |r| {
                assert_eq!(
                    r.unwrap().wide_int8().err(),
                    Some(FormatError::WrongModel {
                        found_arch: Arch::LeNet,
                        found_kind: Kind::Int8
                    })
                );
            });
        }

        #[test]
        fn int8_constants_that_could_overflow_are_refused() {
            let mut p = random_wide_qparams(3);
            p.fc1.bias[17] = i32::MAX;
            let f = encode(Arch::Wide, Kind::Int8, bytemuck::bytes_of(&*p));
            parse_at(&f, 0, |r| {
                assert_eq!(
                    r.unwrap().wide_int8(),
                    Err(FormatError::BadQuantParams(QParamsError::BiasOutOfRange {
                        layer: "fc1",
                        channel: 17
                    }))
                );
            });
        }
    }

    #[test]
    fn errors_display_a_cause() {
        let e = FormatError::BadQuantParams(QParamsError::BiasOutOfRange {
            layer: "fc1",
            channel: 3,
        });
        assert_eq!(
            e.to_string(),
            "invalid int8 parameters: fc1 channel 3: bias too large, the i32 accumulator could overflow"
        );
        assert_eq!(
            FormatError::UnsupportedVersion { found: 9 }.to_string(),
            "unsupported format version 9 (this build reads version 1)"
        );
    }
}

/// The payload offsets and sizes that `docs/model-format.md` documents.
#[cfg(test)]
mod documented_layout {
    use crate::lenet::{LeNetFoldedParams, LeNetParams};
    use core::mem::offset_of;

    #[test]
    fn f32_offsets_match_the_document() {
        assert_eq!(size_of::<LeNetParams>(), 247_176);
        let offs = [
            offset_of!(LeNetParams, conv1_bias),
            offset_of!(LeNetParams, bn1),
            offset_of!(LeNetParams, conv2_weight),
            offset_of!(LeNetParams, conv2_bias),
            offset_of!(LeNetParams, bn2),
            offset_of!(LeNetParams, fc1_weight),
            offset_of!(LeNetParams, fc1_bias),
            offset_of!(LeNetParams, fc2_weight),
            offset_of!(LeNetParams, fc2_bias),
            offset_of!(LeNetParams, fc3_weight),
            offset_of!(LeNetParams, fc3_bias),
        ];
        assert_eq!(
            offs,
            [
                600, 624, 720, 10_320, 10_384, 10_640, 202_640, 203_120, 243_440, 243_776, 247_136
            ]
        );
        assert_eq!(size_of::<LeNetFoldedParams>(), 246_824);
        let offs = [
            offset_of!(LeNetFoldedParams, conv1_bias),
            offset_of!(LeNetFoldedParams, conv2_weight),
            offset_of!(LeNetFoldedParams, conv2_bias),
            offset_of!(LeNetFoldedParams, fc1_weight),
            offset_of!(LeNetFoldedParams, fc1_bias),
            offset_of!(LeNetFoldedParams, fc2_weight),
            offset_of!(LeNetFoldedParams, fc2_bias),
            offset_of!(LeNetFoldedParams, fc3_weight),
            offset_of!(LeNetFoldedParams, fc3_bias),
        ];
        assert_eq!(
            offs,
            [
                600, 624, 10_224, 10_288, 202_288, 202_768, 243_088, 243_424, 246_784
            ]
        );
    }

    #[test]
    fn wide_f32_offsets_match_the_document() {
        use crate::wide::{WideFoldedParams, WideParams};
        assert_eq!(size_of::<WideParams>(), 6_521_896);
        let offs = [
            offset_of!(WideParams, conv1_bias),
            offset_of!(WideParams, bn1),
            offset_of!(WideParams, conv2_weight),
            offset_of!(WideParams, conv2_bias),
            offset_of!(WideParams, bn2),
            offset_of!(WideParams, fc1_weight),
            offset_of!(WideParams, fc1_bias),
            offset_of!(WideParams, fc2_weight),
            offset_of!(WideParams, fc2_bias),
        ];
        assert_eq!(
            offs,
            [
                1_152, 1_280, 1_792, 75_520, 75_776, 76_800, 6_499_328, 6_501_376, 6_521_856
            ]
        );
        assert_eq!(size_of::<WideFoldedParams>(), 6_520_360);
        let offs = [
            offset_of!(WideFoldedParams, conv1_bias),
            offset_of!(WideFoldedParams, conv2_weight),
            offset_of!(WideFoldedParams, conv2_bias),
            offset_of!(WideFoldedParams, fc1_weight),
            offset_of!(WideFoldedParams, fc1_bias),
            offset_of!(WideFoldedParams, fc2_weight),
            offset_of!(WideFoldedParams, fc2_bias),
        ];
        assert_eq!(
            offs,
            [
                1_152, 1_280, 75_008, 75_264, 6_497_792, 6_499_840, 6_520_320
            ]
        );
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(super::CRC32.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::CRC32_NO_TABLE.checksum(b"123456789"), 0xCBF4_3926);
    }
}
