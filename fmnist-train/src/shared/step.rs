//! What every network's training step shares: the step's report, why a trainer cannot start,
//! and the running-statistics momentum of batch norm.

use fmnist_infer::pool::PoolError;

/// PyTorch's batch-norm momentum for the running statistics (running = 0.9·running + 0.1·batch).
pub const BN_MOMENTUM: f32 = 0.1;

/// What one step measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepStats {
    /// Mean cross-entropy of the batch.
    pub loss: f64,
    /// Fraction of the batch classified correctly.
    pub accuracy: f64,
    /// The learning rate used.
    pub lr: f32,
    /// Images in the batch.
    pub images: usize,
}

/// Why a trainer cannot start: its state is refused (bad input: the checkpoint or recipe), or
/// its worker threads cannot be started (exit code 1).
#[derive(Debug)]
pub enum StartError {
    /// The state or recipe does not fit (the reason, without the file's name).
    Refused(String),
    /// The thread pool.
    Pool(PoolError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Refused(why) => f.write_str(why),
            StartError::Pool(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<String> for StartError {
    fn from(why: String) -> Self {
        StartError::Refused(why)
    }
}

impl From<&str> for StartError {
    fn from(why: &str) -> Self {
        StartError::Refused(why.to_owned())
    }
}

impl From<PoolError> for StartError {
    fn from(e: PoolError) -> Self {
        StartError::Pool(e)
    }
}
