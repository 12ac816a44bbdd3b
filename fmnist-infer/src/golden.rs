//! Golden outputs: the logits and predicted class of every test image, for the firmware test.
//!
//! # File format (version 1)
//!
//! All integers little-endian.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "FMGD"
//! 4       2     version (u16) = 1
//! 6       2     logit type (u16): 1 = int8 (10 x i8), 2 = f32 (10 x f32, IEEE-754 bits)
//! 8       4     record count N (u32): 10,000 for the Fashion-MNIST test set
//! 12      4     model CRC-32 (u32): the FMNM file's CRC trailer (for a safetensors file,
//!               the CRC-32 of all its bytes), to tell which model produced the file
//! 16      N*R   records, one per test image in t10k file order:
//!                 int8: 10 x i8 logits, then 1 x u8 predicted class  (R = 11)
//!                 f32:  10 x f32 logits, then 1 x u8 predicted class (R = 41)
//! 16+N*R  4     CRC-32/ISO-HDLC (as zlib, PNG) of bytes 0 .. 16+N*R
//! ```
//!
//! The predicted class is the argmax of the record's logits, ties to the lowest index.
//! The file is written atomically (temp file, fsync, rename).

use std::path::Path;

use fmnist_core::format::CRC32;
use fmnist_core::lenet::IMAGE_PIXELS;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Logits, Model};

/// The four magic bytes.
pub const MAGIC: [u8; 4] = *b"FMGD";
/// The version written and read.
pub const VERSION: u16 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 16;
/// Logit type code for int8.
pub const LOGITS_I8: u16 = 1;
/// Logit type code for f32.
pub const LOGITS_F32: u16 = 2;

/// A decoded golden file.
#[derive(Clone, Debug, PartialEq)]
pub struct Golden {
    /// CRC-32 of the model that produced it.
    pub model_crc: u32,
    /// One entry per image: logits and predicted class.
    pub records: Vec<(Logits, u8)>,
}

/// Encodes golden records (all of one logit type).
pub fn encode(model_crc: u32, records: &[(Logits, u8)]) -> Vec<u8> {
    let kind = match records.first() {
        Some((Logits::F32(_), _)) => LOGITS_F32,
        _ => LOGITS_I8,
    };
    let rec_len = if kind == LOGITS_I8 { 11 } else { 41 };
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * rec_len + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&model_crc.to_le_bytes());
    for (logits, class) in records {
        match logits {
            Logits::I8(l) => {
                assert_eq!(kind, LOGITS_I8, "records mix logit types");
                out.extend(l.iter().map(|&v| v as u8));
            }
            Logits::F32(l) => {
                assert_eq!(kind, LOGITS_F32, "records mix logit types");
                out.extend(l.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        out.push(*class);
    }
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and checks a golden file's bytes (the problem is returned as text).
pub fn decode(bytes: &[u8]) -> std::result::Result<Golden, String> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(format!(
            "too short for a golden file: {} bytes",
            bytes.len()
        ));
    }
    if bytes[..4] != MAGIC {
        return Err("not a golden file (bad magic; expected \"FMGD\")".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    if u16_at(4) != VERSION {
        return Err(format!("unsupported golden version {}", u16_at(4)));
    }
    let kind = u16_at(6);
    let rec_len = match kind {
        LOGITS_I8 => 11,
        LOGITS_F32 => 41,
        k => return Err(format!("unknown logit type {k}")),
    };
    let n = u32_at(8) as usize;
    let expected = HEADER_LEN + n * rec_len + 4;
    if bytes.len() != expected {
        return Err(format!(
            "wrong length: expected {expected} bytes, found {}",
            bytes.len()
        ));
    }
    let body = expected - 4;
    let (stored, computed) = (u32_at(body), CRC32.checksum(&bytes[..body]));
    if stored != computed {
        return Err(format!(
            "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let records = bytes[HEADER_LEN..body]
        .chunks_exact(rec_len)
        .map(|r| {
            let logits = if kind == LOGITS_I8 {
                Logits::I8(std::array::from_fn(|i| r[i] as i8))
            } else {
                Logits::F32(std::array::from_fn(|i| {
                    f32::from_le_bytes(r[4 * i..4 * i + 4].try_into().unwrap())
                }))
            };
            (logits, r[rec_len - 1])
        })
        .collect();
    Ok(Golden {
        model_crc: u32_at(12),
        records,
    })
}

/// Reads a golden file.
pub fn read(path: &Path) -> Result<Golden> {
    let bytes = crate::inputs::read(path).map_err(|e| Error::bad(path, e))?;
    decode(&bytes).map_err(|e| Error::bad(path, e))
}

/// Runs `model` on every image (in parallel) and returns the records.
pub fn records(model: &Model, images: &[[u8; IMAGE_PIXELS]]) -> Vec<(Logits, u8)> {
    images
        .par_iter()
        .with_min_len(64)
        .map(|img| {
            let l = model.logits(img);
            let class = match l {
                Logits::F32(v) => fmnist_core::layers::argmax(&v),
                Logits::I8(v) => fmnist_core::layers::argmax(&v),
            };
            (l, class as u8)
        })
        .collect()
}

/// Writes the golden file of `model` over `images` to `out`, atomically.
pub fn write(model: &Model, images: &[[u8; IMAGE_PIXELS]], out: &Path) -> Result<usize> {
    let recs = records(model, images);
    let bytes = encode(model.crc, &recs);
    crate::outputs::write_all(&[(out, &bytes)])?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_round_trip_and_layout() {
        let recs = vec![
            (Logits::I8([-128, 127, 0, 1, -1, 2, 3, 4, 5, 6]), 1u8),
            (Logits::I8([0; 10]), 0),
        ];
        let b = encode(0xdead_beef, &recs);
        assert_eq!(b.len(), 16 + 2 * 11 + 4);
        assert_eq!(&b[..4], b"FMGD");
        assert_eq!(&b[4..16], &[1, 0, 1, 0, 2, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(&b[16..27], &[0x80, 0x7f, 0, 1, 0xff, 2, 3, 4, 5, 6, 1]);
        let g = decode(&b).unwrap();
        assert_eq!(g.model_crc, 0xdead_beef);
        assert_eq!(g.records, recs);
    }

    #[test]
    fn f32_round_trip_and_corruption() {
        let recs = vec![(
            Logits::F32([0.5, -1.25, 3.0, 0.0, -0.0, 1e-30, 7.0, 8.0, 9.0, 10.0]),
            9u8,
        )];
        let mut b = encode(1, &recs);
        assert_eq!(b.len(), 16 + 41 + 4);
        assert_eq!(decode(&b).unwrap().records, recs);
        b[20] ^= 4;
        assert!(decode(&b).unwrap_err().contains("CRC mismatch"));
        assert!(decode(&b[..30]).unwrap_err().contains("wrong length"));
        assert!(
            decode(b"FMNM0000000000000000000")
                .unwrap_err()
                .contains("magic")
        );
    }
}
