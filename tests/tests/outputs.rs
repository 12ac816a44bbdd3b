//! The outputs of a command and the one contract for messages and exit codes: a bad output path
//! is bad input (exit 2, one line naming it) in every command, checked before any work; outputs
//! never overwrite each other or an input; a command writes all its outputs or none; usage
//! errors are one line; a closed stdout ends a command quietly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::{IMAGE_PIXELS, LeNetParams};
use fmnist_infer::data::{encode_images, encode_labels};
use fmnist_infer::modelio::write_model;
use fmnist_tests::{assert_bad_input, bin, file_names, run, text};

/// A small valid data set (64 training and 16 test images).
fn data_dir(root: &Path) -> PathBuf {
    let dir = root.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let images = |n: usize| {
        (0..n)
            .map(|i| [(i * 7 % 256) as u8; IMAGE_PIXELS])
            .collect::<Vec<_>>()
    };
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>();
    for (prefix, n) in [("train", 64), ("t10k", 16)] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_images(&images(n)),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_labels(&labels(n)),
        )
        .unwrap();
    }
    dir
}

/// Trained-looking f32 LeNet-BN weights (small and deterministic), with `edit` applied.
fn weights(path: &Path, edit: impl FnOnce(&mut LeNetParams)) {
    let mut p: Box<LeNetParams> = bytemuck::zeroed_box();
    let flat = bytemuck::cast_slice_mut::<u8, f32>(bytemuck::bytes_of_mut(&mut *p));
    for (i, v) in flat.iter_mut().enumerate() {
        *v = ((i * 37 % 101) as f32 - 50.0) / 500.0;
    }
    p.bn1.running_var = [1.0; 6];
    p.bn2.running_var = [1.0; 16];
    edit(&mut p);
    write_model(path, Arch::LeNet, Kind::F32, bytemuck::bytes_of(&*p)).unwrap();
}

/// A tiny 28x28 grey PNG.
fn png(path: &Path) {
    let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]));
    img.save(path).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit 2, one `error:` line naming `file` and containing `problem`.
fn refused(case: &str, bin_name: &str, args: &[&str], file: &str, problem: &str) {
    let o = run(bin_name, args);
    eprintln!("{case}");
    assert_bad_input(&o, problem);
    let (_, err) = text(&o);
    assert_eq!(err.lines().count(), 1, "{case}: {err}");
    assert!(err.contains(file), "{case}: does not name {file}: {err}");
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn export_refuses_shared_outputs_and_writes_both_or_neither() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let model = tmp.path().join("model.fmnm");
    weights(&model, |_| {});
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let export = |o: &Path, f: &Path| {
        run(
            "fmnist-train",
            &[
                "export",
                "--checkpoint",
                s(&model),
                "--data",
                s(&data),
                "--out",
                s(o),
                "--folded-out",
                s(f),
            ],
        )
    };
    // The same file twice, spelled differently.
    let o = export(&out.join("m.fmq"), &out.join("../out/m.fmq"));
    assert_bad_input(&o, "given as two outputs (--out and --folded-out)");
    assert!(file_names(&out).is_empty());
    // An output over the input.
    let before = std::fs::read(&model).unwrap();
    let o = export(&out.join("m.fmq"), &out.join("../model.fmnm"));
    assert_bad_input(&o, "--folded-out is also the input --checkpoint");
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // A folded output that cannot be written leaves no int8 file behind.
    let o = export(&out.join("m.fmq"), &tmp.path().join("none/f.fmnm"));
    assert_bad_input(&o, "no directory");
    assert!(file_names(&out).is_empty());
    // Both written, and the report names both.
    let o = export(&out.join("m.fmq"), &out.join("f.fmnm"));
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(file_names(&out), ["f.fmnm", "m.fmq"]);
    assert!(text(&o).0.contains("wrote"));
}

#[test]
fn a_quantization_error_names_the_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let model = tmp.path().join("huge-bias.fmnm");
    // A finite bias no int32 accumulator can hold.
    weights(&model, |p| p.fc3_bias[0] = 1e30);
    let out = tmp.path().join("m.fmq");
    refused(
        "quantization",
        "fmnist-train",
        &[
            "export",
            "--checkpoint",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
        "huge-bias.fmnm: cannot quantize:",
        "",
    );
    assert!(!out.exists());
}

#[test]
fn predict_refuses_two_images_saved_to_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.fmnm");
    weights(&model, |_| {});
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    png(&a.join("shoe.png"));
    png(&b.join("shoe.png"));
    let saved = tmp.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    let predict = |imgs: &[&Path]| {
        let mut args = vec!["predict", "--model", s(&model), "--save-input", s(&saved)];
        args.extend(imgs.iter().map(|p| s(p)));
        run("fmnist-infer", &args)
    };
    let o = predict(&[&a.join("shoe.png"), &b.join("shoe.png")]);
    assert_bad_input(&o, "(the same file stem)");
    assert!(text(&o).1.contains("shoe.28x28.png"));
    assert!(file_names(&saved).is_empty());
    let o = predict(&[&a.join("shoe.png")]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(file_names(&saved), ["shoe.28x28.png"]);
}

/// Every command that writes a file refuses, before any work, an output whose folder is missing,
/// an output that is a folder or a FIFO (exit 2, one line naming it); `plot` and
/// `predict --save-input` take a folder and refuse a file there.
#[test]
fn a_bad_output_path_is_bad_input_in_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = data_dir(t);
    let model = t.join("model.fmnm");
    weights(&model, |_| {});
    let image = t.join("x.png");
    png(&image);
    let log = t.join("train-log.jsonl");
    std::fs::write(&log, "{\"step\":1,\"loss\":2.3,\"accuracy\":0.1}\n").unwrap();
    let folder = t.join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let fifo = t.join("a-fifo");
    mkfifo(&fifo);
    let missing = t.join("no-such-folder/out.bin");
    let commands: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "fmnist-train",
            vec![
                "export",
                "--checkpoint",
                s(&model),
                "--data",
                s(&data),
                "--out",
            ],
            "",
        ),
        (
            "fmnist-train",
            vec![
                "export",
                "--checkpoint",
                s(&model),
                "--data",
                s(&data),
                "--out",
                "/nonexistent-folder/m.fmq",
                "--folded-out",
            ],
            "",
        ),
        (
            "fmnist-train",
            vec!["samples", "--data", s(&data), "--out"],
            "",
        ),
        (
            "fmnist-infer",
            vec!["golden", "--model", s(&model), "--data", s(&data), "--out"],
            "",
        ),
        (
            "fmnist-infer",
            vec![
                "confusion",
                "--model",
                s(&model),
                "--data",
                s(&data),
                "--png",
            ],
            "",
        ),
    ];
    for (bin_name, args, _) in &commands {
        for (bad, problem) in [
            (&missing, "cannot write: no directory"),
            (&folder, "cannot write: is a directory"),
            (&fifo, "cannot write: exists and is not a regular file"),
        ] {
            let mut a = args.clone();
            a.push(s(bad));
            // The export with two outputs names the first bad one: --out.
            let (file, problem) = if a.contains(&"--folded-out") {
                ("/nonexistent-folder/m.fmq", "no directory")
            } else {
                (s(bad), problem)
            };
            refused(&format!("{a:?}"), bin_name, &a, file, problem);
        }
    }
    // A FIFO output is refused, not replaced by a regular file.
    assert!(!std::fs::metadata(&fifo).unwrap().file_type().is_file());
    // Folders expected, a file given.
    refused(
        "plot into a file",
        "fmnist-train",
        &["plot", "--log", s(&log), "--out", s(&image)],
        s(&image),
        "a file stands there",
    );
    refused(
        "predict --save-input into a file",
        "fmnist-infer",
        &[
            "predict",
            "--model",
            s(&model),
            "--save-input",
            s(&image),
            s(&image),
        ],
        s(&image),
        "needs a directory",
    );
    refused(
        "predict --save-input into a missing folder",
        "fmnist-infer",
        &[
            "predict",
            "--model",
            s(&model),
            "--save-input",
            s(&t.join("none")),
            s(&image),
        ],
        "none",
        "No such file",
    );
    assert_eq!(
        file_names(t),
        [
            "a-fifo",
            "a-folder",
            "data",
            "model.fmnm",
            "train-log.jsonl",
            "x.png"
        ]
    );
    assert!(file_names(&folder).is_empty());
}

/// Inputs that are folders, FIFOs or broken symlinks are refused at once (a FIFO used to block
/// the reader forever), and "Fashion-MNIST not found" is one line with a reason per place.
#[test]
fn special_files_as_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = data_dir(t);
    let fifo = t.join("a-fifo");
    mkfifo(&fifo);
    let out = t.join("m.fmq");
    let model = t.join("model.fmnm");
    weights(&model, |_| {});
    for (cmd, flag) in [("export", "--checkpoint"), ("resume", "--checkpoint")] {
        let mut args = vec![cmd, flag, s(&fifo), "--data", s(&data)];
        if cmd == "export" {
            args.extend(["--out", s(&out)]);
        }
        refused(cmd, "fmnist-train", &args, "a-fifo", "is a FIFO");
    }
    refused(
        "teacher",
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&data),
            "--steps",
            "1",
            "--teacher",
            s(&fifo),
            "--out",
            s(&t.join("run")),
        ],
        "a-fifo",
        "is a FIFO",
    );
    refused(
        "model",
        "fmnist-infer",
        &["eval", "--model", s(&fifo), "--data", s(&data)],
        "a-fifo",
        "is a FIFO",
    );
    // The data folder: a folder, a FIFO and a symlink loop where files should be.
    let odd = t.join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::create_dir(odd.join("train-images-idx3-ubyte")).unwrap();
    mkfifo(&odd.join("train-labels-idx1-ubyte"));
    std::os::unix::fs::symlink(
        "t10k-images-idx3-ubyte",
        odd.join("t10k-images-idx3-ubyte.gz"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "t10k-images-idx3-ubyte.gz",
        odd.join("t10k-images-idx3-ubyte"),
    )
    .unwrap();
    let o = run(
        "fmnist-infer",
        &["eval", "--model", s(&model), "--data", s(&odd)],
    );
    assert_bad_input(&o, "Fashion-MNIST not found: ");
    let err = text(&o).1;
    assert_eq!(err.lines().count(), 1, "{err}");
    // eval reads only the test set, so only the test files are judged.
    for why in [
        "t10k-images-idx3-ubyte.gz is a broken symlink",
        "missing t10k-labels-idx1-ubyte[.gz]",
    ] {
        assert!(err.contains(why), "{why}: {err}");
    }
    assert!(!err.contains("train-"), "{err}");
    // train reads both.
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--data",
            s(&odd),
            "--steps",
            "1",
            "--out",
            s(&odd.join("run")),
        ],
    );
    assert_bad_input(&o, "Fashion-MNIST not found: ");
    let err = text(&o).1;
    for why in [
        "train-images-idx3-ubyte is a directory",
        "train-labels-idx1-ubyte is not a regular file",
        "t10k-images-idx3-ubyte.gz is a broken symlink",
    ] {
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn usage_errors_are_one_line_and_help_still_works() {
    for (bin_name, args, needle) in [
        ("fmnist-train", vec![], "no command given"),
        ("fmnist-infer", vec![], "no command given"),
        ("fmnist-train", vec!["train", "--bogus"], "'--bogus'"),
        (
            "fmnist-train",
            vec!["trian"],
            "tip: a similar subcommand exists",
        ),
        ("fmnist-infer", vec!["eval"], "--model <MODEL>"),
        (
            "fmnist-train",
            vec!["train", "--threads", "257"],
            "--threads",
        ),
        (
            "fmnist-infer",
            vec!["eval", "--model", "m", "--threads", "x"],
            "--threads",
        ),
        (
            "fmnist-train",
            vec!["train", "--model", "foo"],
            "[possible values: lenet, wide]",
        ),
        ("fmnist-train", vec!["bench", "--repeats", "0"], "--repeats"),
        ("fmnist-train", vec!["bench", "--steps", "0"], "--steps"),
    ] {
        let o = run(bin_name, &args);
        assert_bad_input(&o, needle);
        let err = text(&o).1;
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    for bin_name in ["fmnist-train", "fmnist-infer"] {
        for flag in ["--help", "--version"] {
            let o = run(bin_name, &[flag]);
            assert!(o.status.success(), "{bin_name} {flag}");
            assert!(!text(&o).0.is_empty());
        }
    }
}

/// `... | head -c 1`: the reader goes away; the command must not panic on the write.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.fmnm");
    weights(&model, |_| {});
    let image = tmp.path().join("x.png");
    png(&image);
    let cases: [(&str, Vec<&str>); 2] = [
        ("fmnist-train", vec!["summary", "--model", "wide"]),
        (
            "fmnist-infer",
            vec!["predict", "--model", s(&model), s(&image)],
        ),
    ];
    for (bin_name, args) in cases {
        for _ in 0..3 {
            let mut child = Command::new(bin(bin_name))
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take()); // the reader is gone before the first write
            let o = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("panicked"), "{bin_name}: {err}");
            assert!(err.is_empty(), "{bin_name}: {err}");
            use std::os::unix::process::ExitStatusExt;
            assert!(
                o.status.success() || o.status.signal() == Some(13),
                "{bin_name}: {:?}",
                o.status
            );
        }
    }
}
