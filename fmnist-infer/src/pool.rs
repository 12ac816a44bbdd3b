//! Worker threads: the rayon pool both tools evaluate and train on, and the most `--threads`
//! accepts.

/// Most worker threads `--threads` accepts (in both command-line tools).
pub const MAX_THREADS: usize = 256;

/// The worker threads could not be started (the system refused to create them: a process or
/// address-space limit, say). Not the input's fault: exit code 1.
#[derive(Debug)]
pub struct PoolError {
    /// Threads asked for (0 = all cores).
    pub threads: usize,
    /// Why rayon could not start them.
    pub reason: String,
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot start {} worker threads: {}",
            self.threads, self.reason
        )
    }
}

impl std::error::Error for PoolError {}

/// Builds a rayon pool of exactly `threads` threads (0 = all cores).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, PoolError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| PoolError {
            threads,
            reason: e.to_string(),
        })
}
