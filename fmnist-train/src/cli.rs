//! The command line's own pieces (a module of the `fmnist-train` binary, not of the library):
//! the user-facing error and its exit code, the conversion of the library's typed errors into
//! it, and the printed layer table and benchmark.

use std::fmt::Display;
use std::process::ExitCode;

use fmnist_infer::cli::thousands;
use fmnist_infer::data::Dataset;
use fmnist_infer::outputs::OutputError;
use fmnist_train::bench::{self, BenchError};
use fmnist_train::config::Model;
use fmnist_train::export::{ExportError, WeightsError};
use fmnist_train::plot::PlotError;
use fmnist_train::run_dir::RunDirError;
use fmnist_train::summary::layer_table;
use fmnist_train::trainer::StartError;

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

/// A library error as the user sees it: its one-line message (naming the file or flag and the
/// problem) and whether the input is at fault (exit code 2) or not (exit code 1).
pub trait Fault: Display {
    /// True when the input is at fault.
    fn bad_input(&self) -> bool;
}

impl<E: Fault> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError {
            message: e.to_string(),
            bad_input: e.bad_input(),
        }
    }
}

impl Fault for OutputError {
    fn bad_input(&self) -> bool {
        self.bad_input
    }
}

impl Fault for WeightsError {
    fn bad_input(&self) -> bool {
        true
    }
}

impl Fault for ExportError {
    fn bad_input(&self) -> bool {
        self.is_bad_input()
    }
}

impl Fault for PlotError {
    fn bad_input(&self) -> bool {
        self.is_bad_input()
    }
}

impl Fault for RunDirError {
    fn bad_input(&self) -> bool {
        self.is_bad_input()
    }
}

impl Fault for BenchError {
    fn bad_input(&self) -> bool {
        self.is_bad_input()
    }
}

/// Wraps an input error as bad input.
pub fn bad_input(e: impl Display) -> CliError {
    CliError::bad(e)
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

/// Prints the training and evaluation throughput of `model` (or JSON), median of `repeats` timed
/// windows; each network reports its own figures.
pub fn bench(
    model: Model,
    train: &Dataset,
    test: &Dataset,
    steps: u64,
    repeats: usize,
    threads: usize,
    json: bool,
) -> Result<(), CliError> {
    let report = bench::run(model, train, test, steps, repeats, threads)?;
    if json {
        println!("{}", report.json);
    } else {
        for line in &report.text {
            println!("{line}");
        }
    }
    Ok(())
}
