//! Every host kernel of the f32 LeNet-BN forward pass (portable, AVX2, AVX-512F: `--f32-kernel`)
//! gives the reference's logits bit for bit on all 10,000 test images, for both f32 kinds (as
//! trained, BN folded), through the library and through the command line. A kernel this CPU
//! lacks is skipped with a printed reason.

use std::path::{Path, PathBuf};

use fmnist_core::format::{Arch, Kind};
use fmnist_infer::data::{self, Split};
use fmnist_infer::golden;
use fmnist_infer::model::Logits;
use fmnist_infer::modelio::write_model;
use fmnist_infer::{F32Kernel, Model};
use fmnist_tests::trained::{trained, wide_model};
use fmnist_tests::{assert_bad_input, data_dir, run, text};

/// The briefly trained LeNet-BN written as both f32 kinds, in a temporary folder.
fn model_files(dir: &Path) -> [(PathBuf, &'static str); 2] {
    let t = trained();
    let f32 = dir.join("f32.fmnm");
    let folded = dir.join("folded.fmnm");
    write_model(&f32, Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*t.params)).unwrap();
    write_model(
        &folded,
        Arch::LeNet,
        Kind::F32Folded,
        bytemuck::bytes_of(&*t.folded),
    )
    .unwrap();
    [(f32, "f32"), (folded, "f32-folded")]
}

/// The kernels this CPU runs, saying which it skips and why.
fn kernels_here() -> Vec<F32Kernel> {
    F32Kernel::CONCRETE
        .into_iter()
        .filter(|k| {
            let here = k.on_this_cpu();
            if !here {
                eprintln!("skipping --f32-kernel {}: this CPU lacks it", k.name());
            }
            here
        })
        .collect()
}

#[test]
fn every_kernel_gives_the_reference_logits_on_all_test_images() {
    let test = data::load(&data_dir(), Split::Test).unwrap();
    assert_eq!(test.images.len(), 10_000);
    let dir = tempfile::tempdir().unwrap();
    for (path, kind) in model_files(dir.path()) {
        let mut model = Model::load(&path).unwrap();
        assert_eq!(model.kind.name(), kind);
        let reference: Vec<[u32; 10]> = {
            let net = model.f32_net().unwrap();
            test.images
                .iter()
                .map(|img| net.forward_layers(img).map(f32::to_bits))
                .collect()
        };
        for kernel in kernels_here() {
            model.set_f32_kernel(kernel).unwrap();
            let net = model.f32_net().unwrap();
            assert_eq!(net.kernel(), kernel.name());
            for (i, (img, want)) in test.images.iter().zip(&reference).enumerate() {
                let got = match model.logits(img) {
                    Logits::F32(l) => l.map(f32::to_bits),
                    Logits::I8(_) => unreachable!("an f32 model"),
                };
                assert_eq!(
                    &got,
                    want,
                    "{kind}, --f32-kernel {}, image {i}",
                    kernel.name()
                );
            }
        }
    }
}

#[test]
fn golden_files_are_byte_identical_whichever_kernel_wrote_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    for (path, kind) in model_files(dir.path()) {
        let mut first: Option<(F32Kernel, Vec<u8>)> = None;
        for kernel in kernels_here() {
            let out = dir.path().join(format!("{kind}.{}.golden", kernel.name()));
            let o = run(
                "fmnist-infer",
                &[
                    "golden",
                    "--model",
                    path.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                    "--data",
                    data.to_str().unwrap(),
                    "--f32-kernel",
                    kernel.name(),
                ],
            );
            assert!(o.status.success(), "{}", text(&o).1);
            assert_eq!(golden::read(&out).unwrap().records.len(), 10_000);
            let bytes = std::fs::read(&out).unwrap();
            match &first {
                None => first = Some((kernel, bytes)),
                Some((k0, b0)) => assert!(
                    *b0 == bytes,
                    "{kind}: --f32-kernel {} and --f32-kernel {} wrote different golden files",
                    k0.name(),
                    kernel.name()
                ),
            }
        }
    }
}

#[test]
fn a_kernel_the_model_lacks_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.fmnm");
    write_model(
        &wide,
        Arch::Wide,
        Kind::F32Folded,
        bytemuck::bytes_of(&*wide_model().folded),
    )
    .unwrap();
    let int8 = dir.path().join("int8.fmnm");
    write_model(
        &int8,
        Arch::LeNet,
        Kind::Int8,
        bytemuck::bytes_of(&*trained().int8),
    )
    .unwrap();
    let bench = |model: &Path, kernel: &str| {
        run(
            "fmnist-infer",
            &[
                "bench",
                "--model",
                model.to_str().unwrap(),
                "--seconds",
                "0.1",
                "--f32-kernel",
                kernel,
            ],
        )
    };
    for kernel in ["avx2", "avx512"] {
        assert_bad_input(&bench(&wide, kernel), "has only the portable kernel");
        // The flag is about f32 models: an int8 model runs its own kernels.
        let o = bench(&int8, kernel);
        assert!(o.status.success(), "{}", text(&o).1);
    }
    let o = bench(&wide, "portable");
    assert!(o.status.success(), "{}", text(&o).1);
}
