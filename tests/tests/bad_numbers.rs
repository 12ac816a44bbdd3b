//! Non-finite and nonsense numbers: model files whose tensors hold NaN, ±inf or a negative
//! batch-norm variance (with an intact CRC, so only the parameter check can refuse them), int8
//! files with a NaN or negative output scale, checkpoints with such numbers, and flags whose
//! derived counts overflow. Every case exits with code 2 and one `error:` line naming the file
//! (or flag) and the tensor (or field), and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fmnist_core::format::{Arch, CRC32, HEADER_LEN, Kind, TRAILER_LEN};
use fmnist_core::lenet::{IMAGE_PIXELS, LeNetFoldedParams, LeNetParams};
use fmnist_core::quant::{LeNetQParams, WideQParams};
use fmnist_core::wide::{WideFoldedParams, WideParams};
use fmnist_infer::data::{encode_images, encode_labels};
use fmnist_tests::{assert_bad_input, run, text};
use std::mem::offset_of;

/// A tiny trained run and its exports, made once.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    /// LeNet f32 as trained.
    f32: PathBuf,
    /// LeNet f32, BN folded.
    folded: PathBuf,
    /// LeNet int8.
    int8: PathBuf,
    /// The run's last checkpoint.
    checkpoint: PathBuf,
    /// A 28x28 PNG.
    png: PathBuf,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let images = |n: usize| {
            (0..n)
                .map(|i| core::array::from_fn::<u8, IMAGE_PIXELS, _>(|p| ((i * 7 + p) % 256) as u8))
                .collect::<Vec<_>>()
        };
        let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>();
        for (name, bytes) in [
            ("train-images-idx3-ubyte", encode_images(&images(64))),
            ("train-labels-idx1-ubyte", encode_labels(&labels(64))),
            ("t10k-images-idx3-ubyte", encode_images(&images(16))),
            ("t10k-labels-idx1-ubyte", encode_labels(&labels(16))),
        ] {
            std::fs::write(data.join(name), bytes).unwrap();
        }
        let run_dir = root.join("run");
        let o = run(
            "fmnist-train",
            &[
                "train",
                "--data",
                s(&data),
                "--steps",
                "2",
                "--checkpoint-every",
                "2",
                "--out",
                s(&run_dir),
            ],
        );
        assert!(o.status.success(), "{}", text(&o).1);
        let int8 = root.join("m.fmq");
        let folded = root.join("m.folded.fmnm");
        let o = run(
            "fmnist-train",
            &[
                "export",
                "--checkpoint",
                s(&run_dir.join("model.fmnm")),
                "--data",
                s(&data),
                "--out",
                s(&int8),
                "--folded-out",
                s(&folded),
            ],
        );
        assert!(o.status.success(), "{}", text(&o).1);
        let png = root.join("item.png");
        image::GrayImage::from_raw(28, 28, images(1)[0].to_vec())
            .unwrap()
            .save(&png)
            .unwrap();
        Fixture {
            f32: run_dir.join("model.fmnm"),
            checkpoint: run_dir.join("checkpoint-0000002.fmck"),
            _tmp: tmp,
            root,
            data,
            folded,
            int8,
            png,
        }
    })
}

/// A copy of model file `src` named `name` with `bytes` written `at` bytes into the payload and
/// the CRC recomputed, so the file is intact as a container.
fn patched(src: &Path, name: &str, at: usize, bytes: &[u8]) -> PathBuf {
    let mut f = std::fs::read(src).unwrap();
    f[HEADER_LEN + at..HEADER_LEN + at + bytes.len()].copy_from_slice(bytes);
    let n = f.len() - TRAILER_LEN;
    let crc = CRC32.checksum(&f[..n]);
    f[n..].copy_from_slice(&crc.to_le_bytes());
    let dst = fixture().root.join(name);
    std::fs::write(&dst, f).unwrap();
    dst
}

/// Offset (bytes) of value `index` of the f32 field at `field`.
fn f32_at(field: usize, index: usize) -> usize {
    field + 4 * index
}

/// Runs `bin args`: exit 2, one stderr line naming `file` and containing each of `needles`, no
/// panic, nothing in `out` (when given).
fn refused(bin: &str, args: &[&str], file: &str, needles: &[&str], out: Option<&Path>) {
    let o = run(bin, args);
    let (_, err) = text(&o);
    assert_bad_input(&o, file);
    assert_eq!(err.lines().count(), 1, "{args:?}: one line expected: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} missing from: {err}");
    }
    if let Some(out) = out {
        let left: Vec<_> = std::fs::read_dir(out)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{args:?}: output left behind: {left:?}");
    }
}

/// `eval`, `predict` and `confusion` on `model` all refuse it, naming it and `needles`.
fn every_reader_refuses(model: &Path, needles: &[&str]) {
    let f = fixture();
    let name = model.file_name().unwrap().to_str().unwrap();
    refused(
        "fmnist-infer",
        &["eval", "--model", s(model), "--data", s(&f.data)],
        name,
        needles,
        None,
    );
    refused(
        "fmnist-infer",
        &["predict", "--model", s(model), s(&f.png)],
        name,
        needles,
        None,
    );
    let out = f.root.join(format!("confusion-{name}"));
    std::fs::create_dir_all(&out).unwrap();
    refused(
        "fmnist-infer",
        &[
            "confusion",
            "--model",
            s(model),
            "--data",
            s(&f.data),
            "--png",
            s(&out.join("c.png")),
        ],
        name,
        needles,
        Some(&out),
    );
}

#[test]
fn the_fixture_models_are_accepted() {
    let f = fixture();
    for m in [&f.f32, &f.folded, &f.int8] {
        let o = run(
            "fmnist-infer",
            &["eval", "--model", s(m), "--data", s(&f.data)],
        );
        assert!(o.status.success(), "{}: {}", m.display(), text(&o).1);
    }
}

#[test]
fn non_finite_lenet_weights_are_refused_by_every_reader() {
    let f = fixture();
    let fc1 = offset_of!(LeNetParams, fc1_weight);
    let nan = patched(
        &f.f32,
        "nan.fmnm",
        f32_at(fc1, 403),
        &f32::NAN.to_le_bytes(),
    );
    every_reader_refuses(
        &nan,
        &["tensor `fc1.weight`", "non-finite value at flat index 403"],
    );
    let inf = patched(
        &f.f32,
        "inf.fmnm",
        offset_of!(LeNetParams, conv1_weight),
        &f32::NEG_INFINITY.to_le_bytes(),
    );
    every_reader_refuses(&inf, &["tensor `conv1.weight`", "flat index 0"]);
    let var = offset_of!(LeNetParams, bn2) + 3 * 16 * 4;
    let neg = patched(
        &f.f32,
        "negvar.fmnm",
        f32_at(var, 5),
        &(-0.25f32).to_le_bytes(),
    );
    every_reader_refuses(
        &neg,
        &[
            "tensor `bn2.running_var`",
            "negative variance at flat index 5",
        ],
    );
    let folded = patched(
        &f.folded,
        "nan.folded.fmnm",
        f32_at(offset_of!(LeNetFoldedParams, fc3_bias), 9),
        &f32::INFINITY.to_le_bytes(),
    );
    every_reader_refuses(&folded, &["tensor `fc3.bias`", "flat index 9"]);
}

#[test]
fn non_finite_wide_weights_are_refused() {
    let f = fixture();
    let mut p: Box<WideParams> = bytemuck::zeroed_box();
    p.fc1_weight[1][2] = f32::NAN;
    let wide = f.root.join("wide-nan.fmnm");
    std::fs::write(
        &wide,
        fmnist_infer::modelio::encode_model(Arch::Wide, Kind::F32, bytemuck::bytes_of(&*p)),
    )
    .unwrap();
    every_reader_refuses(&wide, &["tensor `fc1.weight`", "flat index 3138"]);
    let mut q: Box<WideFoldedParams> = bytemuck::zeroed_box();
    q.conv2_bias[63] = f32::INFINITY;
    let wide = f.root.join("wide-folded-inf.fmnm");
    std::fs::write(
        &wide,
        fmnist_infer::modelio::encode_model(Arch::Wide, Kind::F32Folded, bytemuck::bytes_of(&*q)),
    )
    .unwrap();
    every_reader_refuses(&wide, &["tensor `conv2.bias`", "flat index 63"]);
    // Without the bad value the same file is a model.
    q.conv2_bias[63] = 0.0;
    std::fs::write(
        &wide,
        fmnist_infer::modelio::encode_model(Arch::Wide, Kind::F32Folded, bytemuck::bytes_of(&*q)),
    )
    .unwrap();
    let o = run("fmnist-infer", &["predict", "--model", s(&wide), s(&f.png)]);
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn int8_output_scale_must_be_positive_and_finite() {
    let f = fixture();
    let at = offset_of!(LeNetQParams, fc3) + 4; // fc3.output_scale
    for (name, v) in [("nan-scale.fmq", f32::NAN), ("neg-scale.fmq", -0.05)] {
        let bad = patched(&f.int8, name, at, &v.to_le_bytes());
        every_reader_refuses(&bad, &["fc3: output_scale is not a finite number > 0"]);
        // In an ensemble with a good model too.
        refused(
            "fmnist-infer",
            &[
                "eval",
                "--model",
                s(&f.int8),
                "--model",
                s(&bad),
                "--data",
                s(&f.data),
            ],
            name,
            &["output_scale"],
            None,
        );
    }
    let bad = patched(
        &f.int8,
        "nan-input-scale.fmq",
        offset_of!(LeNetQParams, conv2),
        &f32::NAN.to_le_bytes(),
    );
    every_reader_refuses(&bad, &["conv2: input_scale"]);
    // The wide CNN's int8 file goes through the same check.
    let mut w = fmnist_tests::qemu::random_wide_int8(5);
    w.fc2.output_scale = f32::NAN;
    let wide = f.root.join("wide-nan-scale.fmq");
    std::fs::write(
        &wide,
        fmnist_infer::modelio::encode_model(Arch::Wide, Kind::Int8, bytemuck::bytes_of(&*w)),
    )
    .unwrap();
    assert_eq!(offset_of!(WideQParams, fc2) % 4, 0);
    every_reader_refuses(&wide, &["fc2: output_scale"]);
}

#[test]
fn a_teacher_with_nan_weights_is_refused() {
    let f = fixture();
    let nan = patched(
        &f.f32,
        "teacher-nan.fmnm",
        f32_at(offset_of!(LeNetParams, fc2_weight), 7),
        &f32::NAN.to_le_bytes(),
    );
    let out = f.root.join("student");
    refused(
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&f.data),
            "--steps",
            "1",
            "--teacher",
            s(&nan),
            "--out",
            s(&out),
        ],
        "teacher-nan.fmnm",
        &["tensor `fc2.weight`", "flat index 7"],
        Some(&out),
    );
    // A checkpoint with NaN parameters, as a teacher, as an export input and to resume.
    let mut state =
        fmnist_train::checkpoint::load_run::<fmnist_train::registry::TrainLeNet>(&f.checkpoint)
            .unwrap();
    state.params[offset_of!(LeNetParams, fc3_bias) / 4 + 2] = f32::INFINITY;
    let ck = f.root.join("nan.fmck");
    std::fs::write(&ck, fmnist_train::checkpoint::encode_run(&state)).unwrap();
    let needles = ["parameters: tensor `fc3.bias`", "flat index 2"];
    refused(
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&f.data),
            "--steps",
            "1",
            "--teacher",
            s(&ck),
            "--out",
            s(&out),
        ],
        "nan.fmck",
        &needles,
        Some(&out),
    );
    // The output folder exists, so only the checkpoint's check can refuse the export.
    std::fs::create_dir_all(&out).unwrap();
    refused(
        "fmnist-train",
        &[
            "export",
            "--checkpoint",
            s(&ck),
            "--data",
            s(&f.data),
            "--out",
            s(&out.join("m.fmq")),
        ],
        "nan.fmck",
        &needles,
        Some(&out),
    );
    refused(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            s(&ck),
            "--data",
            s(&f.data),
            "--out",
            s(&out),
        ],
        "nan.fmck",
        &needles,
        Some(&out),
    );
}

#[test]
fn derived_counts_that_overflow_are_refused_naming_the_flag() {
    let f = fixture();
    let out = f.root.join("overflow");
    // 64 images in batches of 32: 2 steps per epoch, and 2^63 epochs are 2^64 steps.
    refused(
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&f.data),
            "--batch",
            "32",
            "--epochs",
            "9223372036854775808",
            "--out",
            s(&out),
        ],
        "--epochs",
        &["too many", "does not fit a step count"],
        Some(&out),
    );
    // The case: 2^58 epochs (of 938 steps on the real data; of 64 steps here).
    refused(
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&f.data),
            "--batch",
            "1",
            "--epochs",
            "288230376151711744",
            "--out",
            s(&out),
        ],
        "--epochs",
        &["288230376151711744 × 64 steps per epoch"],
        Some(&out),
    );
    refused(
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&f.data),
            "--schedule",
            "cosine",
            "--warmup",
            "1e300",
            "--out",
            s(&out),
        ],
        "--warmup",
        &["fits a step count"],
        Some(&out),
    );
    refused(
        "fmnist-infer",
        &["bench", "--model", s(&f.int8), "--seconds", "1e300"],
        "--seconds",
        &["at most 86400"],
        None,
    );
}
