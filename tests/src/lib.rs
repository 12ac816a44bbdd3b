//! Shared helpers for the integration tests: finding the release binaries, running them, the
//! real data set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The names of the entries in `dir`, sorted (panics if `dir` cannot be read).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A workspace binary (`fmnist-train`, `fmnist-infer`). The test command builds them first
/// (`cargo build --release --workspace`); a missing one is a setup error with a clear message.
pub fn bin(name: &str) -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let candidates = [
        profile_dir.join(name),
        workspace_root().join("target/release").join(name),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} is not built; run `cargo build --release --workspace` first (looked at {candidates:?})")
    })
}

/// Runs a workspace binary with arguments.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts a bad-input failure: exit code 2, one `error:` line on stderr containing `needle`,
/// and no panic.
pub fn assert_bad_input(o: &Output, needle: &str) {
    let (_, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "panic in stderr: {err}");
    assert!(
        err.starts_with("error: "),
        "stderr should start with 'error: ': {err}"
    );
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
}

/// Runs `scripts/NAME` with python3 and `args`, with a stand-in package `module` on
/// `PYTHONPATH` whose `__init__.py` is `init` (to import as an empty module or to fail to
/// import), so that a script's checks before its optional dependency does any work are reached.
pub fn python_script(name: &str, module: &str, init: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join(module);
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), init).unwrap();
    Command::new("python3")
        .arg(workspace_root().join("scripts").join(name))
        .args(args)
        .env("PYTHONPATH", dir.path())
        .output()
        .expect("python3 runs (the test command installs it)")
}

/// Asserts that a script's stderr is one line and holds no Python traceback.
pub fn assert_no_traceback(o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("Traceback"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// The real Fashion-MNIST directory (installed by the test command).
pub fn data_dir() -> PathBuf {
    fmnist_infer::data::locate(None).unwrap_or_else(|e| panic!("{e}"))
}
pub mod board_run;
pub mod cli_models;
pub mod defmt_log;
pub mod elf;
pub mod example_run;
pub mod firmware_build;
pub mod fixtures;
pub mod fuzz;
pub mod gdb;
pub mod linalg;
pub mod qemu;
pub mod qemu_run;
pub mod trained;
