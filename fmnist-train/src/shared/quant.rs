//! Calibration and quantization of one tensor and one layer, for every network (the steps
//! are described in `quantize.rs`).

use std::fmt;

use fmnist_core::quant::params::product_sum_bound;
use fmnist_core::quant::{QLayerParams, QParamsError, Requant};
use rayon::prelude::*;

/// How activation ranges are chosen from the calibration activations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Calibration {
    /// The observed minimum and maximum.
    #[default]
    MinMax,
    /// The given percentile of the observed values (e.g. 99.99) as the upper bound, and
    /// `100 − p` as the lower bound of signed tensors.
    Percentile(f64),
    /// The clipping range that minimises the mean squared quantization error over the observed
    /// values (searched over 128 candidates between 20 % and 100 % of the min/max range).
    Mse,
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Calibration::MinMax => write!(f, "min/max"),
            Calibration::Percentile(p) => write!(f, "percentile {p}"),
            Calibration::Mse => write!(f, "MSE"),
        }
    }
}

/// Why a model could not be quantized.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizeError {
    /// No calibration images were given.
    NoCalibrationImages,
    /// A parameter or a calibration activation is NaN or infinite.
    NonFinite {
        /// Which tensor.
        tensor: &'static str,
    },
    /// A quantized bias is so large that an i32 accumulator could overflow (or needs more than
    /// 32 bits): the model is refused rather than silently clipped.
    BiasOutOfRange {
        /// Layer name.
        layer: &'static str,
        /// Output channel.
        channel: usize,
        /// The zero-point-folded bias that was needed.
        bias: i64,
    },
    /// The produced parameters fail `LeNetQParams::check` (should not happen; a bug guard).
    Check(QParamsError),
}

impl fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantizeError::NoCalibrationImages => write!(f, "no calibration images"),
            QuantizeError::NonFinite { tensor } => {
                write!(f, "{tensor} holds NaN or infinite values")
            }
            QuantizeError::BiasOutOfRange {
                layer,
                channel,
                bias,
            } => write!(
                f,
                "{layer} channel {channel}: int32 bias {bias} is too large for the accumulator \
                 (the weights or bias are extreme for their scale)"
            ),
            QuantizeError::Check(e) => write!(f, "quantized parameters are invalid: {e}"),
        }
    }
}

impl std::error::Error for QuantizeError {}

/// TensorFlow Lite's `QuantizeMultiplier`: `real ≈ multiplier · 2^(shift − 31)` with the
/// multiplier in `[2^30, 2^31)`: `(q, e) = frexp(real)`, `multiplier = round(q·2^31)` (half
/// away from zero); a multiplier that rounds up to `2^31` is halved and the shift incremented;
/// shifts below −31 flush to zero (multiplier 0), shifts above 30 saturate to
/// `(2^31 − 1, 30)`. `real` must be finite and ≥ 0.
pub fn quantize_multiplier(real: f64) -> Requant {
    assert!(
        real.is_finite() && real >= 0.0,
        "bad real multiplier {real}"
    );
    if real == 0.0 {
        return Requant {
            multiplier: 0,
            shift: 0,
        };
    }
    let (q, mut shift) = libm::frexp(real);
    let mut q_fixed = (q * (1u64 << 31) as f64).round() as i64;
    if q_fixed == 1 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Requant {
            multiplier: 0,
            shift: 0,
        };
    }
    if shift > 30 {
        return Requant {
            multiplier: i32::MAX,
            shift: 30,
        };
    }
    Requant {
        multiplier: q_fixed as i32,
        shift,
    }
}

/// Quantization of one activation tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    /// Real value of one step.
    pub scale: f32,
    /// The int8 code of real 0.
    pub zero_point: i8,
}

impl ActQuant {
    /// The pixel encoding: `q = p − 128`, scale 1/255.
    pub const INPUT: ActQuant = ActQuant {
        scale: 1.0 / 255.0,
        zero_point: -128,
    };

    /// Quantization of a range `[lo, hi]` (widened to contain 0).
    pub fn from_range(lo: f32, hi: f32) -> ActQuant {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo <= f32::MIN_POSITIVE {
            // An all-zero tensor: any scale represents it; keep one that is not degenerate.
            return ActQuant {
                scale: 1.0 / 255.0,
                zero_point: -128,
            };
        }
        let scale = (hi - lo) / 255.0;
        let zp = (-128.0 - lo as f64 / scale as f64)
            .round()
            .clamp(-128.0, 127.0);
        ActQuant {
            scale,
            zero_point: zp as i8,
        }
    }
}

/// `[lo, hi]` chosen from observed values by `method`.
pub fn choose_range(values: &mut [f32], method: Calibration) -> (f32, f32) {
    let (mut lo, mut hi) = values
        .iter()
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    match method {
        Calibration::MinMax => (lo, hi),
        Calibration::Percentile(p) => {
            let n = values.len();
            let rank = |q: f64| ((q / 100.0 * (n - 1) as f64).round() as usize).min(n - 1);
            let k_hi = rank(p);
            values.select_nth_unstable_by(k_hi, f32::total_cmp);
            hi = values[k_hi].max(0.0);
            if lo < 0.0 {
                let k_lo = rank(100.0 - p);
                values.select_nth_unstable_by(k_lo, f32::total_cmp);
                lo = values[k_lo].min(0.0);
            }
            (lo, hi)
        }
        Calibration::Mse => {
            if hi - lo <= f32::MIN_POSITIVE {
                return (lo, hi);
            }
            // Histogram of 2,048 bins over [lo, hi]; each bin stands for its centre.
            const BINS: usize = 2048;
            let width = (hi - lo) as f64 / BINS as f64;
            let mut hist = [0u64; BINS];
            for &v in values.iter() {
                let b = (((v - lo) as f64 / width) as usize).min(BINS - 1);
                hist[b] += 1;
            }
            let mut best = (f64::INFINITY, lo, hi);
            for i in 0..128 {
                let alpha = 0.2 + 0.8 * (i as f64 + 1.0) / 128.0;
                let (l, h) = (lo as f64 * alpha, hi as f64 * alpha);
                let aq = ActQuant::from_range(l as f32, h as f32);
                let (s, z) = (aq.scale as f64, aq.zero_point as f64);
                let mut err = 0.0;
                for (b, &c) in hist.iter().enumerate() {
                    if c == 0 {
                        continue;
                    }
                    let x = lo as f64 + (b as f64 + 0.5) * width;
                    let q = (x / s + z).round().clamp(-128.0, 127.0);
                    let d = x - s * (q - z);
                    err += c as f64 * d * d;
                }
                if err < best.0 {
                    best = (err, l as f32, h as f32);
                }
            }
            (best.1, best.2)
        }
    }
}

/// The quantization of one activation tensor, `pick` of every trace, chosen by `method`.
pub fn tensor_quant<T>(
    traces: &[T],
    name: &'static str,
    pick: fn(&T) -> &[f32],
    method: Calibration,
) -> Result<ActQuant, QuantizeError> {
    let mut v: Vec<f32> = traces
        .iter()
        .flat_map(|t| pick(t).iter().copied())
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(QuantizeError::NonFinite { tensor: name });
    }
    let (lo, hi) = choose_range(&mut v, method);
    Ok(ActQuant::from_range(lo, hi))
}

/// Quantizes one layer's weights (`[C][N]`, symmetric per channel) and fills its constants.
pub fn quantize_layer<const C: usize, const N: usize>(
    layer: &'static str,
    weight: &[[f32; N]; C],
    bias: &[f32; C],
    input: ActQuant,
    output: ActQuant,
    weight_out: &mut [[i8; N]; C],
    q: &mut QLayerParams<C>,
) -> Result<(), QuantizeError> {
    if weight
        .as_flattened()
        .iter()
        .chain(bias)
        .any(|v| !v.is_finite())
    {
        return Err(QuantizeError::NonFinite { tensor: layer });
    }
    q.input_scale = input.scale;
    q.output_scale = output.scale;
    q.input_zero_point = input.zero_point;
    q.output_zero_point = output.zero_point;
    q._pad = [0; 2];
    for c in 0..C {
        let max = weight[c].iter().fold(0.0f32, |m, w| m.max(w.abs()));
        // An all-zero channel gets the scale of max|w| = 1 (its weights quantize to 0 anyway).
        let s_w = if max > 0.0 { max / 127.0 } else { 1.0 / 127.0 };
        let mut sum_w: i64 = 0;
        for (o, &w) in weight_out[c].iter_mut().zip(&weight[c]) {
            let v = (w as f64 / s_w as f64).round().clamp(-127.0, 127.0) as i8;
            *o = v;
            sum_w += v as i64;
        }
        let s_b = input.scale as f64 * s_w as f64;
        let b_q = (bias[c] as f64 / s_b).round();
        let folded = b_q - input.zero_point as f64 * sum_w as f64;
        let r = quantize_multiplier(s_b / output.scale as f64);
        let limit = (i32::MAX as i64 >> r.shift.max(0)) - product_sum_bound(N);
        if folded.abs() > limit as f64 {
            return Err(QuantizeError::BiasOutOfRange {
                layer,
                channel: c,
                bias: folded as i64,
            });
        }
        q.bias[c] = folded as i32;
        q.multiplier[c] = r.multiplier;
        q.shift[c] = r.shift;
        q.weight_scale[c] = s_w;
    }
    Ok(())
}

/// Fraction of `images` that `classify` labels as `labels` (multi-threaded).
pub fn accuracy_of(
    images: &[[u8; 784]],
    labels: &[u8],
    classify: impl Fn(&[u8; 784]) -> usize + Sync,
) -> f64 {
    assert_eq!(images.len(), labels.len(), "one label per image");
    if images.is_empty() {
        return 0.0;
    }
    let correct: usize = images
        .par_iter()
        .zip(labels)
        .filter(|(img, l)| classify(img) == **l as usize)
        .count();
    correct as f64 / images.len() as f64
}
