//! The wide CNN's benchmark: training throughput of both conv2 algorithms in the same run,
//! evaluation throughput, and the share of the machine's FMA peak its training arithmetic
//! reaches.

use std::time::Instant;

use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use super::TrainWide;
use super::train::STAGES;
use crate::shared::augment::Augment;
use crate::shared::bench::{BenchError, BenchReport, fma_peak_gflops, median};
use crate::shared::config::{AdamConfig, Conv, Model, Optimizer, Schedule, TrainConfig};
use crate::shared::net::TrainNet;
use crate::shared::step::StartError;
use crate::shared::trainer::Trainer;

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

/// The report of [`wide`]'s measurements (`fmnist-train bench --model wide`).
pub fn report(b: &WideThroughput, steps: u64, repeats: usize, threads: usize) -> BenchReport {
    let (direct, tr, stages, ev, peak, gflops) =
        (b.direct, b.train, &b.stages, b.eval, b.peak, b.gflops);
    let stage_map: serde_json::Map<String, serde_json::Value> = stages
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    let json = serde_json::json!({"model": "wide", "threads": threads, "batch": 128, "train_images_per_second": tr, "train_images_per_second_direct": direct, "winograd_speedup": tr / direct, "eval_images_per_second": ev, "repeats": repeats, "steps_per_repeat": steps, "stage_seconds": stage_map, "train_gflops": gflops, "fma_peak_gflops": peak, "peak_fraction": peak.map(|p| gflops / p)});
    let mut text = vec![
        format!(
            "wide CNN, threads {threads}, batch 128: training {tr:.0} images/s, evaluation {ev:.0} images/s (median of {repeats})"
        ),
        format!(
            "conv2 by im2col + GEMM in the same run: {direct:.0} images/s; Winograd F(2x2,3x3) is {:.2}x that",
            tr / direct
        ),
    ];
    if let Some(p) = peak {
        text.push(format!(
            "training arithmetic: {gflops:.1} GFLOP/s counted as im2col does it ({:.1} MFLOP per image; Winograd does 2.25x fewer in conv2), {:.0} % of this machine's FMA peak ({p:.1} GFLOP/s on {threads} thread(s), measured now)",
            wide_training_flops() / 1e6,
            100.0 * gflops / p
        ));
    }
    text.push(
        "PyTorch on this machine, in the same run: python3 scripts/bench_pytorch.py (needs PyTorch)"
            .into(),
    );
    BenchReport { json, text }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_training_arithmetic() {
        // 16,121,856 multiply-adds per image (conv2's three passes are 67 % of them).
        assert_eq!(wide_training_flops(), 32_243_712.0);
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
