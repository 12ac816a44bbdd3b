//! An f32 model as trained (kind 1) of any registered network as a safetensors file with
//! PyTorch's `state_dict` names and shapes.
//!
//! Names come from the network's tensor table (`fmnist_core::tensors`), shapes from its layers
//! ([`crate::params::Layers`]); nothing here lists a network's tensors. For LeNet-BN the module is
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
//! and for the wide CNN `conv1 = Conv2d(1, 32, 3, padding=1)`, `bn1 = BatchNorm2d(32)`,
//! `conv2 = Conv2d(32, 64, 3, padding=1)`, `bn2 = BatchNorm2d(64)`, `fc1 = Linear(3136, 512)`,
//! `fc2 = Linear(512, 10)`.
//!
//! `fc1` sees the last pooled map flattened C×H×W, as `torch.flatten(x, 1)` does, which is also
//! the order of the FMNM payload: a tensor's row-major bytes are copied as they are.
//!
//! * [`encode_params`] writes every tensor as little-endian F32 with exactly PyTorch's shape,
//!   plus each `bnN.num_batches_tracked` buffer as an I64 scalar (shape `[]`), so
//!   `model.load_state_dict(safetensors.torch.load_file(path), strict=True)` accepts the file.
//!   The header metadata is `{"format": "pt"}`.
//! * [`decode_params`] finds the network whose tensor names and shapes the file holds, then
//!   checks every key, dtype and shape and names the key at fault. It accepts F32, F64, F16 and
//!   BF16 tensors (converted to f32; F64 rounds to nearest), takes `num_batches_tracked` as
//!   PyTorch's strict load does (absent, or an I64 of shape `[]` or `[1]`: any other dtype or
//!   shape is refused),
//!   and rejects a missing or unexpected tensor, and (through [`fmnist_core::tensors`], the
//!   check every reader of f32 parameters runs) a non-finite value and a negative running
//!   variance.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::LeNetParams;
use fmnist_core::tensors::ParamsError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::atomic::write_atomic;
use crate::params::{self, F32Params, Layers};

/// Why a safetensors file could not be read or written.
#[derive(Debug)]
pub enum SafetensorsError {
    /// The file could not be read or written.
    Io(PathBuf, std::io::Error),
    /// The bytes are not a valid safetensors container.
    Container(String),
    /// A tensor the network needs is absent.
    Missing(&'static str),
    /// A tensor the network does not have.
    Unexpected {
        /// The tensor.
        key: String,
        /// The network the file's other tensors are ([`Arch::name`]).
        network: &'static str,
    },
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
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A `bnN.num_batches_tracked` buffer that is not an I64 scalar: PyTorch's strict
    /// `load_state_dict` would not take it as the counter.
    NumBatchesTracked {
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: Dtype,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// Only an f32 model as trained (with its batch norm) is a PyTorch `state_dict` of the
    /// documented module; this one is another kind.
    NotTrained(String),
    /// The values are not a model: NaN or infinite (an F64 outside the f32 range becomes
    /// infinite), or a negative running variance ([`fmnist_core::tensors`]'s check, which
    /// every reader of f32 parameters runs).
    Params(ParamsError),
}

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafetensorsError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            SafetensorsError::Container(e) => write!(f, "not a valid safetensors file: {e}"),
            SafetensorsError::Missing(k) => write!(f, "tensor `{k}` is missing"),
            SafetensorsError::Unexpected { key, network } => {
                write!(f, "unexpected tensor `{key}` (not part of {network})")
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
            SafetensorsError::NumBatchesTracked { key, dtype, shape } => {
                if *dtype != Dtype::I64 {
                    write!(
                        f,
                        "tensor `{key}` has dtype {dtype}, expected I64 (BatchNorm's batch counter, a scalar)"
                    )
                } else {
                    write!(
                        f,
                        "tensor `{key}` has shape {shape:?}, expected [] (BatchNorm's batch counter, an I64 scalar)"
                    )
                }
            }
            SafetensorsError::NotTrained(what) => write!(
                f,
                "safetensors holds the f32 model as trained (PyTorch's module with its BatchNorm layers), not {what}"
            ),
            SafetensorsError::Params(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SafetensorsError {}

/// The `num_batches_tracked` buffer of each batch-norm layer of a table (`bn1.weight` →
/// `bn1.num_batches_tracked`).
fn num_batches_tracked(arch: Arch) -> Vec<String> {
    params::table(arch, Kind::F32)
        .iter()
        .filter_map(|s| s.name.strip_suffix(".running_var"))
        .map(|layer| format!("{layer}.num_batches_tracked"))
        .collect()
}

/// The safetensors bytes of `p` (an f32 model as trained), with `num_batches_tracked` written
/// as given (PyTorch counts training batches there; it only matters for `momentum=None`, which
/// these models do not use).
pub fn encode_params(p: &F32Params, num_batches_tracked: i64) -> Result<Vec<u8>, SafetensorsError> {
    if p.kind != Kind::F32 {
        return Err(SafetensorsError::NotTrained(p.describe()));
    }
    let layers = Layers::of(p.arch);
    let bytes: Vec<(&str, Vec<usize>, Vec<u8>)> = p
        .tensors()
        .map(|(slot, values)| {
            let shape = layers
                .shape(slot.name)
                .expect("every table name has a shape");
            (
                slot.name,
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let nbt = num_batches_tracked.to_le_bytes();
    let nbt_keys = self::num_batches_tracked(p.arch);
    let mut views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, b)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), b)
                .expect("table shapes match the values");
            ((*name).to_owned(), view)
        })
        .collect();
    for key in nbt_keys {
        let view = TensorView::new(Dtype::I64, vec![], &nbt).expect("an I64 scalar is 8 bytes");
        views.push((key, view));
    }
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    Ok(safetensors::serialize(views, Some(metadata))
        .expect("a model's tensors serialize (sizes checked above)"))
}

/// The safetensors bytes of LeNet-BN parameters (see [`encode_params`]).
pub fn encode(p: &LeNetParams, num_batches_tracked: i64) -> Vec<u8> {
    let params = F32Params {
        arch: Arch::LeNet,
        kind: Kind::F32,
        values: bytemuck::cast_slice(std::slice::from_ref(p)).to_vec(),
    };
    encode_params(&params, num_batches_tracked).expect("LeNet-BN as trained")
}

/// Writes LeNet-BN parameters as a safetensors file, atomically.
pub fn write(
    path: &Path,
    p: &LeNetParams,
    num_batches_tracked: i64,
) -> Result<(), SafetensorsError> {
    write_atomic(path, &encode(p, num_batches_tracked))
        .map_err(|e| SafetensorsError::Io(path.to_owned(), e))
}

/// An IEEE half-precision value as f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
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

/// How many of the network's tensors the file holds with the right shape, less those it lacks
/// and those it has in excess: the network the file is closest to is the one its errors are
/// about.
fn closeness(st: &SafeTensors<'_>, arch: Arch) -> isize {
    let layers = Layers::of(arch);
    let table = params::table(arch, Kind::F32);
    let nbt = num_batches_tracked(arch);
    let mut score = 0;
    for slot in table {
        match st.tensor(slot.name) {
            Ok(v) if Some(v.shape().to_vec()) == layers.shape(slot.name) => score += 2,
            Ok(_) => {}
            Err(_) => score -= 1,
        }
    }
    let extra = st
        .names()
        .iter()
        .filter(|n| !table.iter().any(|s| s.name == **n) && !nbt.iter().any(|k| k == *n))
        .count();
    score - extra as isize
}

/// Reads an f32 model as trained from safetensors bytes: the registered network whose tensors
/// the file is closest to, every key, dtype and shape checked.
pub fn decode_params(bytes: &[u8]) -> Result<F32Params, SafetensorsError> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| SafetensorsError::Container(e.to_string()))?;
    let arch = params::ARCHS
        .iter()
        .copied()
        .rev()
        .max_by_key(|a| closeness(&st, *a))
        .expect("at least one network");
    let layers = Layers::of(arch);
    let table = params::table(arch, Kind::F32);
    let nbt = num_batches_tracked(arch);
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    if let Some(extra) = names
        .iter()
        .find(|n| !table.iter().any(|s| s.name == **n) && !nbt.iter().any(|k| k == *n))
    {
        return Err(SafetensorsError::Unexpected {
            key: (*extra).to_owned(),
            network: arch.name(),
        });
    }
    // PyTorch's BatchNorm fills in an absent counter; one present must be an I64 scalar (or a
    // one-element tensor, which `load_state_dict` takes for a scalar).
    for key in &nbt {
        if let Ok(v) = st.tensor(key)
            && (v.dtype() != Dtype::I64 || !matches!(v.shape(), [] | [1]))
        {
            return Err(SafetensorsError::NumBatchesTracked {
                key: key.clone(),
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
            });
        }
    }
    F32Params::from_tensors(
        arch,
        Kind::F32,
        |slot| {
            let view = st
                .tensor(slot.name)
                .map_err(|_| SafetensorsError::Missing(slot.name))?;
            let expected = layers
                .shape(slot.name)
                .expect("every table name has a shape");
            if view.shape() != expected {
                return Err(SafetensorsError::Shape {
                    key: slot.name,
                    expected,
                    found: view.shape().to_vec(),
                });
            }
            let mut out = vec![0f32; slot.len];
            convert(slot.name, &view, &mut out)?;
            Ok(out)
        },
        SafetensorsError::Params,
    )
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

    /// LeNet-BN parameters from safetensors bytes, through the any-network reader.
    fn decode(bytes: &[u8]) -> Result<Box<LeNetParams>, SafetensorsError> {
        let p = decode_params(bytes)?;
        assert_eq!(p.arch, Arch::LeNet);
        let mut out: Box<LeNetParams> = bytemuck::zeroed_box();
        bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *out))
            .copy_from_slice(&p.values);
        Ok(out)
    }

    fn read(path: &Path) -> Result<Box<LeNetParams>, SafetensorsError> {
        decode(&std::fs::read(path).unwrap())
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

    /// The wide CNN goes through the same code: found by its tensors, PyTorch's shapes.
    #[test]
    fn wide_round_trips_and_is_found_by_its_tensors() {
        let mut w: Box<fmnist_core::wide::WideParams> =
            fmnist_core::testutil::uniform_params(17, 0.3);
        w.bn1.running_var.iter_mut().for_each(|v| *v = v.abs());
        w.bn2.running_var.iter_mut().for_each(|v| *v = v.abs());
        let p = F32Params {
            arch: Arch::Wide,
            kind: Kind::F32,
            values: bytemuck::cast_slice(std::slice::from_ref(&*w)).to_vec(),
        };
        let bytes = encode_params(&p, 3).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 18);
        assert_eq!(st.tensor("conv2.weight").unwrap().shape(), &[64, 32, 3, 3]);
        assert_eq!(st.tensor("fc1.weight").unwrap().shape(), &[512, 3136]);
        assert_eq!(st.tensor("fc2.weight").unwrap().shape(), &[10, 512]);
        assert!(st.tensor("fc3.weight").is_err());
        let back = decode_params(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.arch, Arch::Wide);
        // An error in a wide file is about the wide CNN.
        let missing = rewrite(&bytes, |t| t.retain(|x| x.0 != "fc2.bias"));
        assert_eq!(
            decode_params(&missing).unwrap_err().to_string(),
            "tensor `fc2.bias` is missing"
        );
        let extra = rewrite(&bytes, |t| {
            t.push(("fc3.bias".into(), Dtype::F32, vec![10], vec![0; 40]))
        });
        assert_eq!(
            decode_params(&extra).unwrap_err().to_string(),
            "unexpected tensor `fc3.bias` (not part of wide CNN)"
        );
        // A folded model is not the documented module's state_dict.
        let folded = F32Params {
            kind: Kind::F32Folded,
            values: vec![
                0.0;
                fmnist_core::tensors::total(params::table(Arch::Wide, Kind::F32Folded))
            ],
            ..p
        };
        assert!(matches!(
            encode_params(&folded, 0),
            Err(SafetensorsError::NotTrained(_))
        ));
    }

    /// `num_batches_tracked` may be absent; present, it is an I64 scalar as PyTorch's strict
    /// load requires, and anything else is refused naming the tensor.
    #[test]
    fn malformed_num_batches_tracked_is_refused() {
        let bytes = encode(&lcg_params(5), 9);
        let set = |dtype: Dtype, shape: Vec<usize>, data: Vec<u8>| {
            rewrite(&bytes, |t| {
                let x = t
                    .iter_mut()
                    .find(|x| x.0 == "bn1.num_batches_tracked")
                    .unwrap();
                (x.1, x.2, x.3) = (dtype, shape, data);
            })
        };
        assert_eq!(
            decode(&set(Dtype::F32, vec![], vec![0; 4]))
                .unwrap_err()
                .to_string(),
            "tensor `bn1.num_batches_tracked` has dtype F32, expected I64 (BatchNorm's batch counter, a scalar)"
        );
        assert_eq!(
            decode(&set(Dtype::I32, vec![], vec![0; 4]))
                .unwrap_err()
                .to_string(),
            "tensor `bn1.num_batches_tracked` has dtype I32, expected I64 (BatchNorm's batch counter, a scalar)"
        );
        assert_eq!(
            decode(&set(Dtype::I64, vec![2], vec![0; 16]))
                .unwrap_err()
                .to_string(),
            "tensor `bn1.num_batches_tracked` has shape [2], expected [] (BatchNorm's batch counter, an I64 scalar)"
        );
        // PyTorch loads a one-element tensor into a scalar (its pre-0.4 compatibility rule).
        decode(&set(Dtype::I64, vec![1], vec![0; 8])).unwrap();
        decode(&set(Dtype::I64, vec![], 5i64.to_le_bytes().to_vec())).unwrap();
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
