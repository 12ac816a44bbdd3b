//! Test-set evaluation: accuracy, per-class accuracy and the confusion matrix.

use std::fmt::Write as _;
use std::time::Instant;

use fmnist_core::CLASS_NAMES;
use fmnist_core::layers::argmax;
use fmnist_core::lenet::IMAGE_PIXELS;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Model;

/// The result of evaluating a model; serialises as the `eval --json` object.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Model file path.
    pub model: String,
    /// `f32`, `f32-folded`, `int8` or `safetensors-f32`.
    pub kind: &'static str,
    /// Number of images evaluated.
    pub images: usize,
    /// Correct predictions.
    pub correct: usize,
    /// `correct / images`, in 0..=1.
    pub accuracy: f64,
    /// Accuracy of each class (label order), in 0..=1.
    pub per_class: [f64; 10],
    /// Class names in label order.
    pub class_names: [&'static str; 10],
    /// `confusion[true][predicted]` counts.
    pub confusion: [[u32; 10]; 10],
    /// Inference throughput over the whole run (threads included).
    pub images_per_second: f64,
    /// Worker threads used.
    pub threads: usize,
    /// Test-time augmentation: `none`, or `mirror` (each model's logits averaged over the image
    /// and its left–right mirror).
    pub tta: Tta,
}

/// Test-time augmentation: the views of each test image whose logits are averaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The image alone.
    #[default]
    None,
    /// The image and its left–right mirror (for models trained with `--flip true`).
    Mirror,
}

impl Tta {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Mirror => "mirror",
        }
    }
}

/// `image` mirrored left to right.
pub fn mirror(image: &[u8; IMAGE_PIXELS]) -> [u8; IMAGE_PIXELS] {
    let mut out = *image;
    for row in out.chunks_exact_mut(28) {
        row.reverse();
    }
    out
}

/// Predicted class of every image, in parallel on the current rayon pool.
pub fn predict_all(model: &Model, images: &[[u8; IMAGE_PIXELS]]) -> Vec<u8> {
    images
        .par_iter()
        .with_min_len(64)
        .map(|img| model.class(img) as u8)
        .collect()
}

/// Evaluates `model` on `images`/`labels` with `threads` workers (0: rayon's default).
pub fn evaluate(
    model: &Model,
    images: &[[u8; IMAGE_PIXELS]],
    labels: &[u8],
    threads: usize,
) -> Result<EvalReport> {
    let pool = crate::pool::thread_pool(threads).map_err(Error::failure_msg)?;
    let start = Instant::now();
    let preds = pool.install(|| predict_all(model, images));
    let secs = start.elapsed().as_secs_f64();
    Ok(report(
        model,
        &preds,
        labels,
        secs,
        pool.current_num_threads(),
    ))
}

/// Evaluates the ensemble of `models`: each image's class is the argmax of the mean of the
/// models' f32 logits (an int8 model's dequantized) over the views `tta` gives. Models are
/// added in the order given, the image before its mirror.
pub fn evaluate_ensemble(
    models: &[Model],
    tta: Tta,
    images: &[[u8; IMAGE_PIXELS]],
    labels: &[u8],
    threads: usize,
) -> Result<EvalReport> {
    let Some(first) = models.first() else {
        return Err(Error::failure_msg("an ensemble needs at least one model"));
    };
    let pool = crate::pool::thread_pool(threads).map_err(Error::failure_msg)?;
    let start = Instant::now();
    let preds: Vec<u8> = pool.install(|| {
        images
            .par_iter()
            .with_min_len(64)
            .map(|img| argmax(&mean_logits_tta(models, tta, img)) as u8)
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut r = report(first, &preds, labels, secs, pool.current_num_threads());
    r.tta = tta;
    if models.len() > 1 {
        r.model = models
            .iter()
            .map(|m| m.path.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        r.kind = "ensemble";
    }
    Ok(r)
}

/// The mean of the models' f32 logits for one image.
pub fn mean_logits(models: &[Model], image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
    let mut sum = [0.0f32; 10];
    for m in models {
        for (s, l) in sum.iter_mut().zip(m.logits_f32(image)) {
            *s += l;
        }
    }
    sum.map(|s| s / models.len().max(1) as f32)
}

/// The mean of the models' f32 logits over the views of `image` that `tta` gives.
pub fn mean_logits_tta(models: &[Model], tta: Tta, image: &[u8; IMAGE_PIXELS]) -> [f32; 10] {
    match tta {
        Tta::None => mean_logits(models, image),
        Tta::Mirror => {
            let a = mean_logits(models, image);
            let b = mean_logits(models, &mirror(image));
            std::array::from_fn(|i| (a[i] + b[i]) / 2.0)
        }
    }
}

/// Builds the report from predictions.
pub fn report(model: &Model, preds: &[u8], labels: &[u8], secs: f64, threads: usize) -> EvalReport {
    let mut confusion = [[0u32; 10]; 10];
    for (&p, &l) in preds.iter().zip(labels) {
        confusion[l as usize][p as usize] += 1;
    }
    let correct: usize = (0..10).map(|c| confusion[c][c] as usize).sum();
    let per_class = std::array::from_fn(|c| {
        let total: u32 = confusion[c].iter().sum();
        if total == 0 {
            0.0
        } else {
            confusion[c][c] as f64 / total as f64
        }
    });
    EvalReport {
        model: model.path.display().to_string(),
        kind: model.kind.name(),
        images: preds.len(),
        correct,
        accuracy: if preds.is_empty() {
            0.0
        } else {
            correct as f64 / preds.len() as f64
        },
        per_class,
        class_names: CLASS_NAMES,
        confusion,
        images_per_second: preds.len() as f64 / secs.max(1e-9),
        threads,
        tta: Tta::None,
    }
}

impl EvalReport {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if self.tta == Tta::None {
            let _ = writeln!(s, "model:    {} ({})", self.model, self.kind);
        } else {
            let _ = writeln!(
                s,
                "model:    {} ({}, test-time augmentation: {})",
                self.model,
                self.kind,
                self.tta.name()
            );
        }
        let _ = writeln!(
            s,
            "accuracy: {:.2} % ({} / {} test images), {:.0} images/s on {} thread(s)",
            100.0 * self.accuracy,
            self.correct,
            self.images,
            self.images_per_second,
            self.threads
        );
        let _ = writeln!(s, "\nper class:");
        for (c, (name, row)) in CLASS_NAMES.iter().zip(&self.confusion).enumerate() {
            let total: u32 = row.iter().sum();
            let _ = writeln!(
                s,
                "  {c} {name:<12} {:6.2} %  ({} / {total})",
                100.0 * self.per_class[c],
                row[c],
            );
        }
        let _ = writeln!(
            s,
            "\nconfusion matrix (rows: true class, columns: predicted class):"
        );
        let _ = write!(s, "{:>16}", "");
        for c in 0..10 {
            let _ = write!(s, "{c:>6}");
        }
        s.push('\n');
        for (t, row) in self.confusion.iter().enumerate() {
            let _ = write!(s, "  {t} {:<12} ", CLASS_NAMES[t]);
            for v in row {
                let _ = write!(s, "{v:>6}");
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_reverses_each_row_and_twice_is_the_identity() {
        let img: [u8; IMAGE_PIXELS] = std::array::from_fn(|i| (i % 253) as u8);
        let m = mirror(&img);
        for y in 0..28 {
            for x in 0..28 {
                assert_eq!(m[y * 28 + x], img[y * 28 + 27 - x]);
            }
        }
        assert!(mirror(&m) == img);
    }
}
