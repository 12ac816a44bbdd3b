//! A run's output folder: one run owns it, by an exclusive lock, for the life of the process.
//!
//! * **Lock.** `OUT/.fmnist-train.lock` is locked exclusively (`flock` semantics through
//!   [`File::try_lock`]) while the [`RunDir`] lives; the kernel drops the lock when the process
//!   ends, however it ends (SIGKILL included). A second trainer on the same folder is refused.
//! * **One run per folder.** The run's files are the ones fmnist-train names itself:
//!   `checkpoint-<step>.fmck`, `train-log.jsonl`, `model.fmnm`, the plots `loss.png` and
//!   `accuracy.png`, the TensorBoard events `events.out.tfevents.fmnist-train`, and the temp files `.<one of those>.<pid>.tmp` of an interrupted atomic
//!   write. `train` refuses a folder holding any of them unless told to overwrite, which removes
//!   exactly those files first; `resume` accepts a folder only if its checkpoints hold the same
//!   recipe and its log the same number of steps. Files of other names are never touched.
//! * **Pruning** picks checkpoints by the step in their names, never by sorting names.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use crate::shared::config::TrainConfig;
use crate::shared::log::LogRecord;

/// The lock file in every run folder.
pub const LOCK_FILE: &str = ".fmnist-train.lock";
/// The per-step log.
pub const LOG_FILE: &str = "train-log.jsonl";
/// The final f32 model.
pub const MODEL_FILE: &str = "model.fmnm";
/// The figures `fmnist-train plot` draws from the log.
pub const PLOT_FILES: [&str; 2] = ["loss.png", "accuracy.png"];

/// How a command means to use the folder.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// A new run: the folder must hold no run, or `overwrite` removes the one it holds.
    Train {
        /// Remove the old run's files first.
        overwrite: bool,
    },
    /// Continue the run of this recipe: the folder must hold no run or this one.
    Resume(TrainConfig),
}

/// Why a folder cannot be used.
#[derive(Debug)]
pub enum RunDirError {
    /// The path exists and is not a directory (or a parent is a file).
    NotADirectory(PathBuf),
    /// Another process holds the lock.
    Busy(PathBuf),
    /// `train` without `--overwrite` into a folder holding a run.
    HoldsRun {
        /// The folder.
        dir: PathBuf,
        /// What was found, for the message.
        found: String,
        /// The newest checkpoint there, to resume from.
        newest: Option<PathBuf>,
    },
    /// `resume` into a folder holding a run of another recipe.
    OtherRun {
        /// The folder.
        dir: PathBuf,
        /// The file that shows it.
        file: String,
        /// How it differs.
        why: String,
    },
    /// Creating, locking, reading or cleaning the folder failed.
    Io(PathBuf, io::Error),
}

impl RunDirError {
    /// True when the user's choice of folder is at fault (exit code 2), false for an I/O failure.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, RunDirError::Io(..))
    }
}

impl fmt::Display for RunDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunDirError::NotADirectory(d) => write!(f, "{}: not a directory", d.display()),
            RunDirError::Busy(d) => write!(
                f,
                "{}: another fmnist-train run is using this folder (it holds {LOCK_FILE})",
                d.display()
            ),
            RunDirError::HoldsRun { dir, found, newest } => {
                write!(
                    f,
                    "{}: holds a run already ({found}); pass --overwrite to replace it",
                    dir.display()
                )?;
                if let Some(ck) = newest {
                    write!(
                        f,
                        " or continue it with fmnist-train resume --checkpoint {}",
                        ck.display()
                    )?;
                }
                Ok(())
            }
            RunDirError::OtherRun { dir, file, why } => {
                write!(f, "{}: holds another run ({file}: {why})", dir.display())
            }
            RunDirError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for RunDirError {}

/// The step of a checkpoint file name `checkpoint-<digits>.fmck`.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".fmck")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A file of a run, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunFile {
    Checkpoint(u64),
    Log,
    Model,
    Plot,
    /// The TensorBoard event file.
    Events,
    /// `.<run file>.<pid>.tmp`: an atomic write that never finished.
    Temp,
}

impl RunFile {
    fn of(name: &str) -> Option<RunFile> {
        if let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            let (target, pid) = inner.rsplit_once('.')?;
            let ours = !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && matches!(RunFile::of(target), Some(f) if f != RunFile::Temp);
            return ours.then_some(RunFile::Temp);
        }
        match name {
            LOG_FILE => Some(RunFile::Log),
            MODEL_FILE => Some(RunFile::Model),
            crate::tensorboard::FILE_NAME => Some(RunFile::Events),
            _ if PLOT_FILES.contains(&name) => Some(RunFile::Plot),
            _ => checkpoint_step(name).map(RunFile::Checkpoint),
        }
    }
}

/// The run files in `dir` with their kinds, in name order (none if it cannot be read).
fn run_files(dir: &Path) -> io::Result<Vec<(RunFile, PathBuf)>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(kind) = name.to_str().and_then(RunFile::of) {
            v.push((kind, entry.path()));
        }
    }
    v.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(v)
}

/// The checkpoints in `dir` as (step, path), oldest step first; other files are ignored.
pub fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = run_files(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(kind, p)| match kind {
            RunFile::Checkpoint(step) => Some((step, p)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The folder a checkpoint is in (`.` for a bare file name).
pub fn folder_of(checkpoint: &Path) -> PathBuf {
    match checkpoint.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A run folder this process owns until it drops it (or exits).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Holds the lock; closing it releases the lock.
    _lock: File,
}

impl RunDir {
    /// Creates `out` if needed, locks it and checks that it holds no run or the one `mode`
    /// continues (with `Mode::Train { overwrite: true }`, removes the run files it holds). Stale
    /// temp files of this folder's run are removed. An empty `out` means `.`.
    pub fn claim(out: &Path, mode: Mode) -> Result<RunDir, RunDirError> {
        let path = if out.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            out.to_owned()
        };
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |e: io::Error| RunDirError::Io(p, e)
        };
        match fs::metadata(&path) {
            Ok(m) if !m.is_dir() => return Err(RunDirError::NotADirectory(path)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
                        RunDirError::NotADirectory(path.clone())
                    }
                    _ => RunDirError::Io(path.clone(), e),
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(RunDirError::NotADirectory(path));
            }
            Err(e) => return Err(RunDirError::Io(path, e)),
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(RunDirError::Busy(path)),
            Err(TryLockError::Error(e)) => return Err(RunDirError::Io(lock_path, e)),
        }
        let dir = RunDir { path, _lock: lock };
        let files = run_files(&dir.path).map_err(io_err(&dir.path))?;
        match mode {
            Mode::Train { overwrite: false } => dir.refuse_any_run(&files)?,
            Mode::Train { overwrite: true } => {
                for (_, p) in &files {
                    fs::remove_file(p).map_err(io_err(p))?;
                }
            }
            Mode::Resume(recipe) => dir.check_same_run(&files, &recipe)?,
        }
        for (kind, p) in &files {
            if *kind == RunFile::Temp && p.exists() {
                fs::remove_file(p).map_err(io_err(p))?;
            }
        }
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in the folder.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// This run's checkpoints as (step, path), oldest first.
    pub fn checkpoints(&self) -> Vec<(u64, PathBuf)> {
        checkpoints(&self.path)
    }

    /// The newest checkpoint of at most `step`.
    pub fn newest_checkpoint(&self, step: u64) -> Option<PathBuf> {
        self.checkpoints()
            .into_iter()
            .rev()
            .find(|(s, _)| *s <= step)
            .map(|(_, p)| p)
    }

    /// Keeps the newest `keep` checkpoints up to `step` and removes the older ones. Checkpoints
    /// after `step` (of a longer attempt of this run that a resume is redoing) and files of
    /// other names are left alone.
    pub fn prune(&self, step: u64, keep: usize) {
        let upto: Vec<PathBuf> = self
            .checkpoints()
            .into_iter()
            .filter(|(s, _)| *s <= step)
            .map(|(_, p)| p)
            .collect();
        for old in &upto[..upto.len().saturating_sub(keep)] {
            let _ = fs::remove_file(old);
        }
    }

    fn refuse_any_run(&self, files: &[(RunFile, PathBuf)]) -> Result<(), RunDirError> {
        let name = |p: &PathBuf| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into())
        };
        let mut found = Vec::new();
        let cks: Vec<u64> = files
            .iter()
            .filter_map(|(k, _)| match k {
                RunFile::Checkpoint(s) => Some(*s),
                _ => None,
            })
            .collect();
        if let Some(last) = cks.iter().max() {
            found.push(match cks.len() {
                1 => format!("a checkpoint of step {last}"),
                n => format!("{n} checkpoints up to step {last}"),
            });
        }
        found.extend(
            files
                .iter()
                .filter(|(k, _)| {
                    matches!(
                        k,
                        RunFile::Log | RunFile::Model | RunFile::Plot | RunFile::Events
                    )
                })
                .map(|(_, p)| name(p)),
        );
        if found.is_empty() {
            return Ok(());
        }
        Err(RunDirError::HoldsRun {
            dir: self.path.clone(),
            found: found.join(", "),
            newest: self.newest_checkpoint(u64::MAX),
        })
    }

    fn check_same_run(
        &self,
        files: &[(RunFile, PathBuf)],
        recipe: &TrainConfig,
    ) -> Result<(), RunDirError> {
        let other = |p: &Path, why: String| RunDirError::OtherRun {
            dir: self.path.clone(),
            file: p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into()),
            why,
        };
        let mut identified = false;
        for (kind, p) in files {
            match kind {
                RunFile::Checkpoint(_) => {
                    let theirs = crate::checkpoint::load_config(p).map_err(|e| match e {
                        crate::checkpoint::CheckpointError::Invalid(_, why) => {
                            other(p, format!("not a checkpoint of this run: {why}"))
                        }
                        crate::checkpoint::CheckpointError::Io(p, e) => RunDirError::Io(p, e),
                    })?;
                    if theirs != *recipe {
                        return Err(other(p, recipe_difference(&theirs, recipe)));
                    }
                    identified = true;
                }
                RunFile::Log => {
                    let text = fs::read(p).map_err(|e| RunDirError::Io(p.clone(), e))?;
                    for line in String::from_utf8_lossy(&text).lines() {
                        let total = LogRecord::parse(line).ok().and_then(|r| r.total);
                        match total {
                            Some(t) if t != recipe.steps => {
                                return Err(other(
                                    p,
                                    format!("a run of {t} steps, this one has {}", recipe.steps),
                                ));
                            }
                            Some(_) => identified = true,
                            None => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if !identified
            && let Some((_, p)) = files
                .iter()
                .find(|(k, _)| matches!(k, RunFile::Model | RunFile::Plot | RunFile::Events))
        {
            return Err(other(
                p,
                "no checkpoint or log of this run beside it".into(),
            ));
        }
        Ok(())
    }
}

/// How the recipe `theirs` differs from `ours`, in words.
fn recipe_difference(theirs: &TrainConfig, ours: &TrainConfig) -> String {
    let mut d = Vec::new();
    if theirs.model != ours.model {
        d.push(format!(
            "the {} network, this run trains {}",
            theirs.model.name(),
            ours.model.name()
        ));
    }
    if theirs.steps != ours.steps {
        d.push(format!(
            "{} steps, this run has {}",
            theirs.steps, ours.steps
        ));
    }
    if theirs.seed != ours.seed {
        d.push(format!("seed {}, this run has {}", theirs.seed, ours.seed));
    }
    if d.is_empty() {
        "another recipe".into()
    } else {
        format!("a run of {}", d.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn sorted_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn names_of_run_files() {
        assert_eq!(checkpoint_step("checkpoint-0000200.fmck"), Some(200));
        assert_eq!(
            checkpoint_step("checkpoint-12345678.fmck"),
            Some(12_345_678)
        );
        for other in [
            "checkpoint-.fmck",
            "checkpoint-+12.fmck",
            "checkpoint-0000200.fmck.bak",
            "checkpoint-best.fmck",
            "my-checkpoint-0000200.fmck",
        ] {
            assert_eq!(checkpoint_step(other), None, "{other}");
        }
        assert_eq!(RunFile::of("train-log.jsonl"), Some(RunFile::Log));
        assert_eq!(RunFile::of(".train-log.jsonl.123.tmp"), Some(RunFile::Temp));
        assert_eq!(
            RunFile::of(".checkpoint-0000010.fmck.9.tmp"),
            Some(RunFile::Temp)
        );
        for other in [
            ".notes.txt.123.tmp",
            ".model.fmnm.x.tmp",
            ".model.fmnm..tmp",
            "model.fmq",
        ] {
            assert_eq!(RunFile::of(other), None, "{other}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_by_step_up_to_the_current_one() {
        let tmp = tempfile::tempdir().unwrap();
        // Pruning does not read the checkpoints: claim the empty folder, then add them.
        let dir = RunDir::claim(tmp.path(), Mode::Train { overwrite: false }).unwrap();
        for name in [
            "checkpoint-0000200.fmck",
            "checkpoint-0000010.fmck",
            "checkpoint-0000020.fmck",
            "checkpoint-0000030.fmck",
            "checkpoint-12345678.fmck",
            "checkpoint-best.fmck",
            "notes.txt",
        ] {
            fs::write(tmp.path().join(name), b"x").unwrap();
        }
        dir.prune(30, 2);
        let left = sorted_names(tmp.path());
        assert_eq!(
            left,
            [
                ".fmnist-train.lock",
                "checkpoint-0000020.fmck",
                "checkpoint-0000030.fmck",
                "checkpoint-0000200.fmck",
                "checkpoint-12345678.fmck",
                "checkpoint-best.fmck",
                "notes.txt"
            ]
        );
        assert_eq!(
            dir.newest_checkpoint(u64::MAX),
            Some(tmp.path().join("checkpoint-12345678.fmck"))
        );
        assert_eq!(
            dir.newest_checkpoint(199),
            Some(tmp.path().join("checkpoint-0000030.fmck"))
        );
    }

    #[test]
    fn a_second_claim_is_refused_while_the_first_lives() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let first = RunDir::claim(&out, Mode::Train { overwrite: false }).unwrap();
        let err = RunDir::claim(&out, Mode::Train { overwrite: true }).unwrap_err();
        assert!(matches!(err, RunDirError::Busy(_)), "{err}");
        drop(first);
        RunDir::claim(&out, Mode::Train { overwrite: false }).unwrap();
        // A file is not a folder.
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = RunDir::claim(&file, Mode::Train { overwrite: false }).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: not a directory", file.display())
        );
        let err = RunDir::claim(&file.join("sub"), Mode::Train { overwrite: false }).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
    }

    #[test]
    fn overwrite_removes_only_run_files() {
        let tmp = tempfile::tempdir().unwrap();
        let names = [
            "checkpoint-0000200.fmck",
            "train-log.jsonl",
            "model.fmnm",
            "loss.png",
            ".model.fmnm.77.tmp",
            "model.fmq",
            "notes.txt",
            ".notes.txt.77.tmp",
        ];
        for name in names {
            fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let err = RunDir::claim(tmp.path(), Mode::Train { overwrite: false }).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{0}: holds a run already (a checkpoint of step 200, loss.png, model.fmnm, \
                 train-log.jsonl); pass --overwrite to replace it or continue it with \
                 fmnist-train resume --checkpoint {0}/checkpoint-0000200.fmck",
                tmp.path().display()
            )
        );
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), names.len() + 1);
        RunDir::claim(tmp.path(), Mode::Train { overwrite: true }).unwrap();
        let left = sorted_names(tmp.path());
        assert_eq!(
            left,
            [
                ".fmnist-train.lock",
                ".notes.txt.77.tmp",
                "model.fmq",
                "notes.txt"
            ]
        );
    }

    #[test]
    fn an_empty_folder_name_is_the_current_folder() {
        assert_eq!(
            folder_of(Path::new("checkpoint-0000010.fmck")),
            Path::new(".")
        );
        assert_eq!(
            folder_of(Path::new("/checkpoint-0000010.fmck")),
            Path::new("/")
        );
        assert_eq!(folder_of(Path::new("a/c.fmck")), Path::new("a"));
    }
}
