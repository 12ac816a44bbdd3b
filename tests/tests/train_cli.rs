//! The trainer's command line on the real data: determinism, bit-identical resume, the f32
//! model file agreeing with fmnist-core, and bad input.

use std::path::Path;

use fmnist_core::lenet::LeNet;
use fmnist_infer::data::{self, Split};
use fmnist_infer::modelio::LoadedModel;
use fmnist_tests::{assert_bad_input, data_dir, run, text};

fn train(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "train",
        "--preset",
        "fast",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run("fmnist-train", &args);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "train failed: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count_and_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    // K = 60 steps straight, on 2 threads and on 1 thread (the latter also says `--conv
    // direct`, LeNet-BN's only choice: a no-op).
    let ja = train(
        &a,
        &[
            "--steps",
            "60",
            "--checkpoint-every",
            "60",
            "--seed",
            "7",
            "--threads",
            "2",
        ],
    );
    let jb = train(
        &b,
        &[
            "--steps",
            "60",
            "--checkpoint-every",
            "60",
            "--seed",
            "7",
            "--threads",
            "1",
            "--conv",
            "direct",
        ],
    );
    assert_eq!(ja["config"]["conv"], "direct");
    assert_eq!(jb["config"]["conv"], "direct");
    let model_a = std::fs::read(a.join("model.fmnm")).unwrap();
    assert!(
        model_a == std::fs::read(b.join("model.fmnm")).unwrap(),
        "thread count changed the weights"
    );
    assert_eq!(ja["test_accuracy"], jb["test_accuracy"]);
    for key in [
        "test_accuracy",
        "images_per_second",
        "wall_seconds",
        "model",
    ] {
        assert!(ja.get(key).is_some(), "--json lacks {key}: {ja}");
    }

    // K/2 = 30 steps with a checkpoint, then resume the other 30.
    train(
        &c,
        &[
            "--steps",
            "60",
            "--checkpoint-every",
            "30",
            "--seed",
            "7",
            "--keep",
            "5",
        ],
    );
    let half = c.join("checkpoint-0000030.fmck");
    let resumed = dir.path().join("resumed");
    let o = run(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            half.to_str().unwrap(),
            "--out",
            resumed.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "resume failed: {}", text(&o).1);
    assert!(
        model_a == std::fs::read(resumed.join("model.fmnm")).unwrap(),
        "resume is not bit-identical"
    );
    // The final checkpoints hold the same state, but for the measured training time.
    let state = |p: &Path| {
        use fmnist_train::registry::TrainLeNet;
        use fmnist_train::shared::net::TrainNet;
        let mut s = fmnist_train::checkpoint::load_run::<TrainLeNet>(p).unwrap();
        s.train_seconds = 0.0;
        TrainLeNet::save(&s)
    };
    assert!(
        state(&c.join("checkpoint-0000060.fmck"))
            == state(&resumed.join("checkpoint-0000060.fmck")),
        "resumed checkpoint state differs"
    );

    // The log: one line per step with time (ms), step/total, loss, accuracy; evaluations.
    let log = std::fs::read_to_string(a.join("train-log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l.get("loss").is_some()).count(), 60);
    let first = &lines[0];
    assert_eq!(first["step"], 1);
    assert_eq!(first["total"], 60);
    assert_eq!(
        first["time"].as_str().unwrap().len(),
        "2025-04-20 13:33:44.695".len()
    );
    assert!(lines.iter().any(|l| l.get("test_accuracy").is_some()));
}

#[test]
fn f32_model_file_agrees_with_the_batched_evaluation_on_all_test_images() {
    let dir = tempfile::tempdir().unwrap();
    let j = train(dir.path(), &["--steps", "300", "--checkpoint-every", "300"]);
    let model = LoadedModel::read(Path::new(j["model"].as_str().unwrap())).unwrap();
    let params = model.file().unwrap().lenet_f32().unwrap();
    let test = data::load(&data_dir(), Split::Test).unwrap();
    let pool = fmnist_infer::pool::thread_pool(2).unwrap();
    let batched = fmnist_train::lenet::kernels::evaluate_with(params, &test, &pool);
    let net = LeNet::from(params);
    let mut correct = 0;
    let mut max_diff = 0.0f32;
    for (i, img) in test.images.iter().enumerate() {
        let l = net.forward(img);
        let b = batched.logits[i];
        for k in 0..10 {
            max_diff = max_diff.max((l[k] - b[k]).abs());
        }
        let p = fmnist_core::layers::argmax(&l);
        assert_eq!(
            p,
            fmnist_core::layers::argmax(&b),
            "prediction differs on image {i}"
        );
        correct += (p == test.labels[i] as usize) as usize;
    }
    assert!(max_diff <= 1e-4, "max |Δ logit| = {max_diff}");
    assert_eq!(correct as f64 / 10_000.0, batched.accuracy);
    assert!((batched.accuracy - j["test_accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert!(
        batched.accuracy > 0.75,
        "300 steps should reach 75 %: {}",
        batched.accuracy
    );
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--data",
            "/nonexistent/fm",
            "--out",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_bad_input(&o, "apt-get install dataset-fashion-mnist");

    // Truncated labels: the message names the file and the counts.
    let d = dir.path().join("broken");
    std::fs::create_dir(&d).unwrap();
    let src = data_dir();
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
    ] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let mut labels = data::encode_labels(&data::load(&src, Split::Test).unwrap().labels);
    labels.truncate(labels.len() - 2);
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), labels).unwrap();
    let o = run(
        "fmnist-train",
        &["train", "--data", d.to_str().unwrap(), "--steps", "1"],
    );
    assert_bad_input(
        &o,
        "t10k-labels-idx1-ubyte: truncated: header says 10000 labels, found 9998",
    );

    let bogus = dir.path().join("bogus.fmck");
    std::fs::write(&bogus, b"this is not a checkpoint at all").unwrap();
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", bogus.to_str().unwrap()],
    );
    assert_bad_input(&o, "bad magic");
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", "/nonexistent.fmck"],
    );
    assert_bad_input(&o, "/nonexistent.fmck");
    // A training set larger than Fashion-MNIST's lets --batch pass its own check (at most the
    // set's size); the recipe check refuses a batch above 60,000 with a message, not a panic.
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let n = 60_001;
    std::fs::write(
        big.join("train-images-idx3-ubyte"),
        data::encode_images(&vec![[0u8; 784]; n]),
    )
    .unwrap();
    std::fs::write(
        big.join("train-labels-idx1-ubyte"),
        data::encode_labels(&vec![0u8; n]),
    )
    .unwrap();
    std::fs::write(
        big.join("t10k-images-idx3-ubyte"),
        data::encode_images(&[[0u8; 784]; 4]),
    )
    .unwrap();
    std::fs::write(
        big.join("t10k-labels-idx1-ubyte"),
        data::encode_labels(&[0u8; 4]),
    )
    .unwrap();
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--data",
            big.to_str().unwrap(),
            "--batch",
            "60001",
            "--steps",
            "1",
            "--out",
            dir.path().join("big-run").to_str().unwrap(),
        ],
    );
    assert_bad_input(
        &o,
        "the recipe cannot run: batch of 60001 images; it must be between 1 and 60000",
    );
    assert!(!dir.path().join("big-run").exists());
    let o = run("fmnist-train", &["train", "--lr=-1", "--steps", "1"]);
    assert_bad_input(&o, "--lr must be a positive number");
    // The conv algorithm is the wide CNN's: LeNet-BN refuses Winograd before loading any data.
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--model",
            "lenet",
            "--conv",
            "winograd",
            "--data",
            "/nonexistent/fm",
        ],
    );
    assert_bad_input(&o, "--conv winograd is for the wide CNN");
    let o = run("fmnist-train", &["train", "--conv", "im2col"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run("fmnist-train", &["train", "--preset", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    for (flag, value, message) in [
        ("--shift", "9", "--shift must be at most 8 pixels"),
        (
            "--rotate",
            "90",
            "--rotate must be between 0 and 45 degrees",
        ),
        (
            "--rotate",
            "NaN",
            "--rotate must be between 0 and 45 degrees",
        ),
        ("--noise", "-0.1", "--noise must be between 0 and 1"),
        (
            "--erase",
            "1.5",
            "--erase must be a probability between 0 and 1",
        ),
        (
            "--label-smoothing",
            "0.7",
            "--label-smoothing must be between 0 and 0.5",
        ),
        (
            "--decoupled-decay",
            "1.5",
            "--decoupled-decay must be between 0 and 1",
        ),
    ] {
        let arg = format!("{flag}={value}");
        let o = run("fmnist-train", &["train", "--steps", "1", &arg]);
        assert_bad_input(&o, message);
    }
}

#[test]
fn summary_prints_the_layer_table() {
    let o = run("fmnist-train", &["summary"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needle in [
        "Layer",
        "Output Shape",
        "Param #",
        "48,120",
        "Total params: 61,750",
    ] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&text(&run("fmnist-train", &["summary", "--json"])).0).unwrap();
    assert_eq!(j["total_params"], 61_750);
}

#[test]
fn summary_of_the_wide_cnn() {
    let o = run("fmnist-train", &["summary", "--model", "wide"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needle in ["[64, 7, 7]", "1,606,144", "Total params: 1,630,282"] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
    let o = run("fmnist-train", &["summary", "--model", "resnet"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn wide_cnn_trains_resumes_bit_identically_and_exports_int8() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let args = |out: &std::path::Path, steps: &str| {
        vec![
            "train".to_string(),
            "--model".into(),
            "wide".into(),
            "--preset".into(),
            "fast".into(),
            "--batch".into(),
            "32".into(),
            "--steps".into(),
            steps.into(),
            "--checkpoint-every".into(),
            "3".into(),
            "--seed".into(),
            "5".into(),
            "--json".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let straight: Vec<String> = args(&a, "6");
    let o = run(
        "fmnist-train",
        &straight.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let j: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(j["config"]["model"], "Wide");
    assert!(j["config"]["optimizer"]["Adam"].is_object());
    assert_eq!(j["config"]["augment"]["flip"], true);
    assert_eq!(j["config"]["conv"], "winograd");

    // Resume from step 3 (in another directory, on one thread): same bytes.
    let ck = a.join("checkpoint-0000003.fmck");
    let o = run(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            b.to_str().unwrap(),
            "--threads",
            "1",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let r: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(
        r["config"]["conv"], "winograd",
        "resume keeps the run's conv"
    );
    let model = std::fs::read(a.join("model.fmnm")).unwrap();
    assert!(
        model == std::fs::read(b.join("model.fmnm")).unwrap(),
        "resume changed the weights"
    );
    assert_eq!(&model[..4], b"FMNM");
    assert_eq!(
        u16::from_le_bytes([model[8], model[9]]),
        2,
        "architecture 2 = wide"
    );

    // Export quantizes it; fmnist-infer evaluates the int8 file.
    let q = dir.path().join("wide.fmq");
    let o = run(
        "fmnist-train",
        &[
            "export",
            "--checkpoint",
            a.join("checkpoint-0000006.fmck").to_str().unwrap(),
            "--out",
            q.to_str().unwrap(),
            "--calibration",
            "200",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let r: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(r["bytes"], 1_639_476);
    let o = run(
        "fmnist-infer",
        &["eval", "--model", q.to_str().unwrap(), "--json"],
    );
    let e: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(e["kind"], "int8");
    assert_eq!(e["accuracy"], r["int8_accuracy"]);

    // A LeNet-only consumer refuses the wide checkpoint clearly.
    let corrupt = dir.path().join("corrupt.fmck");
    let mut bytes = std::fs::read(&ck).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&corrupt, bytes).unwrap();
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", corrupt.to_str().unwrap()],
    );
    assert_bad_input(&o, "CRC mismatch");
}

#[test]
fn distillation_trains_from_a_teacher_resumes_bit_identically_and_refuses_bad_teachers() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let teacher = p("teacher");
    train(
        Path::new(&teacher),
        &["--steps", "40", "--checkpoint-every", "40", "--seed", "2"],
    );
    let teacher_model = format!("{teacher}/model.fmnm");
    let student = |out: &str, every: &str| {
        train(
            Path::new(out),
            &[
                "--steps",
                "40",
                "--checkpoint-every",
                every,
                "--keep",
                "5",
                "--teacher",
                &teacher_model,
                "--distill-weight",
                "0.7",
                "--distill-temperature",
                "2",
            ],
        )
    };
    let (a, b, plain) = (p("a"), p("b"), p("plain"));
    let j = student(&a, "40");
    let d = &j["config"]["distill"];
    assert_eq!(
        (d["alpha"].as_f64(), d["temperature"].as_f64()),
        (Some(0.7), Some(2.0))
    );
    assert_eq!(d["teachers"], 1);
    train(
        Path::new(&plain),
        &["--steps", "40", "--checkpoint-every", "40"],
    );
    let model = std::fs::read(format!("{a}/model.fmnm")).unwrap();
    assert!(
        model != std::fs::read(format!("{plain}/model.fmnm")).unwrap(),
        "the teacher changed nothing"
    );

    // Resume from step 20 with the same teacher (here its checkpoint: same weights): same bytes.
    student(&b, "20");
    let half = format!("{b}/checkpoint-0000020.fmck");
    let resume = |teachers: &[&str], out: &str| {
        let mut args = vec!["resume", "--checkpoint", &half, "--out", out, "--json"];
        for t in teachers {
            args.extend_from_slice(&["--teacher", t]);
        }
        run("fmnist-train", &args)
    };
    let resumed = p("resumed");
    let o = resume(&[&format!("{teacher}/checkpoint-0000040.fmck")], &resumed);
    assert!(o.status.success(), "resume failed: {}", text(&o).1);
    assert!(
        model == std::fs::read(format!("{resumed}/model.fmnm")).unwrap(),
        "resume is not bit-identical"
    );

    // Bad teachers: missing on resume, other weights, unreadable files, wrong flags.
    assert_bad_input(&resume(&[], &p("r1")), "pass them again with --teacher");
    assert_bad_input(
        &resume(&[&format!("{plain}/model.fmnm")], &p("r2")),
        "the run distils from 1 teacher model(s) with fingerprint",
    );
    assert_bad_input(
        &resume(&[&teacher_model, &teacher_model], &p("r3")),
        "fingerprint",
    );
    let o = run(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            &format!("{plain}/checkpoint-0000040.fmck"),
            "--teacher",
            &teacher_model,
        ],
    );
    assert_bad_input(&o, "does not distil; resume it without --teacher");
    let bogus = p("bogus.fmnm");
    std::fs::write(&bogus, b"not a model").unwrap();
    for (args, message) in [
        (
            vec!["--teacher", "/nonexistent/t.fmnm"],
            "/nonexistent/t.fmnm",
        ),
        (
            vec!["--teacher", bogus.as_str()],
            "bogus.fmnm: not a checkpoint",
        ),
        (
            vec!["--teacher", &teacher_model, "--distill-weight", "1.5"],
            "--distill-weight must be between 0 and 1",
        ),
        (
            vec!["--teacher", &teacher_model, "--distill-temperature", "0"],
            "--distill-temperature must be in (0, 100]",
        ),
        (
            vec!["--teacher", &teacher_model, "--distill-temperature", "1e6"],
            "--distill-temperature must be in (0, 100]",
        ),
    ] {
        let mut all = vec![
            "train",
            "--steps",
            "1",
            "--out",
            dir.path().to_str().unwrap(),
        ];
        all.extend_from_slice(&args);
        assert_bad_input(&run("fmnist-train", &all), message);
    }
    // A wide student learns from the same teacher (here LeNet-BN) and records it.
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--model",
            "wide",
            "--preset",
            "fast",
            "--batch",
            "16",
            "--steps",
            "2",
            "--teacher",
            &teacher_model,
            "--json",
            "--out",
            &p("wide"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let j: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(j["config"]["model"], "Wide");
    assert_eq!(j["config"]["distill"]["teachers"], 1);
    assert_eq!(j["config"]["distill"]["temperature"], 2.0);
    let o = run(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            &format!("{}/checkpoint-0000002.fmck", p("wide")),
        ],
    );
    assert_bad_input(&o, "pass them again with --teacher");

    // A distillation setting without a teacher is a usage error.
    let o = run(
        "fmnist-train",
        &["train", "--steps", "1", "--distill-weight", "0.5"],
    );
    assert_eq!(o.status.code(), Some(2));
}
