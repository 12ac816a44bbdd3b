//! `scripts/bench_onnxruntime.py`, the same-run ONNX Runtime baseline of the inference
//! throughput, on bad input: every case exits 2 with one `error:` line and no Python traceback.
//! ONNX Runtime itself is not needed: a stand-in `onnxruntime` module on `PYTHONPATH` fails to
//! import, so the checks that come before any timing are reached. The benchmark proper is run by
//! hand (README, "Host inference speed").

use std::process::Output;

use fmnist_tests::{assert_bad_input, assert_no_traceback, bin, python_script};

/// Runs the script with `args` and a stand-in `onnxruntime` package that cannot be imported.
fn script(args: &[&str]) -> Output {
    let init = "raise ImportError('no onnxruntime here', name='onnxruntime')";
    python_script("bench_onnxruntime.py", "onnxruntime", init, args)
}

#[test]
fn bad_arguments_missing_files_and_missing_onnxruntime_are_refused() {
    let fi = bin("fmnist-infer");
    let fi = fi.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.fmnm");
    std::fs::write(&model, b"not read before onnxruntime is imported").unwrap();
    let m = model.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--int8", m],
            "the following arguments are required: --f32",
        ),
        (
            vec!["--f32", m, "--int8", m, "--windows", "0"],
            "must be at least 1",
        ),
        (
            vec!["--f32", m, "--int8", m, "--seconds", "0"],
            "--seconds in (0, 60]",
        ),
        (
            vec!["--f32", m, "--int8", m, "--seconds", "fast"],
            "invalid float value",
        ),
        (
            vec!["--f32", "/nonexistent.fmnm", "--int8", m],
            "/nonexistent.fmnm: no such file",
        ),
        (
            vec![
                "--f32",
                m,
                "--int8",
                m,
                "--fmnist-infer",
                "/nonexistent/fmnist-infer",
            ],
            "no fmnist-infer binary",
        ),
        (
            vec!["--f32", m, "--int8", m],
            "ONNX Runtime is not installed",
        ),
    ] {
        let mut a = args.clone();
        if !args.contains(&"--fmnist-infer") {
            a.extend(["--fmnist-infer", fi]);
        }
        let o = script(&a);
        assert_bad_input(&o, needle);
        assert_no_traceback(&o);
    }
}
