//! No `panicked` is reachable from a file or a flag: every subcommand of both tools, run over a
//! corpus of bad files (as each file it reads and writes) and hostile flag values (0, -1, huge,
//! NaN, infinity, empty), exits with code 1 or 2 and no panic. Values that are valid for a flag
//! (0 threads = one per core, say) may succeed, but must not panic either.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fmnist_core::format::{Arch, Kind};
use fmnist_core::lenet::{IMAGE_PIXELS, LeNetParams};
use fmnist_infer::data::{encode_images, encode_labels};
use fmnist_tests::{bin, run, text};

/// Whether a case must fail or may also succeed.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Exit code 1 or 2.
    Fails,
    /// Exit code 0, 1 or 2.
    Any,
}

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    model: PathBuf,
    checkpoint: PathBuf,
    log: PathBuf,
    image: PathBuf,
    /// Paths that are bad as any input file, with a name for messages.
    bad_inputs: Vec<PathBuf>,
    /// Data folders, each with one bad file (or none at all).
    bad_data: Vec<PathBuf>,
    /// Paths that are bad as an output file.
    bad_outputs: Vec<PathBuf>,
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn write_data(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let images = |n: usize| {
        (0..n)
            .map(|i| [(i * 7) as u8; IMAGE_PIXELS])
            .collect::<Vec<_>>()
    };
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>();
    for (prefix, n) in [("train", train), ("t10k", test)] {
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
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let data = root.join("data");
    write_data(&data, 64, 16);
    // A short real run: its model, checkpoint and log.
    let run_dir = root.join("run");
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--data",
            &s(&data),
            "--steps",
            "2",
            "--checkpoint-every",
            "1",
            "--out",
            &s(&run_dir),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let image = root.join("x.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]))
        .save(&image)
        .unwrap();

    let files = root.join("bad");
    std::fs::create_dir(&files).unwrap();
    let mut bad_inputs = Vec::new();
    let mut add = |name: &str, bytes: &[u8]| {
        let p = files.join(name);
        std::fs::write(&p, bytes).unwrap();
        bad_inputs.push(p);
    };
    add("empty", b"");
    add("text", b"hello\n");
    add("zeros", &[0; 4096]);
    let ck = std::fs::read(run_dir.join("checkpoint-0000002.fmck")).unwrap();
    add("cut.fmck", &ck[..ck.len() / 2]);
    let model = std::fs::read(run_dir.join("model.fmnm")).unwrap();
    add("cut.fmnm", &model[..100]);
    let mut flipped = model.clone();
    flipped[70] ^= 1;
    add("flipped.fmnm", &flipped);
    add("zero-images.idx", &encode_images(&[]));
    let p: Box<LeNetParams> = bytemuck::zeroed_box();
    add(
        "int8-zeros.fmnm",
        &fmnist_infer::modelio::encode_model(Arch::LeNet, Kind::Int8, &vec![0; 65_000]),
    );
    // An f32 model file with an int8 payload's length.
    add(
        "short-f32.fmnm",
        &fmnist_infer::modelio::encode_model(
            Arch::LeNet,
            Kind::F32,
            &bytemuck::bytes_of(&*p)[..4000],
        ),
    );
    let fifo = files.join("fifo");
    mkfifo(&fifo);
    let folder = files.join("folder");
    std::fs::create_dir(&folder).unwrap();
    let looped = files.join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    bad_inputs.extend([fifo.clone(), folder.clone(), looped, files.join("missing")]);

    let mut bad_data = Vec::new();
    for (name, train, test) in [
        ("empty-train", 0, 16),
        ("empty-test", 64, 0),
        ("small", 10, 4),
    ] {
        let d = root.join(name);
        write_data(&d, train, test);
        bad_data.push(d);
    }
    for (i, bad) in bad_inputs.iter().enumerate() {
        let d = root.join(format!("data-{i}"));
        write_data(&d, 64, 16);
        let f = d.join("t10k-images-idx3-ubyte");
        std::fs::remove_file(&f).unwrap();
        if bad.exists() && bad.is_file() {
            std::fs::copy(bad, &f).unwrap();
        } else if bad.is_dir() {
            std::fs::create_dir(&f).unwrap();
        } else if bad.ends_with("fifo") {
            mkfifo(&f);
        }
        bad_data.push(d);
    }
    bad_data.extend([folder.join("none"), fifo.clone(), files.join("empty")]);
    let bad_outputs = vec![
        root.join("no-folder/out"),
        folder.clone(),
        fifo,
        files.join("empty/out"),
    ];
    World {
        data,
        model: run_dir.join("model.fmnm"),
        checkpoint: run_dir.join("checkpoint-0000002.fmck"),
        log: run_dir.join("train-log.jsonl"),
        image,
        bad_inputs,
        bad_data,
        bad_outputs,
        root,
        _tmp: tmp,
    }
}

/// Runs a case and checks its exit code and stderr.
fn check(w: &World, bin_name: &str, args: &[String], expect: Expect) {
    let mut child = Command::new(bin(bin_name))
        .args(args)
        .current_dir(&w.root)
        .env("FMNIST_DATA", &w.data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that blocks (on a FIFO, say) fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin_name} {args:?}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    let (_, err) = text(&o);
    let code = o.status.code();
    assert!(
        !err.contains("panicked"),
        "{bin_name} {args:?}: panicked: {err}"
    );
    let ok = match expect {
        Expect::Fails => matches!(code, Some(1 | 2)),
        Expect::Any => matches!(code, Some(0..=2)),
    };
    assert!(ok, "{bin_name} {args:?}: exit {:?}: {err}", o.status);
    if code != Some(0) {
        assert_eq!(err.lines().count(), 1, "{bin_name} {args:?}: {err}");
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

/// Every file argument of every subcommand, given each bad input file.
#[test]
fn bad_files_everywhere() {
    let w = world();
    let (data, model, ck, out) = (s(&w.data), s(&w.model), s(&w.checkpoint), "out-x");
    for bad in &w.bad_inputs {
        let b = s(bad);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            (
                "fmnist-train",
                vec!["train", "--steps", "1", "--out", out, "--teacher", &b],
            ),
            (
                "fmnist-train",
                vec!["resume", "--checkpoint", &b, "--out", out],
            ),
            (
                "fmnist-train",
                vec!["resume", "--checkpoint", &ck, "--teacher", &b],
            ),
            (
                "fmnist-train",
                vec!["export", "--checkpoint", &b, "--out", "e.fmq"],
            ),
            ("fmnist-train", vec!["plot", "--log", &b, "--out", "p"]),
            ("fmnist-infer", vec!["eval", "--model", &b]),
            (
                "fmnist-infer",
                vec!["eval", "--model", &model, "--model", &b],
            ),
            (
                "fmnist-infer",
                vec!["confusion", "--model", &b, "--png", "c.png"],
            ),
            ("fmnist-infer", vec!["predict", "--model", &b, "x.png"]),
            ("fmnist-infer", vec!["predict", "--model", &model, &b]),
            (
                "fmnist-infer",
                vec!["golden", "--model", &b, "--out", "g.bin"],
            ),
            (
                "fmnist-infer",
                vec!["bench", "--model", &b, "--seconds", "0.01"],
            ),
        ];
        for (bin_name, a) in cases {
            check(&w, bin_name, &args(&a), Expect::Fails);
        }
    }
    for bad in &w.bad_data {
        let d = s(bad);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            (
                "fmnist-train",
                vec!["train", "--steps", "1", "--out", out, "--data", &d],
            ),
            (
                "fmnist-train",
                vec!["resume", "--checkpoint", &ck, "--out", out, "--data", &d],
            ),
            (
                "fmnist-train",
                vec![
                    "export",
                    "--checkpoint",
                    &model,
                    "--out",
                    "e.fmq",
                    "--data",
                    &d,
                ],
            ),
            (
                "fmnist-train",
                vec!["bench", "--steps", "1", "--repeats", "1", "--data", &d],
            ),
            (
                "fmnist-train",
                vec!["samples", "--out", "s.png", "--data", &d],
            ),
            (
                "fmnist-infer",
                vec!["eval", "--model", &model, "--data", &d],
            ),
            (
                "fmnist-infer",
                vec![
                    "confusion",
                    "--model",
                    &model,
                    "--png",
                    "c.png",
                    "--data",
                    &d,
                ],
            ),
            (
                "fmnist-infer",
                vec!["golden", "--model", &model, "--out", "g.bin", "--data", &d],
            ),
            (
                "fmnist-infer",
                vec![
                    "bench",
                    "--model",
                    &model,
                    "--seconds",
                    "0.01",
                    "--data",
                    &d,
                ],
            ),
        ];
        for (bin_name, a) in cases {
            // `samples` reads only the training half.
            let only_test_is_bad = bad.join("t10k-images-idx3-ubyte").exists()
                && bad.join("train-images-idx3-ubyte").exists()
                && std::fs::metadata(bad.join("train-images-idx3-ubyte"))
                    .unwrap()
                    .len()
                    > 16;
            // Ten training images: too few for a batch of 64, enough for everything else.
            let small_train_ok = bad.ends_with("small")
                && !(bin_name == "fmnist-train" && matches!(a[0], "train" | "bench" | "resume"));
            let expect = if (a[0] == "samples" && only_test_is_bad)
                || small_train_ok
                || (bad.ends_with("empty-train") && bin_name == "fmnist-infer")
            {
                Expect::Any
            } else {
                Expect::Fails
            };
            check(&w, bin_name, &args(&a), expect);
        }
    }
    for bad in &w.bad_outputs {
        let b = s(bad);
        let cases: Vec<(&str, Vec<&str>)> = vec![
            (
                "fmnist-train",
                vec!["export", "--checkpoint", &model, "--out", &b],
            ),
            (
                "fmnist-train",
                vec![
                    "export",
                    "--checkpoint",
                    &model,
                    "--out",
                    "e.fmq",
                    "--folded-out",
                    &b,
                ],
            ),
            (
                "fmnist-train",
                vec!["plot", "--log", "run/train-log.jsonl", "--out", &b],
            ),
            ("fmnist-train", vec!["samples", "--out", &b]),
            (
                "fmnist-infer",
                vec!["confusion", "--model", &model, "--png", &b],
            ),
            (
                "fmnist-infer",
                vec!["golden", "--model", &model, "--out", &b],
            ),
            (
                "fmnist-infer",
                vec!["predict", "--model", &model, "--save-input", &b, "x.png"],
            ),
        ];
        for (bin_name, a) in cases {
            // A folder is what `plot` and `--save-input` want.
            let wants_folder = (a[0] == "plot" || a.contains(&"--save-input"))
                && (bad.is_dir() || bad.starts_with(w.root.join("no-folder")));
            let expect = if wants_folder {
                Expect::Any
            } else {
                Expect::Fails
            };
            check(&w, bin_name, &args(&a), expect);
        }
    }
    let _ = (&data, &w.log, &w.image);
}

/// Every numeric flag of every subcommand, given hostile values.
#[test]
fn hostile_flag_values() {
    let w = world();
    let model = s(&w.model);
    let hostile = [
        "0",
        "-1",
        "18446744073709551616",
        "1e300",
        "NaN",
        "inf",
        "-inf",
        "",
    ];
    // Flags of `train`, and the values among the hostile ones that are valid for them.
    let train_flags: [(&str, &[&str]); 17] = [
        ("--seed", &["0"]),
        ("--steps", &[]),
        ("--epochs", &[]),
        ("--lr", &["18446744073709551616"]), // finite, if absurd: the divergence check's
        ("--weight-decay", &["0", "18446744073709551616"]),
        ("--batch", &[]),
        ("--checkpoint-every", &[]),
        (
            "--warmup",
            &["0", "18446744073709551616", "1e300", "NaN", "inf"],
        ), // unused (constant)
        ("--shift", &["0"]),
        ("--rotate", &["0"]),
        ("--noise", &["0"]),
        ("--erase", &["0"]),
        ("--label-smoothing", &["0"]),
        ("--decoupled-decay", &["0"]),
        ("--print-every", &["0"]),
        ("--keep", &["0"]),
        ("--threads", &["0"]),
    ];
    for (i, (flag, valid)) in train_flags.iter().enumerate() {
        for v in hostile {
            let out = format!("t{i}-{v}");
            let a = if *flag == "--steps" {
                args(&["train", "--out", &out, flag, v])
            } else {
                args(&["train", "--steps", "2", "--out", &out, flag, v])
            };
            let expect = if valid.contains(&v) {
                Expect::Any
            } else {
                Expect::Fails
            };
            check(&w, "fmnist-train", &a, expect);
        }
    }
    for v in hostile {
        let cases: Vec<(&str, Vec<&str>, bool)> = vec![
            (
                "fmnist-train",
                vec![
                    "train",
                    "--steps",
                    "1",
                    "--out",
                    "d1",
                    "--teacher",
                    &model,
                    "--distill-weight",
                    v,
                ],
                v == "0",
            ),
            (
                "fmnist-train",
                vec![
                    "train",
                    "--steps",
                    "1",
                    "--out",
                    "d2",
                    "--teacher",
                    &model,
                    "--distill-temperature",
                    v,
                ],
                false,
            ),
            (
                "fmnist-train",
                vec![
                    "train",
                    "--steps",
                    "1",
                    "--out",
                    "d3",
                    "--schedule",
                    "cosine",
                    "--warmup",
                    v,
                ],
                matches!(v, "0" | "1e300" | "18446744073709551616"),
            ),
            (
                "fmnist-train",
                vec![
                    "export",
                    "--checkpoint",
                    &model,
                    "--out",
                    "e1.fmq",
                    "--calibration",
                    v,
                ],
                false,
            ),
            (
                "fmnist-train",
                vec![
                    "export",
                    "--checkpoint",
                    &model,
                    "--out",
                    "e2.fmq",
                    "--method",
                    "percentile",
                    "--percentile",
                    v,
                ],
                false,
            ),
            (
                "fmnist-train",
                vec!["bench", "--repeats", "1", "--steps", v],
                false,
            ),
            (
                "fmnist-train",
                vec!["bench", "--steps", "1", "--repeats", v],
                false,
            ),
            (
                "fmnist-train",
                vec!["bench", "--steps", "1", "--repeats", "1", "--threads", v],
                v == "0",
            ),
            (
                "fmnist-train",
                vec!["samples", "--out", "s.png", "--count", v],
                false,
            ),
            (
                "fmnist-train",
                vec![
                    "resume",
                    "--checkpoint",
                    "run/checkpoint-0000001.fmck",
                    "--out",
                    "r",
                    "--threads",
                    v,
                ],
                v == "0",
            ),
            (
                "fmnist-infer",
                vec!["eval", "--model", &model, "--threads", v],
                v == "0",
            ),
            (
                "fmnist-infer",
                vec![
                    "confusion",
                    "--model",
                    &model,
                    "--png",
                    "c.png",
                    "--threads",
                    v,
                ],
                v == "0",
            ),
            (
                "fmnist-infer",
                vec!["bench", "--model", &model, "--seconds", v],
                false,
            ),
        ];
        for (bin_name, a, valid) in cases {
            let expect = if valid { Expect::Any } else { Expect::Fails };
            check(&w, bin_name, &args(&a), expect);
        }
    }
}

/// Worker threads the system refuses (an address-space limit): exit 1 and one line, in the
/// trainer as in evaluation (the trainer used to panic on `expect("thread pool")`).
#[test]
fn a_thread_pool_that_cannot_start_is_exit_1() {
    let w = world();
    let model = s(&w.model);
    for (bin_name, a) in [
        ("fmnist-train", vec!["train", "--steps", "1", "--out", "p1"]),
        (
            "fmnist-train",
            vec![
                "resume",
                "--checkpoint",
                "run/checkpoint-0000001.fmck",
                "--out",
                "p2",
            ],
        ),
        (
            "fmnist-train",
            vec!["bench", "--steps", "1", "--repeats", "1"],
        ),
        ("fmnist-infer", vec!["eval", "--model", &model]),
    ] {
        let o = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -v 1000000 && exec "$0" "$@" --threads 256"#)
            .arg(bin(bin_name))
            .args(&a)
            .current_dir(&w.root)
            .env("FMNIST_DATA", &w.data)
            .output()
            .unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {err}");
        assert!(
            err.starts_with("error: cannot start 256 worker threads: ") && err.lines().count() == 1,
            "{a:?}: {err}"
        );
    }
    assert!(!w.root.join("p1").exists());
}
