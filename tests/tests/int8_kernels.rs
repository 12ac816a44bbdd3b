//! Every host int8 kernel (`portable`, `avx2`, `avx-vnni`, `avx512-vnni`) gives the reference
//! kernels' logits, byte for byte, on all 10,000 test images, for both networks: a briefly
//! trained LeNet-BN (`trained()`) and the wide CNN with random features and a fitted readout
//! (`wide_model()`), each loaded through `fmnist-infer` as a model file and switched to each
//! kernel the way `--int8-kernel` does. A kernel this CPU lacks is skipped with a printed
//! reason. Then the command line: `--int8-kernel` and `FMNIST_INT8_KERNEL` select the kernel,
//! `bench` names it, `eval` reports the same accuracy and confusion matrix on every kernel,
//! and an unknown or unavailable name is bad input.

use std::path::Path;

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::network::Network;
use fmnist_core::registry::{LeNetBn, WideCnn};
use fmnist_infer::Model;
use fmnist_infer::int8::Kernel;
use fmnist_tests::fixtures::model_file;
use fmnist_tests::trained::{trained, wide_model};
use fmnist_tests::{assert_bad_input, data_dir, run, text};

fn test_images() -> Vec<[u8; IMAGE_PIXELS]> {
    let test = fmnist_infer::data::load(&data_dir(), fmnist_infer::data::Split::Test)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(test.images.len(), 10_000);
    test.images
}

/// The kernels this CPU runs; prints the ones it skips.
fn available() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| {
            let ok = k.is_available();
            if !ok {
                eprintln!("skipping the {k} kernel: this CPU lacks its instructions");
            }
            ok
        })
        .collect()
}

/// Checks every available kernel of the model in `bytes` against `reference` logits.
fn every_kernel_matches(name: &str, bytes: &[u8], reference: &[[i8; 10]]) {
    let images = test_images();
    let mut model = Model::from_bytes(Path::new(name), bytes).unwrap();
    for k in available() {
        model.set_int8_kernel(k);
        let q = model.int8().unwrap();
        assert_eq!(q.kernel(), k, "{name}");
        let mut differ = 0;
        for (i, (img, want)) in images.iter().zip(reference).enumerate() {
            let got = q.forward(img);
            if got != *want {
                if differ == 0 {
                    eprintln!("{name} {k}: image {i}: {got:?} != reference {want:?}");
                }
                differ += 1;
            }
        }
        assert_eq!(
            differ, 0,
            "{name}: {k} differs from the reference on {differ} images"
        );
        eprintln!("{name}: {k} equals the reference on all 10,000 test images");
    }
}

#[test]
fn lenet_every_kernel_equals_the_reference_on_the_test_set() {
    let p = &*trained().int8;
    let net = LeNetBn::int8(p).unwrap();
    let reference: Vec<[i8; 10]> = test_images()
        .iter()
        .map(|img| LeNetBn::int8_forward_reference(&net, img))
        .collect();
    // The logits must say something: not one constant vector.
    assert!(reference.iter().any(|l| *l != reference[0]));
    let bytes = model_file(Arch::LeNet, Kind::Int8, bytemuck::bytes_of(p));
    every_kernel_matches("lenet.fmnm", &bytes, &reference);
}

#[test]
fn wide_every_kernel_equals_the_reference_on_the_test_set() {
    use rayon::prelude::*;
    let p = &*wide_model().int8;
    let net = WideCnn::int8(p).unwrap();
    // The reference kernels take about 2 ms an image: both cores.
    let reference: Vec<[i8; 10]> = test_images()
        .par_iter()
        .map(|img| WideCnn::int8_forward_reference(&net, img))
        .collect();
    assert!(reference.iter().any(|l| *l != reference[0]));
    let bytes = model_file(Arch::Wide, Kind::Int8, bytemuck::bytes_of(p));
    every_kernel_matches("wide.fmnm", &bytes, &reference);
}

/// `--int8-kernel` and `FMNIST_INT8_KERNEL` pick the kernel; `bench` says which ran; `eval`
/// gives the same report on each; bad names are bad input.
#[test]
fn the_command_line_selects_and_names_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lenet.fmnm");
    let bytes = model_file(
        Arch::LeNet,
        Kind::Int8,
        bytemuck::bytes_of(&*trained().int8),
    );
    std::fs::write(&path, bytes).unwrap();
    let model = path.to_str().unwrap();
    let mut reports = Vec::new();
    for k in available() {
        let o = run(
            "fmnist-infer",
            &[
                "bench",
                "--model",
                model,
                "--seconds",
                "0.1",
                "--int8-kernel",
                k.name(),
            ],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        assert!(out.contains(&format!("int8 forward ({k})")), "{out}");
        assert!(out.contains("bit-identical: yes"), "{out}");
        let o = run(
            "fmnist-infer",
            &[
                "eval",
                "--model",
                model,
                "--json",
                "--threads",
                "1",
                "--int8-kernel",
                k.name(),
            ],
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        reports.push((k, v["correct"].clone(), v["confusion"].clone()));
        // The environment variable, when no flag is given.
        let o = std::process::Command::new(fmnist_tests::bin("fmnist-infer"))
            .args(["bench", "--model", model, "--seconds", "0.1"])
            .env("FMNIST_INT8_KERNEL", k.name())
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        assert!(out.contains(&format!("int8 forward ({k})")), "{out}");
    }
    for (k, correct, confusion) in &reports[1..] {
        assert_eq!((correct, confusion), (&reports[0].1, &reports[0].2), "{k}");
    }
    let o = run(
        "fmnist-infer",
        &["eval", "--model", model, "--int8-kernel", "avx9000"],
    );
    assert_bad_input(&o, "unknown int8 kernel");
    let o = std::process::Command::new(fmnist_tests::bin("fmnist-infer"))
        .args(["eval", "--model", model])
        .env("FMNIST_INT8_KERNEL", "avx9000")
        .output()
        .unwrap();
    assert_bad_input(&o, "FMNIST_INT8_KERNEL");
    if let Some(k) = Kernel::ALL.into_iter().find(|k| !k.is_available()) {
        let o = run(
            "fmnist-infer",
            &["eval", "--model", model, "--int8-kernel", k.name()],
        );
        assert_bad_input(&o, "lacks");
    }
}
