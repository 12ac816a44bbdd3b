//! Single-thread, batch-1 throughput of the f32 and int8 forward passes, each next to its naive
//! reference kernel measured in the same run.
//!
//! Each kernel runs `REPS` timed repetitions of `seconds / REPS` over the images in turn (after
//! one untimed warm-up repetition); the reported figure is the median repetition's images/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fmnist_core::lenet::IMAGE_PIXELS;
use serde::Serialize;

use crate::model::Model;

/// Timed repetitions per kernel.
pub const REPS: usize = 5;
/// Issue 3 §5 target for the f32 forward, images/s on one thread.
pub const F32_TARGET: f64 = 38_000.0;
/// Issue 19 §2 target for the int8 forward, images/s on one thread (5x ONNX Runtime's int8).
pub const INT8_TARGET: f64 = 100_000.0;

/// One kernel's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    /// What ran.
    pub kernel: &'static str,
    /// Median images/s (wall clock).
    pub images_per_second: f64,
    /// Every repetition's images/s (wall clock).
    pub repetitions: Vec<f64>,
    /// Median images per second of this thread's CPU time (Linux `/proc/thread-self/schedstat`),
    /// which other processes competing for the cores do not lower; `None` where unavailable.
    pub images_per_cpu_second: Option<f64>,
}

/// Nanoseconds this thread has run on a CPU (Linux), `None` elsewhere.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A model's fast kernel and its reference.
#[derive(Clone, Debug, Serialize)]
pub struct ModelBench {
    /// Model file.
    pub model: String,
    /// Model kind.
    pub kind: &'static str,
    /// The optimized forward pass.
    pub fast: KernelResult,
    /// The naive reference.
    pub reference: KernelResult,
    /// fast / reference.
    pub speedup: f64,
    /// The target for this kind (images/s).
    pub target: f64,
    /// Whether `fast` reaches it.
    pub meets_target: bool,
    /// Whether fast and reference gave bit-identical logits on every benchmark image.
    pub bit_identical: bool,
}

/// Median of a non-empty slice.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The longest `--seconds` accepted (a day): each kernel's time budget is a [`Duration`] made
/// from it, which a huge number would overflow.
pub const MAX_SECONDS: f64 = 86_400.0;

/// Measures `f` over `images`, one image at a time on this thread.
pub fn measure<T>(
    kernel: &'static str,
    images: &[[u8; IMAGE_PIXELS]],
    seconds: f64,
    mut f: impl FnMut(&[u8; IMAGE_PIXELS]) -> T,
) -> KernelResult {
    let rep_time = Duration::from_secs_f64((seconds / REPS as f64).max(0.01));
    let mut offset = 0usize;
    let mut run = |budget: Duration| {
        let cpu0 = thread_cpu_ns();
        let start = Instant::now();
        let mut n = 0usize;
        loop {
            // Walk through the whole set, 256 images between clock reads.
            let chunk = &images[offset..(offset + 256).min(images.len())];
            for img in chunk {
                black_box(f(black_box(img)));
            }
            n += chunk.len();
            offset = (offset + chunk.len()) % images.len();
            let t = start.elapsed();
            if t >= budget {
                let cpu = match (cpu0, thread_cpu_ns()) {
                    (Some(a), Some(b)) if b > a => Some(n as f64 / ((b - a) as f64 * 1e-9)),
                    _ => None,
                };
                return (n as f64 / t.as_secs_f64(), cpu);
            }
        }
    };
    run(rep_time / 2);
    let reps: Vec<(f64, Option<f64>)> = (0..REPS).map(|_| run(rep_time)).collect();
    let repetitions: Vec<f64> = reps.iter().map(|r| r.0).collect();
    let cpu: Option<Vec<f64>> = reps.iter().map(|r| r.1).collect();
    KernelResult {
        kernel,
        images_per_second: median(&repetitions),
        repetitions,
        images_per_cpu_second: cpu.map(|c| median(&c)),
    }
}

/// Benchmarks one model: its fast forward pass and its reference.
pub fn bench_model(model: &Model, images: &[[u8; IMAGE_PIXELS]], seconds: f64) -> ModelBench {
    let half = seconds / 2.0;
    let (fast, reference, bit_identical, target) = if let Some(net) = model.f32_net() {
        let same = images.iter().all(|img| {
            net.forward(img).map(f32::to_bits) == net.forward_layers(img).map(f32::to_bits)
        });
        (
            measure(net.kernel_names()[0], images, half, |i| net.forward(i)),
            measure(net.kernel_names()[1], images, half, |i| {
                net.forward_layers(i)
            }),
            same,
            F32_TARGET,
        )
    } else {
        let q = model.int8().expect("a model is f32 or int8");
        let same = images
            .iter()
            .all(|img| q.forward(img) == q.forward_reference(img));
        let name = format!("int8 forward ({})", q.kernel());
        (
            measure(Box::leak(name.into_boxed_str()), images, half, |i| {
                q.forward(i)
            }),
            measure("int8 reference forward", images, half, |i| {
                q.forward_reference(i)
            }),
            same,
            INT8_TARGET,
        )
    };
    ModelBench {
        model: model.path.display().to_string(),
        kind: model.kind.name(),
        speedup: fast.images_per_second / reference.images_per_second,
        meets_target: fast.images_per_second >= target,
        target,
        fast,
        reference,
        bit_identical,
    }
}

fn cpu_note(k: &KernelResult) -> String {
    match k.images_per_cpu_second {
        Some(c) => format!(" ({c:.0} per CPU-second)"),
        None => String::new(),
    }
}

impl ModelBench {
    /// Human-readable lines.
    pub fn to_text(&self) -> String {
        format!(
            "{} ({}), 1 thread, batch 1, median of {REPS}:\n  {:<40} {:>10.0} images/s{}  (target {:.0}: {})\n  {:<40} {:>10.0} images/s{}\n  speed-up {:.2}x, outputs bit-identical: {}\n",
            self.model,
            self.kind,
            self.fast.kernel,
            self.fast.images_per_second,
            cpu_note(&self.fast),
            self.target,
            if self.meets_target { "met" } else { "NOT met" },
            self.reference.kernel,
            self.reference.images_per_second,
            cpu_note(&self.reference),
            self.speedup,
            if self.bit_identical { "yes" } else { "NO" },
        )
    }
}
