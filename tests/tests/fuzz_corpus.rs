//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same harnesses the
//! `cargo fuzz` targets run (`fmnist_tests::fuzz`), on the stable toolchain: every input that
//! once found new coverage must still be handled without a panic.
//!
//! `cargo test --release -p fmnist-tests --test fuzz_corpus -- --ignored write_seeds` adds the
//! seed inputs the corpora grew from to `fuzz/corpus/<target>/`.

use std::path::{Path, PathBuf};

use fmnist_tests::fuzz::TARGETS;
use fmnist_tests::workspace_root;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_corpus_input_runs_without_panic() {
    for (name, harness) in TARGETS {
        let mut n = 0;
        for path in files(&workspace_root().join("fuzz/corpus").join(name)) {
            let bytes = std::fs::read(&path).expect("corpus file reads");
            let r = std::panic::catch_unwind(|| harness(&bytes));
            assert!(r.is_ok(), "{name}: {} panicked", path.display());
            n += 1;
        }
        assert!(n > 0, "{name}: empty corpus");
        eprintln!("{name}: {n} inputs replayed");
    }
}

/// Writes the seed inputs: small valid files of each kind, plus the real models from
/// `runs/demo` when present.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand"]
fn write_seeds() {
    use fmnist_core::format::{Arch, Kind};
    use fmnist_infer::data::{Dataset, encode_images, encode_labels};
    use fmnist_train::config::{Model, Preset};
    use fmnist_train::registry::{TrainLeNet, TrainWide};
    use fmnist_train::shared::net::TrainNet;
    use fmnist_train::shared::trainer::Trainer;
    use std::io::Write;

    let root = workspace_root().join("fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };

    // IDX: images and labels, raw and gzipped.
    let imgs: Vec<[u8; 784]> = (0..3u8)
        .map(|k| std::array::from_fn(|i| (i as u8).wrapping_mul(k + 1)))
        .collect();
    let images = encode_images(&imgs);
    let labels = encode_labels(&[0, 9, 4]);
    put("idx", "images-3", &images);
    put("idx", "images-0", &encode_images(&[]));
    put("idx", "labels-3", &labels);
    put("idx", "labels-0", &encode_labels(&[]));
    put("idx", "images-3.gz", &gz(&images));
    put("idx", "labels-3.gz", &gz(&labels));
    let mut two = gz(&labels[..4]);
    two.extend(gz(&labels[4..]));
    put("idx", "labels-multimember.gz", &two);

    // Checkpoints: a real one after 2 training steps on 10 images, and small ones with short
    // tensors (decode does not check sizes; resume does), so the fuzzer works on small inputs.
    let data = Dataset {
        images: (0..10u8).map(|k| [k * 20; 784]).collect(),
        labels: (0..10).collect(),
    };
    let mut cfg = Preset::Original.config_for(Model::Lenet, data.len(), 7);
    cfg.batch = 4;
    let mut t = Trainer::<TrainLeNet>::new(cfg, &data, 1).unwrap();
    t.step();
    t.step();
    let state = TrainLeNet::save(&t.state());
    put(
        "checkpoint",
        "lenet-2-steps.fmck",
        &fmnist_train::checkpoint::encode_saved::<TrainLeNet>(&state),
    );
    let mut small = state.clone();
    small.params.truncate(3);
    small.momentum.truncate(2);
    small.order.truncate(4);
    put(
        "checkpoint",
        "small.fmck",
        &fmnist_train::checkpoint::encode_saved::<TrainLeNet>(&small),
    );
    small.params.clear();
    small.momentum.clear();
    small.order.clear();
    put(
        "checkpoint",
        "empty-tensors.fmck",
        &fmnist_train::checkpoint::encode_saved::<TrainLeNet>(&small),
    );
    // The same recipe with every augmentation and label smoothing on (the fields version 2
    // added).
    small.config.augment = fmnist_train::augment::Augment {
        shift: 2,
        flip: true,
        rotate_deg: 10.0,
        noise: 0.05,
        erase: 0.3,
    };
    small.config.label_smoothing = 0.1;
    put(
        "checkpoint",
        "augmented.fmck",
        &fmnist_train::checkpoint::encode_saved::<TrainLeNet>(&small),
    );
    // And distilling from two teachers (the field version 4 added).
    small.config.distill = Some(fmnist_train::config::Distill {
        alpha: 0.7,
        temperature: 2.0,
        teachers: 2,
        fingerprint: 0x0123_4567_89ab_cdef,
    });
    put(
        "checkpoint",
        "distilled.fmck",
        &fmnist_train::checkpoint::encode_saved::<TrainLeNet>(&small),
    );

    // Wide-CNN runs (architecture 2): the recipe of each preset (conv winograd, the field
    // version 5 added) and a real trainer state after one step, with its tensors cut short (a
    // full one is 20 MB).
    for preset in [Preset::Original, Preset::Default, Preset::Fast] {
        let mut config = preset.config_for(Model::Wide, data.len(), 7);
        config.batch = 4;
        let mut t = Trainer::<TrainWide>::new(config, &data, 1).unwrap();
        t.step();
        let mut run = TrainWide::save(&t.state());
        run.state.params.truncate(5);
        run.state.m.truncate(3);
        run.state.v.truncate(2);
        put(
            "checkpoint",
            &format!("wide-{preset:?}.fmck").to_lowercase(),
            &fmnist_train::checkpoint::encode_saved::<TrainWide>(&run),
        );
    }

    // Model files: the demo run's real ones, and small containers of each kind.
    for (f, name) in [
        ("model.fmq", "lenet-int8.fmq"),
        ("model.fmnm", "lenet-f32.fmnm"),
        ("model-f32-folded.fmnm", "lenet-folded.fmnm"),
    ] {
        if let Ok(b) = std::fs::read(workspace_root().join("runs/demo").join(f)) {
            put("model_file", name, &b);
        }
    }
    for (kind, name) in [
        (Kind::F32, "short-f32.fmnm"),
        (Kind::F32Folded, "short-folded.fmnm"),
        (Kind::Int8, "short-int8.fmq"),
    ] {
        let b = fmnist_infer::modelio::encode_model(Arch::LeNet, kind, &[0u8; 16]);
        put("model_file", name, &b);
    }
    let b = fmnist_infer::modelio::encode_model(Arch::Wide, Kind::Int8, &[1u8; 8]);
    put("model_file", "wide-int8.fmq", &b);

    // Images: small PNGs (grey, RGB, RGBA, 16-bit) and a JPEG.
    use image::{DynamicImage, ImageFormat, Luma, Rgb, Rgba};
    let enc = |img: DynamicImage, fmt: ImageFormat| {
        let mut c = std::io::Cursor::new(Vec::new());
        img.write_to(&mut c, fmt).unwrap();
        c.into_inner()
    };
    let grey =
        image::GrayImage::from_fn(12, 9, |x, y| Luma([if x > 3 && y > 2 { 220 } else { 10 }]));
    put(
        "image",
        "grey.png",
        &enc(DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png),
    );
    let rgb = image::RgbImage::from_fn(7, 11, |x, y| Rgb([255, (x * 30) as u8, (y * 20) as u8]));
    put(
        "image",
        "rgb.png",
        &enc(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
    );
    let rgba = image::RgbaImage::from_fn(5, 5, |x, y| Rgba([0, 0, 0, ((x + y) * 25) as u8]));
    put(
        "image",
        "rgba.png",
        &enc(DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
    );
    let g16 = image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(4, 6, |x, y| {
        Luma([(x * y * 3000) as u16])
    });
    put(
        "image",
        "grey16.png",
        &enc(DynamicImage::ImageLuma16(g16), ImageFormat::Png),
    );
    put(
        "image",
        "rgb.jpg",
        &enc(DynamicImage::ImageRgb8(rgb), ImageFormat::Jpeg),
    );
    put(
        "image",
        "grey.jpg",
        &enc(DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg),
    );
}
