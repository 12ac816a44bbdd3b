//! Same bits: the SHA-256 of everything the release binaries write that must not change, compared
//! with the values recorded in `tests/same_bits/{lenet,wide}.sha256` (first recorded at commit
//! be8ab51, before the architecture redesign of issue 16).
//!
//! Covered, each for a few steps: LeNet-BN trained with each preset (`default`, `original`,
//! `fast`), with each augmentation and recipe flag alone and all augmentations at once, with
//! distillation from one and from two teachers; the wide CNN with each preset, with `--conv
//! winograd` and `--conv direct`, distilled from a LeNet-BN teacher. For both networks `--threads
//! 1` gives the bytes of `--threads 2` and a run resumed from its middle checkpoint gives the
//! bytes of the straight run (checked against each other here; the 2-thread straight run's
//! hashes are recorded). Then the export products (int8 by min/max, percentile and MSE
//! calibration, the BN-folded f32 model), `fmnist-infer eval --json` (single models and an
//! ensemble with mirror TTA), `golden` files, `confusion`, `predict`, and the trainer's `plot`
//! and `samples` PNGs. Safetensors is input-only (no command writes it), so it is not here.
//!
//! What is hashed:
//! - model files, golden files and PNGs: their bytes;
//! - checkpoints: all bytes but the last 12, which are the wall-clock `train_seconds` (an f64,
//!   the last field of both networks' training state, which postcard writes as 8 little-endian
//!   bytes) and the CRC-32 that covers it (see `fmnist-train/src/checkpoint.rs`);
//! - JSON printed by `--json` and the training log: the values, not their spelling: each
//!   object is re-serialized with its keys sorted and without the keys that measure time
//!   ([`VOLATILE`]). Every command runs in its own folder with relative paths, so paths
//!   written into outputs (the log's checkpoint names, `"model"`, plot titles) are the same on
//!   every machine.
//!
//! The LeNet-BN runs use the real data set. The wide CNN's use the real training set with the
//! first 1,000 test images only (written by [`small_test_set`]): evaluating the wide CNN on all
//! 10,000 (at every checkpoint, in `export` and in `eval`) would take most of a minute.
//!
//! # The machine the bits depend on
//! The arithmetic is deterministic for any thread count, but not for every CPU: the trainers'
//! f32 GEMM (`fmnist-train/src/shared/gemm.rs`) reproduces the roundings of `matrixmultiply`'s
//! FMA + AVX2 kernel on CPUs with FMA and AVX2 and calls `matrixmultiply` itself elsewhere,
//! which then picks AVX, else SSE2 kernels that round differently.
//! Measured with `qemu-x86_64 -cpu …` on a 10-step LeNet-BN run (2,000 training images):
//! `Haswell-v4` (AVX2 + FMA, no AVX-512) gives the model bytes of the AVX-512 machine the
//! tables were recorded on; `SandyBridge` (AVX, no FMA) and `Nehalem` (SSE4.2) agree with each
//! other but not with those.
//! `matrixmultiply` reads no run-time variable to force a kernel (its `MMTEST_*` variables are
//! read at compile time, for its own tests), so this test skips itself, saying so, on an
//! x86-64 CPU without FMA and AVX2 rather than report a difference the code did not make. The
//! project's own vector kernels (`simd_dispatch!` in `nn.rs` and `wide_nn.rs`, AVX in conv1
//! and Winograd) use no fused multiply-add and give the same bits with and without AVX2; int8
//! inference is integer arithmetic.
//!
//! # Re-recording
//! Only when a change of output is intended (say why in the commit):
//! `FMNIST_RECORD=1 cargo test --release -p fmnist-tests --test same_bits -- --nocapture`
//! rewrites both tables and prints them; `git diff tests/same_bits/` shows what changed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use fmnist_tests::{bin, data_dir};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// JSON keys whose values measure time: left out of the hashes.
const VOLATILE: [&str; 3] = ["time", "images_per_second", "wall_seconds"];

/// The environment variable that rewrites the recorded tables instead of comparing.
const RECORD_ENV: &str = "FMNIST_RECORD";

/// Test images the wide CNN's runs evaluate on.
const WIDE_TEST_IMAGES: usize = 1_000;

/// Why the recorded bits do not apply to this machine, if they do not.
fn unsupported_cpu() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2"))
        {
            return Some("this CPU lacks FMA or AVX2, so matrixmultiply rounds otherwise");
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Some("the bits were recorded on x86-64 with FMA")
    }
}

/// One family's hashes, collected as its commands run.
struct Bits {
    family: &'static str,
    root: tempfile::TempDir,
    hashes: BTreeMap<String, String>,
}

impl Bits {
    fn new(family: &'static str) -> Self {
        Bits {
            family,
            root: tempfile::tempdir().unwrap(),
            hashes: BTreeMap::new(),
        }
    }

    /// A fresh working folder `name` for commands.
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Records `bytes` under `key`.
    fn bytes(&mut self, key: &str, bytes: &[u8]) -> String {
        let hash = hex(&Sha256::digest(bytes));
        let old = self.hashes.insert(key.to_string(), hash.clone());
        assert!(old.is_none(), "{key} recorded twice");
        hash
    }

    /// Records the file `dir/file` under `key/file`.
    fn file(&mut self, key: &str, dir: &Path, file: &str) -> String {
        let b = read(&dir.join(file));
        self.bytes(&format!("{key}/{file}"), &b)
    }

    /// Records a checkpoint without its time and CRC.
    fn checkpoint(&mut self, key: &str, dir: &Path, file: &str) -> String {
        let b = checkpoint_bits(&dir.join(file));
        self.bytes(&format!("{key}/{file}"), &b)
    }

    /// Records JSON text (one value, or one per line) by its values.
    fn json(&mut self, key: &str, text: &str) -> String {
        self.bytes(key, canonical_json(text).as_bytes())
    }

    /// Records the model, the last checkpoint and the log of the run in `dir/run` under
    /// `key/…`, and returns them (to compare with other runs).
    fn run(&mut self, key: &str, dir: &Path, last_step: u64) -> [String; 3] {
        let run = dir.join("run");
        let log = std::fs::read_to_string(run.join("train-log.jsonl")).unwrap();
        [
            self.file(key, &run, "model.fmnm"),
            self.checkpoint(key, &run, &checkpoint_name(last_step)),
            self.json(&format!("{key}/train-log.jsonl"), &log),
        ]
    }

    /// The model, last checkpoint and log hashes of `dir/run`, not recorded.
    fn same_run_as(&self, key: &str, dir: &Path, last_step: u64) {
        let run = dir.join("run");
        let got = [
            hex(&Sha256::digest(read(&run.join("model.fmnm")))),
            hex(&Sha256::digest(checkpoint_bits(
                &run.join(checkpoint_name(last_step)),
            ))),
            hex(&Sha256::digest(
                canonical_json(&std::fs::read_to_string(run.join("train-log.jsonl")).unwrap())
                    .as_bytes(),
            )),
        ];
        let files = [
            "model.fmnm".to_string(),
            checkpoint_name(last_step),
            "train-log.jsonl".to_string(),
        ];
        for (file, got) in files.iter().zip(got) {
            let want = &self.hashes[&format!("{key}/{file}")];
            assert_eq!(&got, want, "{}: {file} differs from {key}'s", dir.display());
        }
    }

    /// Compares with the recorded table, or rewrites it under `FMNIST_RECORD=1`.
    fn finish(self) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("same_bits")
            .join(format!("{}.sha256", self.family));
        let table: String = self
            .hashes
            .iter()
            .map(|(k, h)| format!("{h}  {k}\n"))
            .collect();
        if std::env::var_os(RECORD_ENV).is_some_and(|v| v == "1") {
            let text = format!(
                "# SHA-256 of the {} outputs that must not change: see tests/tests/same_bits.rs.\n\
                 # Recorded by {RECORD_ENV}=1 at {} on {}.\n{table}",
                self.family,
                git_head(),
                cpu_description()
            );
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            eprintln!("wrote {}:\n{text}", path.display());
            return;
        }
        let recorded = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; record it with {RECORD_ENV}=1 (see same_bits.rs)",
                path.display()
            )
        });
        let want: BTreeMap<&str, &str> = recorded
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (h, k) = l.split_once("  ").expect("`hash  name` lines");
                (k, h)
            })
            .collect();
        let mut problems = Vec::new();
        for (k, h) in &self.hashes {
            match want.get(k.as_str()) {
                Some(w) if w == h => {}
                Some(w) => problems.push(format!("{k}: recorded {w}, now {h}")),
                None => problems.push(format!("{k}: not in the table (now {h})")),
            }
        }
        for k in want.keys() {
            if !self.hashes.contains_key(*k) {
                problems.push(format!("{k}: recorded but no longer produced"));
            }
        }
        assert!(
            problems.is_empty(),
            "{} of {} {} outputs differ from {}:\n{}\n(an intended change is re-recorded with \
             {RECORD_ENV}=1, see same_bits.rs)",
            problems.len(),
            want.len().max(self.hashes.len()),
            self.family,
            path.display(),
            problems.join("\n")
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step:07}.fmck")
}

/// A checkpoint's bytes but its last 12: the f64 `train_seconds` and the CRC-32 (see the
/// module docs). Checks the frame, so a change of layout fails here rather than hashing time.
fn checkpoint_bits(p: &Path) -> Vec<u8> {
    let b = read(p);
    assert!(
        b.len() >= 28 && b[..4] == *b"FMCK",
        "{}: not a checkpoint",
        p.display()
    );
    let n = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    assert_eq!(b.len(), 16 + n, "{}: frame length", p.display());
    let at = b.len() - 12;
    let seconds = f64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert!(
        seconds.is_finite() && seconds > 0.0 && seconds < 3600.0,
        "{}: the 8 bytes before the CRC read as {seconds} s: the state no longer ends with \
         train_seconds; update checkpoint_bits",
        p.display()
    );
    b[..at].to_vec()
}

/// The values of JSON `text` (one value, or one per line), keys sorted, time keys left out.
fn canonical_json(text: &str) -> String {
    let values: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
    };
    let mut out = String::new();
    for v in &values {
        write_canonical(v, &mut out);
        out.push('\n');
    }
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m
                .keys()
                .filter(|k| !VOLATILE.contains(&k.as_str()))
                .collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Runs `fmnist-train` or `fmnist-infer` in `dir`; returns its stdout. Fails on a failure or a
/// panic.
fn sh(dir: &Path, name: &str, args: &[&str]) -> String {
    let o = Command::new(bin(name))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("binary runs");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success() && !err.contains("panicked"),
        "{name} {} in {} failed ({:?}): {err}",
        args.join(" "),
        dir.display(),
        o.status
    );
    out
}

/// `fmnist-train train --json --out run` in `dir` with `args`; returns the JSON summary.
fn train(dir: &Path, data: &Path, args: &[&str]) -> String {
    let mut all = vec!["train", "--data", data.to_str().unwrap(), "--json"];
    all.extend_from_slice(&["--out", "run"]);
    all.extend_from_slice(args);
    sh(dir, "fmnist-train", &all)
}

/// Copies `checkpoint` and the log of `from/run` into `to/run` and resumes there: the output
/// paths are those of the straight run.
fn resume(from: &Path, to: &Path, data: &Path, checkpoint: &str, threads: &str) -> String {
    let run = to.join("run");
    std::fs::create_dir_all(&run).unwrap();
    for f in [checkpoint, "train-log.jsonl"] {
        std::fs::copy(from.join("run").join(f), run.join(f)).unwrap();
    }
    let ck = format!("run/{checkpoint}");
    sh(
        to,
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            &ck,
            "--data",
            data.to_str().unwrap(),
            "--threads",
            threads,
            "--json",
        ],
    )
}

/// A data folder with the real training set and the first `n` test images (raw IDX).
fn small_test_set(dir: &Path, n: usize) -> PathBuf {
    let real = data_dir();
    let out = dir.join("data");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(real.join(f), out.join(f))
            .unwrap_or_else(|e| panic!("{}: {e}", real.join(f).display()));
    }
    let gunzip = |f: &str| {
        let mut b = Vec::new();
        flate2::read::GzDecoder::new(&read(&real.join(f))[..])
            .read_to_end(&mut b)
            .unwrap();
        b
    };
    let images = gunzip("t10k-images-idx3-ubyte.gz");
    let labels = gunzip("t10k-labels-idx1-ubyte.gz");
    let count = (n as u32).to_be_bytes();
    let mut im = images[..16].to_vec();
    im[4..8].copy_from_slice(&count);
    im.extend_from_slice(&images[16..16 + n * 784]);
    let mut lb = labels[..8].to_vec();
    lb[4..8].copy_from_slice(&count);
    lb.extend_from_slice(&labels[8..8 + n]);
    std::fs::write(out.join("t10k-images-idx3-ubyte"), im).unwrap();
    std::fs::write(out.join("t10k-labels-idx1-ubyte"), lb).unwrap();
    out
}

fn git_head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "an unknown commit".into())
}

fn cpu_description() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let features = [
            (std::arch::is_x86_feature_detected!("avx512f"), "avx512f"),
            (std::arch::is_x86_feature_detected!("avx2"), "avx2"),
            (std::arch::is_x86_feature_detected!("fma"), "fma"),
        ];
        let list: Vec<&str> = features
            .into_iter()
            .filter_map(|(has, name)| has.then_some(name))
            .collect();
        format!("x86_64 ({})", list.join(", "))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

fn skip() -> bool {
    if let Some(why) = unsupported_cpu() {
        eprintln!("same_bits: skipped: {why} (see the module docs)");
        return true;
    }
    false
}

#[test]
fn lenet_training_export_and_inference_give_the_recorded_bits() {
    if skip() {
        return;
    }
    let data = data_dir();
    let data = data.as_path();
    let mut bits = Bits::new("lenet");

    // The default preset, 60 steps, a checkpoint every 20, on 2 threads: the run whose
    // model.fmnm the team's notes know by its MD5 (0838bb98…).
    let base = bits.dir("default");
    let steps = ["--steps", "60", "--checkpoint-every", "20"];
    let s = train(&base, data, &[&steps[..], &["--threads", "2"]].concat());
    bits.json("default/summary.json", &s);
    bits.run("default", &base, 60);
    bits.checkpoint("default", &base.join("run"), &checkpoint_name(20));

    // Thread count: the same bytes on 1 thread.
    let one = bits.dir("default-threads-1");
    train(&one, data, &[&steps[..], &["--threads", "1"]].concat());
    bits.same_run_as("default", &one, 60);

    // Resume from the middle checkpoint: the same bytes as the straight run.
    let resumed = bits.dir("default-resumed");
    let s = resume(&base, &resumed, data, &checkpoint_name(20), "2");
    bits.json("default-resumed/summary.json", &s);
    bits.same_run_as("default", &resumed, 60);

    for preset in ["original", "fast"] {
        let d = bits.dir(preset);
        let s = train(
            &d,
            data,
            &[&steps[..], &["--preset", preset, "--threads", "2"]].concat(),
        );
        bits.json(&format!("{preset}/summary.json"), &s);
        bits.run(preset, &d, 60);
    }

    // Each augmentation and recipe flag, then every augmentation at once: 40 steps each.
    let short = [
        "--steps",
        "40",
        "--checkpoint-every",
        "40",
        "--threads",
        "2",
    ];
    let flags: [(&str, &[&str]); 9] = [
        ("shift", &["--shift", "2"]),
        ("flip", &["--flip", "true"]),
        ("rotate", &["--rotate", "10"]),
        ("noise", &["--noise", "0.1"]),
        ("erase", &["--erase", "0.5"]),
        ("label-smoothing", &["--label-smoothing", "0.1"]),
        ("decoupled-decay", &["--decoupled-decay", "0.01"]),
        (
            "schedule-constant",
            &["--schedule", "constant", "--lr", "0.02", "--batch", "32"],
        ),
        (
            "all-augmentations",
            &[
                "--shift", "2", "--flip", "true", "--rotate", "10", "--noise", "0.1", "--erase",
                "0.5",
            ],
        ),
    ];
    for (name, f) in flags {
        let d = bits.dir(name);
        train(&d, data, &[&short[..], f].concat());
        bits.run(name, &d, 40);
    }

    // Distillation from the default run's model file, and from two teachers (a checkpoint and
    // a model file) with other weight and temperature.
    let d = bits.dir("distill");
    train(
        &d,
        data,
        &[&short[..], &["--teacher", "../default/run/model.fmnm"]].concat(),
    );
    bits.run("distill", &d, 40);
    let d = bits.dir("distill-two");
    train(
        &d,
        data,
        &[
            &short[..],
            &[
                "--teacher",
                "../default/run/checkpoint-0000060.fmck",
                "--teacher",
                "../original/run/model.fmnm",
                "--distill-weight",
                "0.5",
                "--distill-temperature",
                "4",
            ],
        ]
        .concat(),
    );
    bits.run("distill-two", &d, 40);

    // Export of the default run: min/max with the folded f32 model, percentile, MSE.
    let e = bits.dir("export");
    let (ck, data_s) = (
        "../default/run/checkpoint-0000060.fmck",
        data.to_str().unwrap(),
    );
    let exports: [(&str, &[&str]); 3] = [
        ("minmax", &["--folded-out", "folded.fmnm"]),
        ("percentile", &["--method", "percentile"]),
        ("mse", &["--method", "mse"]),
    ];
    for (method, extra) in exports {
        let out = format!("int8-{method}.fmnm");
        let args = [
            &[
                "export",
                "--checkpoint",
                ck,
                "--out",
                &out,
                "--data",
                data_s,
                "--json",
            ][..],
            extra,
        ]
        .concat();
        let s = sh(&e, "fmnist-train", &args);
        bits.json(&format!("export/{method}.json"), &s);
        bits.file("export", &e, &out);
    }
    bits.file("export", &e, "folded.fmnm");

    // Inference on them: eval, golden, confusion, predict.
    infer_all(
        &mut bits,
        &e,
        data,
        &[
            ("int8", "int8-minmax.fmnm"),
            ("folded", "folded.fmnm"),
            ("f32", "../default/run/model.fmnm"),
        ],
    );
    let s = sh(
        &e,
        "fmnist-infer",
        &[
            "eval",
            "--model",
            "int8-minmax.fmnm",
            "--model",
            "folded.fmnm",
            "--tta",
            "mirror",
            "--data",
            data_s,
            "--threads",
            "2",
            "--json",
        ],
    );
    bits.json("infer/eval-ensemble-mirror.json", &s);
    let s = sh(
        &e,
        "fmnist-infer",
        &[
            "confusion",
            "--model",
            "int8-minmax.fmnm",
            "--png",
            "confusion.png",
            "--data",
            data_s,
            "--threads",
            "2",
            "--json",
        ],
    );
    bits.json("infer/confusion.json", &s);
    bits.file("infer", &e, "confusion.png");

    // The trainer's pictures: the first training images (also the input of `predict`) and
    // the curves of the default run.
    let s = sh(
        &e,
        "fmnist-train",
        &[
            "samples",
            "--out",
            "samples.png",
            "--data",
            data_s,
            "--json",
        ],
    );
    bits.json("pictures/samples.json", &s);
    bits.file("pictures", &e, "samples.png");
    let s = sh(
        &e,
        "fmnist-train",
        &[
            "plot",
            "--log",
            "../default/run/train-log.jsonl",
            "--out",
            "plot",
            "--json",
        ],
    );
    bits.json("pictures/plot.json", &s);
    bits.file("pictures", &e.join("plot"), "loss.png");
    bits.file("pictures", &e.join("plot"), "accuracy.png");
    for (kind, model) in [
        ("int8", "int8-minmax.fmnm"),
        ("f32", "../default/run/model.fmnm"),
    ] {
        // `--save-input` does not create its folder.
        let inputs = format!("inputs-{kind}");
        std::fs::create_dir_all(e.join(&inputs)).unwrap();
        let s = sh(
            &e,
            "fmnist-infer",
            &[
                "predict",
                "--model",
                model,
                "--json",
                "--save-input",
                &inputs,
                "samples.png",
            ],
        );
        bits.json(&format!("infer/predict-{kind}.json"), &s);
        bits.file(
            &format!("infer/{inputs}"),
            &e.join(&inputs),
            "samples.28x28.png",
        );
    }
    bits.finish();
}

/// `eval --json` and `golden` (file and JSON) of each `(kind, model)` in `dir`.
fn infer_all(bits: &mut Bits, dir: &Path, data: &Path, models: &[(&str, &str)]) {
    let data = data.to_str().unwrap();
    for (kind, model) in models {
        let s = sh(
            dir,
            "fmnist-infer",
            &[
                "eval",
                "--model",
                model,
                "--data",
                data,
                "--threads",
                "2",
                "--json",
            ],
        );
        bits.json(&format!("infer/eval-{kind}.json"), &s);
        let out = format!("golden-{kind}.bin");
        let s = sh(
            dir,
            "fmnist-infer",
            &[
                "golden", "--model", model, "--out", &out, "--data", data, "--json",
            ],
        );
        bits.json(&format!("infer/golden-{kind}.json"), &s);
        bits.file("infer", dir, &out);
    }
}

#[test]
fn wide_training_export_and_inference_give_the_recorded_bits() {
    if skip() {
        return;
    }
    let mut bits = Bits::new("wide");
    let data = small_test_set(bits.root.path(), WIDE_TEST_IMAGES);
    let data = data.as_path();
    let wide = ["--model", "wide", "--steps", "8", "--checkpoint-every", "4"];

    // The default preset (Winograd conv2), on 2 threads, then on 1 and resumed from step 4.
    let base = bits.dir("default");
    let s = train(&base, data, &[&wide[..], &["--threads", "2"]].concat());
    bits.json("default/summary.json", &s);
    bits.run("default", &base, 8);
    bits.checkpoint("default", &base.join("run"), &checkpoint_name(4));
    let one = bits.dir("default-threads-1");
    train(&one, data, &[&wide[..], &["--threads", "1"]].concat());
    bits.same_run_as("default", &one, 8);
    let resumed = bits.dir("default-resumed");
    let s = resume(&base, &resumed, data, &checkpoint_name(4), "2");
    bits.json("default-resumed/summary.json", &s);
    bits.same_run_as("default", &resumed, 8);

    // The direct conv2 (im2col + GEMM), and the other presets.
    let runs: [(&str, &[&str]); 3] = [
        ("direct", &["--conv", "direct"]),
        ("original", &["--preset", "original"]),
        ("fast", &["--preset", "fast"]),
    ];
    for (name, f) in runs {
        let d = bits.dir(name);
        let s = train(&d, data, &[&wide[..], &["--threads", "2"], f].concat());
        bits.json(&format!("{name}/summary.json"), &s);
        bits.run(name, &d, 8);
    }

    // Distilled from a LeNet-BN teacher (a wide teacher would label 60,000 images first).
    let t = bits.dir("teacher");
    train(
        &t,
        data,
        &[
            "--steps",
            "20",
            "--checkpoint-every",
            "20",
            "--threads",
            "2",
        ],
    );
    bits.run("teacher-lenet", &t, 20);
    let d = bits.dir("distill");
    train(
        &d,
        data,
        &[
            "--model",
            "wide",
            "--steps",
            "4",
            "--checkpoint-every",
            "4",
            "--threads",
            "2",
            "--teacher",
            "../teacher/run/model.fmnm",
        ],
    );
    bits.run("distill", &d, 4);

    // Export of the default run, and inference on the products.
    let e = bits.dir("export");
    let (ck, data_s) = (
        "../default/run/checkpoint-0000008.fmck",
        data.to_str().unwrap(),
    );
    let exports: [(&str, &[&str]); 2] = [
        ("minmax", &["--folded-out", "folded.fmnm"]),
        ("percentile", &["--method", "percentile"]),
    ];
    for (method, extra) in exports {
        let out = format!("int8-{method}.fmnm");
        let args = [
            &[
                "export",
                "--checkpoint",
                ck,
                "--out",
                &out,
                "--data",
                data_s,
                "--json",
            ][..],
            extra,
        ]
        .concat();
        let s = sh(&e, "fmnist-train", &args);
        bits.json(&format!("export/{method}.json"), &s);
        bits.file("export", &e, &out);
    }
    bits.file("export", &e, "folded.fmnm");
    infer_all(
        &mut bits,
        &e,
        data,
        &[("int8", "int8-minmax.fmnm"), ("folded", "folded.fmnm")],
    );
    bits.finish();
}
