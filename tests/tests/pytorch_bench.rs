//! `scripts/bench_pytorch.py`, the same-run PyTorch baseline of the training throughput, on bad
//! input: every case exits 2 with one `error:` line and no Python traceback. PyTorch itself is
//! not needed (nor used when installed): a stand-in `torch` module on `PYTHONPATH` either fails
//! to import or imports as an empty module, so the checks that come before any timing are
//! reached. The benchmark proper is run by hand (README, "The wide CNN").

use std::path::Path;
use std::process::Output;

use fmnist_tests::{assert_bad_input, assert_no_traceback, bin, python_script};

/// Runs the script with `args` and a stand-in `torch` package whose `__init__.py` is `torch`.
fn script(torch: &str, args: &[&str]) -> Output {
    python_script("bench_pytorch.py", "torch", torch, args)
}

#[test]
fn bad_arguments_and_a_missing_binary_are_refused() {
    let ft = bin("fmnist-train");
    let ft = ft.to_str().unwrap();
    for (args, needle) in [
        (vec!["--windows", "0"], "must be at least 1"),
        (vec!["--steps", "-3"], "must be at least 1"),
        (vec!["--threads", "two"], "invalid int value"),
        (vec!["--frobnicate"], "unrecognized arguments"),
        (
            vec!["--fmnist-train", "/nonexistent/fmnist-train"],
            "no fmnist-train binary",
        ),
    ] {
        let mut a = args.clone();
        if !args.contains(&"--fmnist-train") {
            a.extend(["--fmnist-train", ft]);
        }
        let o = script("", &a);
        assert_bad_input(&o, needle);
        assert_no_traceback(&o);
    }
}

#[test]
fn missing_pytorch_is_named() {
    let ft = bin("fmnist-train");
    let o = script(
        "raise ImportError('no torch here')",
        &["--fmnist-train", ft.to_str().unwrap()],
    );
    assert_bad_input(&o, "PyTorch is not installed");
    assert_no_traceback(&o);
}

#[test]
fn missing_or_foreign_training_files_are_named() {
    let ft = bin("fmnist-train");
    let ft = ft.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = script(
        "",
        &[
            "--fmnist-train",
            ft,
            "--data",
            empty.path().to_str().unwrap(),
        ],
    );
    assert_bad_input(&o, "no Fashion-MNIST training files");
    assert_no_traceback(&o);

    // Right names, wrong contents: labels that are not an IDX label file.
    let bad = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(bad.path().join(name), bytes).unwrap();
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend([0u8; 784]);
    write("train-images-idx3-ubyte", &images);
    write("train-labels-idx1-ubyte", b"not an IDX file");
    let o = script(
        "",
        &["--fmnist-train", ft, "--data", bad.path().to_str().unwrap()],
    );
    assert_bad_input(&o, "are not Fashion-MNIST IDX files");
    assert_no_traceback(&o);
    assert!(
        Path::new(bad.path())
            .join("train-labels-idx1-ubyte")
            .exists()
    );

    // A gzip file that is not one.
    let gz = tempfile::tempdir().unwrap();
    std::fs::write(
        gz.path().join("train-images-idx3-ubyte.gz"),
        b"\x1f\x8b garbage",
    )
    .unwrap();
    std::fs::write(
        gz.path().join("train-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let o = script(
        "",
        &["--fmnist-train", ft, "--data", gz.path().to_str().unwrap()],
    );
    assert_bad_input(&o, "train-images-idx3-ubyte.gz");
    assert_no_traceback(&o);
}
