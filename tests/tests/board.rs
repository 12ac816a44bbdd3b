//! The board binary runs: the very ELF `cargo board-build` produces for the STM32F407 (no
//! rebuild, no extra feature) runs under QEMU `netduinoplus2` (STM32F405, the same core and memory
//! map) with the model file at the board's model address; its defmt RTT log, read out of the
//! emulated RAM through QEMU's gdbstub (`fmnist_tests::board_run`), shows the demo's predictions
//! equal to the host's for that model, and a corrupt model refused.
//!
//! Run from the workspace root: `cargo test -p fmnist-tests --release --test board`.
//! Needs qemu-system-arm and the thumbv7em-none-eabihf target.

use std::path::Path;
use std::time::Duration;

use fmnist_core::CLASS_NAMES;
use fmnist_core::format::{Arch, Kind};
use fmnist_core::layers::argmax;
use fmnist_core::lenet::{IMAGE_PIXELS, LeNet};
use fmnist_core::quant::LeNetQ;
use fmnist_tests::board_run::{self, BoardRun, MODEL_ADDR};
use fmnist_tests::qemu;

/// The demo (8 images and the bench) takes well under a second of QEMU time.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The eight images and labels linked into the board build (`firmware/demo/`).
fn demo_set() -> (Vec<[u8; IMAGE_PIXELS]>, Vec<u8>) {
    let dir = qemu::firmware_dir().join("demo");
    let images = std::fs::read(dir.join("t10k-first8-images.bin")).unwrap();
    let labels = std::fs::read(dir.join("t10k-first8-labels.bin")).unwrap();
    assert_eq!(images.len(), 8 * IMAGE_PIXELS);
    assert_eq!(labels.len(), 8);
    let images = images
        .chunks_exact(IMAGE_PIXELS)
        .map(|c| c.try_into().unwrap())
        .collect();
    (images, labels)
}

/// The lines the demo logs for `classes` (the host's predictions), up to the cycle count.
fn expected_demo(classes: &[usize], labels: &[u8]) -> Vec<String> {
    classes
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (&c, &l))| {
            format!(
                "INFO image {i}: predicted {}, true {}{} (",
                CLASS_NAMES[c],
                CLASS_NAMES[l as usize],
                if c == l as usize { "" } else { "  <- wrong" }
            )
        })
        .collect()
}

fn run_board(model: &Path) -> BoardRun {
    let elf = board_run::board_elf();
    let run = board_run::run(&elf, Some(model), TIMEOUT);
    eprintln!(
        "{}: {} RTT bytes, {:.2} s\n{}",
        model.display(),
        run.rtt_bytes,
        run.elapsed.as_secs_f64(),
        run.text()
    );
    run
}

/// The board demo's predictions for a model file equal `classes`, and it ends normally.
fn assert_demo(run: &BoardRun, arch: Arch, kind: Kind, classes: &[usize], labels: &[u8]) {
    let log = run.text();
    assert_eq!(
        run.status,
        Some(0),
        "the board binary did not exit 0 under QEMU; log:\n{log}\nQEMU: {}",
        run.stderr
    );
    let model_line = format!("INFO model: {} {}, ", arch.name(), kind.name());
    assert!(
        run.log.iter().any(|l| l.starts_with(&model_line)
            && l.ends_with(&format!("in place at {MODEL_ADDR:#010x}"))),
        "no `{model_line}… in place at {MODEL_ADDR:#010x}` line:\n{log}"
    );
    let demo: Vec<&String> = run.log.iter().filter(|l| l.contains(" image ")).collect();
    let expected = expected_demo(classes, labels);
    assert_eq!(demo.len(), expected.len(), "demo lines:\n{log}");
    for (line, want) in demo.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()) && line.ends_with(" cycles)"),
            "the device's demo line\n  {line}\ndiffers from the host's prediction\n  {want}…"
        );
    }
    assert!(
        run.log.iter().any(|l| l.starts_with("INFO bench ")),
        "no bench line:\n{log}"
    );
    assert!(
        run.log
            .last()
            .is_some_and(|l| l.starts_with("INFO stack peak: ")),
        "the log does not end with the stack peak line:\n{log}"
    );
    assert!(!log.contains("malformed"), "{log}");
}

#[test]
fn board_binary_demo_int8_matches_host() {
    let tmp = tempfile::tempdir().unwrap();
    let params = &qemu::trained().int8;
    let path = tmp.path().join("lenet-int8.fmnm");
    let bytes = qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&**params));
    std::fs::write(&path, bytes).unwrap();
    let net = LeNetQ::new(params).unwrap();
    let (images, labels) = demo_set();
    let classes: Vec<usize> = images.iter().map(|i| argmax(&net.forward(i))).collect();
    let run = run_board(&path);
    assert_demo(&run, Arch::LeNet, Kind::Int8, &classes, &labels);
}

#[test]
fn board_binary_demo_f32_matches_host() {
    let tmp = tempfile::tempdir().unwrap();
    let params = &qemu::trained().folded;
    let path = tmp.path().join("lenet-f32-folded.fmnm");
    let bytes = qemu::model_file(Arch::LeNet, Kind::F32Folded, bytemuck::bytes_of(&**params));
    std::fs::write(&path, bytes).unwrap();
    let net = LeNet::from(&**params);
    let (images, labels) = demo_set();
    let classes: Vec<usize> = images.iter().map(|i| argmax(&net.forward(i))).collect();
    let run = run_board(&path);
    assert_demo(&run, Arch::LeNet, Kind::F32Folded, &classes, &labels);
}

#[test]
fn board_binary_refuses_corrupt_model() {
    let tmp = tempfile::tempdir().unwrap();
    let params = &qemu::trained().int8;
    let mut bytes = qemu::model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&**params));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    let path = tmp.path().join("corrupt.fmnm");
    std::fs::write(&path, bytes).unwrap();
    let run = run_board(&path);
    let log = run.text();
    assert_eq!(
        run.status,
        Some(qemu::EXIT_MODEL),
        "a corrupt model must be refused with status 2; log:\n{log}\nQEMU: {}",
        run.stderr
    );
    let want = format!(
        "ERROR model refused (region {MODEL_ADDR:#010x}): CRC mismatch, the file is corrupt: \
         CrcMismatch"
    );
    assert!(
        run.log.iter().any(|l| l.starts_with(&want)),
        "no `{want}` line:\n{log}"
    );
    assert!(
        !log.contains(" image "),
        "classified with a corrupt model:\n{log}"
    );
}
