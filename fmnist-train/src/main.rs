//! `fmnist-train`: train LeNet-BN on Fashion-MNIST, resume, summarise, export, benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fmnist_train::config::{Preset, steps_per_epoch};
use fmnist_train::quantize::Calibration;
use fmnist_train::run::{RunOptions, run};
use fmnist_train::trainer::Trainer;
use fmnist_train::{checkpoint, cli, data, export};

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
        /// The recipe.
        #[arg(long, value_enum, default_value = "default")]
        preset: Preset,
        /// Directory holding the four IDX files (else $FMNIST_DATA, ./data/fashion-mnist,
        /// /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Output directory for checkpoints, the log and the model.
        #[arg(long, default_value = "runs/lenet")]
        out: PathBuf,
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
        #[command(flatten)]
        common: Common,
    },
    /// Fold batch norm, calibrate, quantize to int8 and write the model file; print f32 vs int8
    /// test accuracy.
    Export {
        /// Trained weights: a checkpoint, the f32 model file (LeNet-BN or the wide CNN), or a
        /// PyTorch safetensors file of LeNet-BN.
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
    /// Print the layer table of LeNet-BN.
    Summary {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Measure training and evaluation throughput.
    Bench {
        /// Data directory (as for `train`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Timed steps per repetition.
        #[arg(long, default_value_t = 200)]
        steps: u64,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Worker threads (0 = all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
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

#[derive(clap::Args)]
struct Common {
    /// Worker threads (0 = all cores). Results depend only on the seed, not on this.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print one JSON object at the end (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Plain progress line every N steps (when stdout is not a terminal).
    #[arg(long, default_value_t = 100)]
    print_every: u64,
    /// Checkpoints to keep on disk (newest first).
    #[arg(long, default_value_t = 3)]
    keep: usize,
}

fn threads(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

fn main() -> ExitCode {
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

fn real_main(cli: Cli) -> Result<(), cli::CliError> {
    match cli.command {
        Command::Train {
            preset,
            data,
            out,
            seed,
            steps,
            epochs,
            lr,
            weight_decay,
            batch,
            checkpoint_every,
            common,
        } => {
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            let mut cfg = preset.config(train.len(), seed);
            if let Some(b) = batch {
                if b == 0 || b > train.len() {
                    return Err(cli::CliError::bad(format!(
                        "--batch must be between 1 and {}, got {b}",
                        train.len()
                    )));
                }
                cfg.batch = b;
                cfg.checkpoint_every = steps_per_epoch(train.len(), b);
            }
            let epoch = steps_per_epoch(train.len(), cfg.batch);
            if let Some(wd) = weight_decay {
                if !(wd.is_finite() && wd >= 0.0) {
                    return Err(cli::CliError::bad(format!(
                        "--weight-decay must be a number ≥ 0, got {wd}"
                    )));
                }
                cfg.sgd.weight_decay = wd;
            }
            if let Some(s) = steps {
                cfg.steps = s;
            }
            if let Some(e) = epochs {
                cfg.steps = e * epoch;
            }
            if let Some(lr) = lr {
                if !(lr.is_finite() && lr > 0.0) {
                    return Err(cli::CliError::bad(format!(
                        "--lr must be a positive number, got {lr}"
                    )));
                }
                cfg.sgd.lr = lr;
            }
            if let Some(c) = checkpoint_every {
                cfg.checkpoint_every = c;
            }
            if cfg.steps == 0 || cfg.checkpoint_every == 0 {
                return Err(cli::CliError::bad(
                    "--steps, --epochs and --checkpoint-every must be at least 1",
                ));
            }
            let threads = threads(common.threads);
            let mut trainer = Trainer::new(cfg, &train, threads);
            finish(&mut trainer, &test, threads, out, &common)
        }
        Command::Resume {
            checkpoint,
            data,
            out,
            common,
        } => {
            let state = checkpoint::load(&checkpoint).map_err(cli::bad_input)?;
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            let out =
                out.unwrap_or_else(|| checkpoint.parent().map(PathBuf::from).unwrap_or_default());
            let threads = threads(common.threads);
            let mut trainer = Trainer::resume(state, &train, threads)
                .map_err(|why| cli::CliError::bad(format!("{}: {why}", checkpoint.display())))?;
            finish(&mut trainer, &test, threads, out, &common)
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
            let weights = export::read_any_f32_weights(&checkpoint)?;
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
            let r = match &weights {
                export::F32Weights::LeNet(w) => export::export(
                    w,
                    &train,
                    &test,
                    calibration,
                    method,
                    &out,
                    folded_out.as_deref(),
                )?,
                export::F32Weights::Wide(w) => export::export_wide(
                    w,
                    &train,
                    &test,
                    calibration,
                    method,
                    &out,
                    folded_out.as_deref(),
                )?,
            };
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
        Command::Summary { json } => {
            cli::print_summary(json);
            Ok(())
        }
        Command::Bench {
            data,
            steps,
            repeats,
            threads: n,
            json,
        } => {
            let (train, test) = data::load_both(data.as_deref()).map_err(cli::bad_input)?;
            cli::bench(&train, &test, steps, repeats.max(1), threads(n), json);
            Ok(())
        }
    }
}

fn finish(
    trainer: &mut Trainer,
    test: &data::Dataset,
    threads: usize,
    out: PathBuf,
    common: &Common,
) -> Result<(), cli::CliError> {
    let opts = RunOptions {
        out,
        json: common.json,
        print_every: common.print_every.max(1),
        keep: common.keep.max(1),
    };
    let summary = run(trainer, test, threads, &opts).map_err(cli::CliError::other)?;
    if common.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("summary serializes")
        );
    } else {
        println!(
            "test accuracy {:.2} %, {:.0} images/s, {:.1} s; model {}",
            100.0 * summary.test_accuracy,
            summary.images_per_second,
            summary.wall_seconds,
            summary.model.display()
        );
    }
    Ok(())
}
