//! Running a training job: steps, logs, progress, checkpoints, evaluation, the final model.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fmnist_core::format::{Arch, Kind};
use fmnist_core::network::Network;
use fmnist_infer::data::Dataset;

use crate::checkpoint::{self, CheckpointError};
use crate::registry;
use crate::run_dir::RunDir;
use crate::shared::config::TrainConfig;
use crate::shared::distill::Teacher;
use crate::shared::kernels::Evaluation;
use crate::shared::log::{LogRecord, RecordKind};
use crate::shared::net::{RunState, TrainNet, TrainNetFn};
use crate::shared::step::{StartError, StepStats};
use crate::shared::trainer::Trainer;
use crate::tensorboard::{self, EventWriter, tags};

/// A training run the loop drives, whatever its network: [`Trainer`] behind a pointer, so
/// that the command line holds one type (the step itself is static code per network; the
/// loop makes one indirect call per step).
pub trait Session {
    /// The recipe.
    fn config(&self) -> TrainConfig;
    /// Optimizer steps done.
    fn steps_done(&self) -> u64;
    /// Seconds spent in optimizer steps so far (over every resume).
    fn train_seconds(&self) -> f64;
    /// One optimizer step.
    fn step(&mut self) -> StepStats;
    /// Test-set evaluation.
    fn evaluate(&mut self, test: &Dataset) -> Evaluation;
    /// The current state encoded as a checkpoint.
    fn checkpoint(&mut self) -> Vec<u8>;
    /// The architecture and the f32 weights as a `Kind::F32` model payload.
    fn model_payload(&self) -> (Arch, &[u8]);
    /// Gives a distilled run its teachers (checked against the recipe's fingerprint).
    fn set_teacher(&mut self, teacher: Teacher) -> Result<(), String>;
}

impl<N: TrainNet> Session for Trainer<'_, N> {
    fn config(&self) -> TrainConfig {
        Trainer::config(self)
    }
    fn steps_done(&self) -> u64 {
        Trainer::steps_done(self)
    }
    fn train_seconds(&self) -> f64 {
        Trainer::train_seconds(self)
    }
    fn step(&mut self) -> StepStats {
        Trainer::step(self)
    }
    fn evaluate(&mut self, test: &Dataset) -> Evaluation {
        Trainer::evaluate(self, test)
    }
    fn checkpoint(&mut self) -> Vec<u8> {
        checkpoint::encode_run(&self.state())
    }
    fn model_payload(&self) -> (Arch, &[u8]) {
        (N::Core::ARCH, bytemuck::bytes_of(self.params()))
    }
    fn set_teacher(&mut self, teacher: Teacher) -> Result<(), String> {
        Trainer::set_teacher(self, teacher)
    }
}

/// A fresh run of `config` (of the network its `model` names).
pub fn start<'d>(
    config: TrainConfig,
    train: &'d Dataset,
    threads: usize,
) -> Result<Box<dyn Session + 'd>, StartError> {
    struct Start<'d> {
        config: TrainConfig,
        train: &'d Dataset,
        threads: usize,
    }
    impl<'d> TrainNetFn for Start<'d> {
        type Output = Result<Box<dyn Session + 'd>, StartError>;
        fn call<N: TrainNet>(self) -> Self::Output {
            let t = Trainer::<N>::new(self.config, self.train, self.threads)?;
            Ok(Box::new(t))
        }
    }
    registry::dispatch(
        config.model.arch(),
        Start {
            config,
            train,
            threads,
        },
    )
}

/// A checkpointed run, read and checked, not yet started.
pub trait Saved {
    /// Its recipe.
    fn config(&self) -> TrainConfig;
    /// Continues it on `train`.
    fn resume<'d>(
        self: Box<Self>,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Box<dyn Session + 'd>, StartError>;
}

impl<N: TrainNet> Saved for RunState<N> {
    fn config(&self) -> TrainConfig {
        self.config
    }
    fn resume<'d>(
        self: Box<Self>,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Box<dyn Session + 'd>, StartError> {
        Ok(Box::new(Trainer::<N>::resume(*self, train, threads)?))
    }
}

/// Reads and checks a checkpoint of any network.
pub fn load_checkpoint(path: &Path) -> Result<Box<dyn Saved>, CheckpointError> {
    struct Decode<'a>(&'a [u8]);
    impl TrainNetFn for Decode<'_> {
        type Output = Result<Box<dyn Saved>, String>;
        fn call<N: TrainNet>(self) -> Self::Output {
            Ok(Box::new(checkpoint::decode_run::<N>(self.0)?))
        }
    }
    let b = checkpoint::read(path)?;
    let invalid = |why| CheckpointError::Invalid(path.to_owned(), why);
    let (arch, _) = checkpoint::open(&b).map_err(invalid)?;
    registry::dispatch(arch, Decode(&b)).map_err(invalid)
}

/// How a run reports (where: the [`RunDir`] it is given).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Machine-readable output only on stdout; progress goes to stderr.
    pub json: bool,
    /// Print a plain progress line every this many steps (when not drawing a bar).
    pub print_every: u64,
    /// Checkpoints kept on disk (the newest ones by step).
    pub keep: usize,
    /// Write the scalars as TensorBoard events too ([`crate::tensorboard`]).
    pub tensorboard: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSummary {
    /// Test accuracy of the final model (0..1).
    pub test_accuracy: f64,
    /// Training throughput (optimizer steps only).
    pub images_per_second: f64,
    /// Wall time of this invocation, evaluation and checkpoints included.
    pub wall_seconds: f64,
    /// The final f32 model file.
    pub model: PathBuf,
    /// The newest checkpoint.
    pub checkpoint: PathBuf,
    /// The per-step log.
    pub log: PathBuf,
    /// Steps done.
    pub steps: u64,
    /// Test accuracy at every checkpoint: (step, accuracy).
    pub evaluations: Vec<(u64, f64)>,
    /// Threads used.
    pub threads: usize,
    /// The seed.
    pub seed: u64,
    /// The whole recipe.
    pub config: crate::shared::config::TrainConfig,
}

/// Why a run stopped early.
#[derive(Debug)]
pub enum RunError {
    /// Writing an output failed (disk full, read-only directory...). Earlier files are intact.
    Io(PathBuf, std::io::Error),
    /// The loss or the weights stopped being finite numbers; nothing of that step was saved
    /// but its log line.
    Diverged {
        /// The run's folder.
        out: PathBuf,
        /// The step at which it was seen.
        step: u64,
        /// What was not finite.
        why: String,
        /// The newest checkpoint of this run before it, if any.
        last_good: Option<PathBuf>,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            RunError::Diverged {
                out,
                step,
                why,
                last_good,
            } => {
                write!(
                    f,
                    "{}: training diverged at step {step} ({why}); ",
                    out.display()
                )?;
                match last_good {
                    Some(p) => write!(f, "the last good checkpoint is {}", p.display()),
                    None => write!(f, "no checkpoint of this run was written before it"),
                }
            }
        }
    }
}

impl std::error::Error for RunError {}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub fn timestamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Seconds since the Unix epoch (TensorBoard's wall time).
fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The checkpoint file name for `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step:07}.fmck")
}

/// The newest checkpoint in `dir`, by the step in its name.
pub fn newest_checkpoint(dir: &Path) -> Option<PathBuf> {
    crate::run_dir::checkpoints(dir).pop().map(|(_, p)| p)
}

/// `None` when every parameter (and running statistic) in `payload` is a finite number, else
/// what is wrong.
fn non_finite_weights(payload: &[u8]) -> Option<String> {
    let bad = payload
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|w| !w.is_finite())
        .count();
    (bad > 0).then(|| format!("{bad} weights are not finite"))
}

/// Drops log lines of steps after `step` (they belong to a run that was cut short).
fn truncate_log(log: &Path, step: u64) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| LogRecord::parse(l).ok().is_some_and(|r| r.step <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    fmnist_infer::atomic::write_atomic(log, kept.as_bytes())
}

/// Runs `trainer` to its configured number of steps in `dir` (claimed for this run). Stops with
/// [`RunError::Diverged`] at the first non-finite loss, or at a checkpoint (or the end) whose
/// weights are not finite, without saving them.
pub fn run(
    trainer: &mut (dyn Session + '_),
    test: &Dataset,
    threads: usize,
    dir: &RunDir,
    opts: &RunOptions,
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let io = |p: &Path| {
        let p = p.to_owned();
        move |e| RunError::Io(p, e)
    };
    let log_path = dir.join(crate::run_dir::LOG_FILE);
    truncate_log(&log_path, trainer.steps_done()).map_err(io(&log_path))?;
    let mut log = BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?,
    );
    let cfg = trainer.config();
    let total = cfg.steps;
    let first_step = trainer.steps_done();
    let events_path = dir.join(tensorboard::FILE_NAME);
    let mut events = match opts.tensorboard {
        true => Some(
            EventWriter::start(
                dir.path(),
                (first_step > 0).then_some(first_step),
                unix_time(),
            )
            .map_err(io(&events_path))?,
        ),
        false => None,
    };
    let mut scalars = |step: u64, values: &[(&str, f32)]| match &mut events {
        Some(w) => w
            .scalars(step, unix_time(), values)
            .map_err(io(&events_path)),
        None => Ok(()),
    };
    let train_seconds_before = trainer.train_seconds();
    let bar = (!opts.json && std::io::stdout().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} {per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_position(first_step);
        b
    });
    let say = |line: &str| {
        if let Some(b) = &bar {
            b.println(line);
        } else if opts.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut evaluations = Vec::new();
    let mut newest = dir.newest_checkpoint(first_step);
    let diverged = |step: u64, why: String, last_good: &Option<PathBuf>| RunError::Diverged {
        out: dir.path().to_owned(),
        step,
        why,
        last_good: last_good.clone(),
    };
    let mut last_acc = f64::NAN;
    while trainer.steps_done() < total {
        let st = trainer.step();
        let step = trainer.steps_done();
        let record = LogRecord {
            time: Some(timestamp()),
            step,
            total: Some(total),
            kind: RecordKind::Step {
                loss: st.loss,
                accuracy: st.accuracy,
                lr: Some(st.lr),
            },
        };
        writeln!(log, "{}", record.to_line()).map_err(io(&log_path))?;
        scalars(
            step,
            &[
                (tags::TRAIN_LOSS, st.loss as f32),
                (tags::TRAIN_ACCURACY, st.accuracy as f32),
                (tags::LEARNING_RATE, st.lr),
            ],
        )?;
        if !st.loss.is_finite() {
            log.flush().map_err(io(&log_path))?;
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(diverged(step, format!("loss is {}", st.loss), &newest));
        }
        if let Some(b) = &bar {
            b.set_position(step);
            if step.is_multiple_of(10) {
                b.set_message(format!(
                    "loss {:.4} acc {:.3} ({:.0} img/s)",
                    st.loss,
                    st.accuracy,
                    images_per_second(trainer, step - first_step, train_seconds_before)
                ));
            }
        } else if step.is_multiple_of(opts.print_every) || step == 1 {
            say(&format!(
                "{}, Step: {step}/{total}, Loss: {:.4}, Accuracy: {:.4}",
                timestamp(),
                st.loss,
                st.accuracy
            ));
        }
        if step.is_multiple_of(cfg.checkpoint_every) || step == total {
            if let Some(why) = non_finite_weights(trainer.model_payload().1) {
                log.flush().map_err(io(&log_path))?;
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(diverged(step, why, &newest));
            }
            let e = trainer.evaluate(test);
            last_acc = e.accuracy;
            evaluations.push((step, e.accuracy));
            let bytes = trainer.checkpoint();
            let path = dir.join(checkpoint_name(step));
            // The log up to this step is flushed before the checkpoint that covers it exists.
            log.flush().map_err(io(&log_path))?;
            fmnist_infer::atomic::write_atomic(&path, &bytes).map_err(io(&path))?;
            newest = Some(path.clone());
            let record = LogRecord {
                time: Some(timestamp()),
                step,
                total: Some(total),
                kind: RecordKind::Eval {
                    test_accuracy: e.accuracy,
                    test_loss: e.loss,
                    checkpoint: Some(path.clone()),
                },
            };
            writeln!(log, "{}", record.to_line()).map_err(io(&log_path))?;
            log.flush().map_err(io(&log_path))?;
            scalars(
                step,
                &[
                    (tags::TEST_LOSS, e.loss as f32),
                    (tags::TEST_ACCURACY, e.accuracy as f32),
                    (
                        tags::IMAGES_PER_SECOND,
                        images_per_second(trainer, step - first_step, train_seconds_before) as f32,
                    ),
                ],
            )?;
            say(&format!(
                "{}, Step: {step}/{total}, Test accuracy: {:.2} %, checkpoint {}",
                timestamp(),
                100.0 * e.accuracy,
                path.display()
            ));
            dir.prune(step, opts.keep);
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if last_acc.is_nan() {
        // Resumed at the end: evaluate what is there.
        last_acc = trainer.evaluate(test).accuracy;
    }
    let model = dir.join(crate::run_dir::MODEL_FILE);
    let (arch, payload) = trainer.model_payload();
    if let Some(why) = non_finite_weights(payload) {
        return Err(diverged(trainer.steps_done(), why, &newest));
    }
    fmnist_infer::modelio::write_model(&model, arch, Kind::F32, payload).map_err(|e| match e {
        fmnist_infer::modelio::ModelIoError::Io(p, e) => RunError::Io(p, e),
        fmnist_infer::modelio::ModelIoError::Format(p, e) => {
            RunError::Io(p, std::io::Error::other(e.to_string()))
        }
    })?;
    Ok(RunSummary {
        test_accuracy: last_acc,
        images_per_second: images_per_second(
            trainer,
            trainer.steps_done() - first_step,
            train_seconds_before,
        ),
        wall_seconds: start.elapsed().as_secs_f64(),
        model,
        checkpoint: newest.unwrap_or_default(),
        log: log_path,
        steps: trainer.steps_done(),
        evaluations,
        threads,
        seed: cfg.seed,
        config: cfg,
    })
}

fn images_per_second(t: &dyn Session, steps: u64, seconds_before: f64) -> f64 {
    let secs = t.train_seconds() - seconds_before;
    if secs <= 0.0 {
        0.0
    } else {
        steps as f64 * t.config().batch as f64 / secs
    }
}
