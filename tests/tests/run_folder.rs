//! A run owns its output folder: a second trainer on it is refused while the first finishes, a
//! folder holding another run is refused (or replaced with `--overwrite`), pruning keeps this
//! run's newest checkpoints by step, and a run that diverges stops without saving NaN weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fmnist_tests::{assert_bad_input, bin, file_names, run, text};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `fmnist-train train --out out` with a small LeNet-BN run's flags plus `extra`; must succeed.
fn train(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["train", "--out", s(out), "--threads", "2", "--json"];
    args.extend_from_slice(extra);
    let o = run("fmnist-train", &args);
    assert!(o.status.success(), "train {extra:?}: {}", text(&o).1);
    serde_json::from_str(text(&o).0.trim()).unwrap()
}

fn checkpoint_names(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".fmck"))
        .collect()
}

/// The step numbers of the log's step records, and every `total` in it.
fn log_steps(dir: &Path) -> (Vec<u64>, Vec<u64>) {
    let log = std::fs::read_to_string(dir.join("train-log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = records
        .iter()
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    let mut totals: Vec<u64> = records
        .iter()
        .map(|v| v["total"].as_u64().unwrap())
        .collect();
    totals.dedup();
    (steps, totals)
}

/// Exit code 2 and exactly one line on stderr.
fn assert_refused(o: &std::process::Output, needle: &str) {
    assert_bad_input(o, needle);
    assert_eq!(text(o).1.lines().count(), 1, "{}", text(o).1);
}

#[test]
fn a_second_trainer_on_a_busy_folder_is_refused_and_the_first_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = Command::new(bin("fmnist-train"))
        .args([
            "train",
            "--out",
            s(&out),
            "--threads",
            "1",
            "--steps",
            "300",
        ])
        .args(["--checkpoint-every", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log appears once the first run holds the folder.
    let t0 = Instant::now();
    while !out.join("train-log.jsonl").exists() {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [
        vec!["train", "--out", s(&out), "--steps", "10"],
        vec!["train", "--out", s(&out), "--steps", "10", "--overwrite"],
    ] {
        let o = run("fmnist-train", &args);
        assert_refused(
            &o,
            &format!(
                "error: {}: another fmnist-train run is using this folder (it holds .fmnist-train.lock)",
                out.display()
            ),
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run finished before the second was refused: inconclusive, give it more steps"
    );
    let done = first.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(log_steps(&out), ((1..=300).collect(), vec![300]));
    assert_eq!(
        checkpoint_names(&out),
        [
            "checkpoint-0000100.fmck",
            "checkpoint-0000200.fmck",
            "checkpoint-0000300.fmck"
        ]
    );
    // The lock went with the process: the folder can be resumed now.
    let o = run(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            s(&out.join("checkpoint-0000300.fmck")),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn a_folder_holding_an_older_longer_run_is_refused_unless_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train(
        &out,
        &["--steps", "40", "--checkpoint-every", "20", "--keep", "5"],
    );
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let before = file_names(&out);
    let new_run = [
        "--steps",
        "20",
        "--checkpoint-every",
        "5",
        "--keep",
        "2",
        "--seed",
        "3",
    ];
    let mut args = vec!["train", "--out", s(&out)];
    args.extend_from_slice(&new_run);
    let o = run("fmnist-train", &args);
    assert_refused(
        &o,
        &format!(
            "error: {0}: holds a run already (2 checkpoints up to step 40, \
             events.out.tfevents.fmnist-train, model.fmnm, train-log.jsonl); pass --overwrite to replace it or continue it with fmnist-train \
             resume --checkpoint {0}/checkpoint-0000040.fmck",
            out.display()
        ),
    );
    assert_eq!(file_names(&out), before, "a refused run changed the folder");

    // --overwrite: the new run's checkpoints survive pruning, the old run's files are gone,
    // other files stay.
    let mut args = new_run.to_vec();
    args.push("--overwrite");
    let j = train(&out, &args);
    assert_eq!(
        file_names(&out),
        [
            ".fmnist-train.lock",
            "checkpoint-0000015.fmck",
            "checkpoint-0000020.fmck",
            "events.out.tfevents.fmnist-train",
            "model.fmnm",
            "notes.txt",
            "train-log.jsonl"
        ]
    );
    assert_eq!(log_steps(&out), ((1..=20).collect(), vec![20]));
    let newest = PathBuf::from(j["checkpoint"].as_str().unwrap());
    assert_eq!(newest, out.join("checkpoint-0000020.fmck"));
    let state =
        fmnist_train::checkpoint::load_run::<fmnist_train::registry::TrainLeNet>(&newest).unwrap();
    assert_eq!((state.step, state.config.seed), (20, 3));
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");

    // A file is not a folder.
    let file = out.join("notes.txt");
    let o = run(
        "fmnist-train",
        &["train", "--out", s(&file), "--steps", "5"],
    );
    assert_refused(&o, &format!("error: {}: not a directory", file.display()));
}

#[test]
fn resume_by_a_bare_name_from_inside_the_folder_prunes_by_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train(
        &out,
        &["--steps", "40", "--checkpoint-every", "10", "--keep", "5"],
    );
    let straight = std::fs::read(out.join("model.fmnm")).unwrap();
    std::fs::remove_file(out.join("model.fmnm")).unwrap();
    // A killed write of this run and a temp file that is not ours.
    std::fs::write(out.join(".checkpoint-0000050.fmck.99999.tmp"), b"x").unwrap();
    std::fs::write(out.join(".notes.txt.7.tmp"), b"x").unwrap();
    let o = Command::new(bin("fmnist-train"))
        .args(["resume", "--checkpoint", "checkpoint-0000010.fmck"])
        .args(["--keep", "2", "--threads", "2"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        file_names(&out),
        [
            ".fmnist-train.lock",
            ".notes.txt.7.tmp",
            "checkpoint-0000030.fmck",
            "checkpoint-0000040.fmck",
            "events.out.tfevents.fmnist-train",
            "model.fmnm",
            "train-log.jsonl"
        ]
    );
    assert!(
        std::fs::read(out.join("model.fmnm")).unwrap() == straight,
        "the resumed run is not bit-identical"
    );
    assert_eq!(log_steps(&out), ((1..=40).collect(), vec![40]));
}

#[test]
fn resume_into_a_folder_of_another_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(
        &a,
        &["--steps", "10", "--checkpoint-every", "10", "--seed", "1"],
    );
    train(
        &b,
        &["--steps", "10", "--checkpoint-every", "10", "--seed", "2"],
    );
    let before = file_names(&b);
    let b_model = std::fs::read(b.join("model.fmnm")).unwrap();
    let a_ck = a.join("checkpoint-0000010.fmck");
    let why = format!(
        "error: {}: holds another run (checkpoint-0000010.fmck: a run of seed 2, this run has 1)",
        b.display()
    );
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", s(&a_ck), "--out", s(&b)],
    );
    assert_refused(&o, &why);
    // The same checkpoint copied into the other run's folder, resumed there.
    let copy = b.join("copied.fmck");
    std::fs::copy(&a_ck, &copy).unwrap();
    let o = run("fmnist-train", &["resume", "--checkpoint", s(&copy)]);
    assert_refused(&o, &why);
    std::fs::remove_file(&copy).unwrap();
    assert_eq!(file_names(&b), before);
    assert!(std::fs::read(b.join("model.fmnm")).unwrap() == b_model);

    // A folder with only the log of a run of another length, or only a model.
    let c = tmp.path().join("c");
    std::fs::create_dir(&c).unwrap();
    std::fs::write(
        c.join("train-log.jsonl"),
        "{\"step\":1,\"total\":99,\"loss\":2.3,\"accuracy\":0.1}\n",
    )
    .unwrap();
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", s(&a_ck), "--out", s(&c)],
    );
    assert_refused(
        &o,
        &format!(
            "{}: holds another run (train-log.jsonl: a run of 99 steps, this one has 10)",
            c.display()
        ),
    );
    std::fs::remove_file(c.join("train-log.jsonl")).unwrap();
    std::fs::write(c.join("model.fmnm"), &b_model).unwrap();
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", s(&a_ck), "--out", s(&c)],
    );
    assert_refused(
        &o,
        "holds another run (model.fmnm: no checkpoint or log of this run beside it)",
    );
}

#[test]
fn a_diverging_run_stops_with_exit_1_and_saves_no_nan_and_its_log_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--out",
            s(&out),
            "--lr",
            "1e30",
            "--steps",
            "30",
            "--checkpoint-every",
            "1",
            "--threads",
            "2",
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: {}: training diverged at step ",
            out.display()
        )) && last.contains("(loss is NaN)")
            && last.ends_with(&format!(
                "the last good checkpoint is {}",
                out.join("checkpoint-0000001.fmck").display()
            )),
        "{err}"
    );
    assert!(
        !out.join("model.fmnm").exists(),
        "a diverged model was written"
    );
    let cks = checkpoint_names(&out);
    assert!(!cks.is_empty());
    for ck in &cks {
        let state =
            fmnist_train::checkpoint::load_run::<fmnist_train::registry::TrainLeNet>(&out.join(ck))
                .unwrap();
        assert!(
            state.params.iter().all(|w| w.is_finite()),
            "{ck} holds non-finite weights"
        );
    }
    let log = std::fs::read_to_string(out.join("train-log.jsonl")).unwrap();
    assert!(log.contains("\"loss\":null"), "{log}");

    // The run's own log plots, the diverged step as a gap.
    let figures = tmp.path().join("figures");
    let o = run(
        "fmnist-train",
        &[
            "plot",
            "--log",
            s(&out.join("train-log.jsonl")),
            "--out",
            s(&figures),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(figures.join("loss.png").is_file() && figures.join("accuracy.png").is_file());
}
