//! Running the firmware on `qemu-system-arm -machine mps2-an386`: one run, or the whole test
//! set in verify mode, and the test split written raw for the firmware to stream.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fmnist_core::lenet::IMAGE_PIXELS;

use crate::defmt_log::{decode, number_after};
use crate::firmware_build::{Core, Profile, firmware_for};

/// Where the model region starts on the QEMU profile (`firmware/memory/qemu-mps2-an386.x`).
pub const MODEL_ADDR: u32 = 0x0002_0000;

/// Exit status of the firmware for a refused model.
pub const EXIT_MODEL: i32 = 2;

/// What a QEMU run produced.
#[derive(Debug)]
pub struct Run {
    /// QEMU's exit status (the firmware's semihosting exit code).
    pub status: i32,
    /// The decoded defmt log, one `LEVEL message` line per frame.
    pub log: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// QEMU's CPU time, user + system (`wait4`): unlike the wall time, not stretched by other
    /// jobs on a shared machine.
    pub cpu: Duration,
}

impl Run {
    /// The log as one string.
    pub fn text(&self) -> String {
        self.log.join("\n")
    }

    /// The first log line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&str> {
        self.log
            .iter()
            .find(|l| l.contains(needle))
            .map(String::as_str)
    }
}

/// Fails with the install command when `qemu-system-arm` is missing.
pub fn require_qemu() {
    let ok = Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "qemu-system-arm not found: the firmware tests need it \
         (Debian/Ubuntu: `apt-get install -y qemu-system-arm`)"
    );
}

/// Runs the firmware on QEMU mps2-an386 with `model` loaded at [`MODEL_ADDR`] and `args` as its
/// semihosting command line. Bench and demo modes get `-icount shift=0` (one instruction per
/// virtual nanosecond: the TIMER0 count they log is exact); verify runs about 10 % faster without.
pub fn run(elf: &Path, model: Option<&Path>, args: &[&str], timeout: Duration) -> Run {
    run_on(Core::M4F, elf, model, args, timeout)
}

/// [`run`] on `core`'s QEMU machine, the model loaded at its model region.
pub fn run_on(
    core: Core,
    elf: &Path,
    model: Option<&Path>,
    args: &[&str],
    timeout: Duration,
) -> Run {
    let counted = matches!(args.first(), Some(&"bench") | Some(&"demo"));
    run_counted(core, elf, model, args, timeout, counted)
}

/// [`run_on`], with `-icount shift=0` when `counted` (the firmware's cost counter then counts
/// instructions exactly, whatever the mode).
pub fn run_counted(
    core: Core,
    elf: &Path,
    model: Option<&Path>,
    args: &[&str],
    timeout: Duration,
    counted: bool,
) -> Run {
    require_qemu();
    let (machine, cpu) = core.machine();
    let model_addr = core.model_addr();
    let mut cmd = Command::new("timeout");
    cmd.arg(timeout.as_secs().to_string())
        .arg("qemu-system-arm")
        .args(["-machine", machine, "-cpu", cpu])
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"]);
    if counted {
        cmd.args(["-icount", "shift=0"]);
    }
    if let Some(m) = model {
        cmd.arg("-device")
            .arg(format!("loader,file={},addr={model_addr:#x}", m.display()));
    }
    cmd.arg("-kernel")
        .arg(elf)
        .arg("-append")
        .arg(args.join(" "));
    for a in args {
        assert!(
            !a.contains(' '),
            "semihosting arguments cannot hold spaces: {a}"
        );
    }
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start timeout/qemu-system-arm");
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut bytes);
        bytes
    });
    let (status, cpu) = wait_with_cpu(child);
    let stdout = reader.join().unwrap();
    let elapsed = t.elapsed();
    assert_ne!(
        status,
        124,
        "QEMU timed out after {timeout:?}; log so far:\n{}",
        decode(elf, &stdout).join("\n")
    );
    Run {
        status,
        log: decode(elf, &stdout),
        elapsed,
        cpu,
    }
}

/// Waits for `child` (`timeout`, which waits for QEMU) and returns its exit status (-1 when
/// killed by a signal) and the CPU time, user + system, of it and the children it waited for.
pub fn wait_with_cpu(child: std::process::Child) -> (i32, Duration) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid; `wait4` fills it for our own child, which is
    // reaped here (std's `Child` does not wait on drop).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, time(usage.ru_utime) + time(usage.ru_stime))
}

/// QEMU processes a verify run is split into (each takes a contiguous range of images).
pub const VERIFY_PARTS: u32 = 2;

/// What a verify run over the whole test set produced.
#[derive(Debug)]
pub struct Verify {
    /// The device's logits, image after image (10 bytes per int8 image, 40 per f32 image).
    pub logits: Vec<u8>,
    /// Images the device classified correctly (from its `verify NAME: N images, C correct` lines).
    pub correct: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// CPU time of all the QEMU processes (user + system), see [`Run::cpu`].
    pub cpu: Duration,
    /// The decoded logs of all parts.
    pub log: String,
    /// Instructions of all the inferences (the firmware's cost counter summed over the
    /// images), for a LeNet int8 run ([`COUNTED`]: QEMU with `-icount shift=0`); `None` for
    /// the others, which run without it (faster, the count then is not exact).
    pub instructions: Option<u64>,
}

/// The verify runs whose instructions are counted: LeNet int8, the figure issue 17's goals of
/// instructions per multiply-add are about (data dependent, so the mean over all test images).
pub const COUNTED: &str = "int8";

/// Runs verify mode over the whole test set in [`VERIFY_PARTS`] parallel QEMU processes, each
/// streaming a contiguous range of images, one verify per test process at a time; `name` is
/// the model kind the firmware logs (`int8`, `f32` or `wide-int8`). The timeout applies to each
/// QEMU process. Panics with the log when a part fails.
pub fn verify(profile: Profile, model: &Path, name: &str, timeout: Duration) -> Verify {
    verify_on(
        Core::M4F,
        profile,
        model,
        name,
        timeout,
        test_set().images.len(),
    )
}

/// [`verify`] on `core`, over the first `count` test images.
pub fn verify_on(
    core: Core,
    profile: Profile,
    model: &Path,
    name: &str,
    timeout: Duration,
    count: usize,
) -> Verify {
    let set = test_set();
    let elf = firmware_for(core, profile);
    let n = count.min(set.images.len()) as u32;
    // One verify at a time: each already keeps [`VERIFY_PARTS`] cores busy, and two at once
    // (the test harness runs tests in parallel) would stretch both past their timeouts.
    static VERIFY_LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = VERIFY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let parts: Vec<(PathBuf, Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..VERIFY_PARTS)
            .map(|k| {
                let (first, last) = (n * k / VERIFY_PARTS, n * (k + 1) / VERIFY_PARTS);
                let out = model.with_extension(format!("device-logits-{k}"));
                let elf = &elf;
                s.spawn(move || {
                    let (first_s, count_s) = (first.to_string(), (last - first).to_string());
                    let args = [
                        "verify",
                        set.images_path.to_str().unwrap(),
                        set.labels_path.to_str().unwrap(),
                        out.to_str().unwrap(),
                        &first_s,
                        &count_s,
                    ];
                    let run = run_counted(core, elf, Some(model), &args, timeout, name == COUNTED);
                    (out, run)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = t.elapsed();
    let mut logits = Vec::new();
    let mut correct = 0;
    let mut instructions = 0;
    let mut log = String::new();
    let cpu = parts.iter().map(|(_, r)| r.cpu).sum();
    for (out, run) in &parts {
        log.push_str(&run.text());
        log.push('\n');
        assert_eq!(run.status, 0, "verify failed:\n{}", run.text());
        logits.extend(std::fs::read(out).unwrap());
        let _ = std::fs::remove_file(out);
        let line = run
            .line(&format!("verify {name}:"))
            .unwrap_or_else(|| panic!("no verify summary in:\n{}", run.text()));
        correct += number_after(line, "images,").unwrap();
        instructions += number_after(line, "inference").unwrap();
    }
    Verify {
        logits,
        correct,
        elapsed,
        cpu,
        log,
        instructions: (name == COUNTED).then_some(instructions),
    }
}

/// Multiply-adds of one LeNet-BN inference (conv1 117,600, conv2 240,000, fc1 48,000, fc2
/// 10,080, fc3 840).
pub const LENET_MACS: u64 = 416_520;

/// The mean instructions per multiply-add of a LeNet int8 verify run over `images` images,
/// recorded as `{core}.int8.mean_per_mac_x10000` (and the mean instructions per inference as
/// `{core}.int8.mean_inference`) in `firmware/expected-cores.txt` ([`record_figures`]); fails
/// when above `limit` instructions per multiply-add. Returns the mean.
pub fn check_mean_per_mac(core: &str, run: &Verify, images: usize, limit: f64) -> f64 {
    let total = run
        .instructions
        .expect("a LeNet int8 verify run counts its instructions");
    let mean = total as f64 / (images as u64 * LENET_MACS) as f64;
    eprintln!(
        "{core} int8: {:.4} instructions per multiply-add, the mean over {images} images \
         ({} per inference)",
        mean,
        total / images as u64
    );
    record_figures(&[
        (format!("{core}.int8.mean_inference"), total / images as u64),
        (
            format!("{core}.int8.mean_per_mac_x10000"),
            (total * 10_000 + images as u64 * LENET_MACS / 2) / (images as u64 * LENET_MACS),
        ),
    ]);
    assert!(
        mean <= limit,
        "{core} int8: {mean:.4} instructions per multiply-add on average, over the goal {limit}"
    );
    mean
}

/// Keys of `firmware/expected-cores.txt` written by the verify tests and the example's test
/// (`tests/tests/example.rs`, the size build) through [`record_figures`], not by
/// `figures_per_core`.
pub fn is_verify_figure(key: &str) -> bool {
    key.contains(".int8.mean_") || key.contains(".size-build.")
}

/// With `FMNIST_BLESS` set, writes `figures` into `firmware/expected-cores.txt` (replacing
/// the lines of the same keys, keeping the others); otherwise notes those that differ from it
/// (instruction counts move with the kernels: recorded on purpose, not failures).
pub fn record_figures(figures: &[(String, u64)]) {
    static FILE: Mutex<()> = Mutex::new(());
    let _one = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let path = crate::firmware_build::firmware_dir().join("expected-cores.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let value = |k: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(k)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    if std::env::var_os("FMNIST_BLESS").is_none() {
        for (k, v) in figures {
            if value(k) != Some(*v) {
                eprintln!(
                    "note: {k} changed from {:?} to {v} (FMNIST_BLESS=1 to record)",
                    value(k)
                );
            }
        }
        return;
    }
    let line = |(k, v): &(String, u64)| format!("{k} {v}");
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let key = l.split(' ').next();
            figures
                .iter()
                .find(|(k, _)| key == Some(k))
                .map_or_else(|| l.to_string(), line)
        })
        .collect();
    lines.extend(figures.iter().filter(|(k, _)| value(k).is_none()).map(line));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// The Fashion-MNIST test split as un-gzipped IDX files, written once per process.
pub struct TestSet {
    /// `t10k-images-idx3-ubyte`.
    pub images_path: PathBuf,
    /// `t10k-labels-idx1-ubyte`.
    pub labels_path: PathBuf,
    /// The images.
    pub images: Vec<[u8; IMAGE_PIXELS]>,
    /// The labels.
    pub labels: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// Loads the test split (`FMNIST_DATA`, then the Debian package's folder, see
/// `fmnist_infer::data::locate`) and writes it raw for the firmware.
pub fn test_set() -> &'static TestSet {
    static SET: OnceLock<TestSet> = OnceLock::new();
    SET.get_or_init(|| {
        use fmnist_infer::data;
        let dir = data::locate(None).unwrap_or_else(|e| {
            panic!("Fashion-MNIST not found ({e}); `apt-get install dataset-fashion-mnist`")
        });
        let set = data::load(&dir, data::Split::Test).unwrap_or_else(|e| panic!("{e}"));
        let tmp = tempfile::tempdir().unwrap();
        let images_path = tmp.path().join("t10k-images-idx3-ubyte");
        let labels_path = tmp.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&images_path, data::encode_images(&set.images)).unwrap();
        std::fs::write(&labels_path, data::encode_labels(&set.labels)).unwrap();
        TestSet {
            images_path,
            labels_path,
            images: set.images,
            labels: set.labels,
            _dir: tmp,
        }
    })
}
