//! Models made by the release binaries, once per test process: a 30-step LeNet-BN and a 3-step
//! wide CNN (`fmnist-train train`), each as trained, BN-folded and int8 (`fmnist-train export`).
//! Not accurate models; real ones, with real batch-norm statistics, in the real file format.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One network's files.
pub struct CliModel {
    /// f32 as trained (kind 1).
    pub trained: PathBuf,
    /// f32 BN-folded (kind 2).
    pub folded: PathBuf,
    /// int8 (kind 3).
    pub int8: PathBuf,
}

/// The two networks' files, in a folder kept for the process.
pub struct CliModels {
    /// LeNet-BN.
    pub lenet: CliModel,
    /// The wide CNN.
    pub wide: CliModel,
    _dir: tempfile::TempDir,
}

fn make(dir: &Path, model: &str, steps: &str) -> CliModel {
    let run = dir.join(model);
    let data = crate::data_dir();
    let o = crate::run(
        "fmnist-train",
        &[
            "train",
            "--model",
            model,
            "--preset",
            "fast",
            "--steps",
            steps,
            "--threads",
            "2",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "train {model}: {:?}", crate::text(&o));
    let m = CliModel {
        trained: run.join("model.fmnm"),
        folded: run.join("folded.fmnm"),
        int8: run.join("int8.fmnm"),
    };
    let o = crate::run(
        "fmnist-train",
        &[
            "export",
            "--checkpoint",
            m.trained.to_str().unwrap(),
            "--out",
            m.int8.to_str().unwrap(),
            "--folded-out",
            m.folded.to_str().unwrap(),
            "--calibration",
            "200",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "export {model}: {:?}", crate::text(&o));
    m
}

/// Trains and exports both networks once per process.
pub fn cli_models() -> &'static CliModels {
    static MODELS: OnceLock<CliModels> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        CliModels {
            lenet: make(dir.path(), "lenet", "30"),
            wide: make(dir.path(), "wide", "3"),
            _dir: dir,
        }
    })
}
