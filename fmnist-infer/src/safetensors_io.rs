//! The f32 LeNet-BN as a safetensors file with PyTorch's `state_dict` names.
//!
//! The module this matches, in PyTorch:
//!
//! ```text
//! conv1 = Conv2d(1, 6, 5, padding=2)   conv1.weight [6,1,5,5]   conv1.bias [6]
//! bn1   = BatchNorm2d(6)               bn1.weight [6]  bn1.bias [6]  bn1.running_mean [6]
//!                                      bn1.running_var [6]  bn1.num_batches_tracked [] (I64)
//! conv2 = Conv2d(6, 16, 5)             conv2.weight [16,6,5,5]  conv2.bias [16]
//! bn2   = BatchNorm2d(16)              bn2.* as bn1, [16]
//! fc1   = Linear(400, 120)             fc1.weight [120,400]  fc1.bias [120]
//! fc2   = Linear(120, 84)              fc2.weight [84,120]   fc2.bias [84]
//! fc3   = Linear(84, 10)               fc3.weight [10,84]    fc3.bias [10]
//! ```
//!
//! `fc1` sees the 16x5x5 map flattened C×H×W, as `torch.flatten(x, 1)` does, which is also the
//! order of [`LeNetParams`]: a tensor's row-major bytes are copied as they are.
//!
//! * [`encode`] writes every tensor as little-endian F32 with exactly PyTorch's shape, plus the two
//!   `num_batches_tracked` buffers as I64 scalars (shape `[]`), so
//!   `model.load_state_dict(safetensors.torch.load_file(path), strict=True)` accepts the file.
//!   The header metadata is `{"format": "pt"}`.
//! * [`decode`] checks every key, dtype and shape and names the key at fault. It accepts F32, F64,
//!   F16 and BF16 tensors (converted to f32; F64 rounds to nearest), ignores `num_batches_tracked`
//!   (present or not), and rejects a missing or unexpected tensor, and (through
//!   [`fmnist_core::tensors`], the check every reader of f32 parameters runs) a non-finite
//!   value and a negative running variance.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use fmnist_core::lenet::LeNetParams;
use fmnist_core::tensors::{ParamsError, Tensors};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::atomic::write_atomic;

/// Why a safetensors file could not be read or written.
#[derive(Debug)]
pub enum SafetensorsError {
    /// The file could not be read or written.
    Io(PathBuf, std::io::Error),
    /// The bytes are not a valid safetensors container.
    Container(String),
    /// A tensor LeNet-BN needs is absent.
    Missing(&'static str),
    /// A tensor LeNet-BN does not have.
    Unexpected(String),
    /// A tensor has a dtype this reader does not convert.
    Dtype {
        /// The tensor.
        key: &'static str,
        /// Its dtype.
        found: Dtype,
    },
    /// A tensor has another shape than PyTorch's for this module.
    Shape {
        /// The tensor.
        key: &'static str,
        /// PyTorch's shape.
        expected: &'static [usize],
        /// The file's shape.
        found: Vec<usize>,
    },
    /// The values are not a model: NaN or infinite (an F64 outside the f32 range becomes
    /// infinite), or a negative running variance ([`fmnist_core::tensors`]'s check, which
    /// every reader of f32 parameters runs).
    Params(ParamsError),
    /// The file and the problem with it.
    InFile(PathBuf, Box<SafetensorsError>),
}

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafetensorsError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            SafetensorsError::Container(e) => write!(f, "not a valid safetensors file: {e}"),
            SafetensorsError::Missing(k) => write!(f, "tensor `{k}` is missing"),
            SafetensorsError::Unexpected(k) => {
                write!(f, "unexpected tensor `{k}` (not part of LeNet-BN)")
            }
            SafetensorsError::Dtype { key, found } => {
                write!(
                    f,
                    "tensor `{key}` has dtype {found}, expected F32 (or F64/F16/BF16)"
                )
            }
            SafetensorsError::Shape {
                key,
                expected,
                found,
            } => write!(
                f,
                "tensor `{key}` has shape {found:?}, expected {expected:?}"
            ),
            SafetensorsError::Params(e) => write!(f, "{e}"),
            SafetensorsError::InFile(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for SafetensorsError {}

/// One f32 tensor of [`LeNetParams`]: its PyTorch name and shape.
struct Slot {
    key: &'static str,
    shape: &'static [usize],
}

/// Every f32 tensor, in [`LeNetParams`] field order (which is also `state_dict` order).
#[rustfmt::skip]
const SLOTS: [Slot; 18] = [
    Slot { key: "conv1.weight", shape: &[6, 1, 5, 5] },
    Slot { key: "conv1.bias", shape: &[6] },
    Slot { key: "bn1.weight", shape: &[6] },
    Slot { key: "bn1.bias", shape: &[6] },
    Slot { key: "bn1.running_mean", shape: &[6] },
    Slot { key: "bn1.running_var", shape: &[6] },
    Slot { key: "conv2.weight", shape: &[16, 6, 5, 5] },
    Slot { key: "conv2.bias", shape: &[16] },
    Slot { key: "bn2.weight", shape: &[16] },
    Slot { key: "bn2.bias", shape: &[16] },
    Slot { key: "bn2.running_mean", shape: &[16] },
    Slot { key: "bn2.running_var", shape: &[16] },
    Slot { key: "fc1.weight", shape: &[120, 400] },
    Slot { key: "fc1.bias", shape: &[120] },
    Slot { key: "fc2.weight", shape: &[84, 120] },
    Slot { key: "fc2.bias", shape: &[84] },
    Slot { key: "fc3.weight", shape: &[10, 84] },
    Slot { key: "fc3.bias", shape: &[10] },
];

/// The two integer buffers PyTorch keeps and this model does not use.
const NUM_BATCHES_TRACKED: [&str; 2] = ["bn1.num_batches_tracked", "bn2.num_batches_tracked"];

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The f32 slice of each tensor, in [`SLOTS`] order.
fn slices(p: &LeNetParams) -> [&[f32]; 18] {
    [
        p.conv1_weight.as_flattened().as_flattened().as_flattened(),
        &p.conv1_bias,
        &p.bn1.gamma,
        &p.bn1.beta,
        &p.bn1.running_mean,
        &p.bn1.running_var,
        p.conv2_weight.as_flattened().as_flattened().as_flattened(),
        &p.conv2_bias,
        &p.bn2.gamma,
        &p.bn2.beta,
        &p.bn2.running_mean,
        &p.bn2.running_var,
        p.fc1_weight.as_flattened(),
        &p.fc1_bias,
        p.fc2_weight.as_flattened(),
        &p.fc2_bias,
        p.fc3_weight.as_flattened(),
        &p.fc3_bias,
    ]
}

fn slices_mut(p: &mut LeNetParams) -> [&mut [f32]; 18] {
    [
        p.conv1_weight
            .as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut(),
        &mut p.conv1_bias,
        &mut p.bn1.gamma,
        &mut p.bn1.beta,
        &mut p.bn1.running_mean,
        &mut p.bn1.running_var,
        p.conv2_weight
            .as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut(),
        &mut p.conv2_bias,
        &mut p.bn2.gamma,
        &mut p.bn2.beta,
        &mut p.bn2.running_mean,
        &mut p.bn2.running_var,
        p.fc1_weight.as_flattened_mut(),
        &mut p.fc1_bias,
        p.fc2_weight.as_flattened_mut(),
        &mut p.fc2_bias,
        p.fc3_weight.as_flattened_mut(),
        &mut p.fc3_bias,
    ]
}

/// The safetensors bytes of `p`, with `num_batches_tracked` written as given (PyTorch counts
/// training batches there; it only matters for `momentum=None`, which this model does not use).
pub fn encode(p: &LeNetParams, num_batches_tracked: i64) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = slices(p)
        .iter()
        .map(|s| s.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let nbt = num_batches_tracked.to_le_bytes();
    let mut views: Vec<(String, TensorView<'_>)> = SLOTS
        .iter()
        .zip(&bytes)
        .map(|(slot, b)| {
            let view = TensorView::new(Dtype::F32, slot.shape.to_vec(), b)
                .expect("slot shapes match LeNetParams");
            (slot.key.to_owned(), view)
        })
        .collect();
    for key in NUM_BATCHES_TRACKED {
        let view = TensorView::new(Dtype::I64, vec![], &nbt).expect("an I64 scalar is 8 bytes");
        views.push((key.to_owned(), view));
    }
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize(views, Some(metadata)).expect("a 250 KB header-sized model serializes")
}

/// Writes `p` as a safetensors file, atomically.
pub fn write(
    path: &Path,
    p: &LeNetParams,
    num_batches_tracked: i64,
) -> Result<(), SafetensorsError> {
    write_atomic(path, &encode(p, num_batches_tracked))
        .map_err(|e| SafetensorsError::Io(path.to_owned(), e))
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^-24, exact in f32.
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Converts one tensor's little-endian bytes to f32 values.
fn convert(
    key: &'static str,
    view: &TensorView<'_>,
    out: &mut [f32],
) -> Result<(), SafetensorsError> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap());
            }
        }
        Dtype::F64 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().unwrap()) as f32;
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        found => return Err(SafetensorsError::Dtype { key, found }),
    }
    Ok(())
}

/// Reads LeNet-BN from safetensors bytes, checking every key, dtype and shape.
pub fn decode(bytes: &[u8]) -> Result<Box<LeNetParams>, SafetensorsError> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| SafetensorsError::Container(e.to_string()))?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    if let Some(extra) = names
        .iter()
        .find(|n| !SLOTS.iter().any(|s| s.key == **n) && !NUM_BATCHES_TRACKED.contains(n))
    {
        return Err(SafetensorsError::Unexpected((*extra).to_owned()));
    }
    let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
    for (slot, out) in SLOTS.iter().zip(slices_mut(&mut p)) {
        let view = st
            .tensor(slot.key)
            .map_err(|_| SafetensorsError::Missing(slot.key))?;
        if view.shape() != slot.shape {
            return Err(SafetensorsError::Shape {
                key: slot.key,
                expected: slot.shape,
                found: view.shape().to_vec(),
            });
        }
        debug_assert_eq!(out.len(), numel(slot.shape));
        convert(slot.key, &view, out)?;
    }
    p.check().map_err(SafetensorsError::Params)?;
    Ok(p)
}

/// Reads a safetensors file; errors name the file.
pub fn read(path: &Path) -> Result<Box<LeNetParams>, SafetensorsError> {
    let bytes = crate::inputs::read(path).map_err(|e| SafetensorsError::Io(path.to_owned(), e))?;
    decode(&bytes).map_err(|e| SafetensorsError::InFile(path.to_owned(), Box::new(e)))
}

/// True when `bytes` look like a safetensors file: an 8-byte little-endian header length that
/// fits in the file, followed by a JSON object.
pub fn looks_like_safetensors(bytes: &[u8]) -> bool {
    if bytes.len() < 10 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    n >= 2 && n <= (bytes.len() - 8) as u64 && bytes[8] == b'{'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg_params(seed: u32) -> Box<LeNetParams> {
        let mut p: Box<LeNetParams> = fmnist_core::testutil::uniform_params(seed, 0.4);
        p.bn1.running_var.iter_mut().for_each(|v| *v = v.abs());
        p.bn2.running_var.iter_mut().for_each(|v| *v = v.abs());
        p
    }

    fn f32_bits(p: &LeNetParams) -> Vec<u32> {
        bytemuck::cast_slice::<LeNetParams, u32>(std::slice::from_ref(p)).to_vec()
    }

    /// Re-serialises `bytes` with `edit` applied to the (name, dtype, shape, data) list.
    fn rewrite(
        bytes: &[u8],
        edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
    ) -> Vec<u8> {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let mut t: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        edit(&mut t);
        let views: Vec<_> = t
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn round_trip_is_bit_identical() {
        let p = lcg_params(11);
        let bytes = encode(&p, 1234);
        let back = decode(&bytes).unwrap();
        assert_eq!(f32_bits(&p), f32_bits(&back));
        // Through a file too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write(&path, &p, 0).unwrap();
        assert_eq!(f32_bits(&p), f32_bits(&read(&path).unwrap()));
        assert!(looks_like_safetensors(&bytes));
    }

    #[test]
    fn layout_is_pytorchs() {
        let p = lcg_params(3);
        let bytes = encode(&p, 7);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 20);
        let w = st.tensor("conv2.weight").unwrap();
        assert_eq!(w.dtype(), Dtype::F32);
        assert_eq!(w.shape(), &[16, 6, 5, 5]);
        // Element [oc=3][ic=2][ky=1][kx=4], row-major.
        let at = ((3 * 6 + 2) * 5 + 1) * 5 + 4;
        let v = f32::from_le_bytes(w.data()[4 * at..4 * at + 4].try_into().unwrap());
        assert_eq!(v.to_bits(), p.conv2_weight[3][2][1][4].to_bits());
        let fc1 = st.tensor("fc1.weight").unwrap();
        assert_eq!(fc1.shape(), &[120, 400]);
        let nbt = st.tensor("bn2.num_batches_tracked").unwrap();
        assert_eq!(nbt.dtype(), Dtype::I64);
        assert!(nbt.shape().is_empty());
        assert_eq!(nbt.data(), 7i64.to_le_bytes());
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    }

    #[test]
    fn missing_extra_shape_dtype_errors_name_the_key() {
        let bytes = encode(&lcg_params(5), 0);
        let missing = rewrite(&bytes, |t| t.retain(|x| x.0 != "bn2.running_mean"));
        assert_eq!(
            decode(&missing).unwrap_err().to_string(),
            "tensor `bn2.running_mean` is missing"
        );
        let extra = rewrite(&bytes, |t| {
            t.push(("fc4.weight".into(), Dtype::F32, vec![1], vec![0; 4]))
        });
        assert!(
            decode(&extra)
                .unwrap_err()
                .to_string()
                .contains("`fc4.weight`")
        );
        let shape = rewrite(&bytes, |t| {
            let x = t.iter_mut().find(|x| x.0 == "fc1.weight").unwrap();
            x.2 = vec![400, 120];
        });
        assert_eq!(
            decode(&shape).unwrap_err().to_string(),
            "tensor `fc1.weight` has shape [400, 120], expected [120, 400]"
        );
        let dtype = rewrite(&bytes, |t| {
            let x = t.iter_mut().find(|x| x.0 == "fc3.bias").unwrap();
            x.1 = Dtype::I32;
        });
        assert!(
            decode(&dtype)
                .unwrap_err()
                .to_string()
                .contains("`fc3.bias` has dtype I32")
        );
        // num_batches_tracked may be absent.
        let no_nbt = rewrite(&bytes, |t| {
            t.retain(|x| !x.0.ends_with("num_batches_tracked"))
        });
        decode(&no_nbt).unwrap();
    }

    /// The key table is the core's tensor table with shapes: one set of names.
    #[test]
    fn slots_are_the_core_tensor_table() {
        let core: Vec<_> = LeNetParams::TENSORS
            .iter()
            .map(|t| (t.name, t.len))
            .collect();
        let here: Vec<_> = SLOTS.iter().map(|s| (s.key, numel(s.shape))).collect();
        assert_eq!(core, here);
    }

    #[test]
    fn nan_and_negative_variance_are_rejected() {
        let mut p = lcg_params(9);
        p.fc2_weight[1][2] = f32::NAN;
        assert_eq!(
            decode(&encode(&p, 0)).unwrap_err().to_string(),
            "tensor `fc2.weight` holds a non-finite value at flat index 122"
        );
        let mut p = lcg_params(9);
        p.bn1.running_var[4] = -1.0;
        assert_eq!(
            decode(&encode(&p, 0)).unwrap_err().to_string(),
            "tensor `bn1.running_var` holds a negative variance at flat index 4"
        );
        // An F64 beyond the f32 range becomes infinite and is refused the same way.
        let bytes = encode(&lcg_params(9), 0);
        let big = rewrite(&bytes, |t| {
            let x = t.iter_mut().find(|x| x.0 == "fc3.bias").unwrap();
            x.1 = Dtype::F64;
            x.3 = [1e300f64; 10]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
        });
        assert_eq!(
            decode(&big).unwrap_err().to_string(),
            "tensor `fc3.bias` holds a non-finite value at flat index 0"
        );
    }

    #[test]
    fn f64_f16_bf16_are_converted() {
        let p = lcg_params(21);
        let bytes = encode(&p, 0);
        let as_dtype = |dt: Dtype| {
            rewrite(&bytes, |t| {
                let x = t.iter_mut().find(|x| x.0 == "fc3.bias").unwrap();
                let vals: Vec<f32> =
                    x.3.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                x.1 = dt;
                x.3 = match dt {
                    Dtype::F64 => vals
                        .iter()
                        .flat_map(|v| (*v as f64).to_le_bytes())
                        .collect(),
                    // Truncate to bf16 (exact for these test values after truncation).
                    Dtype::BF16 => vals
                        .iter()
                        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                        .collect(),
                    // f16 of 0.5, -2.0, 2^-24 (smallest subnormal), 65504, then zeros.
                    Dtype::F16 => [0x3800u16, 0xc000, 0x0001, 0x7bff]
                        .into_iter()
                        .chain(std::iter::repeat(0))
                        .take(10)
                        .flat_map(u16::to_le_bytes)
                        .collect(),
                    _ => unreachable!(),
                };
            })
        };
        assert_eq!(decode(&as_dtype(Dtype::F64)).unwrap().fc3_bias, p.fc3_bias);
        let bf = decode(&as_dtype(Dtype::BF16)).unwrap().fc3_bias;
        for (a, b) in bf.iter().zip(&p.fc3_bias) {
            assert_eq!(a.to_bits(), b.to_bits() & 0xffff_0000);
        }
        let h = decode(&as_dtype(Dtype::F16)).unwrap().fc3_bias;
        assert_eq!(&h[..4], &[0.5, -2.0, 2f32.powi(-24), 65504.0]);
    }

    #[test]
    fn garbage_is_a_container_error() {
        for bytes in [&b""[..], b"hello world, not a model", &[0xff; 64]] {
            assert!(matches!(decode(bytes), Err(SafetensorsError::Container(_))));
        }
        assert!(!looks_like_safetensors(b"FMNM...."));
    }
}
