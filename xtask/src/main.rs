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
/// Every core's target the firmware is built and tested for (tests/tests/cores.rs).
const CORE_TARGETS: [&str; 4] = [
    "thumbv6m-none-eabi",
    "thumbv7m-none-eabi",
    TARGET,
    "thumbv8m.main-none-eabihf",
];

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
    // For the tests of scripts/bench_pytorch.py.
    if !have("python3") {
        packages.push("python3");
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
        for target in CORE_TARGETS {
            if !installed.lines().any(|l| l.trim() == target) {
                run(Command::new("rustup").args(["target", "add", target]))?;
            }
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

/// The whole test suite. Ends with one `N passed, N failed` line over every test binary.
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
    firmware_checks()?;
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
    let core = run_tests(cargo().args(["test", "-p", "fmnist-core"]));
    // ...then everything optimised, the integration tests using the release binaries.
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let all = run_tests(cargo().args(["test", "--release", "--workspace", "--no-fail-fast"]));
    let (passed, failed) = (core.0 + all.0, core.1 + all.1);
    println!("{passed} passed, {failed} failed");
    match (core.2, all.2) {
        (Ok(()), Ok(())) if failed == 0 => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(e),
        _ => Err(Failure(format!("{failed} tests failed"))),
    }
}

/// Runs a `cargo test` command, echoing its output, and counts passed and failed tests from the
/// harness's `test result:` lines.
fn run_tests(cmd: &mut Command) -> (u64, u64, Step) {
    use std::io::{BufRead, BufReader};
    eprintln!("$ {}", describe(cmd));
    let mut child = match cmd.stdout(std::process::Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return (0, 0, Err(Failure(format!("{}: {e}", describe(cmd))))),
    };
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |key: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(key)
                        })
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                passed += count(" passed");
                failed += count(" failed");
            }
        }
    }
    let status = child.wait();
    let step = match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Failure(format!("{} failed ({s})", describe(cmd)))),
        Err(e) => Err(Failure(format!("{}: {e}", describe(cmd)))),
    };
    (passed, failed, step)
}

/// Lints the firmware crate and the example application, which the workspace commands skip
/// (they are excluded: their own targets), and lints and builds the example for the M0 and
/// the M4F. The firmware tests build every profile, the real board's included; the example's
/// test (`tests/tests/example.rs`) builds and runs it on every core.
fn firmware_checks() -> Step {
    let example = root().join("example");
    run(cargo().current_dir(&example).args(["fmt", "--check"]))?;
    for target in ["thumbv6m-none-eabi", TARGET] {
        run(cargo().current_dir(&example).args([
            "clippy",
            "--release",
            "--target",
            target,
            "--",
            "-D",
            "warnings",
        ]))?;
        run(cargo()
            .current_dir(&example)
            .args(["build", "--release", "--target", target]))?;
    }
    let fw = root().join("firmware");
    run(cargo().current_dir(&fw).args(["fmt", "--check"]))?;
    for target in CORE_TARGETS {
        run(cargo().current_dir(&fw).args([
            "clippy",
            "--release",
            "--target",
            target,
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    run(cargo().current_dir(&fw).args([
        "clippy",
        "--release",
        "--no-default-features",
        "--features",
        "board",
        "--",
        "-D",
        "warnings",
    ]))
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "setup" => setup(),
        "test" => test(),
        "demo" => demo(),
        "device" => match std::env::args().nth(2) {
            Some(model) => device(Path::new(&model)),
            None => Err(Failure("usage: cargo xtask device MODEL.fmq".into())),
        },
        _ => {
            eprintln!("usage: cargo xtask <demo|device MODEL|test|setup>");
            eprintln!("  demo   train → quantize → run on the emulated Cortex-M4F → report");
            eprintln!(
                "  device run an int8 model file (LeNet-BN or wide CNN) on the emulated chip: all 10,000 test images against the host, and its cost"
            );
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

/// Runs an int8 model file of either network on the emulated Cortex-M4F: all 10,000 test images
/// compared with the host's logits, then the bench mode's instruction counts.
fn device(model: &Path) -> Step {
    use fmnist_core::format::Arch;
    use fmnist_core::quant::{LeNetQ, WideQ};
    use fmnist_infer::modelio::LoadedModel;
    use fmnist_tests::qemu::{self, Profile};

    setup()?;
    let m = LoadedModel::read(model).map_err(|e| Failure(e.to_string()))?;
    let file = m.file().map_err(|e| Failure(m.error(e).to_string()))?;
    let set = qemu::test_set();
    let refused = |e| Failure(m.error(e).to_string());
    let (logits, name): (Vec<[i8; 10]>, &str) = if file.header.arch == Arch::Wide {
        let p = file.wide_int8().map_err(refused)?;
        let net = WideQ::new(p).map_err(|e| Failure(format!("{e:?}")))?;
        (
            set.images.iter().map(|img| net.forward(img)).collect(),
            "wide-int8",
        )
    } else {
        let p = file.lenet_int8().map_err(refused)?;
        let net = LeNetQ::new(p).map_err(|e| Failure(format!("{e:?}")))?;
        (
            set.images.iter().map(|img| net.forward(img)).collect(),
            "int8",
        )
    };
    let correct = logits
        .iter()
        .zip(&set.labels)
        .filter(|(l, y)| fmnist_core::layers::argmax(l) == **y as usize)
        .count();
    let host: Vec<u8> = logits.iter().flatten().map(|&v| v as u8).collect();
    let dev = qemu::verify(
        Profile::Qemu,
        model,
        name,
        std::time::Duration::from_secs(1800),
    );
    let bench = qemu::run(
        &qemu::firmware(Profile::Qemu),
        Some(model),
        &["bench", set.images_path.to_str().unwrap()],
        std::time::Duration::from_secs(300),
    );
    let n = set.images.len();
    let same = dev.logits == host;
    println!(
        "device {name}  {}: {}/{n} correct on the device, {correct}/{n} on the host ({:.1} s under QEMU)",
        if same {
            "all 10,000 logits identical to the host's"
        } else {
            "LOGITS DIFFER FROM THE HOST"
        },
        dev.correct,
        dev.elapsed.as_secs_f64()
    );
    for line in bench
        .log
        .iter()
        .filter(|l| l.contains("bench") || l.contains("stack peak"))
    {
        println!("cost         {}", line.trim_start_matches("INFO "));
    }
    if same && dev.correct as usize == correct {
        Ok(())
    } else {
        Err(Failure("the device disagrees with the host".into()))
    }
}

/// The main job.
fn demo() -> Step {
    use fmnist_core::layers::argmax;
    use fmnist_core::lenet::LeNet;
    use fmnist_core::quant::LeNetQ;
    use fmnist_infer::modelio::LoadedModel;
    use fmnist_tests::qemu::{self, Profile};

    setup()?;
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let out = root().join("runs/demo");
    let bin = |name: &str| root().join("target/release").join(name);
    let json = |text: String| -> Result<serde_json::Value, Failure> {
        serde_json::from_str(text.trim())
            .map_err(|e| Failure(format!("unexpected output ({e}): {text}")))
    };

    println!("== 1. train LeNet-BN (default preset) ==");
    let t = json(output(
        Command::new(bin("fmnist-train"))
            .args(["train", "--json", "--overwrite", "--out"])
            .arg(&out),
    )?)?;
    let f32_model = PathBuf::from(t["model"].as_str().unwrap_or_default());

    println!("== 2. fold batch norm, calibrate, quantize to int8 ==");
    let int8_model = out.join("model.fmq");
    let folded_model = out.join("model-f32-folded.fmnm");
    let e = json(output(
        Command::new(bin("fmnist-train"))
            .args(["export", "--json", "--method", "percentile", "--checkpoint"])
            .arg(&f32_model)
            .arg("--out")
            .arg(&int8_model)
            .arg("--folded-out")
            .arg(&folded_model),
    )?)?;

    println!("== 3. run on the emulated Cortex-M4F (QEMU mps2-an386) ==");
    let set = qemu::test_set();
    let elf = qemu::firmware(Profile::Qemu);
    let demo = qemu::run(
        &elf,
        Some(&int8_model),
        &[
            "demo",
            set.images_path.to_str().unwrap(),
            set.labels_path.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(120),
    );
    for line in &demo.log {
        println!("   device: {line}");
    }
    let timeout = std::time::Duration::from_secs(600);
    let q = LoadedModel::read(&int8_model).map_err(|e| Failure(e.to_string()))?;
    let q = q
        .file()
        .and_then(|f| f.lenet_int8())
        .map_err(|e| Failure(e.to_string()))?;
    let net = LeNetQ::new(q).map_err(|e| Failure(format!("{e:?}")))?;
    let host: Vec<u8> = set
        .images
        .iter()
        .flat_map(|img| net.forward(img).map(|v| v as u8))
        .collect();
    let host_correct = set
        .images
        .iter()
        .zip(&set.labels)
        .filter(|(img, l)| net.classify(img) == **l as usize)
        .count();
    let dev = qemu::verify(Profile::Qemu, &int8_model, "int8", timeout);
    let int8_same = dev.logits == host;

    let f = LoadedModel::read(&folded_model).map_err(|e| Failure(e.to_string()))?;
    let f = f
        .file()
        .and_then(|f| f.lenet_folded())
        .map_err(|e| Failure(e.to_string()))?;
    let fnet = LeNet::from(f);
    let host_f32: Vec<u8> = set
        .images
        .iter()
        .flat_map(|img| fnet.forward(img).map(f32::to_le_bytes))
        .flatten()
        .collect();
    let host_f32_correct = set
        .images
        .iter()
        .zip(&set.labels)
        .filter(|(img, l)| argmax(&fnet.forward(img)) == **l as usize)
        .count();
    let dev_f32 = qemu::verify(Profile::Qemu, &folded_model, "f32", timeout);
    let f32_same = dev_f32.logits == host_f32;

    let bench = qemu::run(
        &elf,
        Some(&int8_model),
        &["bench", set.images_path.to_str().unwrap()],
        std::time::Duration::from_secs(120),
    );
    let int8_elf = qemu::firmware(Profile::QemuInt8);
    let size = qemu::sizes(&int8_elf);

    let n = set.images.len();
    let pct = |c: f64| 100.0 * c;
    println!();
    println!("== report ==");
    println!(
        "training     f32 test accuracy {:.2} %, {:.0} images/s on {} threads, {:.0} s ({})",
        pct(t["test_accuracy"].as_f64().unwrap_or(f64::NAN)),
        t["images_per_second"].as_f64().unwrap_or(f64::NAN),
        t["threads"],
        t["wall_seconds"].as_f64().unwrap_or(f64::NAN),
        f32_model.display()
    );
    println!(
        "int8 export  f32 {:.2} %, int8 {:.2} % ({:+.2} points), {} bytes ({})",
        pct(e["f32_accuracy"].as_f64().unwrap_or(f64::NAN)),
        pct(e["int8_accuracy"].as_f64().unwrap_or(f64::NAN)),
        e["delta_points"].as_f64().unwrap_or(f64::NAN),
        e["bytes"],
        int8_model.display()
    );
    println!(
        "device int8  {}: {}/{n} correct on the device, {host_correct}/{n} on the host ({:.1} s under QEMU)",
        if int8_same {
            "all 10,000 logits identical to the host's"
        } else {
            "LOGITS DIFFER FROM THE HOST"
        },
        dev.correct,
        dev.elapsed.as_secs_f64()
    );
    println!(
        "device f32   {}: {}/{n} correct on the device, {host_f32_correct}/{n} on the host ({:.1} s under QEMU)",
        if f32_same {
            "all 10,000 logits bit-identical to the host's"
        } else {
            "LOGITS DIFFER FROM THE HOST"
        },
        dev_f32.correct,
        dev_f32.elapsed.as_secs_f64()
    );
    for line in bench.log.iter().filter(|l| l.contains("bench")) {
        println!("cost         {}", line.trim_start_matches("INFO "));
    }
    let stack = demo
        .line("stack peak")
        .and_then(|l| qemu::number_after(l, "stack peak: "));
    println!(
        "memory       int8-only firmware: .text {} .rodata {} .data {} .bss {} bytes; \
         stack peak {} bytes (demo run of the full firmware)",
        size.text,
        size.rodata,
        size.data,
        size.bss,
        stack.map_or("?".to_string(), |s| s.to_string())
    );
    if int8_same
        && f32_same
        && dev.correct as usize == host_correct
        && dev_f32.correct as usize == host_f32_correct
    {
        Ok(())
    } else {
        Err(Failure("the device disagrees with the host".into()))
    }
}
