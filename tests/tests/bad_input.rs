//! One table of bad files, run through the real binaries: every case exits with code 2, prints
//! one clear `error:` line naming the file and the problem, never panics, and leaves no partial
//! output behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::{IMAGE_PIXELS, LeNetFoldedParams};
use fmnist_infer::data::{encode_images, encode_labels};
use fmnist_tests::{assert_bad_input, run, text};

/// A small valid data set (raw IDX files), with `bad` written over one of the four files.
fn data_dir(root: &Path, name: &str, bad: Option<(&str, Vec<u8>)>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let images = |n: usize| {
        (0..n)
            .map(|i| [(i * 7 % 256) as u8; IMAGE_PIXELS])
            .collect::<Vec<_>>()
    };
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>();
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        encode_images(&images(64)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        encode_labels(&labels(64)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        encode_images(&images(16)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        encode_labels(&labels(16)),
    )
    .unwrap();
    if let Some((file, bytes)) = bad {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Runs `bin args`, asserting exit 2, one stderr line naming `file` and containing `problem`,
/// no panic, and nothing left in `out` (when given).
fn check(case: &str, bin: &str, args: &[&str], file: &str, problem: &str, out: Option<&Path>) {
    let o = run(bin, args);
    eprintln!("{case}");
    assert_bad_input(&o, problem);
    let (_, err) = text(&o);
    assert_eq!(
        err.lines().count(),
        1,
        "{case}: expected one stderr line, got: {err}"
    );
    assert!(
        err.contains(file),
        "{case}: the message does not name {file}: {err}"
    );
    if let Some(out) = out {
        let left: Vec<_> = std::fs::read_dir(out)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{case}: output left behind: {left:?}");
    }
}

#[test]
fn bad_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    let good_images = encode_images(&vec![[0u8; IMAGE_PIXELS]; 64]);
    let mut bomb = encode_images(&vec![[0u8; IMAGE_PIXELS]; 64]);
    bomb.resize(bomb.len() + 50_000_000, 0);
    let mut big = encode_images(&vec![[0u8; IMAGE_PIXELS]; 64]);
    big[11] = 29;
    big[15] = 29;
    let mut wrong_magic = good_images.clone();
    wrong_magic[3] = 0x08;
    let mut label10 = encode_labels(&[0; 64]);
    label10[8 + 5] = 10;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "empty",
            "train-images-idx3-ubyte",
            vec![],
            "truncated: 0 bytes",
        ),
        (
            "cut in the header",
            "train-images-idx3-ubyte",
            good_images[..10].to_vec(),
            "truncated: 10 bytes",
        ),
        (
            "cut after the header",
            "train-images-idx3-ubyte",
            good_images[..16].to_vec(),
            "truncated: header says 64 images, found 0",
        ),
        (
            "cut mid-image",
            "train-images-idx3-ubyte",
            good_images[..16 + 784 * 3 + 100].to_vec(),
            "truncated: header says 64 images, found 3",
        ),
        (
            "wrong magic",
            "train-images-idx3-ubyte",
            wrong_magic,
            "bad magic",
        ),
        (
            "29x29 images",
            "train-images-idx3-ubyte",
            big,
            "images are 29x29, expected 28x28",
        ),
        (
            "label 10",
            "train-labels-idx1-ubyte",
            label10,
            "label 10 at index 5 is out of range",
        ),
        (
            "counts disagree",
            "train-labels-idx1-ubyte",
            encode_labels(&[1; 63]),
            "63 labels but",
        ),
        (
            "gzip bomb",
            "train-images-idx3-ubyte",
            gz(&bomb),
            "bytes after the 64 images",
        ),
        (
            "no images (header count 0)",
            "train-images-idx3-ubyte",
            encode_images(&[]),
            "header says 0 images: the data set is empty",
        ),
        (
            "no labels (header count 0)",
            "train-labels-idx1-ubyte",
            encode_labels(&[]),
            "header says 0 labels: the data set is empty",
        ),
        (
            "an empty test set",
            "t10k-images-idx3-ubyte",
            gz(&encode_images(&[])),
            "header says 0 images: the data set is empty",
        ),
        (
            "a directory where a file should be",
            "train-images-idx3-ubyte",
            Vec::new(), // replaced by a directory below
            "train-images-idx3-ubyte is a directory",
        ),
        (
            "corrupt gzip",
            "train-images-idx3-ubyte",
            gz(&good_images)[..100].to_vec(),
            "bad gzip data",
        ),
    ];
    for (i, (case, file, bytes, problem)) in cases.into_iter().enumerate() {
        // A gzip file keeps its name without .gz: the loader recognises gzip by content.
        let dir = data_dir(tmp.path(), &format!("d{i}"), Some((file, bytes)));
        if case.starts_with("a directory") {
            std::fs::remove_file(dir.join(file)).unwrap();
            std::fs::create_dir(dir.join(file)).unwrap();
        }
        let out = tmp.path().join(format!("out{i}"));
        check(
            case,
            "fmnist-train",
            &[
                "train",
                "--data",
                dir.to_str().unwrap(),
                "--steps",
                "1",
                "--out",
                out.to_str().unwrap(),
            ],
            file,
            problem,
            Some(&out),
        );
    }
}

#[test]
fn bad_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path(), "data", None);
    let first = tmp.path().join("first");
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "2",
            "--checkpoint-every",
            "1",
            "--out",
            first.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let good = std::fs::read(first.join("checkpoint-0000002.fmck")).unwrap();
    let mut other_arch = good.clone();
    other_arch[6] = 7;
    let mut other_version = good.clone();
    other_version[4] = 1; // a checkpoint from before the recipe grew (version 1)
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x04;
    // Intact framing and CRC around an impossible recipe: a batch of 2^40 images would make
    // the trainer allocate terabytes if the recipe were trusted.
    let mut state =
        fmnist_train::checkpoint::decode_run::<fmnist_train::registry::TrainLeNet>(&good).unwrap();
    state.config.batch = 1 << 40;
    let huge_batch = fmnist_train::checkpoint::encode_run(&state);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short"),
        (
            "truncated",
            good[..good.len() - 10].to_vec(),
            "wrong length",
        ),
        ("another architecture", other_arch, "another architecture"),
        (
            "another format version",
            other_version,
            "unsupported checkpoint version 1",
        ),
        ("flipped bit", flipped, "CRC mismatch"),
        (
            "a recipe with a batch of 2^40",
            huge_batch,
            "impossible recipe: batch of 1099511627776 images",
        ),
        (
            "a model file",
            std::fs::read(first.join("model.fmnm")).unwrap(),
            "bad magic",
        ),
    ];
    for (case, bytes, problem) in cases {
        let path = tmp.path().join("bad.fmck");
        std::fs::write(&path, bytes).unwrap();
        let out = tmp.path().join("resumed");
        check(
            case,
            "fmnist-train",
            &[
                "resume",
                "--checkpoint",
                path.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            "bad.fmck",
            problem,
            Some(&out),
        );
    }
}

#[test]
fn model_file_with_one_flipped_bit_in_each_region() {
    let tmp = tempfile::tempdir().unwrap();
    let p: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
    let good =
        fmnist_infer::modelio::encode_model(Arch::LeNet, Kind::F32Folded, bytemuck::bytes_of(&*p));
    let regions = [
        ("magic", 0, "not a model file"),
        ("version", 4, "unsupported format version"),
        ("header length", 6, "bad header length"),
        ("architecture", 8, "unknown architecture"),
        ("kind", 10, "unknown model kind"),
        ("payload length", 13, "wrong length"),
        ("shape descriptor", 20, "CRC mismatch"),
        ("payload", 5_000, "CRC mismatch"),
        ("CRC", good.len() - 2, "CRC mismatch"),
    ];
    for (region, at, problem) in regions {
        let mut bytes = good.clone();
        bytes[at] ^= 0x02;
        let path = tmp.path().join("bad.fmnm");
        std::fs::write(&path, bytes).unwrap();
        let golden = tmp.path().join("golden-out");
        std::fs::create_dir_all(&golden).unwrap();
        check(
            &format!("flipped bit in the {region}"),
            "fmnist-infer",
            &[
                "golden",
                "--model",
                path.to_str().unwrap(),
                "--out",
                golden.join("g.bin").to_str().unwrap(),
            ],
            "bad.fmnm",
            problem,
            Some(&golden),
        );
        // The exporter refuses it as its input too.
        check(
            &format!("export of a model with a flipped bit in the {region}"),
            "fmnist-train",
            &[
                "export",
                "--checkpoint",
                path.to_str().unwrap(),
                "--out",
                golden.join("m.fmq").to_str().unwrap(),
            ],
            "bad.fmnm",
            "",
            Some(&golden),
        );
    }
}

#[test]
fn a_png_that_is_really_text() {
    let tmp = tempfile::tempdir().unwrap();
    let p: Box<LeNetFoldedParams> = bytemuck::zeroed_box();
    let model = tmp.path().join("m.fmnm");
    fmnist_infer::modelio::write_model(
        &model,
        Arch::LeNet,
        Kind::F32Folded,
        bytemuck::bytes_of(&*p),
    )
    .unwrap();
    let png = tmp.path().join("shoe.png");
    std::fs::write(&png, "this is not a picture of a shoe\n").unwrap();
    check(
        "text named .png",
        "fmnist-infer",
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            png.to_str().unwrap(),
        ],
        "shoe.png",
        "",
        None,
    );
    // A JPEG on which the decoder itself panics (found by fuzzing; zune-jpeg's AVX2 IDCT).
    let jpeg = tmp.path().join("crash.jpg");
    std::fs::copy(
        fmnist_tests::workspace_root().join("fmnist-infer/tests/data/zune-jpeg-idct-panic.jpg"),
        &jpeg,
    )
    .unwrap();
    check(
        "a JPEG that panics the decoder",
        "fmnist-infer",
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            jpeg.to_str().unwrap(),
        ],
        "crash.jpg",
        "corrupt image",
        None,
    );
}

/// One batch rule: a `--batch` flag and a preset's batch must both fit the training set (the
/// preset's 64 on ten images used to be accepted while `--batch 64` was refused).
#[test]
fn a_batch_larger_than_the_training_set_is_refused_however_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(
        tmp.path(),
        "small",
        Some((
            "train-images-idx3-ubyte",
            encode_images(&[[3; IMAGE_PIXELS]; 10]),
        )),
    );
    std::fs::write(dir.join("train-labels-idx1-ubyte"), encode_labels(&[1; 10])).unwrap();
    let out = tmp.path().join("out");
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            dir.to_str().unwrap(),
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(extra);
        run("fmnist-train", &a)
    };
    for (case, o, problem) in [
        (
            "--batch",
            train(&["--batch", "64"]),
            "--batch must be between 1 and 10 (the training set's size), got 64",
        ),
        (
            "the preset's batch",
            train(&[]),
            "the preset's batch must be between 1 and 10 (the training set's size), got 64; give --batch",
        ),
        (
            "the wide preset's batch",
            train(&["--model", "wide"]),
            "the preset's batch must be between 1 and 10 (the training set's size), got 128",
        ),
        (
            "the benchmark's batch",
            run(
                "fmnist-train",
                &[
                    "bench",
                    "--data",
                    dir.to_str().unwrap(),
                    "--steps",
                    "1",
                    "--repeats",
                    "1",
                ],
            ),
            "the benchmark's batch must be between 1 and 10",
        ),
    ] {
        eprintln!("{case}");
        assert_bad_input(&o, problem);
        assert_eq!(text(&o).1.lines().count(), 1);
    }
    assert!(!out.exists());
    let o = train(&["--batch", "10"]);
    assert!(o.status.success(), "{}", text(&o).1);
}
