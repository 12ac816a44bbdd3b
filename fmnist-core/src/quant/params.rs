//! The folded constants of one int8 layer, as stored in the model file.

use bytemuck::{Pod, Zeroable};

use super::requant::Requant;

/// Everything an int8 layer with `C` output channels needs besides its weights, as laid out in
/// the model file: the activation quantization of its input and output, and per output channel
/// the zero-point-folded bias and the requantization multiplier and shift. The f32 scales are
/// for reporting (and dequantizing logits on the host); the integer path never reads them.
///
/// Real values: `input = input_scale · (q − input_zero_point)`,
/// `weight[c] = weight_scale[c] · w` (symmetric, zero point 0),
/// `output = output_scale · (q − output_zero_point)`.
///
/// `12 + 16·C` bytes, 4-byte aligned, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QLayerParams<const C: usize> {
    /// Scale of the input activation (reporting only; checked finite and > 0).
    pub input_scale: f32,
    /// Scale of the output activation (dequantizes the logits on the host; checked finite
    /// and > 0).
    pub output_scale: f32,
    /// Zero point of the input activation; conv padding taps take this value.
    pub input_zero_point: i8,
    /// Zero point of the output activation; a fused ReLU clamps at it.
    pub output_zero_point: i8,
    /// Explicit padding (written as zero, ignored when read).
    pub _pad: [u8; 2],
    /// Accumulator start per output channel, zero-point term folded in:
    /// `round(b / (input_scale · weight_scale[c])) − input_zero_point · Σ w[c]`.
    pub bias: [i32; C],
    /// Requantization multiplier per output channel (Q31, `[2^30, 2^31)` or 0).
    pub multiplier: [i32; C],
    /// Requantization shift per output channel (`-31..=30`, positive = left).
    pub shift: [i32; C],
    /// Per-output-channel weight scale (reporting only; checked finite and > 0).
    pub weight_scale: [f32; C],
}

// SAFETY: repr(C); f32/i8/u8 fields then i32/f32 arrays: offsets 0, 4, 8, 9, 10, 12, 12+4C, ...
// leave no padding (12 is a multiple of 4 and every array holds 4-byte elements); every bit
// pattern is a valid value of every field.
unsafe impl<const C: usize> Zeroable for QLayerParams<C> {}
unsafe impl<const C: usize> Pod for QLayerParams<C> {}

impl<const C: usize> QLayerParams<C> {
    /// The requantization of channel `c`.
    #[inline(always)]
    pub fn requant(&self, c: usize) -> Requant {
        Requant {
            multiplier: self.multiplier[c],
            shift: self.shift[c],
        }
    }
}

/// Largest `|Σ w·x|` over `fan_in` products with `|w| ≤ 127` and `x` in `[-128, 127]`.
pub const fn product_sum_bound(fan_in: usize) -> i64 {
    fan_in as i64 * 127 * 128
}

/// Why a set of int8 parameters cannot be run (see the overflow proof in `quant::lenet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QParamsError {
    /// A weight is −128 (the symmetric range is −127..=127).
    WeightOutOfRange {
        /// Layer name (`conv1`, ..., `fc3`).
        layer: &'static str,
        /// Output channel.
        channel: usize,
    },
    /// A requantization shift outside `-31..=30`.
    ShiftOutOfRange {
        /// Layer name.
        layer: &'static str,
        /// Output channel.
        channel: usize,
        /// The shift.
        shift: i32,
    },
    /// A negative multiplier (requantization would not be monotone).
    NegativeMultiplier {
        /// Layer name.
        layer: &'static str,
        /// Output channel.
        channel: usize,
    },
    /// `(|bias| + fan_in·127·128) · 2^max(shift, 0)` exceeds `i32::MAX`: an accumulator could
    /// overflow.
    BiasOutOfRange {
        /// Layer name.
        layer: &'static str,
        /// Output channel.
        channel: usize,
    },
    /// A layer's input zero point differs from the previous layer's output zero point (or the
    /// first layer's from −128, the pixel encoding).
    ZeroPointMismatch {
        /// Layer name.
        layer: &'static str,
    },
    /// A scale (input, output or a channel's weight scale) that is not a finite number > 0:
    /// the host dequantizes logits with the output scale, so NaN or a negative value would give
    /// NaN probabilities or reverse the class order.
    BadScale {
        /// Layer name.
        layer: &'static str,
        /// Which scale: `input_scale`, `output_scale` or `weight_scale`.
        field: &'static str,
    },
}

impl core::fmt::Display for QParamsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            QParamsError::WeightOutOfRange { layer, channel } => {
                write!(
                    f,
                    "{layer} channel {channel}: weight -128 (range is -127..=127)"
                )
            }
            QParamsError::ShiftOutOfRange {
                layer,
                channel,
                shift,
            } => write!(
                f,
                "{layer} channel {channel}: requantization shift {shift} outside -31..=30"
            ),
            QParamsError::NegativeMultiplier { layer, channel } => {
                write!(
                    f,
                    "{layer} channel {channel}: negative requantization multiplier"
                )
            }
            QParamsError::BiasOutOfRange { layer, channel } => write!(
                f,
                "{layer} channel {channel}: bias too large, the i32 accumulator could overflow"
            ),
            QParamsError::ZeroPointMismatch { layer } => write!(
                f,
                "{layer}: input zero point differs from the previous layer's output zero point"
            ),
            QParamsError::BadScale { layer, field } => {
                write!(f, "{layer}: {field} is not a finite number > 0")
            }
        }
    }
}

impl core::error::Error for QParamsError {}

/// The first of a layer's scales that is not a finite number > 0. One copy for every layer
/// size (not generic, not inlined): on the device it runs once, at load.
#[inline(never)]
fn bad_scale(input: f32, output: f32, weight: &[f32]) -> Option<&'static str> {
    let good = |s: f32| s.is_finite() && s > 0.0;
    if !good(input) {
        Some("input_scale")
    } else if !good(output) {
        Some("output_scale")
    } else if !weight.iter().all(|&s| good(s)) {
        Some("weight_scale")
    } else {
        None
    }
}

/// Checks one layer: weights in −127..=127, shift in −31..=30, multiplier ≥ 0,
/// `(|bias| + product_sum_bound(fan_in)) · 2^max(shift, 0) ≤ i32::MAX`, and every scale a
/// finite number > 0.
pub fn check_layer<const C: usize>(
    layer: &'static str,
    q: &QLayerParams<C>,
    weights: &[i8],
    fan_in: usize,
) -> Result<(), QParamsError> {
    if let Some(field) = bad_scale(q.input_scale, q.output_scale, &q.weight_scale) {
        return Err(QParamsError::BadScale { layer, field });
    }
    debug_assert_eq!(weights.len(), C * fan_in);
    for (channel, row) in weights.chunks_exact(fan_in).enumerate() {
        if row.contains(&i8::MIN) {
            return Err(QParamsError::WeightOutOfRange { layer, channel });
        }
    }
    for channel in 0..C {
        let shift = q.shift[channel];
        if !(-31..=30).contains(&shift) {
            return Err(QParamsError::ShiftOutOfRange {
                layer,
                channel,
                shift,
            });
        }
        if q.multiplier[channel] < 0 {
            return Err(QParamsError::NegativeMultiplier { layer, channel });
        }
        let left = shift.max(0) as u32;
        let worst = (q.bias[channel] as i64).abs() + product_sum_bound(fan_in);
        if worst > (i32::MAX as i64) >> left {
            return Err(QParamsError::BiasOutOfRange { layer, channel });
        }
    }
    Ok(())
}
