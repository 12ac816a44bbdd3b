//! Post-training static quantization of a trained LeNet-BN to the integer-only int8 model of
//! `fmnist_core::quant` (the model-file payload [`LeNetQParams`]).
//!
//! 1. Fold batch norm ([`crate::fold::fold_batch_norm`]).
//! 2. Weights: int8, symmetric per output channel, zero point 0, range −127..=127,
//!    `s_w[c] = max|w[c]| / 127`, `w_q = round(w / s_w[c])`.
//! 3. Activations: int8 per tensor, ranges calibrated by running the folded f32 model on
//!    calibration images ([`Calibration`]). The input is fixed: `q = p − 128`, scale 1/255, zero
//!    point −128. After ReLU the range is `[0, r]`: scale `r/255`, zero point −128. The logits
//!    take `[lo, hi] ∋ 0`: scale `(hi − lo)/255`, zero point `round(−128 − lo/scale)`.
//! 4. Biases: int32 at `s_in·s_w[c]`, `b_q = round(b / (s_in·s_w[c]))`, stored with the
//!    zero-point term folded in: `b_q − zp_in·Σ w_q[c]`.
//! 5. Requantization: `M = s_in·s_w[c] / s_out` as TFLite's `QuantizeMultiplier` does it
//!    ([`quantize_multiplier`]).
//!
//! The result is refused ([`QuantizeError`]) rather than produced if any accumulator could
//! overflow (the proof in `fmnist_core::quant::lenet`).
//!
//! The wide CNN goes through the same steps with the same per-layer code
//! ([`quantize_wide`], [`calibrate_wide`], payload [`WideQParams`]).

use std::fmt;

use fmnist_core::layers::argmax;
use fmnist_core::lenet::{LeNet, LeNetFoldedParams, LeNetParams, LeNetTrace};
use fmnist_core::quant::params::product_sum_bound;
use fmnist_core::quant::{
    LeNetQ, LeNetQParams, QLayerParams, QParamsError, Requant, WideQ, WideQParams,
};
use fmnist_core::wide::{Wide, WideFoldedParams, WideParams, WideTrace};
use rayon::prelude::*;

use crate::fold::{fold_batch_norm, fold_batch_norm_wide};

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

/// The calibrated activation quantization of a LeNet: the outputs of conv1 (pool1), conv2
/// (pool2), fc1, fc2 and fc3 (the logits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActRanges {
    /// After conv1 → ReLU → pool.
    pub conv1: ActQuant,
    /// After conv2 → ReLU → pool.
    pub conv2: ActQuant,
    /// After fc1 → ReLU.
    pub fc1: ActQuant,
    /// After fc2 → ReLU.
    pub fc2: ActQuant,
    /// The logits.
    pub fc3: ActQuant,
}

/// `[lo, hi]` chosen from observed values by `method`.
fn choose_range(values: &mut [f32], method: Calibration) -> (f32, f32) {
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
fn tensor_quant<T>(
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

/// Runs the folded f32 model over the calibration images (in parallel) and picks each
/// activation tensor's quantization by `method`.
pub fn calibrate(
    f: &LeNetFoldedParams,
    images: &[[u8; 784]],
    method: Calibration,
) -> Result<ActRanges, QuantizeError> {
    if images.is_empty() {
        return Err(QuantizeError::NoCalibrationImages);
    }
    let model = LeNet::from(f);
    let traces: Vec<_> = images.par_iter().map(|img| model.trace(img)).collect();
    let gather = |name, pick: fn(&LeNetTrace) -> &[f32]| tensor_quant(&traces, name, pick, method);
    Ok(ActRanges {
        conv1: gather("pool1", |t| t.pool1.as_flattened().as_flattened())?,
        conv2: gather("pool2", |t| &t.flat)?,
        fc1: gather("fc1", |t| &t.fc1)?,
        fc2: gather("fc2", |t| &t.fc2)?,
        fc3: gather("logits", |t| &t.logits)?,
    })
}

/// Quantizes one layer's weights (`[C][N]`, symmetric per channel) and fills its constants.
fn quantize_layer<const C: usize, const N: usize>(
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

/// Quantizes folded parameters with given activation ranges.
pub fn quantize_with_ranges(
    f: &LeNetFoldedParams,
    ranges: &ActRanges,
) -> Result<Box<LeNetQParams>, QuantizeError> {
    let mut boxed: Box<LeNetQParams> = bytemuck::zeroed_box();
    let q = &mut *boxed;
    quantize_layer::<6, 25>(
        "conv1",
        bytemuck::cast_ref(&f.conv1_weight),
        &f.conv1_bias,
        ActQuant::INPUT,
        ranges.conv1,
        bytemuck::cast_mut(&mut q.conv1_weight),
        &mut q.conv1,
    )?;
    quantize_layer::<16, 150>(
        "conv2",
        bytemuck::cast_ref(&f.conv2_weight),
        &f.conv2_bias,
        ranges.conv1,
        ranges.conv2,
        bytemuck::cast_mut(&mut q.conv2_weight),
        &mut q.conv2,
    )?;
    quantize_layer(
        "fc1",
        &f.fc1_weight,
        &f.fc1_bias,
        ranges.conv2,
        ranges.fc1,
        &mut q.fc1_weight,
        &mut q.fc1,
    )?;
    quantize_layer(
        "fc2",
        &f.fc2_weight,
        &f.fc2_bias,
        ranges.fc1,
        ranges.fc2,
        &mut q.fc2_weight,
        &mut q.fc2,
    )?;
    quantize_layer(
        "fc3",
        &f.fc3_weight,
        &f.fc3_bias,
        ranges.fc2,
        ranges.fc3,
        &mut q.fc3_weight,
        &mut q.fc3,
    )?;
    q.check().map_err(QuantizeError::Check)?;
    Ok(boxed)
}

/// Folds BN, calibrates on `calibration` images with `method` and quantizes: the int8 payload.
pub fn quantize_lenet(
    p: &LeNetParams,
    calibration: &[[u8; 784]],
    method: Calibration,
) -> Result<Box<LeNetQParams>, QuantizeError> {
    if bytemuck::cast_slice::<LeNetParams, f32>(core::slice::from_ref(p))
        .iter()
        .any(|v| !v.is_finite())
    {
        return Err(QuantizeError::NonFinite {
            tensor: "f32 parameters",
        });
    }
    let f = fold_batch_norm(p);
    let ranges = calibrate(&f, calibration, method)?;
    quantize_with_ranges(&f, &ranges)
}

/// The real-valued logits of int8 logits: `fc3.output_scale · (q − fc3.output_zero_point)`.
pub fn dequantize_logits(q: &LeNetQParams, logits: &[i8; 10]) -> [f32; 10] {
    logits.map(|v| q.fc3.output_scale * (v as i32 - q.fc3.output_zero_point as i32) as f32)
}

fn accuracy_of(
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

/// Fraction of `images` the int8 model classifies as `labels` (fused kernels, multi-threaded).
///
/// # Panics
/// If `q` fails `LeNetQParams::check` (parameters from [`quantize_lenet`] never do) or the
/// lengths differ.
pub fn int8_accuracy(q: &LeNetQParams, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = LeNetQ::new(q).expect("int8 parameters fail their check");
    accuracy_of(images, labels, |img| model.classify(img))
}

/// Fraction of `images` the trained f32 LeNet-BN classifies as `labels` (multi-threaded).
pub fn f32_accuracy(p: &LeNetParams, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = LeNet::from(p);
    accuracy_of(images, labels, |img| argmax(&model.forward(img)))
}

/// Fraction of `images` the BN-folded f32 LeNet classifies as `labels` (multi-threaded).
pub fn folded_accuracy(f: &LeNetFoldedParams, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = LeNet::from(f);
    accuracy_of(images, labels, |img| argmax(&model.forward(img)))
}

/// The calibrated activation quantization of the wide CNN: the outputs of conv1 (pool1),
/// conv2 (pool2), fc1 and fc2 (the logits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WideActRanges {
    /// After conv1 → ReLU → pool.
    pub conv1: ActQuant,
    /// After conv2 → ReLU → pool.
    pub conv2: ActQuant,
    /// After fc1 → ReLU.
    pub fc1: ActQuant,
    /// The logits.
    pub fc2: ActQuant,
}

/// [`calibrate`] for the wide CNN: runs the folded f32 model over the calibration images (in
/// parallel, about 40 KB of activations kept per image) and picks each activation tensor's
/// quantization by `method`.
pub fn calibrate_wide(
    f: &WideFoldedParams,
    images: &[[u8; 784]],
    method: Calibration,
) -> Result<WideActRanges, QuantizeError> {
    if images.is_empty() {
        return Err(QuantizeError::NoCalibrationImages);
    }
    let model = Wide::from(f);
    let traces: Vec<Box<WideTrace>> = images
        .par_iter()
        .map(|img| Box::new(model.trace(img)))
        .collect();
    let gather =
        |name, pick: fn(&Box<WideTrace>) -> &[f32]| tensor_quant(&traces, name, pick, method);
    Ok(WideActRanges {
        conv1: gather("pool1", |t| t.pool1.as_flattened().as_flattened())?,
        conv2: gather("pool2", |t| &t.flat)?,
        fc1: gather("fc1", |t| &t.fc1)?,
        fc2: gather("logits", |t| &t.logits)?,
    })
}

/// [`quantize_with_ranges`] for the wide CNN.
pub fn quantize_wide_with_ranges(
    f: &WideFoldedParams,
    ranges: &WideActRanges,
) -> Result<Box<WideQParams>, QuantizeError> {
    let mut boxed: Box<WideQParams> = bytemuck::zeroed_box();
    let q = &mut *boxed;
    quantize_layer::<32, 9>(
        "conv1",
        bytemuck::cast_ref(&f.conv1_weight),
        &f.conv1_bias,
        ActQuant::INPUT,
        ranges.conv1,
        bytemuck::cast_mut(&mut q.conv1_weight),
        &mut q.conv1,
    )?;
    quantize_layer::<64, 288>(
        "conv2",
        bytemuck::cast_ref(&f.conv2_weight),
        &f.conv2_bias,
        ranges.conv1,
        ranges.conv2,
        bytemuck::cast_mut(&mut q.conv2_weight),
        &mut q.conv2,
    )?;
    quantize_layer(
        "fc1",
        &f.fc1_weight,
        &f.fc1_bias,
        ranges.conv2,
        ranges.fc1,
        &mut q.fc1_weight,
        &mut q.fc1,
    )?;
    quantize_layer(
        "fc2",
        &f.fc2_weight,
        &f.fc2_bias,
        ranges.fc1,
        ranges.fc2,
        &mut q.fc2_weight,
        &mut q.fc2,
    )?;
    q.check().map_err(QuantizeError::Check)?;
    Ok(boxed)
}

/// [`quantize_lenet`] for the wide CNN: folds BN, calibrates on `calibration` images with
/// `method` and quantizes.
pub fn quantize_wide(
    p: &WideParams,
    calibration: &[[u8; 784]],
    method: Calibration,
) -> Result<Box<WideQParams>, QuantizeError> {
    if bytemuck::cast_slice::<WideParams, f32>(core::slice::from_ref(p))
        .iter()
        .any(|v| !v.is_finite())
    {
        return Err(QuantizeError::NonFinite {
            tensor: "f32 parameters",
        });
    }
    let f = fold_batch_norm_wide(p);
    let ranges = calibrate_wide(&f, calibration, method)?;
    quantize_wide_with_ranges(&f, &ranges)
}

/// The real-valued logits of the wide CNN's int8 logits:
/// `fc2.output_scale · (q − fc2.output_zero_point)`.
pub fn dequantize_wide_logits(q: &WideQParams, logits: &[i8; 10]) -> [f32; 10] {
    logits.map(|v| q.fc2.output_scale * (v as i32 - q.fc2.output_zero_point as i32) as f32)
}

/// Fraction of `images` the int8 wide CNN classifies as `labels` (fast kernels,
/// multi-threaded).
///
/// # Panics
/// If `q` fails `WideQParams::check` (parameters from [`quantize_wide`] never do) or the
/// lengths differ.
pub fn wide_int8_accuracy(q: &WideQParams, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = WideQ::new(q).expect("int8 parameters fail their check");
    accuracy_of(images, labels, |img| model.classify(img))
}

/// Fraction of `images` the trained f32 wide CNN classifies as `labels` (multi-threaded).
pub fn wide_f32_accuracy(p: &WideParams, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = Wide::from(p);
    accuracy_of(images, labels, |img| argmax(&model.forward(img)))
}

/// Fraction of `images` the BN-folded f32 wide CNN classifies as `labels` (multi-threaded).
pub fn wide_folded_accuracy(f: &WideFoldedParams, images: &[[u8; 784]], labels: &[u8]) -> f64 {
    let model = Wide::from(f);
    accuracy_of(images, labels, |img| argmax(&model.forward(img)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fmnist_core::quant::multiply_by_quantized_multiplier;
    use fmnist_core::testutil::{object_images, realistic_lenet_params};

    #[test]
    fn quantize_multiplier_hand_checked() {
        let r = |m, s| Requant {
            multiplier: m,
            shift: s,
        };
        assert_eq!(quantize_multiplier(0.0), r(0, 0));
        assert_eq!(quantize_multiplier(0.5), r(1 << 30, 0));
        assert_eq!(quantize_multiplier(0.75), r(1_610_612_736, 0));
        // 1.0 = 0.5 · 2^1.
        assert_eq!(quantize_multiplier(1.0), r(1 << 30, 1));
        assert_eq!(quantize_multiplier(0.09375), r(1_610_612_736, -3));
        // 1/3 = 0.666.. · 2^-1: round(0.6666.. · 2^31) = 1431655765.
        assert_eq!(quantize_multiplier(1.0 / 3.0), r(1_431_655_765, -1));
        // q rounds up to 2^31: halve it and bump the shift.
        assert_eq!(quantize_multiplier(1.0 - 1e-12), r(1 << 30, 1));
        // Underflow flushes to zero; overflow saturates.
        assert_eq!(quantize_multiplier(2f64.powi(-40)), r(0, 0));
        assert_eq!(quantize_multiplier(2f64.powi(40)), r(i32::MAX, 30));
        // The smallest representable: 2^-32 = 0.5 · 2^-31.
        assert_eq!(quantize_multiplier(2f64.powi(-32)), r(1 << 30, -31));
    }

    #[test]
    fn quantized_multiplier_approximates_the_real_product() {
        let mut r = fmnist_core::testutil::Lcg(42);
        let mut next = || r.next_u32();
        for _ in 0..10_000 {
            let real = (next() as f64 / u32::MAX as f64) * 2f64.powi(-((next() % 20) as i32));
            let x = (next() as i32) >> 8;
            let r = quantize_multiplier(real);
            let got = multiply_by_quantized_multiplier(x, r.multiplier, r.shift) as f64;
            let want = x as f64 * real;
            // Two roundings of half a unit each, plus the multiplier's 2^-31 relative error.
            assert!(
                (got - want).abs() <= 1.0 + want.abs() * 1e-9,
                "{x} · {real}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn act_quant_from_range() {
        // After ReLU: [0, 2.55] -> scale 0.01, zp -128.
        let a = ActQuant::from_range(0.0, 2.55);
        assert_eq!(a.zero_point, -128);
        assert!((a.scale - 0.01).abs() < 1e-9);
        // Symmetric [-1, 1]: scale 2/255, zp round(-128 + 127.5) = round(-0.5) = -1 (half away).
        let b = ActQuant::from_range(-1.0, 1.0);
        assert_eq!(b.zero_point, -1);
        // Negative-only range is widened to include 0: zp = 127.
        assert_eq!(ActQuant::from_range(-3.0, -1.0).zero_point, 127);
    }

    #[test]
    fn percentile_and_mse_clip_inside_min_max() {
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.push(50.0); // one outlier
        let (_, hi_mm) = choose_range(&mut v.clone(), Calibration::MinMax);
        assert_eq!(hi_mm, 50.0);
        let (_, hi_p) = choose_range(&mut v.clone(), Calibration::Percentile(99.9));
        assert!((0.99..=1.0).contains(&hi_p), "{hi_p}");
        // MSE: one outlier costs its squared clipping error, so clipping it away does not pay
        // here; whatever it picks must not be worse than min/max or the percentile.
        let mse = |lo: f32, hi: f32| {
            let a = ActQuant::from_range(lo, hi);
            let (sc, z) = (a.scale as f64, a.zero_point as f64);
            v.iter()
                .map(|&x| {
                    let q = (x as f64 / sc + z).round().clamp(-128.0, 127.0);
                    (x as f64 - sc * (q - z)).powi(2)
                })
                .sum::<f64>()
        };
        let (lo_mse, hi_mse) = choose_range(&mut v.clone(), Calibration::Mse);
        assert!(mse(lo_mse, hi_mse) <= mse(0.0, hi_mm) * 1.001);
        assert!(mse(lo_mse, hi_mse) <= mse(0.0, hi_p));
        // Many mid-size outliers: now clipping pays, and MSE clips.
        let mut w: Vec<f32> = (0..10_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        w.extend((0..5).map(|i| 20.0 + i as f32));
        let (_, hi_w) = choose_range(&mut w, Calibration::Mse);
        assert!(hi_w < 24.0, "{hi_w}");
    }

    #[test]
    fn int8_model_tracks_f32_on_lcg_model() {
        let p = realistic_lenet_params(21);
        let calib = object_images(100, 300);
        let test = object_images(200, 400);
        let f = fold_batch_norm(&p);
        let f32_model = LeNet::from(&*f);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.99),
            Calibration::Mse,
        ] {
            let q = quantize_lenet(&p, &calib, method).unwrap();
            assert_eq!(q.conv1.input_zero_point, -128);
            assert_eq!(q.conv1.input_scale, 1.0 / 255.0);
            assert_eq!(q.conv1.output_zero_point, -128);
            assert_eq!(q.fc2.output_zero_point, -128);
            let model = LeNetQ::new(&q).unwrap();
            let mut agree = 0;
            let mut max_err = 0.0f32;
            let mut max_logit = 0.0f32;
            for img in &test {
                let logits = model.forward(img);
                assert_eq!(logits, model.forward_reference(img));
                let want = f32_model.forward(img);
                let got = dequantize_logits(&q, &logits);
                agree += (argmax(&logits) == argmax(&want)) as usize;
                for (a, b) in got.iter().zip(&want) {
                    max_err = max_err.max((a - b).abs());
                    max_logit = max_logit.max(b.abs());
                }
            }
            // Labels are the f32 model's own predictions: int8 must agree on nearly all.
            let labels: Vec<u8> = test
                .iter()
                .map(|i| argmax(&f32_model.forward(i)) as u8)
                .collect();
            let acc = int8_accuracy(&q, &test, &labels);
            assert_eq!(acc, agree as f64 / test.len() as f64);
            assert!(acc >= 0.95, "{method}: int8 agrees with f32 on {acc}");
            assert!(
                max_err < 0.1 * max_logit,
                "{method}: {max_err} vs {max_logit}"
            );
        }
        assert_eq!(
            folded_accuracy(&f, &test, &vec![0; test.len()]),
            f32_accuracy(&p, &test, &vec![0; test.len()])
        );
    }

    /// A randomly initialised but sensibly scaled wide CNN: int8 tracks the folded f32 model
    /// (same class on nearly every image, logits within a tenth of their range), and the fast
    /// kernels equal the reference ones on the quantized model.
    #[test]
    fn wide_int8_tracks_f32_on_lcg_model() {
        use fmnist_core::testutil::realistic_wide_params;
        let p = realistic_wide_params(21);
        let calib = object_images(100, 120);
        let test = object_images(200, 120);
        let f = fold_batch_norm_wide(&p);
        let f32_model = Wide::from(&*f);
        let want: Vec<[f32; 10]> = test.iter().map(|i| f32_model.forward(i)).collect();
        let labels: Vec<u8> = want.iter().map(|l| argmax(l) as u8).collect();
        for method in [Calibration::MinMax, Calibration::Mse] {
            let q = quantize_wide(&p, &calib, method).unwrap();
            assert_eq!(q.conv1.input_zero_point, -128);
            assert_eq!(q.conv1.input_scale, 1.0 / 255.0);
            assert_eq!(q.conv1.output_zero_point, -128);
            assert_eq!(q.fc1.output_zero_point, -128);
            let model = WideQ::new(&q).unwrap();
            let mut max_err = 0.0f32;
            let mut max_logit = 0.0f32;
            for (img, want) in test.iter().zip(&want).take(20) {
                let logits = model.forward(img);
                assert_eq!(logits, model.forward_reference(img));
                for (a, b) in dequantize_wide_logits(&q, &logits).iter().zip(want) {
                    max_err = max_err.max((a - b).abs());
                    max_logit = max_logit.max(b.abs());
                }
            }
            let acc = wide_int8_accuracy(&q, &test, &labels);
            assert!(acc >= 0.95, "{method}: int8 agrees with f32 on {acc}");
            assert!(
                max_err < 0.1 * max_logit,
                "{method}: {max_err} vs {max_logit}"
            );
        }
        assert_eq!(wide_folded_accuracy(&f, &test, &labels), 1.0);
        assert!(wide_f32_accuracy(&p, &test, &labels) >= 0.97);
        assert_eq!(
            quantize_wide(&p, &[], Calibration::MinMax),
            Err(QuantizeError::NoCalibrationImages)
        );
    }

    #[test]
    fn refuses_what_it_cannot_quantize() {
        let p = realistic_lenet_params(3);
        assert_eq!(
            quantize_lenet(&p, &[], Calibration::MinMax),
            Err(QuantizeError::NoCalibrationImages)
        );
        let mut bad = p.clone();
        bad.fc2_bias[5] = f32::NAN;
        assert!(matches!(
            quantize_lenet(&bad, &object_images(1, 4), Calibration::MinMax),
            Err(QuantizeError::NonFinite { .. })
        ));
        // A bias of 1e6 at s_in·s_w ~ 1e-5 needs ~1e11: cannot be an int32 accumulator start.
        let mut big = p.clone();
        big.fc1_bias[7] = 1e6;
        assert!(matches!(
            quantize_lenet(&big, &object_images(1, 8), Calibration::MinMax),
            Err(QuantizeError::BiasOutOfRange {
                layer: "fc1",
                channel: 7,
                ..
            })
        ));
    }
}

/// Accuracy of a real trained model under each calibration method (a measurement, not a
/// check): `FMNIST_F32_MODEL=path/model.fmnm cargo test --release -p fmnist-train --lib --
/// --ignored --nocapture calibration_methods_on_real_model`. Data from `FMNIST_DATA` or the
/// default locations; calibrates on the first `FMNIST_CALIB` (default 2,000) training images.
#[cfg(test)]
mod real_model {
    use super::*;

    #[test]
    #[ignore = "needs a trained model file and the data set"]
    fn calibration_methods_on_real_model() {
        let path = std::env::var("FMNIST_F32_MODEL").expect("set FMNIST_F32_MODEL");
        let m = fmnist_infer::modelio::LoadedModel::read(std::path::Path::new(&path)).unwrap();
        let p = m.file().unwrap().lenet_f32().unwrap();
        let (train, test) = fmnist_infer::data::load_both(None).unwrap();
        let n: usize = std::env::var("FMNIST_CALIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        let f32_acc = f32_accuracy(p, &test.images, &test.labels);
        println!("f32 test accuracy: {:.2} %", 100.0 * f32_acc);
        for method in [
            Calibration::MinMax,
            Calibration::Percentile(99.99),
            Calibration::Percentile(99.999),
            Calibration::Mse,
        ] {
            let q = quantize_lenet(p, &train.images[..n], method).unwrap();
            let acc = int8_accuracy(&q, &test.images, &test.labels);
            println!(
                "int8 {method} ({n} calibration images): {:.2} % ({:+.2} points)",
                100.0 * acc,
                100.0 * (acc - f32_acc)
            );
        }
    }
}
