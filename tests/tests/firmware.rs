//! The firmware under QEMU (mps2-an386, Cortex-M4F): the device's answer is the host's answer,
//! to the bit, for every one of the 10,000 test images, for LeNet-BN in int8 and in f32 and for
//! the wide CNN in int8; a corrupt, foreign or too large model is refused; the cost counter is
//! deterministic; memory stays within each network's budget.
//!
//! Run from the workspace root: `cargo test -p fmnist-tests --release --test firmware`.
//! Needs qemu-system-arm, the thumbv7em-none-eabihf target and a size tool (see
//! `fmnist_tests::qemu`); they are not optional: a missing tool fails the test.
//!
//! The bit-exactness tests use a briefly trained model (`qemu::trained`: 300 deterministic SGD
//! steps, folded, quantized), so device and host accuracy are meaningful; the f32 one gets 1 % of
//! its dense weights scaled into the subnormal range (a flush-to-zero FPU would differ). The wide
//! CNN's is `qemu::wide_model` (random convolution features and fc1, fc2 fitted by ridge
//! regression, quantized by fmnist-train; about 82 %), built in seconds where training it would
//! take minutes. The other tests use pseudo-random models (an LCG), which need no training.

use std::path::Path;
use std::time::Duration;

use fmnist_core::format::{Arch, Kind};
use fmnist_core::layers::argmax;
use fmnist_core::lenet::{IMAGE_PIXELS, LeNet, LeNetFoldedParams};
use fmnist_core::quant::{LeNetQ, WideQ};
use fmnist_tests::qemu::{self, Profile, Run, number_after};

/// Per QEMU process of 5,000 images; f32 takes about 60 s on an idle core, several times that
/// when the machine's two cores are shared with other builds.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(600);
/// The wide CNN costs about 13x LeNet's instructions per image.
const WIDE_VERIFY_TIMEOUT: Duration = Duration::from_secs(900);
const SHORT_TIMEOUT: Duration = Duration::from_secs(60);

fn write_model(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn int8_model(dir: &Path) -> std::path::PathBuf {
    let p = qemu::random_int8(0x5eed_0001);
    let bytes = qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*p));
    write_model(dir, "lenet-int8.fmnm", &bytes)
}

/// The classifying wide CNN (`qemu::wide_model`): its instruction counts are a real model's
/// (a random model's ReLUs clamp most outputs, which skips their requantization).
fn wide_model(dir: &Path) -> std::path::PathBuf {
    let p = &qemu::wide_model().int8;
    let bytes = qemu::model_file(Arch::Wide, Kind::Int8, bytemuck::bytes_of(&**p));
    write_model(dir, "wide-int8.fmnm", &bytes)
}

fn folded_model(dir: &Path) -> std::path::PathBuf {
    let p = qemu::random_folded(0x5eed_0002);
    let bytes = qemu::model_file(Arch::LeNet, Kind::F32Folded, bytemuck::bytes_of(&*p));
    write_model(dir, "lenet-f32-folded.fmnm", &bytes)
}

/// Host logits of every image, computed in two threads; `f` returns one image's bytes.
fn host_logits(
    images: &[[u8; IMAGE_PIXELS]],
    f: impl Fn(&[u8; IMAGE_PIXELS]) -> Vec<u8> + Sync,
) -> Vec<Vec<u8>> {
    let half = images.len() / 2;
    let (a, b) = images.split_at(half);
    std::thread::scope(|s| {
        let ha = s.spawn(|| a.iter().map(&f).collect::<Vec<_>>());
        let hb = s.spawn(|| b.iter().map(&f).collect::<Vec<_>>());
        let mut out = ha.join().unwrap();
        out.extend(hb.join().unwrap());
        out
    })
}

/// Runs verify mode on the device and checks its logits against `host` byte for byte. Returns
/// the number of images the device classified correctly.
fn verify(profile: Profile, model: &Path, host: &[Vec<u8>], per_image: usize, name: &str) -> u64 {
    verify_within(profile, model, host, per_image, name, VERIFY_TIMEOUT)
}

/// [`verify`] with a timeout per QEMU process.
fn verify_within(
    profile: Profile,
    model: &Path,
    host: &[Vec<u8>],
    per_image: usize,
    name: &str,
    timeout: Duration,
) -> u64 {
    let set = qemu::test_set();
    let run = qemu::verify(profile, model, name, timeout);
    eprintln!("{}", run.log);
    if name == qemu::COUNTED {
        // Issue 17's goal with the DSP kernels: 1.0 instruction per multiply-add, on average.
        qemu::check_mean_per_mac("m4f", &run, set.images.len(), 1.0);
    }
    eprintln!(
        "{name} verify of {} images on QEMU: {:.1} s wall, QEMU CPU {:.1} s",
        set.images.len(),
        run.elapsed.as_secs_f64(),
        run.cpu.as_secs_f64()
    );
    let (device, correct) = (run.logits, run.correct);
    assert_eq!(
        device.len(),
        set.images.len() * per_image,
        "device wrote {} bytes of logits for {} images",
        device.len(),
        set.images.len()
    );
    let mismatches: Vec<usize> = device
        .chunks_exact(per_image)
        .zip(host)
        .enumerate()
        .filter(|(_, (d, h))| d != &h.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} images differ (first: #{}: device {:?}, host {:?})",
        mismatches.len(),
        set.images.len(),
        mismatches[0],
        &device[mismatches[0] * per_image..(mismatches[0] + 1) * per_image],
        host[mismatches[0]]
    );
    correct
}

fn host_correct(classes: impl Iterator<Item = usize>) -> u64 {
    classes
        .zip(&qemu::test_set().labels)
        .filter(|(c, l)| *c == **l as usize)
        .count() as u64
}

#[test]
fn int8_logits_are_bit_exact_on_all_test_images() {
    let dir = tempfile::tempdir().unwrap();
    let p = &qemu::trained().int8;
    let bytes = qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&**p));
    let model = write_model(dir.path(), "trained-int8.fmnm", &bytes);
    let net = LeNetQ::new(p).unwrap();
    let set = qemu::test_set();
    let host = host_logits(&set.images, |img| {
        net.forward(img).iter().map(|&v| v as u8).collect()
    });
    let device_correct = verify(Profile::Qemu, &model, &host, 10, "int8");
    let correct = host_correct(host.iter().map(|l| argmax(&l.map_i8())));
    assert_eq!(
        device_correct, correct,
        "device accuracy differs from the host's"
    );
    eprintln!(
        "int8 accuracy, device = host: {correct} / {}",
        set.images.len()
    );
}

#[test]
fn f32_logits_are_bit_exact_on_all_test_images() {
    let dir = tempfile::tempdir().unwrap();
    let p: Box<LeNetFoldedParams> = qemu::with_subnormals(&qemu::trained().folded);
    let bytes = qemu::model_file(Arch::LeNet, Kind::F32Folded, bytemuck::bytes_of(&*p));
    let model = write_model(dir.path(), "trained-f32-folded.fmnm", &bytes);
    let net = LeNet::from(&*p);
    let set = qemu::test_set();
    let host = host_logits(&set.images, |img| {
        net.forward(img)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    });
    let device_correct = verify(Profile::Qemu, &model, &host, 40, "f32");
    let correct = host_correct(host.iter().map(|l| {
        let logits: [f32; 10] =
            std::array::from_fn(|i| f32::from_le_bytes(l[4 * i..4 * i + 4].try_into().unwrap()));
        argmax(&logits)
    }));
    assert_eq!(
        device_correct, correct,
        "device accuracy differs from the host's"
    );
    eprintln!(
        "f32 accuracy, device = host: {correct} / {}",
        set.images.len()
    );
}

/// The wide CNN, int8: the device's logits equal `WideQ::forward`'s byte for byte on all
/// 10,000 test images, and so does its accuracy. The model classifies (`qemu::wide_model`:
/// random features with a fitted readout, quantized; about 82 %), so the logits spread over
/// the int8 range and every class is predicted.
#[test]
fn wide_int8_logits_are_bit_exact_on_all_test_images() {
    let dir = tempfile::tempdir().unwrap();
    let p = &qemu::wide_model().int8;
    let bytes = qemu::model_file(Arch::Wide, Kind::Int8, bytemuck::bytes_of(&**p));
    let model = write_model(dir.path(), "wide-int8.fmnm", &bytes);
    let net = WideQ::new(p).unwrap();
    let set = qemu::test_set();
    let host = host_logits(&set.images, |img| {
        net.forward(img).iter().map(|&v| v as u8).collect()
    });
    let mut predicted = [0u32; 10];
    let mut values = std::collections::BTreeSet::new();
    for l in &host {
        predicted[argmax(&l.map_i8())] += 1;
        values.extend(l.iter().copied());
    }
    assert!(
        predicted.iter().all(|&n| n > 0) && values.len() > 100,
        "the wide test model is degenerate: classes {predicted:?}, {} distinct logits",
        values.len()
    );
    let device_correct = verify_within(
        Profile::Qemu,
        &model,
        &host,
        10,
        "wide-int8",
        WIDE_VERIFY_TIMEOUT,
    );
    let correct = host_correct(host.iter().map(|l| argmax(&l.map_i8())));
    assert_eq!(
        device_correct, correct,
        "device accuracy differs from the host's"
    );
    eprintln!(
        "wide int8 accuracy, device = host: {correct} / {}",
        set.images.len()
    );
}

trait MapI8 {
    fn map_i8(&self) -> [i8; 10];
}

impl MapI8 for Vec<u8> {
    fn map_i8(&self) -> [i8; 10] {
        std::array::from_fn(|i| self[i] as i8)
    }
}

fn assert_refused(model: &[u8], needle: &str) {
    assert_refused_by(Profile::Qemu, model, needle)
}

fn assert_refused_by(profile: Profile, model: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), "bad.fmnm", model);
    let elf = qemu::firmware(profile);
    let run = qemu::run(&elf, Some(&path), &["bench"], SHORT_TIMEOUT);
    assert_eq!(
        run.status,
        qemu::EXIT_MODEL,
        "the firmware must refuse the model (exit 2):\n{}",
        run.text()
    );
    let refused = run
        .line("model refused")
        .unwrap_or_else(|| panic!("no refusal in the log:\n{}", run.text()));
    assert!(
        refused.contains(needle),
        "expected {needle:?} in {refused:?}"
    );
    assert!(
        run.line("bench").is_none(),
        "the firmware classified with a refused model:\n{}",
        run.text()
    );
}

#[test]
fn a_model_with_one_flipped_byte_is_refused() {
    let p = qemu::random_int8(0x5eed_0001);
    let mut bytes = qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*p));
    // A byte deep in fc1's weights.
    bytes[20_000] ^= 0x10;
    assert_refused(&bytes, "CRC");
}

#[test]
fn a_model_of_another_architecture_or_kind_is_refused() {
    // A valid wide CNN on a build without it (the LeNet-only builds; the board's likewise).
    let p = qemu::random_wide_int8(0x5eed_0003);
    let wide = qemu::model_file(Arch::Wide, Kind::Int8, bytemuck::bytes_of(&*p));
    assert_refused_by(
        Profile::QemuInt8,
        &wide,
        "wrong model: this build has no wide CNN",
    );
    // A wide CNN file whose payload is not the int8 layout.
    let short = qemu::model_file(Arch::Wide, Kind::Int8, &[0u8; 1024]);
    assert_refused(&short, "wrong length");
    // The trained f32 LeNet with batch norm unfolded: the device runs the folded one only.
    let p: Box<fmnist_core::lenet::LeNetParams> = bytemuck::zeroed_box();
    let unfolded = qemu::model_file(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p));
    assert_refused(&unfolded, "wrong model");
    // No model at all: the region reads as zeros.
    let elf = qemu::firmware(Profile::Qemu);
    let run = qemu::run(&elf, None, &["bench"], SHORT_TIMEOUT);
    assert_eq!(run.status, qemu::EXIT_MODEL, "{}", run.text());
    assert!(run.text().contains("bad magic"), "{}", run.text());
}

/// A header declaring more bytes than the model region holds (3,968 KiB under QEMU) is refused
/// as too large, naming why: the wide CNN in f32 (6.5 MB) fits no region, whatever follows the
/// header (only its first 4 KiB are loaded here).
#[test]
fn a_model_larger_than_the_region_is_refused() {
    use fmnist_core::format::{HEADER_LEN, encode_header};
    use fmnist_core::wide::{WideFoldedParams, WideParams};
    let truncated = |arch: Arch, kind: Kind, payload_len: usize| {
        let mut bytes = encode_header(arch, kind, payload_len as u32).to_vec();
        bytes.resize(HEADER_LEN + 4096, 0);
        bytes
    };
    let folded = size_of::<WideFoldedParams>();
    assert!(folded > 6_000_000, "{folded}");
    assert_refused(
        &truncated(Arch::Wide, Kind::F32Folded, folded),
        "does not fit the model region: the wide CNN in f32 is 6.5 MB",
    );
    assert_refused(
        &truncated(Arch::Wide, Kind::F32, size_of::<WideParams>()),
        "export it as int8",
    );
    // Any architecture: the header's length is checked against the region before anything
    // is read past it.
    assert_refused(
        &truncated(Arch::LeNet, Kind::Int8, 5 << 20),
        "does not fit the model region: the header declares LeNet-BN int8, 5242948 bytes, \
         and the model region holds 4063232",
    );
}

/// Per-layer and per-inference instruction counts from bench mode.
fn bench(profile: Profile, model: &Path) -> (Run, Vec<(String, u64)>) {
    let set = qemu::test_set();
    let elf = qemu::firmware(profile);
    let run = qemu::run(
        &elf,
        Some(model),
        &["bench", set.images_path.to_str().unwrap()],
        SHORT_TIMEOUT,
    );
    assert_eq!(run.status, 0, "{}", run.text());
    let figures = run
        .log
        .iter()
        .filter_map(|l| {
            let rest = l.split_once("bench ")?.1;
            let (name, _) = rest.split_once(':')?;
            let n = number_after(rest, ": ").or_else(|| number_after(rest, "inference"))?;
            let n = if rest.contains(", inference ") {
                number_after(rest, "inference")?
            } else {
                n
            };
            Some((name.to_string(), n))
        })
        .collect();
    (run, figures)
}

#[test]
fn bench_instruction_counts_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    for (name, model) in [
        ("int8", int8_model(dir.path())),
        ("f32", folded_model(dir.path())),
        ("wide-int8", wide_model(dir.path())),
    ] {
        let (a, fa) = bench(Profile::Qemu, &model);
        let (_, fb) = bench(Profile::Qemu, &model);
        eprintln!("{name} bench:\n{}", a.text());
        let total = fa
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no per-inference count in:\n{}", a.text()))
            .1;
        assert!(
            total > 100_000,
            "{name}: implausible instruction count {total}"
        );
        assert_eq!(fa, fb, "{name}: two runs counted differently");
    }
}

/// The figures the memory report is about, one `name value` per line.
fn memory_report() -> Vec<(String, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let int8 = int8_model(dir.path());
    let f32m = folded_model(dir.path());
    let wide = wide_model(dir.path());
    let mut report = Vec::new();
    for (profile, model) in [
        (Profile::QemuInt8, &int8),
        (Profile::QemuF32, &f32m),
        (Profile::QemuWide, &wide),
    ] {
        let elf = qemu::firmware(profile);
        let s = qemu::sizes(&elf);
        // The demo path: stream one image in, classify it, log it (bench keeps a second set of
        // activations alive to compare with, so it would overstate the stack).
        let set = qemu::test_set();
        let args = [
            "demo",
            set.images_path.to_str().unwrap(),
            set.labels_path.to_str().unwrap(),
            "1",
        ];
        let run = qemu::run(&elf, Some(model), &args, SHORT_TIMEOUT);
        assert_eq!(run.status, 0, "{}", run.text());
        let stack = run
            .line("stack peak:")
            .and_then(|l| number_after(l, "stack peak:"))
            .unwrap_or_else(|| panic!("no stack peak in:\n{}", run.text()));
        let p = profile.name();
        report.push((format!("{p}.text"), s.text));
        report.push((format!("{p}.rodata"), s.rodata));
        report.push((format!("{p}.data"), s.data));
        report.push((format!("{p}.bss"), s.bss));
        report.push((format!("{p}.flash"), s.text + s.rodata + s.data));
        report.push((format!("{p}.stack_peak"), stack));
        report.push((format!("{p}.ram"), s.data + s.bss + stack));
    }
    report
}

/// RAM budget (static data + stack peak) of the LeNet-BN int8 build.
const LENET_INT8_RAM_BUDGET: u64 = 8 * 1024;
/// RAM budget of the build with the wide CNN, running it (measured: 19,612 bytes): its
/// activations alone are 9.4 KB (the 6,272-byte pool1 map and the 3,136-byte flattened pool2
/// map are alive together), and conv2 adds its im2col patches and its 64 channels'
/// requantization constants unpacked once per layer (about 4 KB); fc1's 6.3 KB of activation
/// pairs come after the convolutions.
const WIDE_INT8_RAM_BUDGET: u64 = 24 * 1024;

/// Sizes are compared with `firmware/expected-sizes.txt`; `FMNIST_BLESS=1` rewrites it.
/// Growth beyond 2 % (or 256 bytes, whichever is more) fails, so growth is noticed and the file
/// updated on purpose.
/// The LeNet int8 build must keep RAM (static + stack peak) within 8 KiB, the wide CNN build
/// running the wide CNN within 24 KiB; the 16 KiB program-flash target is reported (see
/// firmware/README.md for where the bytes go), not enforced.
#[test]
fn memory_stays_within_budget_and_expected_sizes() {
    let report = memory_report();
    let text: String = report.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    eprintln!("firmware memory (bytes):\n{text}");
    let get = |k: &str| report.iter().find(|(n, _)| n == k).unwrap().1;
    assert!(
        get("qemu-int8.ram") <= LENET_INT8_RAM_BUDGET,
        "LeNet int8 RAM over {LENET_INT8_RAM_BUDGET} bytes:\n{text}"
    );
    assert!(
        get("qemu-wide.ram") <= WIDE_INT8_RAM_BUDGET,
        "wide int8 RAM over {WIDE_INT8_RAM_BUDGET} bytes:\n{text}"
    );
    if get("qemu-int8.flash") > 16 * 1024 {
        eprintln!(
            "note: int8 program flash {} bytes, over the 16 KiB target",
            get("qemu-int8.flash")
        );
    }

    let path = qemu::firmware_dir().join("expected-sizes.txt");
    if std::env::var_os("FMNIST_BLESS").is_some() {
        let header = "# Firmware memory figures in bytes, written by\n\
                      # `FMNIST_BLESS=1 cargo test -p fmnist-tests --release --test firmware`.\n";
        std::fs::write(&path, format!("{header}{text}")).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    let mut grown = Vec::new();
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (k, v) = line.split_once(' ').unwrap();
        let v: u64 = v.trim().parse().unwrap();
        let now = report
            .iter()
            .find(|(n, _)| n == k)
            .map(|x| x.1)
            .unwrap_or(0);
        if now > v + (v / 50).max(256) {
            grown.push(format!("{k}: expected {v}, now {now}"));
        } else if now != v {
            eprintln!("note: {k} changed from {v} to {now} (FMNIST_BLESS=1 to record)");
        }
    }
    assert!(
        grown.is_empty(),
        "firmware memory grew more than 2 % / 256 bytes (rerun with FMNIST_BLESS=1 if intended):\n{}",
        grown.join("\n")
    );
}

#[test]
fn board_profile_builds() {
    let elf = qemu::firmware(Profile::Board);
    let s = qemu::sizes(&elf);
    eprintln!("board (STM32F407, RTT) sizes: {s:?}");
    assert!(s.text > 0);
}

#[test]
fn panic_and_hardfault_exit_with_failure() {
    let dir = tempfile::tempdir().unwrap();
    let model = int8_model(dir.path());
    let elf = qemu::firmware(Profile::Qemu);
    for (mode, needle) in [("panic", "panicked at"), ("fault", "HardFault at pc")] {
        let run = qemu::run(&elf, Some(&model), &[mode], SHORT_TIMEOUT);
        assert_eq!(run.status, 1, "{mode}: expected exit 1:\n{}", run.text());
        assert!(
            run.text().contains(needle),
            "{mode}: no {needle:?} in:\n{}",
            run.text()
        );
    }
}

/// No panic is reachable from the inference entry point in the release firmware: a walk over
/// the disassembly's direct calls and branches from each `Net::infer` implementation meets no `core::panicking`
/// (bounds checks, overflow, unwrap) nor any panic handler, and no indirect call it could not
/// follow. Checked for the int8-only and the f32-only builds, and for the build with the wide
/// CNN, where the walk must also reach the wide CNN's kernels.
#[test]
fn inference_path_reaches_no_panic() {
    for profile in [Profile::QemuInt8, Profile::QemuF32, Profile::QemuWide] {
        let elf = qemu::firmware(profile);
        let dis = qemu::disassemble(&elf);
        // Every `<Int8<N> as Net>::infer` / `<F32<N> as Net>::infer` the build holds (the
        // disassembler leaves these trait-impl names in their `$LT$…$GT$` form).
        let (reachable, indirect) = qemu::reachable_functions(&dis, "Net$GT$::infer");
        assert!(
            reachable.iter().any(|f| f.contains("forward")),
            "{}: the walk did not reach the model's forward pass: {reachable:?}",
            profile.name()
        );
        if profile == Profile::QemuWide {
            assert!(
                reachable.iter().any(|f| f.contains("WideQ")),
                "{}: the walk did not reach the wide CNN: {reachable:?}",
                profile.name()
            );
        }
        let panicky: Vec<&String> = reachable
            .iter()
            .filter(|f| {
                let f = f.to_lowercase();
                f.contains("panic")
                    || f.contains("unwrap_failed")
                    || f.contains("expect_failed")
                    || f.contains("slice_index")
                    || f.contains("hardfault")
            })
            .collect();
        assert!(
            panicky.is_empty(),
            "{}: inference can reach {panicky:?}",
            profile.name()
        );
        assert!(
            indirect.is_empty(),
            "{}: indirect calls the walk cannot follow in {indirect:?}",
            profile.name()
        );
        eprintln!(
            "{}: {} functions reachable from Net::infer, none panics",
            profile.name(),
            reachable.len()
        );
    }
}
