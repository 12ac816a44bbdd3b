//! The wide CNN's benchmark: training throughput of both conv2 algorithms in the same run,
//! evaluation throughput, the share of the machine's FMA peak its training arithmetic reaches,
//! and each stage of the step against the machine's roofline (FMA peak and memory bandwidth,
//! both measured in the same run).

use std::time::Instant;

use fmnist_infer::data::Dataset;
use fmnist_infer::pool::thread_pool;

use super::TrainWide;
use super::train::STAGES;
use crate::shared::augment::Augment;
use crate::shared::bench::{
    BenchError, BenchReport, CACHE_PROBE_BYTES, DRAM_PROBE_BYTES, fma_peak_gflops, median,
    memory_bandwidth_gbs,
};
use crate::shared::config::{AdamConfig, Conv, Model, Optimizer, Schedule, TrainConfig};
use crate::shared::net::TrainNet;
use crate::shared::step::StartError;
use crate::shared::trainer::Trainer;

/// The benchmark's batch (the `default` wide preset's).
const BATCH: usize = 128;

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
    /// Memory bandwidth on as many threads, measured now (GB/s): from the shared cache (a
    /// working set like one chunk's) and from main memory.
    pub bandwidth: Bandwidth,
    /// Timed Winograd steps the stage seconds cover.
    pub timed_steps: u64,
    /// The share of fc1's output gradient that was non-zero in those steps: what its backward
    /// products multiplied (1 where the CPU lacks AVX2 + FMA and they run dense).
    pub dh_density: f64,
}

/// Memory bandwidth (GB/s) measured by the STREAM triad, see [`memory_bandwidth_gbs`].
#[derive(Clone, Copy, Debug)]
pub struct Bandwidth {
    /// 3 MiB per thread: last-level cache.
    pub cache: f64,
    /// 192 MiB per thread: main memory.
    pub dram: f64,
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
    let bandwidth = Bandwidth {
        cache: memory_bandwidth_gbs(threads, CACHE_PROBE_BYTES),
        dram: memory_bandwidth_gbs(threads, DRAM_PROBE_BYTES),
    };
    Ok(WideThroughput {
        direct,
        train: tr,
        stages,
        eval: ev,
        peak,
        gflops,
        bandwidth,
        timed_steps: steps * repeats as u64,
        dh_density: b.dh_density,
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
    let roof = roofline(b);
    let roof_json: Vec<serde_json::Value> = roof
        .iter()
        .map(|r| {
            serde_json::json!({"stage": r.stage, "ms_per_step": r.ms, "gflops": r.gflops, "peak_fraction": r.peak_fraction, "gb_per_second": r.gbs, "cache_bandwidth_fraction": r.cache_fraction, "dram_bandwidth_fraction": r.dram_fraction, "floor_ms": r.floor_ms})
        })
        .collect();
    let json = serde_json::json!({"model": "wide", "threads": threads, "batch": BATCH, "train_images_per_second": tr, "train_images_per_second_direct": direct, "winograd_speedup": tr / direct, "eval_images_per_second": ev, "repeats": repeats, "steps_per_repeat": steps, "stage_seconds": stage_map, "train_gflops": gflops, "fma_peak_gflops": peak, "peak_fraction": peak.map(|p| gflops / p), "cache_bandwidth_gbs": b.bandwidth.cache, "dram_bandwidth_gbs": b.bandwidth.dram, "dh_density": b.dh_density, "roofline": roof_json});
    let mut text = vec![
        format!(
            "wide CNN, threads {threads}, batch {BATCH}: training {tr:.0} images/s, evaluation {ev:.0} images/s (median of {repeats})"
        ),
        format!(
            "conv2 by im2col + GEMM in the same run: {direct:.0} images/s; Winograd F(2x2,3x3) is {:.2}x that",
            tr / direct
        ),
    ];
    if let Some(p) = peak {
        text.push(format!(
            "training arithmetic: {gflops:.1} GFLOP/s counted as im2col and dense GEMMs do it ({:.1} MFLOP per image; Winograd does 2.25x fewer in conv2, fc1's backward skips dH's zeros), {:.0} % of this machine's FMA peak ({p:.1} GFLOP/s on {threads} thread(s), measured now)",
            wide_training_flops() / 1e6,
            100.0 * gflops / p
        ));
    }
    text.push(format!(
        "roofline of the Winograd step (memory bandwidth measured now: {:.1} GB/s from cache, {:.1} GB/s from DRAM; floor = the larger of FLOP/peak and bytes/cache bandwidth; fc1's backward counted over the {:.1} % of dH that was non-zero):",
        b.bandwidth.cache,
        b.bandwidth.dram,
        100.0 * b.dh_density
    ));
    text.push(format!(
        "  {:<24} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>8}",
        "stage", "ms/step", "GFLOP/s", "% peak", "GB/s", "% cache", "% DRAM", "floor ms"
    ));
    for r in &roof {
        text.push(format!(
            "  {:<24} {:>8.2} {:>8.1} {:>7} {:>8.1} {:>7.0} {:>7.0} {:>8.2}",
            r.stage,
            r.ms,
            r.gflops,
            r.peak_fraction
                .map_or("-".into(), |f| format!("{:.0}", 100.0 * f)),
            r.gbs,
            100.0 * r.cache_fraction,
            100.0 * r.dram_fraction,
            r.floor_ms
        ));
    }
    let (ms, floor): (f64, f64) = roof
        .iter()
        .map(|r| (r.ms, r.floor_ms))
        .fold((0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1));
    text.push(format!(
        "  the stages take {ms:.2} ms a step against a floor of {floor:.2} ms ({:.0} % of the way to the machine's limit)",
        100.0 * floor / ms
    ));
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
            batch: BATCH,
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
        t.work_mut().dh_nonzeros = [0; 2];
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
    let [nonzero, entries] = w.work().dh_nonzeros;
    let dh_density = nonzero as f64 / entries.max(1) as f64;
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
        dh_density,
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
    /// The non-zero share of fc1's output gradient over the Winograd windows.
    pub dh_density: f64,
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

/// One stage of the Winograd step against the roofline.
#[derive(Clone, Debug)]
pub struct StageRoof {
    /// The stage's name ([`STAGES`]).
    pub stage: &'static str,
    /// Milliseconds per step, measured.
    pub ms: f64,
    /// Its arithmetic rate by [`wide_stage_work`] (GFLOP/s).
    pub gflops: f64,
    /// That rate over the measured FMA peak.
    pub peak_fraction: Option<f64>,
    /// Its memory traffic rate by [`wide_stage_work`] (GB/s).
    pub gbs: f64,
    /// That rate over the measured cache bandwidth.
    pub cache_fraction: f64,
    /// That rate over the measured DRAM bandwidth.
    pub dram_fraction: f64,
    /// The least time the machine allows it: the larger of its FLOP at the FMA peak and its
    /// bytes at the cache bandwidth (ms per step).
    pub floor_ms: f64,
}

/// Each stage of the measured Winograd step against the FMA peak and the cache bandwidth.
pub fn roofline(b: &WideThroughput) -> Vec<StageRoof> {
    let steps = b.timed_steps.max(1) as f64;
    let images = BATCH as f64;
    b.stages
        .iter()
        .zip(wide_stage_work(b.dh_density))
        .map(|(&(stage, secs), (flop, bytes))| {
            let s = secs / steps;
            let (flop, bytes) = (flop * images, bytes * images);
            let (gflops, gbs) = (flop / s / 1e9, bytes / s / 1e9);
            let floor = (flop / (b.peak.unwrap_or(f64::INFINITY) * 1e9))
                .max(bytes / (b.bandwidth.cache * 1e9));
            StageRoof {
                stage,
                ms: s * 1e3,
                gflops,
                peak_fraction: b.peak.map(|p| gflops / p),
                gbs,
                cache_fraction: gbs / b.bandwidth.cache,
                dram_fraction: gbs / b.bandwidth.dram,
                floor_ms: floor * 1e3,
            }
        })
        .collect()
}

/// The work of each stage of a Winograd training step ([`STAGES`]), per image of a batch of
/// 128: (FLOP, bytes). FLOP: 2 per multiply-add of the GEMMs and direct convolutions as they
/// are computed (conv2 in the Winograd domain, conv1 once forward and once for its weights),
/// plus about one per element operation of the transforms and element-wise passes. Bytes: every
/// buffer a stage reads or writes, counted once per pass over it, as if nothing stayed in L1/L2
/// between passes (the Winograd scratch, 0.8–1.6 MB per chunk of 8 images, does not fit an L2
/// anyway); weights and optimizer state are shared by the batch, so a 128th of them is counted
/// per image. fc1's weight and input gradients multiply only the non-zero share `dh_density`
/// of its output gradient (see `shared::sparse`). A model, not a measurement: this machine has
/// no memory-traffic counters. It errs on the high side for bytes (some passes hit L2), so the
/// floor it gives is generous.
pub fn wide_stage_work(dh_density: f64) -> [(f64, f64); 8] {
    use super::common::{C1, C2, P2};
    const P1: f64 = 28.0 * 28.0;
    let (c1, c2, p2) = (C1 as f64, C2 as f64, P2 as f64);
    let t = super::winograd::TILES as f64;
    let (f, h) = (
        fmnist_core::wide::WIDE_FLAT as f64,
        fmnist_core::wide::WIDE_HIDDEN as f64,
    );
    let batch = BATCH as f64;
    // The optimizer's values: all of WideParams but the running statistics.
    let trainable = super::train::wide_trainable_ranges()
        .iter()
        .map(|r| r.len())
        .sum::<usize>() as f64;
    let chunk = super::kernels::CHUNK as f64;
    let w = 4.0; // bytes per f32 (and per u32 winner index)
    let conv1 = 2.0 * 9.0 * c1 * P1;
    // Winograd-domain GEMM: 16 GEMMs of 64×32 per tile.
    let wgemm = 2.0 * 16.0 * c2 * c1 * t;
    // Transformed planes of one image: V or dV (32 channels), M or dM (64).
    let (v, m) = (w * 16.0 * c1 * t, w * 16.0 * c2 * t);
    // The transformed filters, read once per chunk by each pass.
    let u = w * 16.0 * c2 * c1 / chunk;
    let (z1, a1, z2) = (w * c1 * P1, w * c1 * p2, w * c2 * p2);
    let x = w * f;
    let fc1 = w * f * h / batch;
    [
        // conv1: bytes of the image in, x0 and conv1's output z1 out; conv1 and its Σz, Σz².
        (conv1 + 3.0 * c1 * P1, P1 + w * P1 + z1),
        // bn1 pool1 conv2: z1 → BN → ReLU → pool → a1 and winners; input transform a1 → V;
        // 16 GEMMs V → M; output transform M → z2; Σz, Σz² of z2.
        (
            4.0 * c1 * P1 + 32.0 * c1 * t + wgemm + 32.0 * c2 * t + 3.0 * c2 * p2,
            z1 + 2.0 * a1 + (a1 + v) + (u + v + m) + (m + z2) + z2,
        ),
        // bn2 pool2 dense forward: z2 → features and winners; fc1 in 4 column blocks, each
        // reading all features; ReLU into h, dropout scale and hd; fc2.
        (
            4.0 * c2 * p2 + 2.0 * f * h + 5.0 * h + 2.0 * h * 10.0,
            z2 + 2.0 * x + 4.0 * x + fc1 + 2.0 * w * h + 3.0 * w * h + 2.0 * w * h,
        ),
        // dense backward: fc2's gradients; dh through dropout and ReLU; Σdh; dh's non-zeros
        // listed twice (by unit, by image: index and value); dW1 (4 row blocks, each reading
        // all features), dX (4 column blocks, each reading all of dh's list), copied into dx.
        (
            4.0 * f * h * dh_density + 4.0 * h * 10.0 + 3.0 * h,
            2.0 * w * h
                + 4.0 * w * h
                + w * h
                + 2.0 * (w * h + 2.0 * 2.0 * w * h * dh_density)
                + (2.0 * w * h * dh_density + 4.0 * x + fc1)
                + (4.0 * 2.0 * w * h * dh_density + fc1 + x)
                + 2.0 * x,
        ),
        // bn2 backward sums: dx, its winners and z2 → Σdy, Σdy·x̂.
        (5.0 * f, 2.0 * x + z2),
        // conv2 backward: input transform again a1 → V; BN2/pool2 backward fused into the
        // transform z2, dx, winners → dM; dU = dM·Vᵀ and dV = Uᵀ·dM; dV → a1's gradient; then
        // BN1's sums over that gradient, its winners and z1.
        (
            32.0 * c1 * t
                + 10.0 * c2 * p2
                + 32.0 * c2 * t
                + 2.0 * wgemm
                + 32.0 * c1 * t
                + 4.0 * c1 * p2,
            (a1 + v) + (z2 + 2.0 * x + m) + (m + v + u) + (u + m + v) + (v + a1) + (z1 + 2.0 * a1),
        ),
        // conv1 backward: BN1 backward from z1 through the pool winners, conv1's weight
        // gradient from x0.
        (conv1 + 6.0 * c1 * P1, w * P1 + z1 + 2.0 * a1),
        // Adam over the 1,630,282 trainable values: reads value, gradient, both moments,
        // writes value and moments (28 bytes); about 12 FLOP.
        (12.0 * trainable / batch, 28.0 * trainable / batch),
    ]
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
    fn the_stage_model_covers_the_step() {
        let work = wide_stage_work(1.0);
        assert_eq!(work.len(), STAGES.len());
        assert!(work.iter().all(|&(f, b)| f > 0.0 && b > 0.0));
        // The GEMM arithmetic alone: Winograd conv2 three times, fc1 three times, conv1 twice
        // (forward, weight gradient); the model adds element-wise work on top, a few per cent.
        // Adam's 28 bytes over the 1,630,282 trainable values, a 128th per image.
        assert_eq!(work[7].1, 28.0 * 1_630_282.0 / 128.0);
        let flop: f64 = work.iter().map(|w| w.0).sum();
        let gemm = 3.0 * 2.0 * 16.0 * 64.0 * 32.0 * 49.0
            + 3.0 * 2.0 * 3136.0 * 512.0
            + 2.0 * 2.0 * 9.0 * 32.0 * 784.0;
        assert!(flop > gemm && flop < 1.1 * gemm, "{flop} vs {gemm}");
        // A roofline of a made-up measurement: the floor never exceeds the time.
        let b = WideThroughput {
            direct: 1.0,
            train: 1.0,
            stages: std::array::from_fn(|i| (STAGES[i], 1.0)),
            eval: 1.0,
            peak: Some(100.0),
            gflops: 1.0,
            bandwidth: Bandwidth {
                cache: 50.0,
                dram: 10.0,
            },
            timed_steps: 10,
            dh_density: 1.0,
        };
        for r in roofline(&b) {
            assert!(
                r.ms == 100.0 && r.floor_ms <= r.ms && r.gflops > 0.0,
                "{r:?}"
            );
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
