//! `cargo xtask`: the two commands of the README, and their parts.
//!
//! * `cargo xtask demo`  — the main job: install what is missing, train LeNet-BN, quantize it
//!   to int8, run it on the emulated Cortex-M4F (QEMU mps2-an386), and report.
//! * `cargo xtask test`  — the test suite CI runs (`.ci/run`).
//! * `cargo xtask setup` — only the installs (Debian packages, rustup target and component).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const DATA_MARKER: &str = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
const TARGET: &str = "thumbv7em-none-eabihf";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// A failed step: what was run and why it failed.
struct Failure(String);

type Step = Result<(), Failure>;

fn run(cmd: &mut Command) -> Step {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| Failure(format!("{}: {e}", describe(cmd))))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!("{} failed ({status})", describe(cmd))))
    }
}

fn output(cmd: &mut Command) -> Result<String, Failure> {
    eprintln!("$ {}", describe(cmd));
    let out = cmd
        .output()
        .map_err(|e| Failure(format!("{}: {e}", describe(cmd))))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Installs what is missing: Debian packages (as root, or through sudo), the rustup target and
/// the llvm-tools component. Idempotent and quiet when everything is there.
fn setup() -> Step {
    let mut packages = Vec::new();
    if !Path::new(DATA_MARKER).exists()
        && std::env::var_os("FMNIST_DATA").is_none()
        && !root().join("data/fashion-mnist").is_dir()
    {
        packages.push("dataset-fashion-mnist");
    }
    if !have("qemu-system-arm") {
        packages.push("qemu-system-arm");
    }
    if !packages.is_empty() {
        let sudo = if is_root() {
            vec![]
        } else if have("sudo") {
            vec!["sudo"]
        } else {
            return Err(Failure(format!(
                "missing Debian packages {packages:?} and not root: install them with apt-get"
            )));
        };
        let apt = |args: &[&str]| {
            let mut c = Command::new(sudo.first().copied().unwrap_or("apt-get"));
            if !sudo.is_empty() {
                c.arg("apt-get");
            }
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        run(&mut apt(&["update", "-qq"]))?;
        let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
        install.args(&packages);
        run(&mut install)?;
    }
    if have("rustup") {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if !installed.lines().any(|l| l.trim() == TARGET) {
            run(Command::new("rustup").args(["target", "add", TARGET]))?;
        }
        let components = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
        if !components.lines().any(|l| l.starts_with("llvm-tools")) {
            run(Command::new("rustup").args(["component", "add", "llvm-tools"]))?;
        }
    } else {
        eprintln!("warning: no rustup; make sure the {TARGET} target is installed");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The whole test suite.
fn test() -> Step {
    setup()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // fmnist-core is no_std: it must build for the microcontroller.
    run(cargo().args([
        "build",
        "-p",
        "fmnist-core",
        "--features",
        "defmt",
        "--target",
        TARGET,
    ]))?;
    // Unit tests of the integer kernels with overflow checks (dev profile)...
    run(cargo().args(["test", "-p", "fmnist-core"]))?;
    // ...then everything optimised, the integration tests using the release binaries.
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    run(cargo().args(["test", "--release", "--workspace"]))?;
    firmware_checks()
}

/// Builds the firmware profiles that the host tests do not run (the real board).
fn firmware_checks() -> Step {
    let fw = root().join("firmware");
    if !fw.join("Cargo.toml").exists() {
        return Ok(());
    }
    let mut c = cargo();
    c.current_dir(&fw).args(["board-build"]);
    run(&mut c)
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "setup" => setup(),
        "test" => test(),
        "demo" => demo(),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|setup>");
            eprintln!("  demo   train → quantize → run on the emulated Cortex-M4F → report");
            eprintln!("  test   the test suite (what CI runs)");
            eprintln!("  setup  install the Debian packages and rustup target the others need");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(why)) => {
            eprintln!("xtask {task}: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The main job.
fn demo() -> Step {
    setup()?;
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let out = root().join("runs/demo");
    let train = root().join("target/release/fmnist-train");
    let summary = output(
        Command::new(&train)
            .args(["train", "--json", "--out"])
            .arg(&out),
    )?;
    let j: serde_json::Value =
        serde_json::from_str(summary.trim()).map_err(|e| Failure(format!("train output: {e}")))?;
    println!(
        "trained LeNet-BN: test accuracy {:.2} % ({:.0} images/s, {:.0} s) → {}",
        100.0 * j["test_accuracy"].as_f64().unwrap_or(f64::NAN),
        j["images_per_second"].as_f64().unwrap_or(f64::NAN),
        j["wall_seconds"].as_f64().unwrap_or(f64::NAN),
        j["model"].as_str().unwrap_or("?")
    );
    Ok(())
}
