//! Pieces of the command-line tool: errors and exit codes, the summary table, the benchmark.

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Instant;

use fmnist_core::lenet::LeNetParams;
use fmnist_core::wide::WideParams;
use fmnist_infer::cli::thousands;
use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use crate::config::{Model, Preset};
use crate::trainer::{StartError, Trainer, evaluate_with};

/// An error for the user: exit code 2 for bad input, 1 for anything else.
#[derive(Debug)]
pub struct CliError {
    /// The message (one line, naming the file and the problem).
    pub message: String,
    /// True when the input was at fault.
    pub bad_input: bool,
}

impl CliError {
    /// Bad input (exit 2).
    pub fn bad(m: impl Display) -> Self {
        CliError {
            message: m.to_string(),
            bad_input: true,
        }
    }

    /// Another failure (exit 1).
    pub fn other(m: impl Display) -> Self {
        CliError {
            message: m.to_string(),
            bad_input: false,
        }
    }

    /// Prints the message on stderr and returns the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(if self.bad_input { 2 } else { 1 })
    }
}

impl From<fmnist_infer::outputs::OutputError> for CliError {
    fn from(e: fmnist_infer::outputs::OutputError) -> Self {
        CliError {
            message: e.to_string(),
            bad_input: e.bad_input,
        }
    }
}

/// Wraps an input error as bad input.
pub fn bad_input(e: impl Display) -> CliError {
    CliError::bad(e)
}

/// Rows of the layer table of `model`: (layer, output shape, parameters).
pub fn layer_table(model: Model) -> Vec<(&'static str, &'static str, usize)> {
    match model {
        Model::Lenet => lenet_table(),
        Model::Wide => wide_table(),
    }
}

fn wide_table() -> Vec<(&'static str, &'static str, usize)> {
    let p: Box<WideParams> = bytemuck::zeroed_box();
    let n = |s: usize| s / 4;
    vec![
        (
            "conv1 (Conv2d 1→32, 3x3, pad 1)",
            "[32, 28, 28]",
            n(size_of_val(&p.conv1_weight) + size_of_val(&p.conv1_bias)),
        ),
        (
            "bn1 (BatchNorm2d)",
            "[32, 28, 28]",
            n(size_of_val(&p.bn1.gamma) + size_of_val(&p.bn1.beta)),
        ),
        ("relu1 + maxpool1 (2x2)", "[32, 14, 14]", 0),
        (
            "conv2 (Conv2d 32→64, 3x3, pad 1)",
            "[64, 14, 14]",
            n(size_of_val(&p.conv2_weight) + size_of_val(&p.conv2_bias)),
        ),
        (
            "bn2 (BatchNorm2d)",
            "[64, 14, 14]",
            n(size_of_val(&p.bn2.gamma) + size_of_val(&p.bn2.beta)),
        ),
        ("relu2 + maxpool2 (2x2)", "[64, 7, 7]", 0),
        ("flatten", "[3136]", 0),
        (
            "fc1 (Linear 3136→512) + ReLU",
            "[512]",
            n(size_of_val(&p.fc1_weight) + size_of_val(&p.fc1_bias)),
        ),
        ("dropout (p = 0.5, training only)", "[512]", 0),
        (
            "fc2 (Linear 512→10)",
            "[10]",
            n(size_of_val(&p.fc2_weight) + size_of_val(&p.fc2_bias)),
        ),
    ]
}

fn lenet_table() -> Vec<(&'static str, &'static str, usize)> {
    let p = LeNetParams::default_zeroed();
    let n = |s: usize| s / 4;
    vec![
        (
            "conv1 (Conv2d 1→6, 5x5, pad 2)",
            "[6, 28, 28]",
            n(size_of_val(&p.conv1_weight) + size_of_val(&p.conv1_bias)),
        ),
        (
            "bn1 (BatchNorm2d)",
            "[6, 28, 28]",
            n(size_of_val(&p.bn1.gamma) + size_of_val(&p.bn1.beta)),
        ),
        ("relu1 + maxpool1 (2x2)", "[6, 14, 14]", 0),
        (
            "conv2 (Conv2d 6→16, 5x5)",
            "[16, 10, 10]",
            n(size_of_val(&p.conv2_weight) + size_of_val(&p.conv2_bias)),
        ),
        (
            "bn2 (BatchNorm2d)",
            "[16, 10, 10]",
            n(size_of_val(&p.bn2.gamma) + size_of_val(&p.bn2.beta)),
        ),
        ("relu2 + maxpool2 (2x2)", "[16, 5, 5]", 0),
        ("flatten", "[400]", 0),
        (
            "fc1 (Linear 400→120) + ReLU",
            "[120]",
            n(size_of_val(&p.fc1_weight) + size_of_val(&p.fc1_bias)),
        ),
        (
            "fc2 (Linear 120→84) + ReLU",
            "[84]",
            n(size_of_val(&p.fc2_weight) + size_of_val(&p.fc2_bias)),
        ),
        (
            "fc3 (Linear 84→10)",
            "[10]",
            n(size_of_val(&p.fc3_weight) + size_of_val(&p.fc3_bias)),
        ),
    ]
}

trait Zeroed {
    fn default_zeroed() -> Box<Self>;
}

impl Zeroed for LeNetParams {
    fn default_zeroed() -> Box<Self> {
        bytemuck::zeroed_box()
    }
}

/// Prints the layer table of `model` (or JSON).
pub fn print_summary(model: Model, json: bool) {
    let rows = layer_table(model);
    let total: usize = rows.iter().map(|r| r.2).sum();
    if json {
        let layers: Vec<_> = rows
            .iter()
            .map(|(l, s, p)| serde_json::json!({"layer": l, "output_shape": s, "params": p}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"model": model.name(), "layers": layers, "total_params": total})
        );
        return;
    }
    println!("{:<36} {:<16} {:>9}", "Layer", "Output Shape", "Param #");
    println!("{}", "=".repeat(63));
    for (l, s, p) in &rows {
        println!("{l:<36} {s:<16} {:>9}", thousands(*p));
    }
    println!("{}", "=".repeat(63));
    println!("Total params: {}", thousands(total));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Why a trainer cannot start, for the user: a refused recipe or checkpoint is bad input (exit
/// 2, named after `file` when there is one); worker threads that cannot start are not (exit 1).
pub fn start_error(file: Option<&std::path::Path>) -> impl Fn(StartError) -> CliError + '_ {
    move |e| match e {
        StartError::Refused(why) => match file {
            Some(f) => CliError::bad(format!("{}: {why}", f.display())),
            None => CliError::bad(format!("the recipe cannot run: {why}")),
        },
        StartError::Pool(e) => CliError::other(e),
    }
}

/// Parses a count flag that must be from 1 to `MAX`.
pub fn parse_count<const MAX: usize>(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX}")),
    }
}

/// Training and evaluation throughput, median of `repeats` timed windows.
pub fn bench(
    model: Model,
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
    json: bool,
) -> Result<(), CliError> {
    if model == Model::Wide {
        return bench_wide(train, test, steps, repeats, threads, json);
    }
    let mut cfg = Preset::Default.config(train.len(), 1);
    cfg.steps = u64::MAX;
    crate::config::check_batch(cfg.batch, train.len())
        .map_err(|why| CliError::bad(format!("the benchmark's batch {why}")))?;
    let mut t = Trainer::new(cfg, train, threads).map_err(start_error(None))?;
    for _ in 0..20 {
        t.step(); // warm-up
    }
    let mut train_rates = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        for _ in 0..steps {
            t.step();
        }
        train_rates.push(steps as f64 * cfg.batch as f64 / t0.elapsed().as_secs_f64());
    }
    let pool = thread_pool(threads).map_err(CliError::other)?;
    let mut eval_rates = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        evaluate_with(t.params(), test, &pool);
        eval_rates.push(test.len() as f64 / t0.elapsed().as_secs_f64());
    }
    let (tr, ev) = (median(train_rates), median(eval_rates));
    if json {
        println!(
            "{}",
            serde_json::json!({"threads": threads, "batch": cfg.batch, "train_images_per_second": tr, "eval_images_per_second": ev, "repeats": repeats, "steps_per_repeat": steps})
        );
    } else {
        println!(
            "threads {threads}, batch {}: training {tr:.0} images/s, evaluation {ev:.0} images/s (median of {repeats})",
            cfg.batch
        );
        println!(
            "PyTorch on this machine, in the same run: python3 scripts/bench_pytorch.py --model lenet (needs PyTorch); the original NumPy code: ~205 images/s"
        );
    }
    Ok(())
}

/// Floating-point operations of one training image of the wide CNN: 2 per multiply-add of
/// conv1's forward and weight gradient, and of the forward, weight gradient and input
/// gradient of conv2, fc1 and fc2 (element-wise passes not counted).
pub fn wide_training_flops() -> f64 {
    let conv1 = 32 * 9 * 28 * 28;
    let conv2 = 64 * 32 * 9 * 14 * 14;
    let fc1 = 3136 * 512;
    let fc2 = 512 * 10;
    (2 * (2 * conv1 + 3 * (conv2 + fc1 + fc2))) as f64
}

/// Rounds of [`fma_chains`] per thread (12 × 8 lanes × 2 FLOP each: ~4 GFLOP per thread).
const FMA_ROUNDS: u64 = 20_000_000;

/// This machine's FMA peak with `threads` threads running at once, in GFLOP/s: each thread runs
/// 12 independent chains of 8-lane fused multiply-adds (enough to hide the FMA latency).
/// `None` without AVX2 and FMA.
pub fn fma_peak_gflops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        let t0 = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads.max(1))
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                .map(|_| s.spawn(|| unsafe { fma_chains(FMA_ROUNDS) }))
                .collect();
            hs.into_iter().map(|h| h.join().expect("FMA thread")).sum()
        });
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        Some((threads.max(1) as u64 * FMA_ROUNDS * 12 * 8 * 2) as f64 / secs / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let b = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    let mut a = [_mm256_set1_ps(1.0); 12];
    for _ in 0..rounds {
        for x in a.iter_mut() {
            *x = _mm256_fmadd_ps(*x, b, c);
        }
    }
    let acc = a
        .iter()
        .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
    out.iter().sum()
}

/// The wide CNN's training (Adam, batch 128) and evaluation throughput, medians.
fn bench_wide(
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
    json: bool,
) -> Result<(), CliError> {
    let b = crate::wide_trainer::bench_wide(train, threads, steps as usize, repeats)
        .map_err(start_error(None))?;
    let (direct, tr, stages) = (median(b.direct), median(b.winograd), b.stages);
    let pool = thread_pool(threads).map_err(CliError::other)?;
    let params = crate::wide_trainer::init_wide_params(1);
    let eval_rates = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            crate::wide_trainer::evaluate_wide(&params, test, &pool);
            test.len() as f64 / t0.elapsed().as_secs_f64()
        })
        .collect();
    let ev = median(eval_rates);
    // The FMA peak, measured now on as many threads: the share of it training reaches.
    let peak = (0..repeats)
        .map(|_| fma_peak_gflops(threads))
        .collect::<Option<Vec<f64>>>()
        .map(median);
    let gflops = tr * wide_training_flops() / 1e9;
    if json {
        let stages: serde_json::Map<String, serde_json::Value> = stages
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        println!(
            "{}",
            serde_json::json!({"model": "wide", "threads": threads, "batch": 128, "train_images_per_second": tr, "train_images_per_second_direct": direct, "winograd_speedup": tr / direct, "eval_images_per_second": ev, "repeats": repeats, "steps_per_repeat": steps, "stage_seconds": stages, "train_gflops": gflops, "fma_peak_gflops": peak, "peak_fraction": peak.map(|p| gflops / p)})
        );
    } else {
        println!(
            "wide CNN, threads {threads}, batch 128: training {tr:.0} images/s, evaluation {ev:.0} images/s (median of {repeats})"
        );
        println!(
            "conv2 by im2col + GEMM in the same run: {direct:.0} images/s; Winograd F(2x2,3x3) is {:.2}x that",
            tr / direct
        );
        if let Some(p) = peak {
            println!(
                "training arithmetic: {gflops:.1} GFLOP/s counted as im2col does it ({:.1} MFLOP per image; Winograd does 2.25x fewer in conv2), {:.0} % of this machine's FMA peak ({p:.1} GFLOP/s on {threads} thread(s), measured now)",
                wide_training_flops() / 1e6,
                100.0 * gflops / p
            );
        }
        println!(
            "PyTorch on this machine, in the same run: python3 scripts/bench_pytorch.py (needs PyTorch)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_total_the_parameter_counts() {
        let total = |m| layer_table(m).iter().map(|r| r.2).sum::<usize>();
        assert_eq!(total(Model::Lenet), 61_750);
        assert_eq!(total(Model::Wide), fmnist_core::wide::WIDE_PARAMETERS);
    }

    #[test]
    fn wide_training_arithmetic_and_the_fma_probe() {
        // 16,121,856 multiply-adds per image (conv2's three passes are 67 % of them).
        assert_eq!(wide_training_flops(), 32_243_712.0);
        if let Some(p) = fma_peak_gflops(1) {
            assert!(p.is_finite() && p > 0.0, "{p}");
        }
    }
}
