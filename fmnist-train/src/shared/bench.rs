//! What every network's benchmark (`fmnist-train bench`, [`crate::shared::net::TrainNet::bench`])
//! shares: its error, its report, the median of timed windows, and the machine's FMA peak and
//! memory bandwidth (the roofline a step's stages are measured against).

use std::time::Instant;

use fmnist_infer::pool::PoolError;

use crate::shared::step::StartError;

/// A network's benchmark report: printed as `json` with `--json`, else as the `text` lines.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// The report as one JSON value (`fmnist-train bench --json`).
    pub json: serde_json::Value,
    /// The report as lines of text.
    pub text: Vec<String>,
}

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

/// Bytes each thread streams per pass of [`memory_bandwidth_gbs`] when the data are to come
/// from the shared last-level cache: 3 arrays of 1 MiB, past the 512 KiB–1 MiB L2 of the
/// machines this runs on, inside a 32 MiB L3 even for two threads.
pub const CACHE_PROBE_BYTES: usize = 3 << 20;
/// The same from main memory: 3 arrays of 64 MiB per thread, several times any L3 here.
pub const DRAM_PROBE_BYTES: usize = 3 << 26;

/// The memory bandwidth `threads` threads reach together, in GB/s (10⁹ bytes/s): each thread
/// runs the STREAM triad `a[i] = b[i] + s·c[i]` over its own three arrays of `bytes_per_thread`
/// bytes in all, as many passes as make ~0.2 s; counted as 12 bytes per element (two reads,
/// one write; the write-allocate read is not counted, as STREAM does not count it). The
/// median of three such runs. It is what an element-wise pass over data of that size can
/// reach at best, which is the yardstick for a memory-bound stage.
pub fn memory_bandwidth_gbs(threads: usize, bytes_per_thread: usize) -> f64 {
    let threads = threads.max(1);
    let len = (bytes_per_thread / 12).max(1024);
    let passes = (200_000_000 / (len * 12)).clamp(2, 10_000);
    let mut bufs: Vec<[Vec<f32>; 3]> = (0..threads)
        .map(|t| [vec![0.0; len], vec![1.0 + t as f32; len], vec![0.5; len]])
        .collect();
    let runs = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            std::thread::scope(|s| {
                for [a, b, c] in bufs.iter_mut() {
                    s.spawn(move || {
                        for p in 0..passes {
                            triad(a, b, c, p as f32 * 1e-9);
                        }
                    });
                }
            });
            (threads * passes * len * 12) as f64 / t0.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    std::hint::black_box(&bufs);
    median(runs)
}

crate::shared::kernels::simd_dispatch! {
    /// One STREAM triad pass (AVX2 where the CPU has it, so that the loads, not the
    /// instructions, bound a cache-resident pass).
    fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
        for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
            *x = y + s * z;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bandwidth_probe_measures_a_positive_rate_and_writes_the_triad() {
        let bw = memory_bandwidth_gbs(2, 1 << 16);
        assert!(bw.is_finite() && bw > 0.0, "{bw}");
        let (mut a, b, c) = (vec![0.0; 9], vec![1.0; 9], vec![2.0; 9]);
        triad(&mut a, &b, &c, 0.25);
        assert_eq!(a, vec![1.5; 9]);
    }

    #[test]
    fn the_fma_probe_measures_a_positive_rate() {
        if let Some(p) = fma_peak_gflops(1) {
            assert!(p.is_finite() && p > 0.0, "{p}");
        }
    }
}
