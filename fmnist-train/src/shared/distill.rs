//! Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns from the labels and
//! from the softened outputs of trained teachers — one model or the logit average of several,
//! LeNet-BN or the wide CNN, from model files or checkpoints.
//!
//! The teacher's probabilities at temperature T are part of each step's target, so they are
//! computed deterministically: once over the training set when the recipe has no
//! augmentation (the images never change), else on each step's augmented images. Either way
//! they do not depend on the thread count, and a resumed run computes the same ones.

use std::path::PathBuf;

use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_infer::data::Dataset;

use crate::shared::config::Distill;
use crate::shared::kernels::soften;
use crate::shared::weights::TrainedWeights;

/// Trained teacher models.
pub struct Teacher {
    models: Vec<TrainedWeights>,
    /// Where they came from, in order.
    pub paths: Vec<PathBuf>,
    fingerprint: u64,
}

/// The fingerprint's checksum.
const FINGERPRINT: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

impl Teacher {
    /// Teachers already in memory.
    pub fn from_weights(models: Vec<TrainedWeights>) -> Self {
        Self::new(models, Vec::new())
    }

    /// Teachers read from `paths` (see `export::read_teachers`).
    pub fn new(models: Vec<TrainedWeights>, paths: Vec<PathBuf>) -> Self {
        let mut d = FINGERPRINT.digest();
        for m in &models {
            d.update(&[m.arch() as u16 as u8]);
            d.update(m.bytes());
        }
        Teacher {
            models,
            paths,
            fingerprint: d.finalize(),
        }
    }

    /// CRC-64 (XZ) of each model's architecture and f32 weights, in order, computed once: the
    /// same weights give the same value whether they come from a checkpoint or a model file.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The recipe part for these teachers.
    pub fn recipe(&self, alpha: f32, temperature: f32) -> Distill {
        Distill {
            alpha,
            temperature,
            teachers: self.models.len() as u32,
            fingerprint: self.fingerprint(),
        }
    }

    /// Checks that these are the teachers `distill` was made with.
    pub fn matches(&self, distill: &Distill) -> Result<(), String> {
        if self.models.len() as u32 != distill.teachers || self.fingerprint() != distill.fingerprint
        {
            return Err(format!(
                "the run distils from {} teacher model(s) with fingerprint {:016x}; the ones \
                 given ({}) are {} with fingerprint {:016x}",
                distill.teachers,
                distill.fingerprint,
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.models.len(),
                self.fingerprint()
            ));
        }
        Ok(())
    }

    /// The teachers' mean logits (inference mode) on every image of `data`. The models run in
    /// parallel; their logits are summed in model order.
    pub fn logits(&self, data: &Dataset, pool: &rayon::ThreadPool) -> Vec<[f32; 10]> {
        use rayon::prelude::*;
        let each: Vec<Vec<[f32; 10]>> = pool.install(|| {
            self.models
                .par_iter()
                .map(|m| m.logits(data, pool))
                .collect()
        });
        let mut sum = vec![[0.0f32; 10]; data.len()];
        for logits in &each {
            for (s, l) in sum.iter_mut().zip(logits) {
                for (a, &v) in s.iter_mut().zip(l) {
                    *a += v;
                }
            }
        }
        let k = 1.0 / self.models.len() as f32;
        for s in &mut sum {
            s.iter_mut().for_each(|v| *v *= k);
        }
        sum
    }

    /// The teachers' probabilities at `temperature` on every image of `data`.
    pub fn soft_targets(
        &self,
        data: &Dataset,
        temperature: f32,
        pool: &rayon::ThreadPool,
    ) -> Vec<[f32; 10]> {
        self.logits(data, pool)
            .iter()
            .map(|l| soften(l, temperature))
            .collect()
    }
}

/// The teachers of a distilled run and their soft targets for the whole training set when the
/// recipe has no augmentation (the images never change, so they are computed once).
pub struct TeacherTargets {
    teacher: Teacher,
    distill: Distill,
    table: Option<Vec<[f32; 10]>>,
}

impl TeacherTargets {
    /// Checks that `teacher` is the one `distill` was made with; computes the table over `train`
    /// unless the run augments its images.
    pub fn new(
        teacher: Teacher,
        distill: Distill,
        train: &Dataset,
        augmented: bool,
        pool: &rayon::ThreadPool,
    ) -> Result<Self, String> {
        teacher.matches(&distill)?;
        let table = (!augmented).then(|| teacher.soft_targets(train, distill.temperature, pool));
        Ok(TeacherTargets {
            teacher,
            distill,
            table,
        })
    }

    /// The soft targets of one step: of training images `indices` (as augmented: `images`,
    /// with their `labels`).
    pub fn for_batch(
        &self,
        indices: &[u32],
        images: &[[u8; IMAGE_PIXELS]],
        labels: &[u8],
        pool: &rayon::ThreadPool,
    ) -> Vec<[f32; 10]> {
        match &self.table {
            Some(table) => indices.iter().map(|&i| table[i as usize]).collect(),
            None => {
                let seen = Dataset {
                    images: images.to_vec(),
                    labels: labels.to_vec(),
                };
                self.teacher
                    .soft_targets(&seen, self.distill.temperature, pool)
            }
        }
    }
}
