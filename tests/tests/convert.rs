//! `fmnist-infer convert`: FMNM → safetensors → `eval` and `golden` give the same confusion
//! matrix and bit-identical logits as the FMNM file (both networks), every format back to the
//! same FMNM bytes, and each bad request refused with one line, exit 2, nothing written.

use std::path::Path;

use fmnist_tests::cli_models::{CliModel, cli_models};
use fmnist_tests::{assert_bad_input, data_dir, file_names, run, text};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn convert(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["convert", "--model", s(model), "--out", s(out)];
    args.extend_from_slice(extra);
    run("fmnist-infer", &args)
}

fn eval_json(model: &Path) -> serde_json::Value {
    let data = data_dir();
    let o = run(
        "fmnist-infer",
        &["eval", "--model", s(model), "--json", "--data", s(&data)],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The golden file's records (every test image's logits and class), without the header's model
/// CRC, which names the file.
fn golden_records(model: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.golden",
        model.file_name().unwrap().to_string_lossy()
    ));
    let data = data_dir();
    let o = run(
        "fmnist-infer",
        &[
            "golden",
            "--model",
            s(model),
            "--out",
            s(&out),
            "--data",
            s(&data),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let bytes = std::fs::read(&out).unwrap();
    bytes[16..bytes.len() - 4].to_vec()
}

fn safetensors_round_trip(m: &CliModel, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join(format!("{name}.safetensors"));
    let o = convert(&m.trained, &st, &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, _) = text(&o);
    assert!(out.contains("f32 as trained as safetensors"), "{out}");
    let a = eval_json(&m.trained);
    let b = eval_json(&st);
    assert_eq!(b["kind"], "safetensors-f32");
    for key in ["confusion", "accuracy", "per_class", "correct"] {
        assert_eq!(a[key], b[key], "{name}: {key}");
    }
    assert_eq!(
        golden_records(&m.trained, dir.path()),
        golden_records(&st, dir.path()),
        "{name}: logits differ"
    );
    // fmnist-train export reads it like the FMNM file: the same int8 model, byte for byte.
    let export = |from: &Path, to: &Path| {
        let o = fmnist_tests::run(
            "fmnist-train",
            &["export", "--checkpoint", s(from), "--out", s(to)],
        );
        assert!(o.status.success(), "{name}: {:?}", text(&o));
        std::fs::read(to).unwrap()
    };
    assert_eq!(
        export(&st, &dir.path().join("a.fmnm")),
        export(&m.trained, &dir.path().join("b.fmnm")),
        "{name}: export of the safetensors file"
    );
    // And back: the same FMNM bytes.
    let back = dir.path().join("back.fmnm");
    let o = convert(&st, &back, &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&m.trained).unwrap()
    );
}

#[test]
fn lenet_safetensors_gives_the_same_confusion_matrix_and_logits() {
    safetensors_round_trip(&cli_models().lenet, "lenet");
}

#[test]
fn wide_safetensors_gives_the_same_confusion_matrix_and_logits() {
    safetensors_round_trip(&cli_models().wide, "wide");
}

/// FMNM → ONNX → FMNM and FMNM → safetensors → ONNX → FMNM give back the bytes, both kinds,
/// both networks; `--format` overrides the extension.
#[test]
fn every_path_between_formats_returns_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = cli_models();
    for (name, src) in [
        ("lenet", &m.lenet.trained),
        ("lenet-folded", &m.lenet.folded),
        ("wide", &m.wide.trained),
        ("wide-folded", &m.wide.folded),
    ] {
        let onnx = d.join(format!("{name}.onnx"));
        let back = d.join(format!("{name}.back.fmnm"));
        for (from, to) in [(src, &onnx), (&onnx, &back)] {
            let o = convert(from, to, &[]);
            assert!(o.status.success(), "{name}: {:?}", text(&o));
        }
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(src).unwrap());
    }
    // Through safetensors and an ONNX file without the extension.
    let st = d.join("x.safetensors");
    let onnx = d.join("graph.bin");
    let back = d.join("x.fmnm");
    assert!(convert(&m.lenet.trained, &st, &[]).status.success());
    assert!(convert(&st, &onnx, &["--format", "onnx"]).status.success());
    assert!(convert(&onnx, &back, &[]).status.success());
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&m.lenet.trained).unwrap()
    );
    // int8 to FMNM: the same file.
    let q = d.join("q.fmnm");
    assert!(convert(&m.lenet.int8, &q, &[]).status.success());
    assert_eq!(
        std::fs::read(&q).unwrap(),
        std::fs::read(&m.lenet.int8).unwrap()
    );
}

/// Bad requests: one line, exit 2, no output file (and an existing one untouched).
#[test]
fn bad_requests_are_one_line_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("out");
    std::fs::create_dir(&d).unwrap();
    let m = cli_models();
    let junk = dir.path().join("junk.fmnm");
    std::fs::write(&junk, b"hello, not a model\n").unwrap();
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, b"hello, not a model\n").unwrap();
    let trunc = dir.path().join("trunc.onnx");
    let full = d.join("full.onnx");
    assert!(convert(&m.lenet.trained, &full, &[]).status.success());
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(&full).unwrap();
    let int8 = s(&m.lenet.int8).to_owned();
    let cases: Vec<(&Path, String, String)> = vec![
        (
            m.lenet.trained.as_path(),
            "m.bin".into(),
            "m.bin: unknown output format: name the file .fmnm, .safetensors or .onnx, or give --format"
                .into(),
        ),
        (
            m.lenet.int8.as_path(),
            "q.safetensors".into(),
            format!(
                "q.safetensors: safetensors holds the f32 model as trained (PyTorch's module with its BatchNorm layers), not LeNet-BN, int8 (from {int8})"
            ),
        ),
        (
            m.lenet.folded.as_path(),
            "f.safetensors".into(),
            "not LeNet-BN, f32 (BN folded)".into(),
        ),
        (
            m.wide.int8.as_path(),
            "q.onnx".into(),
            "q.onnx: ONNX export holds the f32 models (as trained or BN-folded), not wide CNN, int8"
                .into(),
        ),
        (junk.as_path(), "j.onnx".into(), "junk.fmnm: not an fmnist model file (bad magic".into()),
        (
            text_file.as_path(),
            "t.onnx".into(),
            "notes.txt: not a model file: neither an fmnist model (magic \"FMNM\"), safetensors nor ONNX"
                .into(),
        ),
        (trunc.as_path(), "t.fmnm".into(), "trunc.onnx: not an ONNX model: ".into()),
    ];
    for (model, out, needle) in &cases {
        let out = d.join(out);
        let o = convert(model, &out, &[]);
        let (_, err) = text(&o);
        let needle = needle.replace("m.bin:", &format!("{}:", s(&d.join("m.bin"))));
        assert_bad_input(&o, &needle);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(file_names(&d).is_empty(), "{:?}", file_names(&d));
    }
    // An existing output stays as it was when the conversion is refused.
    let keep = d.join("keep.safetensors");
    std::fs::write(&keep, b"old").unwrap();
    assert_eq!(convert(&m.wide.int8, &keep, &[]).status.code(), Some(2));
    assert_eq!(std::fs::read(&keep).unwrap(), b"old");
    // The input named as the output is refused before work.
    let o = convert(&m.lenet.trained, &m.lenet.trained, &["--format", "fmnm"]);
    assert_bad_input(&o, "--out is also the input --model");
}
