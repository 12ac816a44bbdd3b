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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::failure_msg(format!("cannot start the thread pool: {e}")))?;
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
/// models' f32 logits (an int8 model's dequantized). Models are added in the order given.
pub fn evaluate_ensemble(
    models: &[Model],
    images: &[[u8; IMAGE_PIXELS]],
    labels: &[u8],
    threads: usize,
) -> Result<EvalReport> {
    let Some(first) = models.first() else {
        return Err(Error::failure_msg("an ensemble needs at least one model"));
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::failure_msg(format!("cannot start the thread pool: {e}")))?;
    let start = Instant::now();
    let preds: Vec<u8> = pool.install(|| {
        images
            .par_iter()
            .with_min_len(64)
            .map(|img| argmax(&mean_logits(models, img)) as u8)
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut r = report(first, &preds, labels, secs, pool.current_num_threads());
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
    }
}

impl EvalReport {
    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "model:    {} ({})", self.model, self.kind);
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
