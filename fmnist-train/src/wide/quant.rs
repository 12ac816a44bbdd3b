//! The wide CNN's BN fold, calibration and quantization to the int8 payload [`WideQParams`]
//! (the same steps as LeNet-BN's, `quantize.rs`).

use fmnist_core::quant::WideQParams;
use fmnist_core::wide::{Wide, WideFoldedParams, WideParams, WideTrace};
use rayon::prelude::*;

use crate::shared::fold::fold_conv;
use crate::shared::quant::{ActQuant, Calibration, QuantizeError, quantize_layer, tensor_quant};

/// The wide CNN with `bn1` folded into `conv1` and `bn2` into `conv2` (the same per-channel
/// formula as [`fold_batch_norm`](crate::lenet::quant::fold_batch_norm)); the dense layers are copied.
pub fn fold_batch_norm_wide(p: &WideParams) -> Box<WideFoldedParams> {
    let mut f: Box<WideFoldedParams> = bytemuck::zeroed_box();
    fold_conv::<32, 9>(
        bytemuck::cast_ref(&p.conv1_weight),
        &p.conv1_bias,
        &p.bn1,
        bytemuck::cast_mut(&mut f.conv1_weight),
        &mut f.conv1_bias,
    );
    fold_conv::<64, 288>(
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
    f
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

/// [`calibrate`](crate::lenet::quant::calibrate) for the wide CNN: runs the folded f32 model over the calibration images (in
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

/// [`quantize_with_ranges`](crate::lenet::quant::quantize_with_ranges) for the wide CNN.
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
