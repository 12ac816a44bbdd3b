//! `fmnist-train`: train LeNet-BN on Fashion-MNIST, resume, summarise, export, benchmark, plot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fmnist_infer::data;
use fmnist_train::config::{
    self, Conv, Model, Preset, Schedule, TrainConfig, steps_for_epochs, steps_per_epoch,
    warmup_steps,
};
use fmnist_train::distill::Teacher;
use fmnist_train::quantize::Calibration;
use fmnist_train::run::{self, RunOptions, Session};
use fmnist_train::run_dir::{Mode, RunDir};
use fmnist_train::{export, plot, registry};

mod cli;

#[derive(Parser)]
#[command(
    name = "fmnist-train",
    version,
    about = "Train LeNet-BN on Fashion-MNIST, then quantize and export it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train from scratch.
    Train {
        /// The network.
        #[arg(long, value_enum, default_value = "lenet")]
        model: Model,
        /// The recipe (each network has its own three).
        #[arg(long, value_enum, default_value = "default")]
        preset: Preset,
        /// Directory holding the four IDX files (else $FMNIST_DATA, ./data/fashion-mnist,
        /// /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Output directory for checkpoints, the log and the model.
        #[arg(long, default_value = "runs/lenet")]
        out: PathBuf,
        /// Replace the run the output directory holds (removes its checkpoints, log, model
        /// and plots first; other files stay).
        #[arg(long)]
        overwrite: bool,
        /// Seed of initialisation and data order.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Train for this many steps instead of the preset's.
        #[arg(long, conflicts_with = "epochs")]
        steps: Option<u64>,
        /// Train for this many epochs instead of the preset's.
        #[arg(long)]
        epochs: Option<u64>,
        /// Peak learning rate instead of the preset's.
        #[arg(long)]
        lr: Option<f32>,
        /// L2 weight decay added to the gradient instead of the preset's.
        #[arg(long)]
        weight_decay: Option<f32>,
        /// Images per step instead of the preset's.
        #[arg(long)]
        batch: Option<usize>,
        /// Checkpoint and test every this many steps instead of the preset's.
        #[arg(long)]
        checkpoint_every: Option<u64>,
        /// The wide CNN's second convolution in training: `winograd` (its presets' choice) or
        /// `direct` (im2col + GEMM, the arithmetic of runs before this flag). LeNet-BN takes
        /// only `direct`.
        #[arg(long, value_enum)]
        conv: Option<Conv>,
        #[command(flatten)]
        recipe: RecipeFlags,
        #[command(flatten)]
        distill: DistillFlags,
        #[command(flatten)]
        common: Common,
    },
    /// Continue a run from a checkpoint, bit-identically.
    Resume {
        /// The checkpoint to continue from.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data directory (as for `train`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Output directory (default: the checkpoint's directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The teacher models of a distilled run, again (they are checked against the run's
        /// fingerprint of them).
        #[arg(long)]
        teacher: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Fold batch norm, calibrate, quantize to int8 and write the model file; print f32 vs int8
    /// test accuracy.
    Export {
        /// Trained weights: a checkpoint, the f32 model file, or a PyTorch safetensors file.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The int8 model file to write.
        #[arg(long)]
        out: PathBuf,
        /// Also write the BN-folded f32 model (what the device runs in f32).
        #[arg(long)]
        folded_out: Option<PathBuf>,
        /// Training images used to calibrate activation ranges.
        #[arg(long, default_value_t = 2000)]
        calibration: usize,
        /// Calibration method.
        #[arg(long, value_enum, default_value = "minmax")]
        method: Method,
        /// Percentile for `--method percentile`.
        #[arg(long, default_value_t = 99.99)]
        percentile: f64,
        /// Data directory (as for `train`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print the layer table of a network.
    Summary {
        /// The network.
        #[arg(long, value_enum, default_value = "lenet")]
        model: Model,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Measure training and evaluation throughput.
    Bench {
        /// The network.
        #[arg(long, value_enum, default_value = "lenet")]
        model: Model,
        /// Data directory (as for `train`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Timed steps per repetition (1 – 100,000).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        steps: u64,
        /// Repetitions (the median is reported; 1 – 100).
        #[arg(long, default_value_t = 5, value_parser = cli::parse_count::<100>)]
        repeats: usize,
        /// Worker threads (0 = all cores; at most 256).
        #[arg(long, default_value_t = 0, value_parser = fmnist_infer::cli::parse_threads)]
        threads: usize,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw the training curves of a run's log: OUT/loss.png and OUT/accuracy.png.
    Plot {
        /// The run's JSON-lines log (train-log.jsonl).
        #[arg(long)]
        log: PathBuf,
        /// Directory for the two figures (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw the first training images as a labelled grid (PNG).
    Samples {
        /// The PNG file to write.
        #[arg(long)]
        out: PathBuf,
        /// Data directory (as for `train`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// How many images.
        #[arg(long, default_value_t = 30)]
        count: usize,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Method {
    /// Observed min/max.
    Minmax,
    /// A percentile of the observed values.
    Percentile,
    /// The clipping range with the least squared error.
    Mse,
}

/// The improvements, each overriding the preset's choice.
#[derive(clap::Args)]
struct RecipeFlags {
    /// Learning-rate schedule: `constant`, or `cosine` (linear warm-up, then cosine to 0).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Warm-up of the cosine schedule, in epochs.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Augmentation: random translation by up to N pixels (pad and random crop).
    #[arg(long)]
    shift: Option<u8>,
    /// Augmentation: mirror left-right with probability ½ (`--flip true|false`).
    #[arg(long)]
    flip: Option<bool>,
    /// Augmentation: random rotation within ± this many degrees.
    #[arg(long)]
    rotate: Option<f32>,
    /// Augmentation: Gaussian pixel noise, std as a fraction of full scale.
    #[arg(long)]
    noise: Option<f32>,
    /// Augmentation: random erasing with this probability (a rectangle of 2 – 40 % of the
    /// image filled with random pixels).
    #[arg(long)]
    erase: Option<f32>,
    /// Label smoothing ε (0 – 0.5).
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Decoupled weight decay λ (SGDW: w −= lr·λ·w each step).
    #[arg(long)]
    decoupled_decay: Option<f32>,
}

/// Knowledge distillation from trained models.
#[derive(clap::Args)]
struct DistillFlags {
    /// Distil from this trained model (an f32 model file or a checkpoint, LeNet-BN or wide);
    /// repeat to distil from the average of several.
    #[arg(long)]
    teacher: Vec<PathBuf>,
    /// Weight α of the teacher term (the label term gets 1 − α).
    #[arg(long, default_value_t = 0.9, requires = "teacher")]
    distill_weight: f32,
    /// Temperature T of the teacher term.
    #[arg(long, default_value_t = 2.0, requires = "teacher")]
    distill_temperature: f32,
}

impl DistillFlags {
    /// Loads the teachers and writes their part of the recipe into `cfg`.
    fn apply(&self, cfg: &mut TrainConfig) -> Result<Option<Teacher>, cli::CliError> {
        if self.teacher.is_empty() {
            return Ok(None);
        }
        let (a, t) = (self.distill_weight, self.distill_temperature);
        if !(a.is_finite() && (0.0..=1.0).contains(&a)) {
            return Err(cli::CliError::bad(format!(
                "--distill-weight must be between 0 and 1, got {a}"
            )));
        }
        if !(t.is_finite() && t > 0.0 && t <= fmnist_train::config::MAX_TEMPERATURE) {
            return Err(cli::CliError::bad(format!(
                "--distill-temperature must be in (0, {}], got {t}",
                fmnist_train::config::MAX_TEMPERATURE
            )));
        }
        let teacher = export::read_teachers(&self.teacher)?;
        cfg.distill = Some(teacher.recipe(a, t));
        Ok(Some(teacher))
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScheduleArg {
    Constant,
    Cosine,
}

impl RecipeFlags {
    /// Applies the flags to `cfg` (`epoch` = steps per epoch).
    fn apply(&self, cfg: &mut TrainConfig, epoch: u64) -> Result<(), cli::CliError> {
        match self.schedule {
            Some(ScheduleArg::Constant) => cfg.schedule = Schedule::Constant,
            Some(ScheduleArg::Cosine) => {
                cfg.schedule = Schedule::Cosine {
                    warmup_steps: warmup_steps(self.warmup, epoch).map_err(cli::CliError::bad)?,
                    final_fraction: 0.0,
                }
            }
            None => {}
        }
        let a = &mut cfg.augment;
        if let Some(v) = self.shift {
            a.shift = v;
        }
        if let Some(v) = self.flip {
            a.flip = v;
        }
        if let Some(v) = self.rotate {
            a.rotate_deg = v;
        }
        if let Some(v) = self.noise {
            a.noise = v;
        }
        if let Some(v) = self.erase {
            a.erase = v;
        }
        a.validate().map_err(cli::CliError::bad)?;
        if let Some(e) = self.label_smoothing {
            if !(e.is_finite() && (0.0..=0.5).contains(&e)) {
                return Err(cli::CliError::bad(format!(
                    "--label-smoothing must be between 0 and 0.5, got {e}"
                )));
            }
            cfg.label_smoothing = e;
        }
        if let Some(d) = self.decoupled_decay {
            if !(d.is_finite() && (0.0..1.0).contains(&d)) {
                return Err(cli::CliError::bad(format!(
                    "--decoupled-decay must be between 0 and 1, got {d}"
                )));
            }
            *cfg.optimizer.decoupled_decay_mut() = d;
        }
        Ok(())
    }
}

#[derive(clap::Args)]
struct Common {
    /// Worker threads (0 = all cores; at most 256). Results depend only on the seed, not on
    /// this.
    #[arg(long, default_value_t = 0, value_parser = fmnist_infer::cli::parse_threads)]
    threads: usize,
    /// Print one JSON object at the end (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Plain progress line every N steps (when stdout is not a terminal).
    #[arg(long, default_value_t = 100)]
    print_every: u64,
    /// Checkpoints of this run to keep on disk (the newest by step).
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Do not write TensorBoard events (OUT/events.out.tfevents.fmnist-train); the JSON log
    /// and the plots are written either way.
    #[arg(long)]
    no_tensorboard: bool,
}

fn threads(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

/// The teachers a resumed run needs: none for a run that does not distil, else the `--teacher`
/// files given again (checked against the run's fingerprint by the caller).
fn teachers_again(
    distill: Option<fmnist_train::config::Distill>,
    paths: &[PathBuf],
) -> Result<Option<Teacher>, String> {
    match (distill, paths.is_empty()) {
        (None, true) => Ok(None),
        (None, false) => Err("does not distil; resume it without --teacher".into()),
        (Some(d), true) => Err(format!(
            "distils from {} teacher model(s); pass them again with --teacher",
            d.teachers
        )),
        (Some(_), false) => export::read_teachers(paths).map(Some).map_err(|e| e.0),
    }
}

fn main() -> ExitCode {
    match real_main(fmnist_infer::cli::parse_args()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn real_main(cli: Cli) -> Result<(), cli::CliError> {
    match cli.command {
        Command::Train {
            model,
            preset,
            data,
            out,
            overwrite,
            seed,
            steps,
            epochs,
            lr,
            weight_decay,
            batch,
            checkpoint_every,
            conv,
            recipe,
            distill,
            common,
        } => {
            if let Some(c) = conv {
                registry::check_conv(model, c)
                    .map_err(|why| cli::CliError::bad(format!("--{why}")))?;
            }
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            let mut cfg = preset.config_for(model, train.len(), seed);
            cfg.batch = batch.unwrap_or(cfg.batch);
            config::check_batch(cfg.batch, train.len()).map_err(|why| match batch {
                Some(_) => cli::CliError::bad(format!("--batch {why}")),
                None => cli::CliError::bad(format!("the preset's batch {why}; give --batch")),
            })?;
            if let Some(b) = batch {
                cfg.checkpoint_every = steps_per_epoch(train.len(), b);
            }
            let epoch = steps_per_epoch(train.len(), cfg.batch);
            if let Some(wd) = weight_decay {
                if !(wd.is_finite() && wd >= 0.0) {
                    return Err(cli::CliError::bad(format!(
                        "--weight-decay must be a number ≥ 0, got {wd}"
                    )));
                }
                *cfg.optimizer.weight_decay_mut() = wd;
            }
            if let Some(s) = steps {
                cfg.steps = s;
            }
            if let Some(e) = epochs {
                cfg.steps = steps_for_epochs(e, epoch).map_err(cli::CliError::bad)?;
            }
            if let Some(lr) = lr {
                if !(lr.is_finite() && lr > 0.0) {
                    return Err(cli::CliError::bad(format!(
                        "--lr must be a positive number, got {lr}"
                    )));
                }
                *cfg.optimizer.lr_mut() = lr;
            }
            if let Some(c) = checkpoint_every {
                cfg.checkpoint_every = c;
            }
            if let Some(c) = conv {
                cfg.conv = c;
            }
            recipe.apply(&mut cfg, epoch)?;
            let teacher = distill.apply(&mut cfg)?;
            if cfg.steps == 0 || cfg.checkpoint_every == 0 {
                return Err(cli::CliError::bad(
                    "--steps, --epochs and --checkpoint-every must be at least 1",
                ));
            }
            // The check `resume` runs on a checkpoint's recipe: a new run must pass it too (the
            // flag checks above give the flag-specific messages first).
            cfg.check()
                .map_err(|why| cli::CliError::bad(format!("the recipe cannot run: {why}")))?;
            let threads = threads(common.threads);
            let mut session = run::start(cfg, &train, threads).map_err(cli::start_error(None))?;
            if let Some(t) = teacher {
                session.set_teacher(t).map_err(cli::CliError::bad)?;
            }
            finish(
                &mut *session,
                &test,
                threads,
                &out,
                Some(overwrite),
                &common,
            )
        }
        Command::Resume {
            checkpoint,
            data,
            out,
            teacher,
            common,
        } => {
            let saved = run::load_checkpoint(&checkpoint).map_err(cli::bad_input)?;
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            let out = out.unwrap_or_else(|| fmnist_train::run_dir::folder_of(&checkpoint));
            let threads = threads(common.threads);
            let refuse =
                |why: String| cli::CliError::bad(format!("{}: {why}", checkpoint.display()));
            let distill = saved.config().distill;
            let mut session = saved
                .resume(&train, threads)
                .map_err(cli::start_error(Some(&checkpoint)))?;
            if let Some(t) = teachers_again(distill, &teacher).map_err(refuse)? {
                session.set_teacher(t).map_err(refuse)?;
            }
            finish(&mut *session, &test, threads, &out, None, &common)
        }
        Command::Export {
            checkpoint,
            out,
            folded_out,
            calibration,
            method,
            percentile,
            data,
            json,
        } => {
            let paths = export::ExportPaths {
                weights: &checkpoint,
                out: &out,
                folded_out: folded_out.as_deref(),
            };
            paths.check()?;
            let weights = export::read_weights(&checkpoint)?;
            let method = match method {
                Method::Minmax => Calibration::MinMax,
                Method::Mse => Calibration::Mse,
                Method::Percentile => {
                    if !(50.0..=100.0).contains(&percentile) {
                        return Err(cli::CliError::bad(format!(
                            "--percentile must be between 50 and 100, got {percentile}"
                        )));
                    }
                    Calibration::Percentile(percentile)
                }
            };
            if calibration == 0 {
                return Err(cli::CliError::bad("--calibration must be at least 1"));
            }
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            let r = export::export_any(&weights, &train, &test, calibration, method, paths)?;
            if json {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
            } else {
                println!(
                    "f32 {:.2} %  folded f32 {:.2} %  int8 {:.2} %  ({:+.2} points, {} calibration on {} images)",
                    100.0 * r.f32_accuracy,
                    100.0 * r.folded_accuracy,
                    100.0 * r.int8_accuracy,
                    r.delta_points,
                    r.method,
                    r.calibration_images
                );
                println!("wrote {} ({} bytes)", r.out.display(), r.bytes);
                if let Some(f) = &r.folded_out {
                    println!("wrote {}", f.display());
                }
            }
            Ok(())
        }
        Command::Summary { model, json } => {
            cli::print_summary(model, json);
            Ok(())
        }
        Command::Bench {
            model,
            data,
            steps,
            repeats,
            threads: n,
            json,
        } => {
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            cli::bench(model, &train, &test, steps, repeats, threads(n), json)
        }
        Command::Plot { log, out, json } => {
            let r = plot::curves::plot(&log, &out)?;
            if json {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
            } else {
                println!(
                    "{} steps, {} evaluations: wrote {} and {}",
                    r.steps,
                    r.evaluations,
                    r.loss.display(),
                    r.accuracy.display()
                );
            }
            Ok(())
        }
        Command::Samples {
            out,
            data,
            count,
            json,
        } => {
            let r = plot::samples::samples(data.as_deref(), &out, count)?;
            if json {
                println!("{}", serde_json::to_string(&r).expect("report serializes"));
            } else {
                println!(
                    "wrote {} ({} images, {}x{} pixels)",
                    r.out.display(),
                    r.images,
                    r.size.0,
                    r.size.1
                );
            }
            Ok(())
        }
    }
}

/// Claims `out` — for a new run (`train`) when `overwrite` is `Some`, else to continue the
/// trainer's run (`resume`) — and trains to the end.
fn finish(
    trainer: &mut dyn Session,
    test: &data::Dataset,
    threads: usize,
    out: &std::path::Path,
    overwrite: Option<bool>,
    common: &Common,
) -> Result<(), cli::CliError> {
    let mode = match overwrite {
        Some(overwrite) => Mode::Train { overwrite },
        None => Mode::Resume(trainer.config()),
    };
    let dir = RunDir::claim(out, mode)?;
    let opts = RunOptions {
        json: common.json,
        print_every: common.print_every.max(1),
        keep: common.keep.max(1),
        tensorboard: !common.no_tensorboard,
    };
    let summary = run::run(trainer, test, threads, &dir, &opts).map_err(cli::CliError::other)?;
    if common.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("summary serializes")
        );
    } else {
        // The conv algorithm fixes a wide run's arithmetic (checkpoints older than format 5
        // resume with direct): name it.
        let conv = match registry::names_conv(summary.config.model) {
            true => format!(", conv {}", summary.config.conv.name()),
            false => String::new(),
        };
        println!(
            "test accuracy {:.2} %, {:.0} images/s, {:.1} s{conv}; model {}",
            100.0 * summary.test_accuracy,
            summary.images_per_second,
            summary.wall_seconds,
            summary.model.display()
        );
    }
    Ok(())
}
