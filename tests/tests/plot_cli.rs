//! The figure commands, run as the release binaries: `fmnist-train plot` on the log of a short
//! real training run, `fmnist-train samples` on the real training set, `fmnist-infer confusion`
//! on every model kind `eval` accepts; each writes a PNG of the documented size with real content,
//! and bad input (missing or garbled log, bad model, unwritable output) fails with exit 2, one
//! `error:` line naming the file, and no PNG (or temp file) left behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fmnist_infer::data::{self, Split};
use fmnist_infer::modelio::LoadedModel;
use fmnist_tests::{assert_bad_input, data_dir, file_names, run, text};
use fmnist_train::plot::curves::CURVE_SIZE;
use fmnist_train::plot::samples::{SAMPLE_SCALE, SampleLayout};
use image::RgbImage;

/// A 20-step training run (evaluated every 10 steps) and the models made from it.
struct Run {
    _dir: tempfile::TempDir,
    log: PathBuf,
    f32: PathBuf,
    folded: PathBuf,
    int8: PathBuf,
    safetensors: PathBuf,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn short_run() -> &'static Run {
    static R: OnceLock<Run> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let o = run(
            "fmnist-train",
            &[
                "train",
                "--preset",
                "fast",
                "--steps",
                "20",
                "--checkpoint-every",
                "10",
                "--json",
                "--out",
                s(&out),
            ],
        );
        assert!(o.status.success(), "train failed: {}", text(&o).1);
        let f32 = out.join("model.fmnm");
        let (int8, folded) = (out.join("model.fmq"), out.join("model-folded.fmnm"));
        let o = run(
            "fmnist-train",
            &[
                "export",
                "--checkpoint",
                s(&f32),
                "--out",
                s(&int8),
                "--folded-out",
                s(&folded),
                "--calibration",
                "100",
                "--json",
            ],
        );
        assert!(o.status.success(), "export failed: {}", text(&o).1);
        let model = LoadedModel::read(&f32).unwrap();
        let params = model.file().unwrap().lenet_f32().unwrap();
        let safetensors = out.join("model.safetensors");
        fmnist_infer::safetensors_io::write(&safetensors, params, 20).unwrap();
        Run {
            log: out.join("train-log.jsonl"),
            _dir: dir,
            f32,
            folded,
            int8,
            safetensors,
        }
    })
}

/// Decodes a PNG, checks its size and that it is a real picture (many colours, not blank).
fn check_png(path: &Path, size: (u32, u32)) -> RgbImage {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 20,
        "{}: only {} colours",
        path.display(),
        colours.len()
    );
    let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    let total = (size.0 * size.1) as usize;
    assert!(
        white > total / 10 && white < total * 99 / 100,
        "{}: {white} of {total} pixels white",
        path.display()
    );
    img
}

#[test]
fn plot_draws_loss_and_accuracy_from_a_real_log_deterministically() {
    let r = short_run();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figs");
    let o = run(
        "fmnist-train",
        &["plot", "--log", s(&r.log), "--out", s(&out), "--json"],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "plot failed: {stderr}");
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(j["steps"], 20);
    assert_eq!(j["evaluations"], 2);
    assert_eq!(file_names(&out), ["accuracy.png", "loss.png"]);
    for name in ["loss.png", "accuracy.png"] {
        let img = check_png(&out.join(name), CURVE_SIZE);
        // The test points are drawn in red.
        assert!(
            img.pixels()
                .any(|p| p.0[0] > 180 && p.0[1] < 80 && p.0[2] < 80),
            "{name}: no test points"
        );
    }
    // Same log, same bytes.
    let again = dir.path().join("again");
    let o = run(
        "fmnist-train",
        &["plot", "--log", s(&r.log), "--out", s(&again)],
    );
    assert!(o.status.success(), "plot failed: {}", text(&o).1);
    for name in ["loss.png", "accuracy.png"] {
        assert!(
            std::fs::read(out.join(name)).unwrap() == std::fs::read(again.join(name)).unwrap(),
            "{name} differs between two runs"
        );
    }
}

#[test]
fn plot_rejects_missing_and_garbled_logs_and_unwritable_output() {
    let r = short_run();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figs");
    let plot =
        |log: &Path, out: &Path| run("fmnist-train", &["plot", "--log", s(log), "--out", s(out)]);

    let missing = dir.path().join("no-such-log.jsonl");
    assert_bad_input(&plot(&missing, &out), "no-such-log.jsonl");

    let good = std::fs::read_to_string(&r.log).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(3, "{\"step\": 3, \"loss\": ");
    let garbled = dir.path().join("garbled.jsonl");
    std::fs::write(&garbled, lines.join("\n") + "\n").unwrap();
    let o = plot(&garbled, &out);
    assert_bad_input(&o, "garbled.jsonl: line 4");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    assert_bad_input(&plot(&empty, &out), "no training steps");

    let binary = dir.path().join("binary.jsonl");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x17]).unwrap();
    assert_bad_input(&plot(&binary, &out), "binary.jsonl");
    assert!(!out.exists(), "a failed plot created {}", out.display());

    // The output "directory" is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    assert_bad_input(&plot(&r.log, &file), "a-file");
    // A directory where loss.png should go.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(blocked.join("loss.png")).unwrap();
    assert_bad_input(&plot(&r.log, &blocked), "loss.png");
    assert_eq!(file_names(&blocked), ["loss.png"], "temp files left behind");
}

#[test]
fn samples_draws_the_first_training_images_pixel_exact() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("samples.png");
    let data = data_dir();
    let o = run(
        "fmnist-train",
        &["samples", "--out", s(&png), "--data", s(&data), "--json"],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "samples failed: {stderr}");
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(j["images"], 30);
    let layout = SampleLayout::new(30);
    let img = check_png(&png, layout.size());
    let train = data::load(&data, Split::Train).unwrap();
    for k in [0, 9, 29] {
        let (x0, y0) = layout.origin(k);
        for (i, &v) in train.images[k].iter().enumerate() {
            let (r, c) = ((i / 28) as u32, (i % 28) as u32);
            for (dx, dy) in [(0, 0), (SAMPLE_SCALE - 1, SAMPLE_SCALE - 1)] {
                let p = img.get_pixel(x0 + c * SAMPLE_SCALE + dx, y0 + r * SAMPLE_SCALE + dy);
                assert_eq!(p.0, [v; 3], "image {k}, pixel {i}");
            }
        }
    }

    let o = run(
        "fmnist-train",
        &["samples", "--out", s(&png), "--count", "0"],
    );
    assert_bad_input(&o, "--count");
    let nowhere = dir.path().join("no-such-dir").join("s.png");
    let o = run(
        "fmnist-train",
        &["samples", "--out", s(&nowhere), "--data", s(&data)],
    );
    assert_bad_input(&o, "no-such-dir/s.png");
    assert_eq!(file_names(dir.path()), ["samples.png"]);
}

#[test]
fn confusion_works_for_every_model_kind() {
    let r = short_run();
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let size = fmnist_infer::confusion::SIZE;
    for (model, kind) in [
        (&r.f32, "f32"),
        (&r.folded, "f32-folded"),
        (&r.int8, "int8"),
        (&r.safetensors, "safetensors-f32"),
    ] {
        let png = dir.path().join(format!("{kind}.png"));
        let o = run(
            "fmnist-infer",
            &[
                "confusion",
                "--model",
                s(model),
                "--png",
                s(&png),
                "--data",
                s(&data),
                "--json",
            ],
        );
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "confusion {kind} failed: {stderr}");
        let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(j["kind"], kind);
        assert_eq!(j["png"], s(&png));
        let total: u64 = j["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 10_000);
        check_png(&png, size);
    }
    // Without --json: eval's text report, confusion matrix included.
    let png = dir.path().join("text.png");
    let o = run(
        "fmnist-infer",
        &[
            "confusion",
            "--model",
            s(&r.int8),
            "--png",
            s(&png),
            "--data",
            s(&data),
        ],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "confusion failed: {stderr}");
    assert!(
        stdout.contains("confusion matrix (rows: true class"),
        "{stdout}"
    );
    assert!(stdout.contains("Ankle boot"), "{stdout}");
    check_png(&png, size);
}

#[test]
fn confusion_rejects_bad_models_and_unwritable_output() {
    let r = short_run();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("c.png");
    let confusion = |model: &Path, png: &Path| {
        run(
            "fmnist-infer",
            &["confusion", "--model", s(model), "--png", s(png)],
        )
    };
    let bad = dir.path().join("bad.fmnm");
    std::fs::write(&bad, b"this is not a model\n").unwrap();
    assert_bad_input(&confusion(&bad, &png), "bad.fmnm");
    let mut bytes = std::fs::read(&r.int8).unwrap();
    bytes.truncate(bytes.len() / 2);
    let cut = dir.path().join("cut.fmq");
    std::fs::write(&cut, &bytes).unwrap();
    assert_bad_input(&confusion(&cut, &png), "cut.fmq");
    assert_bad_input(
        &confusion(&dir.path().join("missing.fmnm"), &png),
        "missing.fmnm",
    );
    let nowhere = dir.path().join("no-such-dir").join("c.png");
    assert_bad_input(&confusion(&r.int8, &nowhere), "no-such-dir/c.png");
    assert_bad_input(&confusion(&r.int8, dir.path()), "is a directory");
    assert_eq!(
        file_names(dir.path()),
        ["bad.fmnm", "cut.fmq"],
        "a PNG or temp file was left behind"
    );
}
