//! The firmware on every Cortex-M core under QEMU (firmware/README.md, "Every core"): Cortex-M0
//! on `microbit`, M3 on `mps2-an385`, M7 on `mps2-an500`, M33 on `mps2-an505` (the M4F on
//! `mps2-an386` is `firmware.rs`'s). On each: int8 LeNet-BN logits byte-identical to
//! `fmnist-core` on the host for all 10,000 test images; f32 (BN folded) bit-identical, on all
//! 10,000 images where the core has an FPU and on the first 1,000 with the compiler's soft-float
//! (M0, M3; `FMNIST_FULL=1` runs all 10,000 everywhere); the wide CNN int8 on the M7 and M33
//! (first 1,000 images; all with `FMNIST_FULL=1`; the M4F runs all 10,000 in `firmware.rs`
//! with the very ELF the M7 runs); refusals; and the per-core figures in
//! `firmware/expected-cores.txt` (`FMNIST_BLESS=1` rewrites it): instructions per layer and per
//! inference on the first test image, flash, RAM (at most 8 KiB everywhere), and the mean
//! instructions per LeNet int8 multiply-add over all 10,000 test images, which the int8 verify
//! runs count (`-icount shift=0`; goal 3.0 on the M0 and M3, 1.0 on the M7 and M33).
//!
//! Run from the workspace root: `cargo test -p fmnist-tests --release --test cores`. Needs the
//! targets `thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf
//! thumbv8m.main-none-eabihf` (`rustup target add …`) and qemu-system-arm.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use fmnist_core::format::{Arch, HEADER_LEN, Kind, encode_header};
use fmnist_core::layers::argmax;
use fmnist_core::lenet::{IMAGE_PIXELS, LeNet, LeNetFoldedParams};
use fmnist_core::quant::{LeNetQ, WideQ};
use fmnist_tests::qemu::{self, Core, Profile, number_after};

/// Per QEMU process; soft-float f32 costs about 63 M instructions per image on the M3.
const TIMEOUT: Duration = Duration::from_secs(900);
/// Per QEMU process with `FMNIST_FULL=1`: half of the 10,000 soft-float images on the M0 is
/// about 0.5 T instructions, 20–40 min of one core, longer on a loaded machine.
const FULL_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
const SHORT: Duration = Duration::from_secs(120);

fn full() -> bool {
    std::env::var_os("FMNIST_FULL").is_some()
}

/// The model files every test shares, written once.
struct Models {
    int8: PathBuf,
    f32: PathBuf,
    wide: PathBuf,
    _dir: tempfile::TempDir,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: Vec<u8>| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let t = qemu::trained();
        let folded: Box<LeNetFoldedParams> = qemu::with_subnormals(&t.folded);
        Models {
            int8: write(
                "int8.fmnm",
                qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*t.int8)),
            ),
            f32: write(
                "f32.fmnm",
                qemu::model_file(Arch::LeNet, Kind::F32Folded, bytemuck::bytes_of(&*folded)),
            ),
            wide: write(
                "wide.fmnm",
                qemu::model_file(
                    Arch::Wide,
                    Kind::Int8,
                    bytemuck::bytes_of(&*qemu::wide_model().int8),
                ),
            ),
            _dir: dir,
        }
    })
}

/// Host logits of every test image, per kind, computed once.
fn host(kind: &str) -> &'static [Vec<u8>] {
    static INT8: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static F32: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static WIDE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let images = &qemu::test_set().images;
    let all = |f: &(dyn Fn(&[u8; IMAGE_PIXELS]) -> Vec<u8> + Sync)| -> Vec<Vec<u8>> {
        let (a, b) = images.split_at(images.len() / 2);
        std::thread::scope(|s| {
            let hb = s.spawn(|| b.iter().map(f).collect::<Vec<_>>());
            let mut out: Vec<_> = a.iter().map(f).collect();
            out.extend(hb.join().unwrap());
            out
        })
    };
    match kind {
        "int8" => INT8.get_or_init(|| {
            let net = LeNetQ::new(&qemu::trained().int8).unwrap();
            all(&|img| net.forward(img).iter().map(|&v| v as u8).collect())
        }),
        "f32" => F32.get_or_init(|| {
            let p: Box<LeNetFoldedParams> = qemu::with_subnormals(&qemu::trained().folded);
            let net = LeNet::from(&*p);
            all(&|img| {
                net.forward(img)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
        }),
        _ => WIDE.get_or_init(|| {
            let net = WideQ::new(&qemu::wide_model().int8).unwrap();
            all(&|img| net.forward(img).iter().map(|&v| v as u8).collect())
        }),
    }
}

/// Verify mode on `core` over the first `count` images: the device's logits equal the host's
/// byte for byte, and so does the number classified correctly.
fn bit_exact(core: Core, kind: &str, count: usize) {
    let m = models();
    let (model, per_image, name) = match kind {
        "int8" => (&m.int8, 10, "int8"),
        "f32" => (&m.f32, 40, "f32"),
        _ => (&m.wide, 10, "wide-int8"),
    };
    let host = &host(kind)[..count];
    let timeout = if full() { FULL_TIMEOUT } else { TIMEOUT };
    let run = qemu::verify_on(core, Profile::Qemu, model, name, timeout, count);
    if kind == "int8" {
        qemu::check_mean_per_mac(core.name(), &run, count, per_mac_goal(core));
    }
    eprintln!(
        "{} {name}: verify of {count} images in {:.1} s wall, QEMU CPU {:.1} s",
        core.name(),
        run.elapsed.as_secs_f64(),
        run.cpu.as_secs_f64()
    );
    assert_eq!(
        run.logits.len(),
        count * per_image,
        "{}\n{}",
        core.name(),
        run.log
    );
    let differ: Vec<usize> = run
        .logits
        .chunks_exact(per_image)
        .zip(host)
        .enumerate()
        .filter(|(_, (d, h))| d != &h.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(
        differ.is_empty(),
        "{} {name}: {} of {count} images differ from the host (first #{})",
        core.name(),
        differ.len(),
        differ[0]
    );
    let class = |l: &Vec<u8>| -> usize {
        if per_image == 40 {
            argmax(&std::array::from_fn::<f32, 10, _>(|i| {
                f32::from_le_bytes(l[4 * i..4 * i + 4].try_into().unwrap())
            }))
        } else {
            argmax(&std::array::from_fn::<i8, 10, _>(|i| l[i] as i8))
        }
    };
    let labels = &qemu::test_set().labels;
    let correct = host
        .iter()
        .zip(labels)
        .filter(|(l, y)| class(l) == **y as usize)
        .count() as u64;
    assert_eq!(
        run.correct,
        correct,
        "{} {name}: device accuracy differs",
        core.name()
    );
    eprintln!(
        "{} {name}: device = host, {correct} / {count} correct",
        core.name()
    );
}

/// Issue 17's goal of instructions per multiply-add for LeNet int8 (the mean over the images
/// of a verify run): 1.0 with the DSP kernels, 3.0 with the portable ones (M0, M3).
fn per_mac_goal(core: Core) -> f64 {
    if matches!(core, Core::M0 | Core::M0OnAn385 | Core::M3) {
        3.0
    } else {
        1.0
    }
}

fn n(soft: bool) -> usize {
    if full() || !soft { 10_000 } else { 1_000 }
}

#[test]
fn m0_microbit_int8_is_bit_exact() {
    bit_exact(Core::M0, "int8", 10_000);
}

/// The micro:bit's 256 KiB of flash cannot hold the f32 file (246,892 bytes) next to the
/// program: the same thumbv6m code runs it on the an385 (`Core::M0OnAn385`).
#[test]
fn m0_soft_float_f32_is_bit_exact() {
    bit_exact(Core::M0OnAn385, "f32", n(true));
}

#[test]
fn m3_an385_int8_is_bit_exact() {
    bit_exact(Core::M3, "int8", 10_000);
}

#[test]
fn m3_soft_float_f32_is_bit_exact() {
    bit_exact(Core::M3, "f32", n(true));
}

#[test]
fn m7_an500_int8_is_bit_exact() {
    bit_exact(Core::M7, "int8", 10_000);
}

#[test]
fn m7_an500_f32_and_wide_are_bit_exact() {
    bit_exact(Core::M7, "f32", 10_000);
    bit_exact(Core::M7, "wide", n(true));
}

#[test]
fn m33_an505_int8_is_bit_exact() {
    bit_exact(Core::M33, "int8", 10_000);
}

#[test]
fn m33_an505_f32_and_wide_are_bit_exact() {
    bit_exact(Core::M33, "f32", 10_000);
    bit_exact(Core::M33, "wide", n(true));
}

fn refused(core: Core, bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.fmnm");
    std::fs::write(&path, bytes).unwrap();
    let elf = qemu::firmware_for(core, Profile::Qemu);
    let run = qemu::run_on(core, &elf, Some(&path), &["bench"], SHORT);
    let text = run.text();
    assert_eq!(
        run.status,
        qemu::EXIT_MODEL,
        "{}: {needle}:\n{text}",
        core.name()
    );
    let line = run
        .line("model refused")
        .unwrap_or_else(|| panic!("{}: no refusal:\n{text}", core.name()));
    assert!(
        line.contains(needle),
        "{}: expected {needle:?} in {line:?}",
        core.name()
    );
    assert!(
        run.line("bench").is_none(),
        "{}: classified:\n{text}",
        core.name()
    );
}

/// A header and 4 KiB of zeros (QEMU's loader cannot place more than the machine's memory).
fn header_only(arch: Arch, kind: Kind, payload_len: usize) -> Vec<u8> {
    let mut bytes = encode_header(arch, kind, payload_len as u32).to_vec();
    bytes.resize(HEADER_LEN + 4096, 0);
    bytes
}

/// Rewrites a u16 header field and the CRC.
fn with_field(mut bytes: Vec<u8>, at: usize, v: u16) -> Vec<u8> {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let n = bytes.len() - 4;
    let crc = fmnist_core::format::CRC32.checksum(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn refusals_on_every_core() {
    let good = std::fs::read(&models().int8).unwrap();
    for core in Core::ALL {
        let mut flipped = good.clone();
        flipped[20_000] ^= 0x10;
        refused(core, &flipped, "CRC mismatch");
        refused(
            core,
            &with_field(good.clone(), 8, 9),
            "unknown architecture",
        );
        refused(core, &with_field(good.clone(), 10, 7), "unknown model kind");
        refused(
            core,
            &header_only(Arch::LeNet, Kind::Int8, 5 << 20),
            "does not fit the model region",
        );
        if core == Core::M0 {
            // 192 KiB of model region: the f32 LeNet (247 KB) is too large.
            refused(
                core,
                &header_only(Arch::LeNet, Kind::F32Folded, size_of::<LeNetFoldedParams>()),
                "does not fit the model region",
            );
        } else {
            // A foreign kind that fits: the f32 LeNet with batch norm unfolded.
            let p: Box<fmnist_core::lenet::LeNetParams> = bytemuck::zeroed_box();
            let unfolded = qemu::model_file(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
            refused(core, &unfolded, "wrong model");
        }
    }
}

/// Instructions of one bench run: per layer and per inference.
fn bench(core: Core, model: &Path) -> Vec<(String, u64)> {
    let elf = qemu::firmware_for(core, Profile::Qemu);
    let set = qemu::test_set();
    let run = qemu::run_on(
        core,
        &elf,
        Some(model),
        &["bench", set.images_path.to_str().unwrap()],
        SHORT,
    );
    assert_eq!(run.status, 0, "{}:\n{}", core.name(), run.text());
    run.log
        .iter()
        .filter_map(|l| {
            let rest = l.split_once("bench ")?.1;
            let (name, _) = rest.split_once(':')?;
            let v = if rest.contains(", inference ") {
                number_after(rest, "inference")?
            } else {
                number_after(rest, ": ")?
            };
            Some((name.to_string(), v))
        })
        .collect()
}

/// Per core: instructions per inference (int8, f32 where the model fits), program flash and
/// RAM (static + painted stack peak, demo of one image) of the int8-only build; written to
/// `firmware/expected-cores.txt` with `FMNIST_BLESS=1`, otherwise compared with it (memory
/// growth over 2 % / 256 bytes fails; changed instruction counts are noted). The LeNet int8 RAM
/// must stay within 8 KiB on every core. (The mean instructions per multiply-add over the
/// verify runs' images are the int8 verify tests' figures, `qemu::check_mean_per_mac`.)
#[test]
fn figures_per_core() {
    let m = models();
    let set = qemu::test_set();
    let mut report = Vec::new();
    let cores = [
        Core::M0,
        Core::M0OnAn385,
        Core::M3,
        Core::M4F,
        Core::M7,
        Core::M33,
    ];
    for core in cores {
        let c = core.name();
        if core != Core::M0OnAn385 {
            for (k, v) in bench(core, &m.int8) {
                report.push((format!("{c}.int8.{k}"), v));
            }
        }
        if core != Core::M0 {
            let f = bench(core, &m.f32);
            let total = f.iter().find(|(k, _)| k == "f32").unwrap().1;
            report.push((format!("{c}.f32.inference"), total));
        }
        if core == Core::M0OnAn385 || core == Core::M7 {
            continue; // the M0's and M4F's builds: sizes recorded once
        }
        let elf = qemu::firmware_for(core, Profile::QemuInt8);
        let s = qemu::sizes(&elf);
        let args = [
            "demo",
            set.images_path.to_str().unwrap(),
            set.labels_path.to_str().unwrap(),
            "1",
        ];
        let run = qemu::run_on(core, &elf, Some(&m.int8), &args, SHORT);
        assert_eq!(run.status, 0, "{c}:\n{}", run.text());
        let stack = run
            .line("stack peak:")
            .and_then(|l| number_after(l, "stack peak:"))
            .unwrap();
        report.push((format!("{c}.int8-build.flash"), s.text + s.rodata + s.data));
        report.push((format!("{c}.int8-build.ram"), s.data + s.bss + stack));
        let full = qemu::sizes(&qemu::firmware_for(core, Profile::Qemu));
        report.push((
            format!("{c}.full-build.flash"),
            full.text + full.rodata + full.data,
        ));
    }
    let text: String = report.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    eprintln!("per-core figures:\n{text}");
    // Issue 17's goal: LeNet int8 in 8 KiB of RAM on every core (the micro:bit has 16 KiB).
    for (k, v) in &report {
        if k.ends_with(".int8-build.ram") {
            assert!(*v <= 8 * 1024, "{k} {v}: over 8 KiB");
        }
    }
    if std::env::var_os("FMNIST_BLESS").is_some() {
        // In place: the verify tests' lines (`*.int8.mean_*`) stay.
        qemu::record_figures(&report);
        return;
    }
    let path = qemu::firmware_dir().join("expected-cores.txt");
    let expected = std::fs::read_to_string(&path).unwrap();
    let mut changed = Vec::new();
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.split_once(' ').unwrap();
        if qemu::is_verify_figure(k) {
            continue; // the verify tests check these
        }
        let v: u64 = v.trim().parse().unwrap();
        let now = report.iter().find(|(n, _)| n == k).map_or(0, |x| x.1);
        let bytes = k.ends_with(".flash") || k.ends_with(".ram");
        if bytes && now > v + (v / 50).max(256) {
            changed.push(format!("{k}: expected {v}, now {now}"));
        } else if now != v {
            // Instruction counts move with the kernels (tuned elsewhere): noted, recorded on
            // purpose.
            eprintln!("note: {k} changed from {v} to {now} (FMNIST_BLESS=1 to record)");
        }
    }
    assert!(
        changed.is_empty(),
        "per-core figures changed (FMNIST_BLESS=1 to record on purpose):\n{}",
        changed.join("\n")
    );
}
