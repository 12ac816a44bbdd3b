//! LeNet-BN's BN fold, calibration and quantization to the int8 payload [`LeNetQParams`] (the
//! steps: `quantize.rs`).

use fmnist_core::lenet::{LeNet, LeNetFoldedParams, LeNetParams, LeNetTrace};
use fmnist_core::quant::LeNetQParams;
use rayon::prelude::*;

use crate::shared::fold::fold_conv;
use crate::shared::quant::{ActQuant, Calibration, QuantizeError, quantize_layer, tensor_quant};

/// LeNet-BN with `bn1` folded into `conv1` and `bn2` into `conv2`; the dense layers are copied.
/// The result computes the same function up to f32 rounding (see the tests).
pub fn fold_batch_norm(p: &LeNetParams) -> Box<LeNetFoldedParams> {
    let mut f: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
    fold_conv::<6, 25>(
        bytemuck::cast_ref(&p.conv1_weight),
        &p.conv1_bias,
        &p.bn1,
        bytemuck::cast_mut(&mut f.conv1_weight),
        &mut f.conv1_bias,
    );
    fold_conv::<16, 150>(
        bytemuck::cast_ref(&p.conv2_weight),
        &p.conv2_bias,
        &p.bn2,
        bytemuck::cast_mut(&mut f.conv2_weight),
        &mut f.conv2_bias,
    );
    f.fc1_weight = p.fc1_weight;
    f.fc1_bias = p.fc1_bias;
    f.fc2_weight = p.fc2_weight;
    f.fc2_bias = p.fc2_bias;
    f.fc3_weight = p.fc3_weight;
    f.fc3_bias = p.fc3_bias;
    f
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
