//! Running a training job: steps, logs, progress, checkpoints, evaluation, the final model.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fmnist_core::format::{Arch, Kind};
use fmnist_infer::data::Dataset;

use crate::checkpoint::{self, WideRun};
use crate::lenet::train::Trainer;
use crate::run_dir::RunDir;
use crate::shared::config::{Model, Optimizer, TrainConfig};
use crate::shared::kernels::Evaluation;
use crate::shared::log::{LogRecord, RecordKind};
use crate::shared::step::{StartError, StepStats};
use crate::wide::train::WideTrainer;

/// A training run the loop drives: LeNet-BN or the wide CNN.
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
}

impl Session for Trainer<'_> {
    fn config(&self) -> TrainConfig {
        self.state.config
    }
    fn steps_done(&self) -> u64 {
        self.state.step
    }
    fn train_seconds(&self) -> f64 {
        self.state.train_seconds
    }
    fn step(&mut self) -> StepStats {
        Trainer::step(self)
    }
    fn evaluate(&mut self, test: &Dataset) -> Evaluation {
        Trainer::evaluate(self, test)
    }
    fn checkpoint(&mut self) -> Vec<u8> {
        self.sync_state();
        checkpoint::encode(&self.state)
    }
    fn model_payload(&self) -> (Arch, &[u8]) {
        (Arch::LeNet, bytemuck::bytes_of(self.params()))
    }
}

/// A wide-CNN run: the trainer and the recipe it was built from.
pub struct WideSession<'d> {
    /// The recipe (model `Wide`, Adam).
    pub config: TrainConfig,
    /// The trainer.
    pub trainer: WideTrainer<'d>,
}

impl<'d> WideSession<'d> {
    /// A fresh run of `config` (which must name the wide CNN and Adam).
    pub fn new(
        config: TrainConfig,
        train: &'d Dataset,
        threads: usize,
    ) -> Result<Self, StartError> {
        let Optimizer::Adam(adam) = config.optimizer else {
            return Err("the wide CNN trains with Adam".into());
        };
        if config.model != Model::Wide {
            return Err("not a wide-CNN recipe".into());
        }
        crate::shared::config::check_batch(config.batch, train.len())
            .map_err(|why| format!("batch {why}"))?;
        let mut trainer = WideTrainer::new(
            adam,
            config.schedule,
            config.batch,
            config.steps,
            config.seed,
            train,
            threads,
        )?;
        trainer.set_regularisation(config.augment, config.label_smoothing);
        trainer.set_conv(config.conv);
        Ok(WideSession { config, trainer })
    }

    /// Continues a checkpointed run.
    pub fn resume(run: WideRun, train: &'d Dataset, threads: usize) -> Result<Self, StartError> {
        let config = run.config;
        config
            .check()
            .map_err(|why| format!("holds an impossible recipe: {why}"))?;
        let s = &run.state;
        if config.model != Model::Wide
            || config.optimizer != Optimizer::Adam(s.adam)
            || (config.schedule, config.batch, config.steps, config.seed)
                != (s.schedule, s.batch, s.steps, s.seed)
        {
            return Err("its recipe and its trainer state disagree".into());
        }
        crate::shared::config::check_batch(config.batch, train.len())
            .map_err(|why| format!("holds an impossible recipe: batch {why}"))?;
        let mut trainer = WideTrainer::resume(run.state, train, threads)?;
        trainer.set_regularisation(config.augment, config.label_smoothing);
        trainer.set_conv(config.conv);
        Ok(WideSession { config, trainer })
    }

    /// Gives a distilled run its teachers (checked against the recipe's fingerprint).
    pub fn set_teacher(&mut self, teacher: crate::distill::Teacher) -> Result<(), String> {
        let Some(d) = self.config.distill else {
            return Err("the recipe does not distil".into());
        };
        self.trainer.set_teacher(teacher, d)
    }
}

impl Session for WideSession<'_> {
    fn config(&self) -> TrainConfig {
        self.config
    }
    fn steps_done(&self) -> u64 {
        self.trainer.steps_done()
    }
    fn train_seconds(&self) -> f64 {
        self.trainer.train_seconds()
    }
    fn step(&mut self) -> StepStats {
        self.trainer.step()
    }
    fn evaluate(&mut self, test: &Dataset) -> Evaluation {
        self.trainer.evaluate(test)
    }
    fn checkpoint(&mut self) -> Vec<u8> {
        checkpoint::encode_wide(&WideRun {
            config: self.config,
            state: self.trainer.state(),
        })
    }
    fn model_payload(&self) -> (Arch, &[u8]) {
        (Arch::Wide, bytemuck::bytes_of(self.trainer.params()))
    }
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
    trainer: &mut dyn Session,
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
