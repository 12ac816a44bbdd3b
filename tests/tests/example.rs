//! The example application (`example/`): a user's firmware on `fmnist-core` alone, which is
//! also the project's size build. On every core under QEMU (M0 `microbit`, M3 `mps2-an385`, M4F
//! `mps2-an386`, M7 `mps2-an500`, M33 `mps2-an505`), driven through QEMU's gdbstub
//! (`fmnist_tests::example_run`): its int8 logits and class names equal `fmnist-core`'s on the
//! host for the test images fed to it, a corrupt or foreign model is refused before anything
//! is classified, and its figures — program flash (vector table + `.text` + `.rodata`), RAM
//! (static + painted stack peak) and instructions per inference — are recorded in
//! `firmware/expected-cores.txt` (`size-build` keys; `FMNIST_BLESS=1` writes them).
//!
//! In CI each core gets the first [`CI_IMAGES`] test images (each image is a stop of the CPU
//! and a few gdbstub round trips, about 3 ms of QEMU time on top of the inference);
//! `FMNIST_FULL=1` feeds all 10,000.
//!
//! `readme_quotes_the_example` keeps README.md's "Use it in your firmware" equal to the
//! example's code (the `ANCHOR:` sections of `example/src/main.rs` and `example/Cargo.toml`).
//!
//! Run from the workspace root: `cargo test -p fmnist-tests --release --test example`. Needs
//! the four Cortex-M targets and qemu-system-arm.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use fmnist_core::CLASS_NAMES;
use fmnist_core::format::{Arch, Kind};
use fmnist_core::layers::argmax;
use fmnist_core::quant::LeNetQ;
use fmnist_tests::example_run::{self, ExampleRun};
use fmnist_tests::qemu::{self, Core, LENET_MACS};

/// Test images per core in CI.
const CI_IMAGES: usize = 1_000;

const TIMEOUT: Duration = Duration::from_secs(900);

/// Issue 17's flash goals for the size build, in bytes (16 KiB on the M4F, 12 KiB on the M0).
const FLASH_GOAL_M4F: u64 = 16 * 1024;
const FLASH_GOAL_M0: u64 = 12 * 1024;

fn images() -> usize {
    if std::env::var_os("FMNIST_FULL").is_some() {
        10_000
    } else {
        CI_IMAGES
    }
}

struct Models {
    int8: PathBuf,
    _dir: tempfile::TempDir,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let int8 = dir.path().join("int8.fmnm");
        let t = qemu::trained();
        std::fs::write(
            &int8,
            qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*t.int8)),
        )
        .unwrap();
        Models { int8, _dir: dir }
    })
}

fn host() -> &'static [[i8; 10]] {
    static H: OnceLock<Vec<[i8; 10]>> = OnceLock::new();
    H.get_or_init(|| {
        let net = LeNetQ::new(&qemu::trained().int8).unwrap();
        qemu::test_set()
            .images
            .iter()
            .map(|img| net.forward(img))
            .collect()
    })
}

/// Runs the example on `core` over the first `n` test images and checks every result against
/// the host's.
fn bit_exact(core: Core, n: usize) -> ExampleRun {
    let elf = example_run::example_elf(core);
    let images = &qemu::test_set().images[..n];
    let run = example_run::run(core, &elf, &models().int8, images, TIMEOUT);
    assert!(
        !run.refused,
        "{}: the example refused the model",
        core.name()
    );
    assert_eq!(run.logits.len(), n, "{}", core.name());
    let host = &host()[..n];
    let differ: Vec<usize> = (0..n).filter(|&i| run.logits[i] != host[i]).collect();
    assert!(
        differ.is_empty(),
        "{}: {} of {n} images' logits differ from the host (first #{})",
        core.name(),
        differ.len(),
        differ[0]
    );
    for (i, (name, h)) in run.names.iter().zip(host).enumerate() {
        assert_eq!(
            name,
            CLASS_NAMES[argmax(h)],
            "{}: image {i}: class name",
            core.name()
        );
    }
    eprintln!(
        "{}: example, {n} images: logits and class names = host; {:.1} s wall, QEMU CPU {:.1} s, \
         stack peak {} B{}",
        core.name(),
        run.elapsed.as_secs_f64(),
        run.cpu.as_secs_f64(),
        run.stack_peak,
        run.instructions.map_or(String::new(), |i| format!(
            ", {:.4} instructions per MAC",
            i as f64 / (n as u64 * LENET_MACS) as f64
        )),
    );
    run
}

/// Program flash of the example ELF: vector table + `.text` + `.rodata` (+ `.data`, none).
fn flash(elf: &Path) -> u64 {
    let s = qemu::sizes(elf);
    s.text + s.rodata + s.data
}

/// The figures of one core: flash, RAM, and the mean instructions per inference where counted.
fn figures(core: Core, run: &ExampleRun, n: usize) -> Vec<(String, u64)> {
    let c = core.name();
    let elf = example_run::example_elf(core);
    let s = qemu::sizes(&elf);
    let mut f = vec![
        (format!("{c}.size-build.flash"), flash(&elf)),
        (
            format!("{c}.size-build.ram"),
            s.data + s.bss + run.stack_peak as u64,
        ),
    ];
    if let Some(i) = run.instructions {
        f.push((format!("{c}.size-build.mean_inference"), i / n as u64));
    }
    f
}

fn check_and_record(core: Core, run: &ExampleRun, n: usize) {
    let figures = figures(core, run, n);
    for (k, v) in &figures {
        eprintln!("{k} {v}");
        if k.ends_with(".ram") {
            assert!(*v <= 8 * 1024, "{k} {v}: over 8 KiB");
        }
    }
    qemu::record_figures(&figures);
}

#[test]
fn m0_microbit() {
    let n = images();
    let run = bit_exact(Core::M0, n);
    check_and_record(Core::M0, &run, n);
    let f = flash(&example_run::example_elf(Core::M0));
    assert!(
        f <= FLASH_GOAL_M0,
        "M0 size build: {f} bytes of flash, over the goal {FLASH_GOAL_M0}"
    );
}

/// The M0's instructions: the micro:bit ELF on the an385 (its layout lies in the an385's
/// map), whose FPGAIO counter runs from reset.
#[test]
fn m0_code_counted_on_an385() {
    let n = images();
    let run = bit_exact(Core::M0OnAn385, n);
    let i = run.instructions.expect("the an385 counts");
    qemu::record_figures(&[("m0.size-build.mean_inference".to_string(), i / n as u64)]);
}

#[test]
fn m3_an385() {
    let n = images();
    let run = bit_exact(Core::M3, n);
    check_and_record(Core::M3, &run, n);
}

#[test]
fn m4f_an386() {
    let n = images();
    let run = bit_exact(Core::M4F, n);
    check_and_record(Core::M4F, &run, n);
    let f = flash(&example_run::example_elf(Core::M4F));
    assert!(
        f <= FLASH_GOAL_M4F,
        "M4F size build: {f} bytes of flash, over the goal {FLASH_GOAL_M4F}"
    );
}

#[test]
fn m7_an500() {
    let n = images();
    let run = bit_exact(Core::M7, n);
    check_and_record(Core::M7, &run, n);
}

#[test]
fn m33_an505() {
    let n = images();
    let run = bit_exact(Core::M33, n);
    check_and_record(Core::M33, &run, n);
}

/// A model with one flipped byte, and one of another kind, are refused before anything is
/// classified, on every core.
#[test]
fn refusals_on_every_core() {
    let good = std::fs::read(&models().int8).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut flipped = good.clone();
    flipped[20_000] ^= 0x10;
    let flipped_path = dir.path().join("flipped.fmnm");
    std::fs::write(&flipped_path, &flipped).unwrap();
    // The f32 LeNet (BN folded) header on an int8-sized file: another kind, whose declared
    // length is not the int8 file's.
    let mut foreign = good.clone();
    foreign[10..12].copy_from_slice(&(Kind::F32Folded as u16).to_le_bytes());
    let n = foreign.len() - 4;
    let crc = fmnist_core::format::CRC32.checksum(&foreign[..n]);
    foreign[n..].copy_from_slice(&crc.to_le_bytes());
    let foreign_path = dir.path().join("foreign.fmnm");
    std::fs::write(&foreign_path, &foreign).unwrap();
    let images = &qemu::test_set().images[..1];
    for core in [Core::M0, Core::M3, Core::M4F, Core::M7, Core::M33] {
        let elf = example_run::example_elf(core);
        for model in [&flipped_path, &foreign_path] {
            let run = example_run::run(core, &elf, model, images, Duration::from_secs(60));
            assert!(
                run.refused && run.logits.is_empty(),
                "{}: {} not refused",
                core.name(),
                model.display()
            );
        }
    }
}

/// The `ANCHOR: name` … `ANCHOR_END: name` lines of `text`, without the common indentation.
fn anchor(text: &str, name: &str) -> String {
    let start = format!("ANCHOR: {name}");
    let end = format!("ANCHOR_END: {name}");
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.trim_start().ends_with(&start))
        .skip(1)
        .take_while(|l| !l.trim_start().ends_with(&end))
        .collect();
    assert!(!lines.is_empty(), "no anchor {name}");
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// README.md's "Use it in your firmware" quotes the example: the dependency line, the profile,
/// the model's loading and the loop are the example's own lines, so the two cannot drift.
#[test]
fn readme_quotes_the_example() {
    let root = qemu::firmware_dir().parent().unwrap().to_owned();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("\n## Use it in your firmware")
        .nth(1)
        .expect("README.md has no section \"Use it in your firmware\"");
    let section = section.split("\n## ").next().unwrap();
    let main = std::fs::read_to_string(root.join("example/src/main.rs")).unwrap();
    let cargo = std::fs::read_to_string(root.join("example/Cargo.toml")).unwrap();
    for (file, text, name) in [
        ("example/Cargo.toml", &cargo, "dependency"),
        ("example/Cargo.toml", &cargo, "profile"),
        ("example/src/main.rs", &main, "model"),
        ("example/src/main.rs", &main, "main"),
    ] {
        let quoted = anchor(text, name);
        assert!(
            section.contains(&quoted),
            "README.md's \"Use it in your firmware\" does not quote {file}'s `{name}` lines:\n{quoted}"
        );
    }
}
