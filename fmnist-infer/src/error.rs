//! The CLI's error convention: bad input (exit code 2) or any other failure (exit code 1), each
//! with one message of the form `<file>: <problem>`.

use std::fmt;
use std::path::Path;

/// Whether the user can fix the problem by giving other input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A missing, unreadable, corrupt or foreign input file, or data that is not Fashion-MNIST:
    /// exit code 2.
    BadInput,
    /// Anything else (writing an output file, the thread pool): exit code 1.
    Failure,
}

/// An error to print on stderr as `error: <message>`.
#[derive(Debug)]
pub struct Error {
    /// Bad input or other failure.
    pub kind: ErrorKind,
    /// `<file>: <problem>`, or just the problem when no file is involved.
    pub message: String,
}

impl Error {
    /// Bad input about `path`.
    pub fn bad(path: &Path, problem: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::BadInput,
            message: format!("{}: {problem}", path.display()),
        }
    }

    /// Bad input whose message already names the file.
    pub fn bad_msg(message: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::BadInput,
            message: message.to_string(),
        }
    }

    /// Another failure about `path`.
    pub fn failure(path: &Path, problem: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::Failure,
            message: format!("{}: {problem}", path.display()),
        }
    }

    /// Another failure without a file.
    pub fn failure_msg(message: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::Failure,
            message: message.to_string(),
        }
    }

    /// The process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::BadInput => 2,
            ErrorKind::Failure => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::data::DataError> for Error {
    fn from(e: crate::data::DataError) -> Self {
        // Missing or broken data files are input the user can fix.
        Error::bad_msg(e)
    }
}

impl From<crate::outputs::OutputError> for Error {
    fn from(e: crate::outputs::OutputError) -> Self {
        Error {
            kind: if e.bad_input {
                ErrorKind::BadInput
            } else {
                ErrorKind::Failure
            },
            message: e.to_string(),
        }
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
