//! The `fmnist-infer` command line, run as the release binary: eval / predict / golden / bench on
//! good input (the real test set, a model trained here for a few hundred steps, its int8
//! quantization) and bad input (empty, truncated, corrupted, foreign and missing files).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fmnist_core::format::{Arch, Kind};
use fmnist_core::layers::argmax;
use fmnist_core::lenet::{LeNet, LeNetParams};
use fmnist_infer::data::{self, Dataset, Split};
use fmnist_infer::golden;
use fmnist_infer::model::Logits;
use fmnist_infer::modelio::{encode_model, write_model};
use fmnist_infer::safetensors_io;
use fmnist_tests::{assert_bad_input, data_dir, run, text};
use fmnist_train::config::{Conv, Model, Optimizer, Schedule, SgdConfig, TrainConfig};
use fmnist_train::quantize::{Calibration, quantize};
use fmnist_train::registry::TrainLeNet;
use fmnist_train::shared::trainer::Trainer;
use image::{DynamicImage, GrayImage, Rgb, RgbImage, imageops};

/// Model files shared by every test: trained briefly on the real data so predictions mean
/// something (about 85 % test accuracy), then quantized.
struct Models {
    _dir: tempfile::TempDir,
    f32: PathBuf,
    int8: PathBuf,
    safetensors: PathBuf,
    params: Box<LeNetParams>,
    test: Dataset,
}

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = data_dir();
        let train = data::load(&dir, Split::Train).unwrap();
        let test = data::load(&dir, Split::Test).unwrap();
        let cfg = TrainConfig {
            model: Model::Lenet,
            batch: 64,
            steps: 400,
            optimizer: Optimizer::Sgd(SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.0,
                decoupled_decay: 0.0,
            }),
            schedule: Schedule::Constant,
            checkpoint_every: 1_000,
            seed: 7,
            augment: Default::default(),
            label_smoothing: 0.0,
            distill: None,
            conv: Conv::Direct,
        };
        let mut t = Trainer::<TrainLeNet>::new(cfg, &train, 2).unwrap();
        for _ in 0..cfg.steps {
            t.step();
        }
        let mut params: Box<LeNetParams> = bytemuck::zeroed_box();
        *params = *t.params();
        let q =
            quantize::<TrainLeNet>(&params, &train.images[..1000], Calibration::MinMax).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let f32 = tmp.path().join("f32.fmnm");
        let int8 = tmp.path().join("int8.fmnm");
        let safetensors = tmp.path().join("f32.safetensors");
        write_model(&f32, Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*params)).unwrap();
        write_model(&int8, Arch::LeNet, Kind::Int8, bytemuck::bytes_of(&*q)).unwrap();
        safetensors_io::write(&safetensors, &params, 400).unwrap();
        Models {
            _dir: tmp,
            f32,
            int8,
            safetensors,
            params,
            test,
        }
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json_of(o: &std::process::Output) -> serde_json::Value {
    let (out, err) = text(o);
    assert!(o.status.success(), "failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Exactly one line on stderr, naming `file`.
fn assert_one_line_naming(o: &std::process::Output, file: &Path, needle: &str) {
    assert_bad_input(o, needle);
    let (_, err) = text(o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains(s(file)), "stderr should name {file:?}: {err}");
}

#[test]
fn eval_json_on_f32_int8_and_safetensors() {
    let m = models();
    let f = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--json"],
    ));
    let st = json_of(&run(
        "fmnist-infer",
        &[
            "eval",
            "--model",
            s(&m.safetensors),
            "--json",
            "--threads",
            "1",
        ],
    ));
    let q = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.int8), "--json"],
    ));
    for (v, kind) in [(&f, "f32"), (&st, "safetensors-f32"), (&q, "int8")] {
        assert_eq!(v["kind"], kind);
        assert_eq!(v["images"], 10_000);
        assert!(v["images_per_second"].as_f64().unwrap() > 0.0);
        let per_class = v["per_class"].as_array().unwrap();
        assert_eq!(per_class.len(), 10);
        let confusion = v["confusion"].as_array().unwrap();
        let total: u64 = confusion
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(total, 10_000);
        let acc = v["accuracy"].as_f64().unwrap();
        assert!(acc > 0.75, "{kind}: accuracy {acc}");
        let diag: u64 = (0..10).map(|i| confusion[i][i].as_u64().unwrap()).sum();
        assert_eq!(diag as f64 / 10_000.0, acc);
    }
    // The safetensors file is the same f32 model.
    assert_eq!(f["confusion"], st["confusion"]);
    // int8 within a point of f32 even for this briefly trained model.
    let (fa, qa) = (
        f["accuracy"].as_f64().unwrap(),
        q["accuracy"].as_f64().unwrap(),
    );
    assert!((fa - qa).abs() < 0.01, "f32 {fa} int8 {qa}");
    // Agrees with fmnist-core's forward pass on every image.
    let net = LeNet::from(&*m.params);
    let correct = m
        .test
        .images
        .iter()
        .zip(&m.test.labels)
        .filter(|(img, l)| argmax(&net.forward(img)) == **l as usize)
        .count();
    assert_eq!(correct as f64 / 10_000.0, fa);
}

#[test]
fn eval_text_report_has_classes_and_confusion() {
    let m = models();
    let o = run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--threads", "2"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("accuracy:"), "{out}");
    for name in fmnist_core::CLASS_NAMES {
        assert!(out.contains(name), "{name} missing: {out}");
    }
    assert!(out.contains("confusion matrix"), "{out}");
}

#[test]
fn golden_int8_file_matches_the_kernels() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8.golden");
    let o = run(
        "fmnist-infer",
        &["golden", "--model", s(&m.int8), "--out", s(&out)],
    );
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let g = golden::read(&out).unwrap();
    assert_eq!(g.records.len(), 10_000);
    let bytes = std::fs::read(&m.int8).unwrap();
    assert_eq!(
        g.model_crc,
        u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap())
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 16 + 10_000 * 11 + 4);
    let model = fmnist_infer::Model::load(&m.int8).unwrap();
    let net = model.int8().unwrap();
    for (i, (logits, class)) in g.records.iter().enumerate().step_by(97) {
        let want = net.forward_reference(&m.test.images[i]);
        assert_eq!(*logits, Logits::I8(want), "image {i}");
        assert_eq!(*class as usize, argmax(&want));
    }
    // Only the output file was created (atomic write leaves no temp file).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // f32 model: f32 logits.
    let out32 = dir.path().join("f32.golden");
    let o = run(
        "fmnist-infer",
        &["golden", "--model", s(&m.f32), "--out", s(&out32), "--json"],
    );
    let v = json_of(&o);
    assert_eq!(v["logits"], "f32");
    let g = golden::read(&out32).unwrap();
    let net = LeNet::from(&*m.params);
    assert_eq!(g.records[5].0, Logits::F32(net.forward(&m.test.images[5])));
}

/// Writes test image `i` as a 28x28 grey PNG, and as a 280x224 colour JPEG of the same item
/// dark on a light-beige background (inverted, scaled 8x, placed off-centre).
fn write_images(dir: &Path, i: usize) -> (PathBuf, PathBuf) {
    let img = &models().test.images[i];
    let grey = GrayImage::from_raw(28, 28, img.to_vec()).unwrap();
    let png = dir.join(format!("test{i}.png"));
    grey.save(&png).unwrap();
    let big = imageops::resize(&grey, 168, 168, imageops::FilterType::Triangle);
    let mut rgb = RgbImage::from_pixel(280, 224, Rgb([245, 240, 225]));
    for (x, y, p) in big.enumerate_pixels() {
        let v = p[0] as u32;
        // Dark blue where the item is bright.
        let mix = |bg: u32, fg: u32| ((bg * (255 - v) + fg * v) / 255) as u8;
        rgb.put_pixel(
            x + 70,
            y + 30,
            Rgb([mix(245, 20), mix(240, 30), mix(225, 90)]),
        );
    }
    let jpg = dir.join(format!("test{i}.jpg"));
    DynamicImage::ImageRgb8(rgb).save(&jpg).unwrap();
    (png, jpg)
}

#[test]
fn predict_real_png_and_jpeg_agrees_with_the_raw_image() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let net = LeNet::from(&*m.params);
    let ids: Vec<usize> = (0..20).map(|k| k * 487).collect();
    let (mut png_same, mut jpg_same) = (0, 0);
    for &i in &ids {
        let (png, jpg) = write_images(dir.path(), i);
        let want = argmax(&net.forward(&m.test.images[i]));
        let v = json_of(&run(
            "fmnist-infer",
            &["predict", "--model", s(&m.f32), "--json", s(&png), s(&jpg)],
        ));
        let preds = v["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 2);
        assert_eq!(preds[0]["inverted"], false);
        assert_eq!(preds[1]["inverted"], true, "light background is inverted");
        let top: Vec<_> = preds[0]["top"].as_array().unwrap().to_vec();
        assert_eq!(top.len(), 3);
        let p: Vec<f64> = top
            .iter()
            .map(|t| t["probability"].as_f64().unwrap())
            .collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0 + 1e-6);
        png_same += (preds[0]["top"][0]["label"] == want) as usize;
        jpg_same += (preds[1]["top"][0]["label"] == want) as usize;
    }
    // Cropping and re-fitting moves a few pixels; the class survives for nearly every item.
    assert!(png_same >= 17, "PNG agreed on {png_same}/20");
    assert!(jpg_same >= 15, "JPEG agreed on {jpg_same}/20");
}

#[test]
fn predict_text_output_and_int8_model() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let (png, _) = write_images(dir.path(), 0);
    let o = run("fmnist-infer", &["predict", "--model", s(&m.int8), s(&png)]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // Test image 0 is an ankle boot.
    assert!(out.contains("Ankle boot"), "{out}");
    assert!(out.contains(" %"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    // --invert yes on a light-on-dark image makes it dark-on-light: still runs.
    let o = run(
        "fmnist-infer",
        &["predict", "--model", s(&m.f32), "--invert", "yes", s(&png)],
    );
    assert!(o.status.success());
}

#[test]
fn bench_reports_both_kernels() {
    let m = models();
    let v = json_of(&run(
        "fmnist-infer",
        &[
            "bench",
            "--model",
            s(&m.f32),
            "--model",
            s(&m.int8),
            "--seconds",
            "0.3",
            "--json",
        ],
    ));
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    for x in r {
        assert!(x["fast"]["images_per_second"].as_f64().unwrap() > 0.0);
        assert!(x["reference"]["images_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(x["bit_identical"], true);
    }
}

#[test]
fn bad_model_files_exit_2_with_one_line() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(&m.f32).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut flipped = good.clone();
    flipped[10_000] ^= 0x40;
    let mut flipped_q = std::fs::read(&m.int8).unwrap();
    flipped_q[300] ^= 1;
    let mut st = std::fs::read(&m.safetensors).unwrap();
    st.truncate(st.len() - 10);
    let cases = [
        (write("empty.fmnm", b""), "empty"),
        (
            write("truncated.fmnm", &good[..good.len() / 2]),
            "wrong length",
        ),
        (write("flipped.fmnm", &flipped), "CRC mismatch"),
        (write("flipped-int8.fmnm", &flipped_q), "CRC mismatch"),
        (
            write("notes.txt", b"this is not a model\n"),
            "not a model file",
        ),
        (write("trunc.safetensors", &st), "safetensors"),
        (dir.path().join("missing.fmnm"), "No such file"),
        (dir.path().to_path_buf(), "directory"),
    ];
    for (path, needle) in &cases {
        for args in [
            vec!["eval", "--model", s(path)],
            vec!["eval", "--model", s(path), "--json"],
            vec![
                "golden",
                "--model",
                s(path),
                "--out",
                "/tmp/never-written.golden",
            ],
            vec!["bench", "--model", s(path), "--seconds", "0.1"],
        ] {
            let o = run("fmnist-infer", &args);
            assert_one_line_naming(&o, path, needle);
            assert!(o.stdout.is_empty(), "{args:?} printed to stdout");
        }
    }
    // A BN-folded f32 model with a foreign architecture id is refused too.
    let mut foreign = encode_model(Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*m.params));
    foreign[8] = 9;
    let p = write("foreign.fmnm", &foreign);
    assert_one_line_naming(
        &run("fmnist-infer", &["eval", "--model", s(&p)]),
        &p,
        "unknown architecture",
    );
}

#[test]
fn bad_images_exit_2_with_one_line() {
    let m = models();
    let dir = tempfile::tempdir().unwrap();
    let (png, jpg) = write_images(dir.path(), 3);
    let bytes = std::fs::read(&png).unwrap();
    let text_png = dir.path().join("text.png");
    std::fs::write(&text_png, "just some text, not an image\n").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let jbytes = std::fs::read(&jpg).unwrap();
    let cut_jpg = dir.path().join("cut.jpg");
    std::fs::write(&cut_jpg, &jbytes[..200]).unwrap();
    let missing = dir.path().join("missing.png");
    for (path, needle) in [
        (&text_png, "not a PNG or JPEG"),
        (&empty, "not a PNG or JPEG"),
        (&cut, "image"),
        (&cut_jpg, "image"),
        (&missing, "No such file"),
    ] {
        // The bad image fails the command even after a good one.
        let o = run(
            "fmnist-infer",
            &["predict", "--model", s(&m.f32), s(&png), s(path)],
        );
        assert_one_line_naming(&o, path, needle);
        assert!(o.stdout.is_empty());
    }
    // A bad model for predict.
    let o = run(
        "fmnist-infer",
        &["predict", "--model", s(&text_png), s(&png)],
    );
    assert_one_line_naming(&o, &text_png, "not a model file");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["eval"],
        vec!["predict", "--model", "x.fmnm"],
        vec!["predict", "--model", "x", "--invert", "maybe", "a.png"],
        vec!["frobnicate"],
    ] {
        let o = run("fmnist-infer", &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!text(&o).1.contains("panicked"));
    }
}

#[test]
fn eval_ensemble_averages_logits_and_names_a_bad_member() {
    let m = models();
    let single = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--json"],
    ));
    // Two copies of one model: the mean of equal logits is those logits, bit for bit.
    let twice = json_of(&run(
        "fmnist-infer",
        &[
            "eval",
            "--model",
            s(&m.f32),
            "--model",
            s(&m.safetensors),
            "--json",
        ],
    ));
    assert_eq!(twice["kind"], "ensemble");
    assert_eq!(twice["correct"], single["correct"]);
    assert_eq!(twice["confusion"], single["confusion"]);
    assert!(twice["model"].as_str().unwrap().contains(" + "));

    // f32 + int8: the mean of f32 and dequantized int8 logits, recomputed here.
    let mixed = json_of(&run(
        "fmnist-infer",
        &[
            "eval",
            "--model",
            s(&m.f32),
            "--model",
            s(&m.int8),
            "--json",
        ],
    ));
    let f32m = fmnist_infer::model::Model::load(&m.f32).unwrap();
    let q = fmnist_infer::model::Model::load(&m.int8).unwrap();
    let pair = [f32m, q];
    let expect = m
        .test
        .images
        .iter()
        .zip(&m.test.labels)
        .filter(|&(img, &y)| {
            fmnist_core::layers::argmax(&fmnist_infer::eval::mean_logits(&pair, img)) == y as usize
        })
        .count();
    assert_eq!(mixed["correct"], expect);

    let bad = m._dir.path().join("not-a-model.fmnm");
    std::fs::write(&bad, b"nonsense").unwrap();
    let o = run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--model", s(&bad)],
    );
    assert_one_line_naming(&o, &bad, "");
}

#[test]
fn eval_mirror_tta_averages_each_image_with_its_mirror() {
    let m = models();
    let f32m = fmnist_infer::model::Model::load(&m.f32).unwrap();
    let one = std::slice::from_ref(&f32m);
    // Recomputed here: the mean of the image's and the mirrored image's logits.
    let expect = m
        .test
        .images
        .iter()
        .zip(&m.test.labels)
        .filter(|&(img, &y)| {
            let a = fmnist_infer::eval::mean_logits(one, img);
            let mut flipped = *img;
            for row in flipped.chunks_exact_mut(28) {
                row.reverse();
            }
            let b = fmnist_infer::eval::mean_logits(one, &flipped);
            let mean: [f32; 10] = std::array::from_fn(|i| (a[i] + b[i]) / 2.0);
            argmax(&mean) == y as usize
        })
        .count();
    let plain = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--json"],
    ));
    let tta = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--tta", "mirror", "--json"],
    ));
    assert_eq!(tta["correct"], expect);
    assert_eq!(tta["tta"], "mirror");
    assert_eq!(plain["tta"], "none");
    assert_ne!(
        tta["confusion"], plain["confusion"],
        "the mirror changes some predictions"
    );
    // The text report names it; a bad value is a usage error.
    let o = run(
        "fmnist-infer",
        &[
            "eval",
            "--model",
            s(&m.f32),
            "--model",
            s(&m.int8),
            "--tta",
            "mirror",
        ],
    );
    assert!(o.status.success());
    assert!(
        text(&o)
            .0
            .contains("(ensemble, test-time augmentation: mirror)")
    );
    let o = run(
        "fmnist-infer",
        &["eval", "--model", s(&m.f32), "--tta", "rotate"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("rotate"));
}

/// Inference reads only the test set: a data folder holding just the two `t10k-*` files serves
/// `eval` and `golden`, and gives the same results as the full folder.
#[test]
fn a_test_only_data_folder_serves_eval_and_golden() {
    let m = models();
    let full = data_dir();
    let only = tempfile::tempdir().unwrap();
    for stem in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        let src = [full.join(format!("{stem}.gz")), full.join(stem)]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap();
        std::os::unix::fs::symlink(&src, only.path().join(src.file_name().unwrap())).unwrap();
    }
    let data = s(only.path());
    let a = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.int8), "--data", data, "--json"],
    ));
    let b = json_of(&run(
        "fmnist-infer",
        &["eval", "--model", s(&m.int8), "--json"],
    ));
    assert_eq!(a["accuracy"], b["accuracy"]);
    assert_eq!(a["confusion"], b["confusion"]);
    let out = only.path().join("g.bin");
    let o = run(
        "fmnist-infer",
        &[
            "golden",
            "--model",
            s(&m.int8),
            "--data",
            data,
            "--out",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(golden::read(&out).unwrap().records.len(), 10_000);
}
