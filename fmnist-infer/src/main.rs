//! The `fmnist-infer` command line: eval, confusion, predict, golden, convert, bench.
//!
//! Errors go to stderr as one `error: <file>: <problem>` line; the exit code is 2 for bad input
//! (missing, unreadable, corrupt or foreign files, bad arguments) and 1 for other failures.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fmnist_core::CLASS_NAMES;
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_infer::bench::{self, ModelBench};
use fmnist_infer::data::{self, Split};
use fmnist_infer::error::{Error, Result};
use fmnist_infer::int8::Kernel;
use fmnist_infer::preprocess::{self, Invert};
use fmnist_infer::{Model, confusion, eval, golden};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "fmnist-infer",
    version,
    about = "Run fmnist models on the host: evaluate, predict images, write golden outputs, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum InvertArg {
    /// Negate when the image border is mostly light.
    Auto,
    /// Always negate (dark object on a light background).
    Yes,
    /// Never negate (light object on a dark background).
    No,
}

#[derive(Subcommand)]
enum Command {
    /// Accuracy, per-class accuracy and confusion matrix on the 10,000 test images.
    Eval {
        /// Model file: FMNM (f32, f32 BN-folded, int8) or PyTorch-named .safetensors. Give it
        /// more than once to evaluate the ensemble (mean of the models' logits).
        #[arg(long, required = true)]
        model: Vec<PathBuf>,
        /// Fashion-MNIST directory (default: $FMNIST_DATA, ./data/fashion-mnist, /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: one per core; at most 256).
        #[arg(long, value_parser = fmnist_infer::cli::parse_threads)]
        threads: Option<usize>,
        /// Test-time augmentation: `mirror` averages each model's logits over the image and its
        /// left–right mirror (for models trained with `--flip true`; twice the work).
        #[arg(long, value_enum, default_value = "none")]
        tta: eval::Tta,
        /// f32 kernel: auto (the fastest this CPU has), portable (the device's code), avx2 or
        /// avx512 (x86-64, LeNet-BN); int8 models ignore it. All give the same bits.
        #[arg(long, value_enum, default_value = "auto")]
        f32_kernel: fmnist_infer::F32Kernel,
        /// int8 kernel: portable, avx2, avx-vnni, avx512-vnni (default: $FMNIST_INT8_KERNEL,
        /// else the fastest this CPU runs); all give the same bits.
        #[arg(long, value_parser = fmnist_infer::int8::parse_kernel)]
        int8_kernel: Option<Kernel>,
    },
    /// Evaluate like `eval`, print its report and draw the confusion matrix as a PNG heat map.
    Confusion {
        /// Model file (f32, f32 BN-folded, int8 or .safetensors).
        #[arg(long)]
        model: PathBuf,
        /// The PNG file to write.
        #[arg(long)]
        png: PathBuf,
        /// Fashion-MNIST directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print one JSON object (the `eval --json` report plus `png`).
        #[arg(long)]
        json: bool,
        /// Worker threads (default: one per core; at most 256).
        #[arg(long, value_parser = fmnist_infer::cli::parse_threads)]
        threads: Option<usize>,
    },
    /// Classify PNG or JPEG images: top 3 classes with probabilities.
    Predict {
        /// Model file (f32, f32 BN-folded, int8 or .safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Negate the image so the object is light on dark: auto decides from the border.
        #[arg(long, value_enum, default_value = "auto")]
        invert: InvertArg,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Also write the 28x28 input the model saw as <DIR>/<image stem>.28x28.png.
        #[arg(long, value_name = "DIR")]
        save_input: Option<PathBuf>,
        /// Images (PNG or JPEG, any size, grey or colour).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Write the logits and predicted class of every test image (the firmware's reference).
    Golden {
        /// Model file (int8 gives i8 logits, f32 gives f32 logits).
        #[arg(long)]
        model: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Fashion-MNIST directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
        /// f32 kernel: auto (the fastest this CPU has), portable (the device's code), avx2 or
        /// avx512 (x86-64, LeNet-BN); int8 models ignore it. All give the same bits.
        #[arg(long, value_enum, default_value = "auto")]
        f32_kernel: fmnist_infer::F32Kernel,
    },
    /// Write a model in another format: FMNM, safetensors (PyTorch state_dict) or ONNX.
    Convert {
        /// Model file: FMNM (any kind), PyTorch-named .safetensors or .onnx.
        #[arg(long)]
        model: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Output format (default: from --out's extension: .fmnm, .safetensors, .onnx).
        #[arg(long, value_enum)]
        format: Option<fmnist_infer::convert::Format>,
    },
    /// Single-thread, batch-1 images/s of the forward pass next to the naive reference.
    Bench {
        /// Model file(s); repeat to benchmark an f32 and an int8 model in one run.
        #[arg(long, required = true)]
        model: Vec<PathBuf>,
        /// Seconds per model (split between the fast and the reference kernel).
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Fashion-MNIST directory (the test images are the inputs; synthetic images if absent).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// f32 kernel: auto (the fastest this CPU has), portable (the device's code), avx2 or
        /// avx512 (x86-64, LeNet-BN); int8 models ignore it. All give the same bits.
        #[arg(long, value_enum, default_value = "auto")]
        f32_kernel: fmnist_infer::F32Kernel,
        /// int8 kernel: portable, avx2, avx-vnni, avx512-vnni (default: $FMNIST_INT8_KERNEL,
        /// else the fastest this CPU runs); all give the same bits.
        #[arg(long, value_parser = fmnist_infer::int8::parse_kernel)]
        int8_kernel: Option<Kernel>,
    },
}

/// Loads the models, f32 ones set to run `kernel`, int8 ones on `int8_kernel` when given.
fn load_models(
    paths: &[PathBuf],
    kernel: fmnist_infer::F32Kernel,
    int8_kernel: Option<Kernel>,
) -> Result<Vec<Model>> {
    paths
        .iter()
        .map(|p| {
            let mut m = Model::load(p)?;
            m.set_f32_kernel(kernel)?;
            if let Some(k) = int8_kernel {
                m.set_int8_kernel(k);
            }
            Ok(m)
        })
        .collect()
}

fn load_test(dir: Option<&Path>) -> Result<data::Dataset> {
    let dir = data::locate_splits(dir, &[Split::Test])?;
    Ok(data::load(&dir, Split::Test)?)
}

/// An f32 as a JSON number written with its own shortest digits (0.1, not 0.10000000149011612),
/// however this binary was built: `json!` widens an f32 to f64, whose digits it prints, unless
/// another crate in the build turned on serde_json's `arbitrary_precision`, which prints the
/// f32's. Going through the f32's shortest decimal makes both builds print the same.
fn json_f32(x: f32) -> serde_json::Value {
    match x.to_string().parse::<f64>() {
        Ok(v) if v.is_finite() => json!(v),
        _ => serde_json::Value::Null,
    }
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialise")
    );
}

/// Loads the models and the test set, and evaluates the model (or, given several, their
/// ensemble): what `eval` and `confusion` report.
fn evaluate_files(
    paths: &[PathBuf],
    tta: eval::Tta,
    data_dir: Option<&Path>,
    threads: Option<usize>,
    kernel: fmnist_infer::F32Kernel,
    int8_kernel: Option<Kernel>,
) -> Result<eval::EvalReport> {
    let models = load_models(paths, kernel, int8_kernel)?;
    let test = load_test(data_dir)?;
    let threads = threads.unwrap_or(0);
    match (&models[..], tta) {
        ([model], eval::Tta::None) => eval::evaluate(model, &test.images, &test.labels, threads),
        _ => eval::evaluate_ensemble(&models, tta, &test.images, &test.labels, threads),
    }
}

fn cmd_eval(
    paths: &[PathBuf],
    tta: eval::Tta,
    data_dir: Option<&Path>,
    json: bool,
    threads: Option<usize>,
    kernel: fmnist_infer::F32Kernel,
    int8_kernel: Option<Kernel>,
) -> Result<()> {
    let report = evaluate_files(paths, tta, data_dir, threads, kernel, int8_kernel)?;
    if json {
        print_json(&serde_json::to_value(&report).expect("report serialises"));
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn cmd_confusion(
    model: &Path,
    png: &Path,
    data_dir: Option<&Path>,
    json: bool,
    threads: Option<usize>,
) -> Result<()> {
    confusion::check_output(png, model)?;
    let report = evaluate_files(
        std::slice::from_ref(&model.to_path_buf()),
        eval::Tta::None,
        data_dir,
        threads,
        fmnist_infer::F32Kernel::Auto,
        None,
    )?;
    confusion::write_png(&report, png)?;
    if json {
        let mut v = serde_json::to_value(&report).expect("report serialises");
        v["png"] = json!(png.display().to_string());
        print_json(&v);
    } else {
        print!("{}", report.to_text());
        println!("\nwrote {}", png.display());
    }
    Ok(())
}

fn cmd_predict(
    model: &Path,
    invert: InvertArg,
    json: bool,
    save_input: Option<&Path>,
    images: &[PathBuf],
) -> Result<()> {
    let model = Model::load(model)?;
    let invert = match invert {
        InvertArg::Auto => Invert::Auto,
        InvertArg::Yes => Invert::Yes,
        InvertArg::No => Invert::No,
    };
    let saved = save_input
        .map(|dir| preprocess::saved_inputs(dir, images))
        .transpose()?;
    // Read every image first: a bad one fails the command before anything is printed.
    let prepared = images
        .iter()
        .map(|p| preprocess::prepare_file(p, invert))
        .collect::<Result<Vec<_>>>()?;
    if let Some(dests) = &saved {
        preprocess::save_inputs(dests, &prepared)?;
    }
    let mut out = Vec::new();
    for (path, prep) in images.iter().zip(&prepared) {
        let probs = model.probabilities(&prep.pixels);
        let mut order: Vec<usize> = (0..10).collect();
        // Descending probability, ties to the lower label.
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top: Vec<_> = order[..3]
            .iter()
            .map(|&c| json!({"label": c, "class": CLASS_NAMES[c], "probability": json_f32(probs[c])}))
            .collect();
        if !json {
            println!(
                "{}: {} ({}x{}{})",
                path.display(),
                CLASS_NAMES[order[0]],
                prep.source_size.0,
                prep.source_size.1,
                if prep.inverted { ", inverted" } else { "" }
            );
            for (rank, &c) in order[..3].iter().enumerate() {
                println!(
                    "  {}. {:<12} {:6.2} %",
                    rank + 1,
                    CLASS_NAMES[c],
                    100.0 * probs[c]
                );
            }
        }
        out.push(json!({
            "image": path.display().to_string(),
            "inverted": prep.inverted,
            "source_size": [prep.source_size.0, prep.source_size.1],
            "bbox": [prep.bbox.0, prep.bbox.1, prep.bbox.2, prep.bbox.3],
            "top": top,
        }));
    }
    if json {
        print_json(&json!({
            "model": model.path.display().to_string(),
            "kind": model.kind.name(),
            "predictions": out,
        }));
    }
    Ok(())
}

fn cmd_golden(
    model: &Path,
    out: &Path,
    data_dir: Option<&Path>,
    json: bool,
    kernel: fmnist_infer::F32Kernel,
) -> Result<()> {
    fmnist_infer::outputs::check(&[("--out", out)], &[("--model", model)])?;
    let model = load_models(&[model.to_path_buf()], kernel, None)?.remove(0);
    let test = load_test(data_dir)?;
    let bytes = golden::write(&model, &test.images, out)?;
    let logits = if model.kind.is_int8() { "int8" } else { "f32" };
    if json {
        print_json(&json!({
            "out": out.display().to_string(),
            "model": model.path.display().to_string(),
            "kind": model.kind.name(),
            "logits": logits,
            "images": test.images.len(),
            "bytes": bytes,
            "model_crc": format!("{:#010x}", model.crc),
        }));
    } else {
        println!(
            "{}: {} images, {logits} logits, {bytes} bytes (model {} CRC {:#010x})",
            out.display(),
            test.images.len(),
            model.path.display(),
            model.crc
        );
    }
    Ok(())
}

/// Deterministic stand-in images when the data set is not available.
fn synthetic_images() -> Vec<[u8; IMAGE_PIXELS]> {
    let mut s = 0x2545_f491u32;
    (0..1000)
        .map(|_| {
            std::array::from_fn(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 24) as u8
            })
        })
        .collect()
}

fn cmd_bench(
    models: &[PathBuf],
    seconds: f64,
    data_dir: Option<&Path>,
    json: bool,
    kernel: fmnist_infer::F32Kernel,
    int8_kernel: Option<Kernel>,
) -> Result<()> {
    if !(seconds > 0.0 && seconds <= bench::MAX_SECONDS) {
        return Err(Error::bad_msg(format!(
            "--seconds must be positive and at most {}, got {seconds:?}",
            bench::MAX_SECONDS
        )));
    }
    let models = load_models(models, kernel, int8_kernel)?;
    let (images, source) = match load_test(data_dir) {
        Ok(t) => (t.images, "Fashion-MNIST test set"),
        Err(e) if data_dir.is_some() => return Err(e),
        Err(_) => (synthetic_images(), "synthetic images (data set not found)"),
    };
    let results: Vec<ModelBench> = models
        .iter()
        .map(|m| bench::bench_model(m, &images, seconds))
        .collect();
    if json {
        print_json(&json!({
            "threads": 1,
            "batch": 1,
            "inputs": source,
            "repetitions": bench::REPS,
            "results": results,
        }));
    } else {
        println!("inputs: {source}");
        for r in &results {
            print!("{}", r.to_text());
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval {
            model,
            data,
            json,
            threads,
            tta,
            f32_kernel: kernel,
            int8_kernel,
        } => cmd_eval(
            &model,
            tta,
            data.as_deref(),
            json,
            threads,
            kernel,
            int8_kernel,
        ),
        Command::Confusion {
            model,
            png,
            data,
            json,
            threads,
        } => cmd_confusion(&model, &png, data.as_deref(), json, threads),
        Command::Predict {
            model,
            invert,
            json,
            save_input,
            images,
        } => cmd_predict(&model, invert, json, save_input.as_deref(), &images),
        Command::Golden {
            model,
            out,
            data,
            json,
            f32_kernel: kernel,
        } => cmd_golden(&model, &out, data.as_deref(), json, kernel),
        Command::Convert { model, out, format } => {
            let c = fmnist_infer::convert::convert(&model, &out, format)?;
            println!("{}", c.to_text(&model, &out));
            Ok(())
        }
        Command::Bench {
            model,
            seconds,
            data,
            json,
            f32_kernel: kernel,
            int8_kernel,
        } => cmd_bench(&model, seconds, data.as_deref(), json, kernel, int8_kernel),
    }
}

fn main() -> ExitCode {
    let cli: Cli = fmnist_infer::cli::parse_args();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f32_prints_its_own_shortest_digits() {
        for (x, text) in [
            (0.1f32, "0.1"),
            (0.987_654_3, "0.9876543"),
            (1.0, "1.0"),
            (1e-7, "1e-7"),
        ] {
            assert_eq!(serde_json::to_string(&json_f32(x)).unwrap(), text);
        }
        assert_eq!(json_f32(f32::NAN), serde_json::Value::Null);
    }
}
