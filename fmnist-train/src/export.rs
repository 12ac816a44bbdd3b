//! `fmnist-train export`: fold BN, calibrate, quantize to int8 and write the model files.

use std::path::{Path, PathBuf};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::network::Network;
use fmnist_infer::data::Dataset;
use fmnist_infer::modelio::LoadedModel;
use fmnist_infer::outputs::OutputError;

use crate::quantize::{Calibration, f32_accuracy, folded_accuracy, int8_accuracy, quantize};
use crate::registry;
use crate::shared::config::MAX_TEACHERS;
use crate::shared::distill::Teacher;
use crate::shared::net::{Params, TrainNet, TrainNetFn};
use crate::shared::weights::TrainedWeights;

/// Trained weights that cannot be read: a missing, unreadable, corrupt or foreign file, or the
/// wrong network. Always the input's fault. The message names the file (or `--teacher`).
#[derive(Debug)]
pub struct WeightsError(pub String);

impl std::fmt::Display for WeightsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WeightsError {}

fn bad(m: impl std::fmt::Display) -> WeightsError {
    WeightsError(m.to_string())
}

/// Why an export failed.
#[derive(Debug)]
pub enum ExportError {
    /// The weights cannot be quantized (the input's fault): the weights file and why.
    Quantize(PathBuf, String),
    /// An output file cannot be written (its `bad_input` says whose fault).
    Output(OutputError),
}

impl ExportError {
    /// True when the input is at fault (exit code 2): the weights, or an output path the user
    /// can change.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ExportError::Quantize(..) => true,
            ExportError::Output(e) => e.bad_input,
        }
    }
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Quantize(weights, why) => {
                write!(f, "{}: cannot quantize: {why}", weights.display())
            }
            ExportError::Output(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExportError {}

impl From<OutputError> for ExportError {
    fn from(e: OutputError) -> Self {
        ExportError::Output(e)
    }
}

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

/// Reads trained f32 weights of any network from a checkpoint, an f32 model file or a
/// safetensors file of any registered network (told apart by content).
pub fn read_weights(path: &Path) -> Result<TrainedWeights, WeightsError> {
    /// `N`'s weights from a checkpoint's bytes or a model file.
    enum Source<'a> {
        Checkpoint(&'a [u8]),
        Model(&'a fmnist_core::format::ModelFile<'a>, &'a LoadedModel),
    }
    impl TrainNetFn for Source<'_> {
        type Output = Result<TrainedWeights, String>;
        fn call<N: TrainNet>(self) -> Self::Output {
            match self {
                Source::Checkpoint(b) => {
                    let run = crate::checkpoint::decode_run::<N>(b)?;
                    Ok(TrainedWeights::new::<N>(run.params).expect("checked by decode_run"))
                }
                Source::Model(file, m) => {
                    let p = file
                        .trained::<N::Core>()
                        .map_err(|e| m.error(e).to_string())?;
                    Ok(TrainedWeights::of::<N>(p))
                }
            }
        }
    }
    let bytes =
        fmnist_infer::inputs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let named = |why: String| bad(format!("{}: {why}", path.display()));
    if bytes.starts_with(&crate::checkpoint::MAGIC) {
        let (arch, _) = crate::checkpoint::open(&bytes).map_err(named)?;
        return registry::dispatch(arch, Source::Checkpoint(&bytes)).map_err(named);
    }
    if bytes.starts_with(&fmnist_core::format::MAGIC) {
        let m = LoadedModel::from_bytes(&bytes, path);
        let file = m.file().map_err(|e| bad(m.error(e)))?;
        return registry::dispatch(file.header.arch, Source::Model(&file, &m)).map_err(bad);
    }
    if fmnist_infer::safetensors_io::looks_like_safetensors(&bytes) {
        /// `N`'s weights from a safetensors file's values (its tensors in `state_dict` order,
        /// which is the parameter layout's field order).
        struct Values(Vec<f32>);
        impl TrainNetFn for Values {
            type Output = Option<TrainedWeights>;
            fn call<N: TrainNet>(self) -> Self::Output {
                TrainedWeights::new::<N>(self.0)
            }
        }
        let p = fmnist_infer::safetensors_io::decode_params(&bytes)
            .map_err(|e| named(e.to_string()))?;
        let arch = p.arch;
        return registry::dispatch(arch, Values(p.values)).ok_or_else(|| {
            named(format!(
                "the {} tensors do not make a whole parameter set",
                arch.name()
            ))
        });
    }
    Err(bad(format!(
        "{}: not a checkpoint (FMCK), an f32 model file (FMNM) or a safetensors file",
        path.display()
    )))
}

/// Reads distillation teachers: checkpoints, f32 model files or safetensors files, of either
/// network (as [`read_weights`] reads them).
pub fn read_teachers(paths: &[PathBuf]) -> Result<Teacher, WeightsError> {
    if paths.is_empty() || paths.len() > MAX_TEACHERS as usize {
        return Err(bad(format!(
            "--teacher: {} models given; distillation takes 1 to {MAX_TEACHERS}",
            paths.len()
        )));
    }
    let models = paths
        .iter()
        .map(|p| read_weights(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Teacher::new(models, paths.to_vec()))
}

/// Reads trained f32 weights of network `N` (see [`read_weights`]).
pub fn read_weights_of<N: TrainNet>(path: &Path) -> Result<Box<Params<N>>, WeightsError> {
    let w = read_weights(path)?;
    match w.typed::<N>() {
        Some(p) => {
            let mut b: Box<Params<N>> = bytemuck::zeroed_box();
            bytemuck::bytes_of_mut(&mut *b).copy_from_slice(bytemuck::bytes_of(p));
            Ok(b)
        }
        None => Err(bad(format!(
            "{}: holds the {}, not {}",
            path.display(),
            w.arch().name(),
            N::Core::ARCH.name()
        ))),
    }
}

/// Evenly spaced training images, deterministic: `n` of them.
pub fn calibration_sample(train: &Dataset, n: usize) -> Vec<[u8; IMAGE_PIXELS]> {
    let n = n.clamp(1, train.len());
    (0..n).map(|i| train.images[i * train.len() / n]).collect()
}

/// Where an export reads and writes: the trained weights (named in errors about them), the int8
/// model file and, optionally, the BN-folded f32 one.
#[derive(Clone, Copy, Debug)]
pub struct ExportPaths<'a> {
    /// The trained weights (`--checkpoint`).
    pub weights: &'a Path,
    /// The int8 model file (`--out`).
    pub out: &'a Path,
    /// The BN-folded f32 model file (`--folded-out`).
    pub folded_out: Option<&'a Path>,
}

impl ExportPaths<'_> {
    /// Checks the outputs before any work: writable, distinct, not the input (exit 2).
    pub fn check(&self) -> Result<(), OutputError> {
        let mut outs = vec![("--out", self.out)];
        outs.extend(self.folded_out.map(|f| ("--folded-out", f)));
        fmnist_infer::outputs::check(&outs, &[("--checkpoint", self.weights)])
    }

    /// A quantization failure, naming the weights file (bad input: exit 2).
    fn cannot_quantize(&self, e: impl std::fmt::Display) -> ExportError {
        ExportError::Quantize(self.weights.to_owned(), e.to_string())
    }

    /// Writes the int8 model and the folded one (when asked for): both or neither.
    fn write(&self, arch: Arch, int8: &[u8], folded: &[u8]) -> Result<u64, OutputError> {
        let int8 = fmnist_infer::modelio::encode_model(arch, Kind::Int8, int8);
        let folded = fmnist_infer::modelio::encode_model(arch, Kind::F32Folded, folded);
        let mut files: Vec<(&Path, &[u8])> = vec![(self.out, &int8)];
        files.extend(self.folded_out.map(|f| (f, folded.as_slice())));
        fmnist_infer::outputs::write_all(&files)?;
        Ok(int8.len() as u64)
    }
}

/// Runs the export of weights of network `N`: folds BN, calibrates, quantizes, writes the
/// int8 model file and optionally the BN-folded f32 one, and measures test accuracy.
pub fn export<N: TrainNet>(
    weights: &Params<N>,
    train: &Dataset,
    test: &Dataset,
    calibration: usize,
    method: Calibration,
    paths: ExportPaths<'_>,
) -> Result<ExportReport, ExportError> {
    let sample = calibration_sample(train, calibration);
    let q = quantize::<N>(weights, &sample, method).map_err(|e| paths.cannot_quantize(e))?;
    let folded = N::fold(weights);
    let bytes = paths.write(
        N::Core::ARCH,
        bytemuck::bytes_of(&*q),
        bytemuck::bytes_of(&*folded),
    )?;
    let f32_acc = f32_accuracy::<N>(weights, &test.images, &test.labels);
    let int8_acc = int8_accuracy::<N>(&q, &test.images, &test.labels);
    Ok(ExportReport {
        f32_accuracy: f32_acc,
        folded_accuracy: folded_accuracy::<N>(&folded, &test.images, &test.labels),
        int8_accuracy: int8_acc,
        delta_points: 100.0 * (int8_acc - f32_acc),
        method: method.to_string(),
        calibration_images: sample.len(),
        out: paths.out.to_owned(),
        bytes,
        folded_out: paths.folded_out.map(Path::to_owned),
    })
}

/// [`export`] of weights of whichever network they are.
pub fn export_any(
    weights: &TrainedWeights,
    train: &Dataset,
    test: &Dataset,
    calibration: usize,
    method: Calibration,
    paths: ExportPaths<'_>,
) -> Result<ExportReport, ExportError> {
    struct Export<'a> {
        weights: &'a TrainedWeights,
        train: &'a Dataset,
        test: &'a Dataset,
        calibration: usize,
        method: Calibration,
        paths: ExportPaths<'a>,
    }
    impl TrainNetFn for Export<'_> {
        type Output = Result<ExportReport, ExportError>;
        fn call<N: TrainNet>(self) -> Self::Output {
            let w = self
                .weights
                .typed::<N>()
                .expect("dispatched on its own network");
            export::<N>(
                w,
                self.train,
                self.test,
                self.calibration,
                self.method,
                self.paths,
            )
        }
    }
    let job = Export {
        weights,
        train,
        test,
        calibration,
        method,
        paths,
    };
    registry::dispatch(weights.arch(), job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{TrainLeNet, TrainWide};
    use fmnist_core::registry::WideCnn;
    use fmnist_core::testutil::{object_images, realistic_wide_params};
    use fmnist_infer::modelio::write_model;

    /// The three wide model files round-trip through the format and the loaders, and the
    /// report's accuracies are those of the written models.
    #[test]
    fn wide_export_writes_loadable_files() {
        let p = realistic_wide_params(5);
        let dir = tempfile::tempdir().unwrap();
        let f32_path = dir.path().join("wide.fmnm");
        write_model(&f32_path, Arch::Wide, Kind::F32, bytemuck::bytes_of(&*p)).unwrap();
        let back = read_weights_of::<TrainWide>(&f32_path).unwrap();
        assert!(*back == *p);
        let images = object_images(9, 40);
        let model = fmnist_core::wide::Wide::from(&*p);
        let labels: Vec<u8> = images
            .iter()
            .map(|i| fmnist_core::layers::argmax(&model.forward(i)) as u8)
            .collect();
        let set = Dataset {
            images: images.clone(),
            labels,
        };
        let out = dir.path().join("wide.fmq");
        let folded = dir.path().join("wide-f32.fmnm");
        let paths = ExportPaths {
            weights: &f32_path,
            out: &out,
            folded_out: Some(&folded),
        };
        let r = export::<TrainWide>(&p, &set, &set, 30, Calibration::MinMax, paths).unwrap();
        assert_eq!(r.f32_accuracy, 1.0);
        assert!(r.int8_accuracy >= 0.9, "{}", r.int8_accuracy);
        assert_eq!(r.bytes, 64 + 1_639_408 + 4);
        let m = LoadedModel::read(&out).unwrap();
        let q = m.file().unwrap().int8::<WideCnn>().unwrap();
        assert_eq!(
            crate::quantize::int8_accuracy::<TrainWide>(q, &set.images, &set.labels),
            r.int8_accuracy
        );
        let m = LoadedModel::read(&folded).unwrap();
        assert!(m.file().unwrap().folded::<WideCnn>().is_ok());
        // A LeNet reader refuses the wide file by name; the any-network reader takes the f32
        // one and refuses the int8 one.
        let err = read_weights_of::<TrainLeNet>(&out).err().unwrap().0;
        assert!(err.contains("wide CNN"), "{err}");
        let back = read_weights(&f32_path).unwrap();
        assert!(back.typed::<TrainWide>() == Some(&*p));
        let err = read_weights(&out).err().map(|e| e.0).unwrap_or_default();
        assert!(err.contains("wide CNN int8"), "{err}");
    }

    /// Wide model files of all three kinds load in `fmnist-infer` by content and compute what
    /// fmnist-core computes; the int8 one dequantizes with fc2's output quantization.
    #[test]
    fn wide_files_of_each_kind_load_and_run_in_fmnist_infer() {
        use fmnist_core::format::{Arch, Kind};
        use fmnist_core::wide::{Wide, WideParams};
        use fmnist_infer::modelio::encode_model;
        use fmnist_infer::{Logits, Model, ModelKind};

        let mut p: Box<WideParams> = fmnist_core::testutil::uniform_params(9, 0.1);
        p.bn1.running_var = [1.0; 32];
        p.bn2.running_var = [1.0; 64];
        let img: [u8; 784] = std::array::from_fn(|i| (i * 7 % 256) as u8);
        let f32_file = encode_model(Arch::Wide, Kind::F32, bytemuck::bytes_of(&*p));
        let m = Model::from_bytes(Path::new("w.fmnm"), &f32_file).unwrap();
        assert_eq!((m.arch, m.kind), (Arch::Wide, ModelKind::F32));
        assert_eq!(m.logits(&img), Logits::F32(Wide::from(&*p).forward(&img)));
        assert_eq!(m.f32_net().unwrap().name(), "Wide");

        let f = crate::wide::quant::fold_batch_norm_wide(&p);
        let folded = encode_model(Arch::Wide, Kind::F32Folded, bytemuck::bytes_of(&*f));
        let m = Model::from_bytes(Path::new("w-f32.fmnm"), &folded).unwrap();
        assert_eq!(m.kind, ModelKind::F32Folded);
        assert_eq!(m.logits(&img), Logits::F32(Wide::from(&*f).forward(&img)));

        let images: Vec<[u8; 784]> = (0..8u8)
            .map(|k| std::array::from_fn(|i| ((i as u32 * (k as u32 + 3)) % 256) as u8))
            .collect();
        let q = quantize::<TrainWide>(&p, &images, Calibration::MinMax).unwrap();
        let int8 = encode_model(Arch::Wide, Kind::Int8, bytemuck::bytes_of(&*q));
        let m = Model::from_bytes(Path::new("w.fmq"), &int8).unwrap();
        assert_eq!((m.arch, m.kind), (Arch::Wide, ModelKind::Int8));
        let net = fmnist_core::quant::WideQ::new(&q).unwrap();
        assert_eq!(m.logits(&img), Logits::I8(net.forward(&img)));
        let i8m = m.int8().unwrap();
        assert_eq!(i8m.arch(), Arch::Wide);
        assert!(i8m.lenet().is_none() && i8m.wide().is_some());
        assert_eq!(
            m.logits_f32(&img),
            crate::quantize::dequantize_logits::<TrainWide>(&q, &net.forward(&img))
        );
    }
}
