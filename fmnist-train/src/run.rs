//! Running a training job: steps, logs, progress, checkpoints, evaluation, the final model.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fmnist_core::format::{Arch, Kind};

use crate::checkpoint::{self, WideRun};
use crate::config::{Model, Optimizer, TrainConfig};
use crate::data::Dataset;
use crate::trainer::{Evaluation, StartError, StepStats, Trainer};
use crate::wide_trainer::WideTrainer;

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
        crate::config::check_batch(config.batch, train.len())
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
        crate::config::check_batch(config.batch, train.len())
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

/// Where and how a run reports.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output directory (checkpoints, log, model).
    pub out: PathBuf,
    /// Machine-readable output only on stdout; progress goes to stderr.
    pub json: bool,
    /// Print a plain progress line every this many steps (when not drawing a bar).
    pub print_every: u64,
    /// Checkpoints kept on disk (the newest ones).
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
    pub config: crate::config::TrainConfig,
}

/// Why a run stopped early.
#[derive(Debug)]
pub enum RunError {
    /// Writing an output failed (disk full, read-only directory...). Earlier files are intact.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Io(p, e) => write!(f, "{}: {e}", p.display()),
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

/// `x` with 6 decimals, or `null` when it is not finite (a diverged run's loss): the log stays
/// valid JSON.
fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        "null".into()
    }
}

/// The checkpoint file name for `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step:07}.fmck")
}

/// The newest checkpoint in `dir`, by step number.
pub fn newest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut all = list_checkpoints(dir);
    all.pop()
}

fn list_checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("checkpoint-") && n.ends_with(".fmck"))
        })
        .collect();
    v.sort();
    v
}

/// Removes temp files a killed run left behind (`.NAME.PID.tmp`, see `atomic`): the files they
/// were meant to replace are intact.
fn remove_stale_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Drops log lines of steps after `step` (they belong to a run that was cut short).
fn truncate_log(log: &Path, step: u64) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::atomic::write_atomic(log, kept.as_bytes())
}

/// Runs `trainer` to its configured number of steps.
pub fn run(
    trainer: &mut dyn Session,
    test: &Dataset,
    threads: usize,
    opts: &RunOptions,
) -> Result<RunSummary, RunError> {
    let start = Instant::now();
    let io = |p: &Path| {
        let p = p.to_owned();
        move |e| RunError::Io(p, e)
    };
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    remove_stale_temp_files(&opts.out);
    let log_path = opts.out.join("train-log.jsonl");
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
    let mut newest = newest_checkpoint(&opts.out).unwrap_or_default();
    let mut last_acc = f64::NAN;
    while trainer.steps_done() < total {
        let st = trainer.step();
        let step = trainer.steps_done();
        writeln!(
            log,
            r#"{{"time":"{}","step":{step},"total":{total},"loss":{},"accuracy":{:.6},"lr":{:.6e}}}"#,
            timestamp(),
            json_number(st.loss),
            st.accuracy,
            st.lr
        )
        .map_err(io(&log_path))?;
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
            let e = trainer.evaluate(test);
            last_acc = e.accuracy;
            evaluations.push((step, e.accuracy));
            let bytes = trainer.checkpoint();
            let path = opts.out.join(checkpoint_name(step));
            // The log up to this step is flushed before the checkpoint that covers it exists.
            log.flush().map_err(io(&log_path))?;
            crate::atomic::write_atomic(&path, &bytes).map_err(io(&path))?;
            newest = path.clone();
            writeln!(
                log,
                r#"{{"time":"{}","step":{step},"total":{total},"test_accuracy":{:.6},"test_loss":{},"checkpoint":{}}}"#,
                timestamp(),
                e.accuracy,
                json_number(e.loss),
                serde_json::to_string(&path).expect("path serializes")
            )
            .map_err(io(&log_path))?;
            log.flush().map_err(io(&log_path))?;
            say(&format!(
                "{}, Step: {step}/{total}, Test accuracy: {:.2} %, checkpoint {}",
                timestamp(),
                100.0 * e.accuracy,
                path.display()
            ));
            let all = list_checkpoints(&opts.out);
            for old in all.iter().take(all.len().saturating_sub(opts.keep)) {
                let _ = std::fs::remove_file(old);
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if last_acc.is_nan() {
        // Resumed at the end: evaluate what is there.
        last_acc = trainer.evaluate(test).accuracy;
    }
    let model = opts.out.join("model.fmnm");
    let (arch, payload) = trainer.model_payload();
    crate::modelio::write_model(&model, arch, Kind::F32, payload).map_err(|e| match e {
        crate::modelio::ModelIoError::Io(p, e) => RunError::Io(p, e),
        crate::modelio::ModelIoError::Format(p, e) => {
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
        checkpoint: newest,
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

#[cfg(test)]
mod tests {
    #[test]
    fn non_finite_losses_are_logged_as_null() {
        assert_eq!(super::json_number(0.25), "0.250000");
        assert_eq!(super::json_number(f64::NAN), "null");
        assert_eq!(super::json_number(f64::INFINITY), "null");
    }
}
