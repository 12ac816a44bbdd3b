//! `fmnist-train bench --model wide` on the real data: the throughput, the FMA peak, the
//! memory bandwidth and every stage of the step against that roofline, in JSON and in text.

use fmnist_tests::{run, text};

const STAGES: [&str; 8] = [
    "conv1",
    "bn1 pool1 conv2",
    "bn2 pool2 dense forward",
    "dense backward",
    "bn2 backward sums",
    "conv2 backward",
    "conv1 backward",
    "adam",
];

fn positive(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing: {v}"));
    assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    x
}

#[test]
fn the_wide_bench_reports_each_stage_against_the_roofline() {
    let o = run(
        "fmnist-train",
        &[
            "bench",
            "--model",
            "wide",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    positive(&j, "train_images_per_second");
    let (cache, dram) = (
        positive(&j, "cache_bandwidth_gbs"),
        positive(&j, "dram_bandwidth_gbs"),
    );
    let roof = j["roofline"].as_array().expect("roofline array");
    let names: Vec<&str> = roof.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(names, STAGES);
    for r in roof {
        let ms = positive(r, "ms_per_step");
        let stage = r["stage"].as_str().unwrap();
        // The stage's time is the stage_seconds entry over the 2 timed steps.
        let secs = j["stage_seconds"][stage].as_f64().unwrap();
        assert!(
            (ms - secs / 2.0 * 1e3).abs() <= 1e-9 * ms.max(1.0),
            "{stage}"
        );
        let gbs = positive(r, "gb_per_second");
        for (key, bw) in [
            ("cache_bandwidth_fraction", cache),
            ("dram_bandwidth_fraction", dram),
        ] {
            let f = r[key].as_f64().unwrap();
            assert!((f - gbs / bw).abs() <= 1e-9 * f, "{stage} {key}");
        }
        // The machine's floor is below the measured time: no stage beats its roofline.
        assert!(positive(r, "floor_ms") <= ms, "{r}");
        positive(r, "gflops");
    }

    let o = run(
        "fmnist-train",
        &["bench", "--model", "wide", "--steps", "1", "--repeats", "1"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("roofline of the Winograd step"), "{out}");
    for stage in STAGES {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(stage)),
            "no line for {stage}: {out}"
        );
    }
    assert!(out.contains("% of the way to the machine's limit"), "{out}");
}
