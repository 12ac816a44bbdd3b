//! `fmnist-train export`: fold BN, calibrate, quantize to int8 and write the model files.

use std::path::{Path, PathBuf};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::{IMAGE_PIXELS, LeNetParams};

use crate::cli::CliError;
use crate::data::Dataset;
use crate::fold::fold_batch_norm;
use crate::modelio::{LoadedModel, write_model};
use crate::quantize::{Calibration, f32_accuracy, folded_accuracy, int8_accuracy, quantize_lenet};

/// What `export` measured and wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    /// Test accuracy of the f32 model (BN unfolded).
    pub f32_accuracy: f64,
    /// Test accuracy of the BN-folded f32 model.
    pub folded_accuracy: f64,
    /// Test accuracy of the int8 model.
    pub int8_accuracy: f64,
    /// int8 − f32, in percentage points.
    pub delta_points: f64,
    /// Calibration method.
    pub method: String,
    /// Calibration images used.
    pub calibration_images: usize,
    /// The int8 model file.
    pub out: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The BN-folded f32 model file, when written.
    pub folded_out: Option<PathBuf>,
}

/// Reads trained f32 LeNet-BN weights from a checkpoint, an f32 model file or a safetensors file
/// (told apart by content).
pub fn read_f32_weights(path: &Path) -> Result<Box<LeNetParams>, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| CliError::bad(format!("{}: {e}", path.display())))?;
    if bytes.starts_with(&crate::checkpoint::MAGIC) {
        let state = crate::checkpoint::decode(&bytes)
            .map_err(|why| CliError::bad(format!("{}: {why}", path.display())))?;
        let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
        let dst = bytemuck::cast_slice_mut::<LeNetParams, f32>(std::slice::from_mut(&mut *p));
        if state.params.len() != dst.len() {
            return Err(CliError::bad(format!(
                "{}: checkpoint holds {} values, LeNet-BN has {}",
                path.display(),
                state.params.len(),
                dst.len()
            )));
        }
        dst.copy_from_slice(&state.params);
        return Ok(p);
    }
    if bytes.starts_with(&fmnist_core::format::MAGIC) {
        let m = LoadedModel::from_bytes(&bytes, path);
        let file = m.file().map_err(|e| CliError::bad(m.error(e)))?;
        let p = file.lenet_f32().map_err(|e| CliError::bad(m.error(e)))?;
        return Ok(Box::new(*p));
    }
    if crate::safetensors_io::looks_like_safetensors(&bytes) {
        return crate::safetensors_io::decode(&bytes)
            .map_err(|e| CliError::bad(format!("{}: {e}", path.display())));
    }
    Err(CliError::bad(format!(
        "{}: not a checkpoint (FMCK), an f32 model file (FMNM) or a safetensors file",
        path.display()
    )))
}

/// Evenly spaced training images, deterministic: `n` of them.
pub fn calibration_sample(train: &Dataset, n: usize) -> Vec<[u8; IMAGE_PIXELS]> {
    let n = n.clamp(1, train.len());
    (0..n).map(|i| train.images[i * train.len() / n]).collect()
}

/// Runs the export.
pub fn export(
    weights: &LeNetParams,
    train: &Dataset,
    test: &Dataset,
    calibration: usize,
    method: Calibration,
    out: &Path,
    folded_out: Option<&Path>,
) -> Result<ExportReport, CliError> {
    let sample = calibration_sample(train, calibration);
    let q = quantize_lenet(weights, &sample, method)
        .map_err(|e| CliError::bad(format!("cannot quantize: {e}")))?;
    let folded = fold_batch_norm(weights);
    write_model(out, Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*q)).map_err(CliError::other)?;
    if let Some(f) = folded_out {
        write_model(
            f,
            Arch::LeNet,
            Kind::F32Folded,
            bytemuck::bytes_of(&*folded),
        )
        .map_err(CliError::other)?;
    }
    let f32_acc = f32_accuracy(weights, &test.images, &test.labels);
    let int8_acc = int8_accuracy(&q, &test.images, &test.labels);
    Ok(ExportReport {
        f32_accuracy: f32_acc,
        folded_accuracy: folded_accuracy(&folded, &test.images, &test.labels),
        int8_accuracy: int8_acc,
        delta_points: 100.0 * (int8_acc - f32_acc),
        method: method.to_string(),
        calibration_images: sample.len(),
        out: out.to_owned(),
        bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        folded_out: folded_out.map(Path::to_owned),
    })
}
