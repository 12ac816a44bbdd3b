//! The named tensors of an f32 parameter layout ([`Tensors`]; each network's table is in its
//! folder, `nets/*/tensors.rs`), and the one check every reader of f32
//! parameters runs before trusting them (the model file's typed views, the safetensors reader,
//! checkpoint decoding): every value finite, every batch-norm running variance ≥ 0.
//!
//! A NaN or infinite weight makes every logit NaN (and a student distilled from it trains to
//! NaN); a negative running variance makes `1/sqrt(var + eps)` NaN. Neither is a model, so
//! both are refused where the bytes come in, naming the tensor at fault.

use bytemuck::Pod;

/// One tensor of a flat f32 layout: its PyTorch `state_dict` name and its number of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The name, e.g. `conv1.weight`.
    pub name: &'static str,
    /// Number of f32 values.
    pub len: usize,
}

/// A table row (for the networks' tables in `nets/*/tensors.rs`).
pub const fn slot(name: &'static str, len: usize) -> Slot {
    Slot { name, len }
}

/// Why a set of f32 parameters cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParamsError {
    /// A value is NaN or infinite.
    NonFinite {
        /// The tensor.
        tensor: &'static str,
        /// Flat index of the first bad value within the tensor.
        index: usize,
    },
    /// A value that must be ≥ 0 (a running variance, an Adam second moment) is negative.
    Negative {
        /// The tensor.
        tensor: &'static str,
        /// Flat index of the first bad value within the tensor.
        index: usize,
    },
    /// A flat vector of another length than the layout's.
    WrongCount {
        /// Values in the layout.
        expected: usize,
        /// Values present.
        found: usize,
    },
}

impl core::fmt::Display for ParamsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ParamsError::NonFinite { tensor, index } => write!(
                f,
                "tensor `{tensor}` holds a non-finite value at flat index {index}"
            ),
            ParamsError::Negative { tensor, index } => write!(
                f,
                "tensor `{tensor}` holds a negative variance at flat index {index}"
            ),
            ParamsError::WrongCount { expected, found } => {
                write!(f, "{found} values where the layout has {expected}")
            }
        }
    }
}

impl core::error::Error for ParamsError {}

/// What a flat vector laid out like the parameters must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Parameters: every value finite, every `*.running_var` value ≥ 0.
    Parameters,
    /// An optimizer's momentum or first moment: every value finite.
    Finite,
    /// An optimizer's second moment: every value finite and ≥ 0.
    NonNegative,
}

/// A parameter struct made of f32 tensors only, with its name table.
pub trait Tensors: Pod {
    /// Every tensor, in field order (which is PyTorch's `state_dict` order).
    const TENSORS: &'static [Slot];

    /// [`check_flat`] over the struct's values with [`Rule::Parameters`].
    fn check(&self) -> Result<(), ParamsError> {
        let values =
            bytemuck::try_cast_slice::<Self, f32>(core::slice::from_ref(self)).map_err(|_| {
                ParamsError::WrongCount {
                    expected: total(Self::TENSORS),
                    found: 0,
                }
            })?;
        check_flat(Self::TENSORS, values, Rule::Parameters)
    }
}

/// Number of values in a layout.
pub const fn total(table: &[Slot]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < table.len() {
        n += table[i].len;
        i += 1;
    }
    n
}

/// Checks `values`, laid out as `table` says, against `rule`; the error names the tensor.
pub fn check_flat(table: &[Slot], values: &[f32], rule: Rule) -> Result<(), ParamsError> {
    let expected = total(table);
    if values.len() != expected {
        return Err(ParamsError::WrongCount {
            expected,
            found: values.len(),
        });
    }
    let mut rest = values;
    for s in table {
        let (t, r) = rest.split_at_checked(s.len).unwrap_or((rest, &[]));
        rest = r;
        if let Some(index) = t.iter().position(|v| !v.is_finite()) {
            return Err(ParamsError::NonFinite {
                tensor: s.name,
                index,
            });
        }
        let non_negative = match rule {
            Rule::Parameters => s.name.ends_with("running_var"),
            Rule::Finite => false,
            Rule::NonNegative => true,
        };
        if non_negative && let Some(index) = t.iter().position(|v| *v < 0.0) {
            return Err(ParamsError::Negative {
                tensor: s.name,
                index,
            });
        }
    }
    Ok(())
}

/// Test helpers for the networks' tables.
#[cfg(test)]
pub(crate) mod table_offsets {
    use super::Slot;

    /// The offset (in f32) of each named tensor, from the table.
    pub(crate) fn offsets(table: &[Slot]) -> Vec<(&'static str, usize)> {
        let mut at = 0;
        table
            .iter()
            .map(|s| {
                let o = (s.name, at);
                at += s.len;
                o
            })
            .collect()
    }

    /// The byte offset of the tensor `name` in `table`'s layout.
    pub(crate) fn offset_of_name(table: &[Slot], name: &str) -> usize {
        offsets(table).iter().find(|(n, _)| *n == name).unwrap().1 * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenet::{LeNetFoldedParams, LeNetParams};
    use crate::wide::{WIDE_FLAT, WIDE_HIDDEN, WideFoldedParams, WideParams};

    #[test]
    fn each_bad_value_is_named_by_its_tensor() {
        let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
        assert_eq!(p.check(), Ok(()));
        p.fc2_weight[1][2] = f32::NAN;
        assert_eq!(
            p.check(),
            Err(ParamsError::NonFinite {
                tensor: "fc2.weight",
                index: 122
            })
        );
        p.fc2_weight[1][2] = 0.0;
        p.conv1_bias[5] = f32::NEG_INFINITY;
        assert_eq!(
            p.check(),
            Err(ParamsError::NonFinite {
                tensor: "conv1.bias",
                index: 5
            })
        );
        p.conv1_bias[5] = 0.0;
        p.bn2.running_var[3] = -1e-3;
        assert_eq!(
            p.check(),
            Err(ParamsError::Negative {
                tensor: "bn2.running_var",
                index: 3
            })
        );
        // A negative mean, gamma or beta is an ordinary value.
        p.bn2.running_var[3] = 0.5;
        p.bn2.running_mean[3] = -2.0;
        p.bn2.gamma[0] = -1.0;
        assert_eq!(p.check(), Ok(()));

        let mut w: Box<WideFoldedParams> = bytemuck::zeroed_box();
        w.fc1_weight[511][3135] = f32::INFINITY;
        assert_eq!(
            w.check(),
            Err(ParamsError::NonFinite {
                tensor: "fc1.weight",
                index: WIDE_HIDDEN * WIDE_FLAT - 1
            })
        );
        let mut w: Box<WideParams> = bytemuck::zeroed_box();
        w.bn1.running_var[31] = -0.0;
        assert_eq!(w.check(), Ok(()), "-0 is not below 0");
        w.bn1.running_var[31] = -f32::MIN_POSITIVE;
        assert_eq!(
            w.check(),
            Err(ParamsError::Negative {
                tensor: "bn1.running_var",
                index: 31
            })
        );
        let mut f: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
        f.fc3_bias[9] = f32::NAN;
        assert_eq!(
            f.check(),
            Err(ParamsError::NonFinite {
                tensor: "fc3.bias",
                index: 9
            })
        );
    }

    #[test]
    fn flat_vectors_are_checked_for_length_and_sign() {
        let t = LeNetParams::TENSORS;
        let n = total(t);
        assert_eq!(
            check_flat(t, &vec![0.0; n - 1], Rule::Finite),
            Err(ParamsError::WrongCount {
                expected: n,
                found: n - 1
            })
        );
        let mut v = vec![0.0f32; n];
        v[n - 1] = f32::NAN;
        assert_eq!(
            check_flat(t, &v, Rule::NonNegative),
            Err(ParamsError::NonFinite {
                tensor: "fc3.bias",
                index: 9
            })
        );
        let mut v = vec![0.0f32; n];
        v[0] = -1.0;
        assert_eq!(check_flat(t, &v, Rule::Parameters), Ok(()));
        assert_eq!(check_flat(t, &v, Rule::Finite), Ok(()));
        assert_eq!(
            check_flat(t, &v, Rule::NonNegative),
            Err(ParamsError::Negative {
                tensor: "conv1.weight",
                index: 0
            })
        );
    }

    #[test]
    fn errors_display_the_tensor() {
        assert_eq!(
            ParamsError::NonFinite {
                tensor: "fc2.weight",
                index: 122
            }
            .to_string(),
            "tensor `fc2.weight` holds a non-finite value at flat index 122"
        );
        assert_eq!(
            ParamsError::Negative {
                tensor: "bn1.running_var",
                index: 4
            }
            .to_string(),
            "tensor `bn1.running_var` holds a negative variance at flat index 4"
        );
    }
}
