//! `fmnist-train bench`: each network measures and reports its own throughput
//! ([`crate::shared::net::TrainNet::bench`]); [`run`] picks the network. The pieces keep their
//! old paths here.

use fmnist_infer::data::Dataset;

use crate::registry;
use crate::shared::config::Model;
use crate::shared::net::{TrainNet, TrainNetFn};

pub use crate::shared::bench::{BenchError, BenchReport, fma_peak_gflops, median};
pub use crate::wide::bench::{WideBench, WideThroughput, bench_wide, wide, wide_training_flops};

/// The throughput report of `model`: training over `repeats` timed windows of `steps` steps
/// each and evaluation over `test`, medians, on `threads` threads.
pub fn run(
    model: Model,
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
) -> Result<BenchReport, BenchError> {
    struct Bench<'a> {
        train: &'a Dataset,
        test: &'a Dataset,
        steps: u64,
        repeats: usize,
        threads: usize,
    }
    impl TrainNetFn for Bench<'_> {
        type Output = Result<BenchReport, BenchError>;
        fn call<N: TrainNet>(self) -> Self::Output {
            N::bench(
                self.train,
                self.test,
                self.steps,
                self.repeats,
                self.threads,
            )
        }
    }
    registry::dispatch(
        model.arch(),
        Bench {
            train,
            test,
            steps,
            repeats,
            threads,
        },
    )
}
