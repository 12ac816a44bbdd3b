//! Figures of a training run as PNG files, one module per figure: the training curves of a run
//! (`fmnist-train plot`, [`curves`]) and a labelled grid of training images
//! (`fmnist-train samples`, [`samples`]). Both draw on [`fmnist_infer::canvas`]: embedded font,
//! deterministic PNG bytes, nothing partial on failure.

pub mod curves;
pub mod samples;

use std::io;
use std::path::PathBuf;

use fmnist_infer::canvas::DrawError;
use fmnist_infer::data::DataError;
use fmnist_infer::outputs::{OutputError, is_bad_output};

/// Why a figure was not written.
#[derive(Debug)]
pub enum PlotError {
    /// The training log cannot be read or parsed (the message names the file and line).
    Log(String),
    /// `samples` was asked for `count` images, not 1 to `max`.
    Count {
        /// Images asked for.
        count: usize,
        /// Most images `samples` draws.
        max: usize,
    },
    /// The training images cannot be loaded.
    Data(DataError),
    /// The output folder cannot be created.
    Folder(PathBuf, io::Error),
    /// Drawing failed.
    Draw(DrawError),
    /// An output file cannot be written.
    Output(OutputError),
}

impl PlotError {
    /// True when the input is at fault (exit code 2): the log, the count, the data, an output
    /// path the user can change.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PlotError::Log(_) | PlotError::Count { .. } | PlotError::Data(_) => true,
            PlotError::Folder(_, e) => is_bad_output(e) || e.kind() == io::ErrorKind::AlreadyExists,
            PlotError::Draw(_) => false,
            PlotError::Output(e) => e.bad_input,
        }
    }
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::Log(m) => f.write_str(m),
            PlotError::Count { count, max } => {
                write!(f, "--count must be between 1 and {max}, got {count}")
            }
            PlotError::Data(e) => e.fmt(f),
            PlotError::Folder(dir, e) => {
                write!(
                    f,
                    "{}: cannot create the output directory: {e}",
                    dir.display()
                )
            }
            PlotError::Draw(e) => e.fmt(f),
            PlotError::Output(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PlotError {}

impl From<OutputError> for PlotError {
    fn from(e: OutputError) -> Self {
        PlotError::Output(e)
    }
}
