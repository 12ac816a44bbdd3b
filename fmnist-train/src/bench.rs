//! Training and evaluation throughput (`fmnist-train bench`): medians of timed windows, and the
//! machine's FMA peak that the wide CNN's training arithmetic is compared with.

use std::time::Instant;

use fmnist_infer::data::Dataset;
use fmnist_infer::pool::{PoolError, thread_pool};

use crate::registry::{TrainLeNet, TrainWide};
use crate::shared::augment::Augment;
use crate::shared::config::{AdamConfig, Conv, Model, Optimizer, Preset, Schedule, TrainConfig};
use crate::shared::net::TrainNet;
use crate::shared::step::StartError;
use crate::shared::trainer::Trainer;
use crate::wide::train::STAGES;

/// Why a benchmark cannot run.
#[derive(Debug)]
pub enum BenchError {
    /// The benchmark's batch does not fit the training set (why).
    Batch(String),
    /// The trainer cannot start.
    Start(StartError),
    /// The evaluation's worker threads cannot start.
    Pool(PoolError),
}

impl BenchError {
    /// True when the input is at fault (exit code 2): the data set, or a recipe it refuses.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            BenchError::Batch(_) | BenchError::Start(StartError::Refused(_))
        )
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Batch(why) => write!(f, "the benchmark's batch {why}"),
            BenchError::Start(StartError::Refused(why)) => {
                write!(f, "the recipe cannot run: {why}")
            }
            BenchError::Start(StartError::Pool(e)) | BenchError::Pool(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BenchError {}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// LeNet-BN's throughput, medians over the timed windows.
#[derive(Clone, Copy, Debug)]
pub struct LenetBench {
    /// Images per training step.
    pub batch: usize,
    /// Training images per second.
    pub train: f64,
    /// Evaluation images per second.
    pub eval: f64,
}

/// LeNet-BN's training (the `default` preset) and evaluation throughput, median of `repeats`
/// timed windows of `steps` steps (and of one pass over `test`) each.
pub fn lenet(
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
) -> Result<LenetBench, BenchError> {
    let mut cfg = Preset::Default.config(train.len(), 1);
    cfg.steps = u64::MAX;
    crate::shared::config::check_batch(cfg.batch, train.len()).map_err(BenchError::Batch)?;
    let mut t = Trainer::<TrainLeNet>::new(cfg, train, threads).map_err(BenchError::Start)?;
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
    let pool = thread_pool(threads).map_err(BenchError::Pool)?;
    let mut eval_rates = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        TrainLeNet::evaluate(t.params(), test, &pool);
        eval_rates.push(test.len() as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(LenetBench {
        batch: cfg.batch,
        train: median(train_rates),
        eval: median(eval_rates),
    })
}

/// The wide CNN's throughput, medians over the timed windows.
#[derive(Clone, Debug)]
pub struct WideThroughput {
    /// Training images per second with conv2 by im2col + GEMM.
    pub direct: f64,
    /// Training images per second with conv2 by Winograd (the default).
    pub train: f64,
    /// Seconds in each stage over the Winograd windows.
    pub stages: [(&'static str, f64); 8],
    /// Evaluation images per second.
    pub eval: f64,
    /// This machine's FMA peak on as many threads, measured now (GFLOP/s; `None` without FMA).
    pub peak: Option<f64>,
    /// Training arithmetic in GFLOP/s, counted as im2col does it.
    pub gflops: f64,
}

/// The wide CNN's training (Adam, batch 128) and evaluation throughput, medians.
pub fn wide(
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
) -> Result<WideThroughput, BenchError> {
    let b = bench_wide(train, threads, steps as usize, repeats).map_err(BenchError::Start)?;
    let (direct, tr, stages) = (median(b.direct), median(b.winograd), b.stages);
    let pool = thread_pool(threads).map_err(BenchError::Pool)?;
    let params = TrainWide::init(1);
    let eval_rates = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            TrainWide::evaluate(&params, test, &pool);
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
    Ok(WideThroughput {
        direct,
        train: tr,
        stages,
        eval: ev,
        peak,
        gflops,
    })
}

/// Training throughput of the two conv2 algorithms, measured in the same run: `windows`
/// windows of `steps` optimizer steps each (batch 128, default Adam) on `train` with `threads`
/// threads, after one warm-up step each, the two trainers taking turns window by window so
/// that both see the same machine. Returns the images/s of each window for im2col + GEMM and
/// for Winograd, and the seconds spent in each stage of the Winograd steps.
pub fn bench_wide(
    train: &Dataset,
    threads: usize,
    steps: usize,
    windows: usize,
) -> Result<WideBench, StartError> {
    let total = steps
        .checked_mul(windows)
        .and_then(|n| n.checked_add(1))
        .ok_or("too many benchmark steps")? as u64;
    let trainer = |conv: Conv| -> Result<Trainer<'_, TrainWide>, StartError> {
        let config = TrainConfig {
            model: Model::Wide,
            batch: 128,
            steps: total,
            optimizer: Optimizer::Adam(AdamConfig::default()),
            schedule: Schedule::Constant,
            checkpoint_every: total,
            seed: 1,
            augment: Augment::default(),
            label_smoothing: 0.0,
            distill: None,
            conv,
        };
        let mut t = Trainer::<TrainWide>::new(config, train, threads)?;
        t.step();
        t.work_mut().stage_seconds = [0.0; 7];
        t.reset_optim_seconds();
        Ok(t)
    };
    let mut pair = [trainer(Conv::Direct)?, trainer(Conv::Winograd)?];
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..windows {
        for (t, r) in pair.iter_mut().zip(&mut rates) {
            let t0 = Instant::now();
            let mut images = 0usize;
            for _ in 0..steps {
                images += t.step().images;
            }
            r.push(images as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let [direct, winograd] = rates;
    let w = &pair[1];
    let stages = std::array::from_fn(|i| {
        let secs = match w.work().stage_seconds.get(i) {
            Some(&s) => s,
            None => w.optim_seconds(),
        };
        (STAGES[i], secs)
    });
    Ok(WideBench {
        direct,
        winograd,
        stages,
    })
}

/// What [`bench_wide`] measured.
pub struct WideBench {
    /// Images/s of each window with conv2 by im2col + GEMM.
    pub direct: Vec<f64>,
    /// Images/s of each window with conv2 by Winograd F(2×2, 3×3).
    pub winograd: Vec<f64>,
    /// Seconds in each stage over the Winograd windows.
    pub stages: [(&'static str, f64); 8],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_training_arithmetic_and_the_fma_probe() {
        // 16,121,856 multiply-adds per image (conv2's three passes are 67 % of them).
        assert_eq!(wide_training_flops(), 32_243_712.0);
        if let Some(p) = fma_peak_gflops(1) {
            assert!(p.is_finite() && p > 0.0, "{p}");
        }
    }

    #[test]
    fn the_bench_times_both_algorithms_window_by_window() {
        let data = Dataset {
            images: (0..300u32)
                .map(|i| std::array::from_fn(|k| ((i * 31 + k as u32 * 7) % 256) as u8))
                .collect(),
            labels: (0..300u32).map(|i| (i % 10) as u8).collect(),
        };
        let b = bench_wide(&data, 1, 2, 3).unwrap();
        assert_eq!((b.direct.len(), b.winograd.len()), (3, 3));
        let positive = |r: &[f64]| r.iter().all(|&v| v.is_finite() && v > 0.0);
        assert!(positive(&b.direct) && positive(&b.winograd));
        // The stages of the timed Winograd steps, after the warm-up was dropped.
        assert!(b.stages.iter().all(|s| s.1 >= 0.0) && b.stages.iter().any(|s| s.1 > 0.0));
    }
}
