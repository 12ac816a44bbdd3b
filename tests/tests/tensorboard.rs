//! `train` and `resume` write TensorBoard events beside the JSON log: every scalar equals the
//! log's, for LeNet-BN and the wide CNN, a resumed run continues the curves without duplicates,
//! `--no-tensorboard` writes none, and the event file belongs to the run folder (refused,
//! overwritten, like the other run files).

use std::collections::BTreeMap;
use std::path::Path;

use fmnist_tests::{assert_bad_input, run, text};
use fmnist_train::shared::log::{LogRecord, RecordKind};
use fmnist_train::tensorboard::{self, tags};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: std::process::Output) {
    assert!(o.status.success(), "{}", text(&o).1);
}

/// Every scalar of the event file, keyed by (tag, step); panics on a duplicate.
fn events(dir: &Path) -> BTreeMap<(String, u64), f32> {
    let mut m = BTreeMap::new();
    let events = tensorboard::read(&dir.join(tensorboard::FILE_NAME)).unwrap();
    for (step, tag, v) in tensorboard::scalars(&events) {
        assert!(
            m.insert((tag.clone(), step), v).is_none(),
            "{tag} at step {step} twice"
        );
    }
    m
}

/// The scalars the JSON log says the event file must hold (all but images/s, which the log
/// does not record).
fn from_log(dir: &Path) -> BTreeMap<(String, u64), f64> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("train-log.jsonl"))
        .unwrap()
        .lines()
    {
        let r = LogRecord::parse(line).unwrap_or_else(|_| panic!("bad log line {line}"));
        let mut put = |tag: &str, v: f64| m.insert((tag.to_string(), r.step), v);
        match r.kind {
            RecordKind::Step { loss, accuracy, lr } => {
                put(tags::TRAIN_LOSS, loss);
                put(tags::TRAIN_ACCURACY, accuracy);
                put(tags::LEARNING_RATE, lr.unwrap() as f64);
            }
            RecordKind::Eval {
                test_accuracy,
                test_loss,
                ..
            } => {
                put(tags::TEST_ACCURACY, test_accuracy);
                put(tags::TEST_LOSS, test_loss);
            }
        }
    }
    m
}

/// The event file and the log agree, scalar by scalar (the log rounds to 6 decimals, the learning
/// rate to 7 significant digits), and images/s is there at every evaluation.
fn assert_events_match_log(dir: &Path, steps: u64, evals: &[u64]) {
    let ev = events(dir);
    let log = from_log(dir);
    for ((tag, step), want) in &log {
        let got = *ev
            .get(&(tag.clone(), *step))
            .unwrap_or_else(|| panic!("no {tag} at step {step}"));
        let tol = if tag == tags::LEARNING_RATE {
            want.abs() * 1e-6
        } else {
            6e-7 + want.abs() * 1e-7
        };
        assert!(
            (got as f64 - want).abs() <= tol,
            "{tag} at step {step}: events {got}, log {want}"
        );
    }
    let ips: Vec<u64> = ev
        .iter()
        .filter(|((t, _), v)| t == tags::IMAGES_PER_SECOND && **v > 0.0)
        .map(|((_, s), _)| *s)
        .collect();
    assert_eq!(ips, evals);
    // Nothing in the events that the log does not have, but images/s.
    assert_eq!(ev.len(), log.len() + evals.len());
    let train_steps: Vec<u64> = ev
        .keys()
        .filter(|(t, _)| t == tags::TRAIN_LOSS)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(train_steps, (1..=steps).collect::<Vec<_>>());
}

#[test]
fn lenet_events_equal_the_log_and_a_resume_continues_them_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--steps",
            "30",
            "--checkpoint-every",
            "10",
            "--threads",
            "2",
            "--out",
            s(&out),
        ];
        a.extend_from_slice(extra);
        run("fmnist-train", &a)
    };
    ok(train(&[]));
    assert_events_match_log(&out, 30, &[10, 20, 30]);
    // Resume from step 10: steps 11..=30 are trained again and replace their events.
    let before = events(&out);
    ok(run(
        "fmnist-train",
        &[
            "resume",
            "--checkpoint",
            s(&out.join("checkpoint-0000010.fmck")),
            "--threads",
            "2",
        ],
    ));
    assert_events_match_log(&out, 30, &[10, 20, 30]);
    // Same seed, same steps: the training curves are the same values.
    let after = events(&out);
    for (k, v) in &before {
        if k.0 != tags::IMAGES_PER_SECOND {
            assert_eq!(after[k].to_bits(), v.to_bits(), "{k:?}");
        }
    }

    // The event file is a run file: a new run into the folder is refused, naming it...
    std::fs::remove_file(out.join("train-log.jsonl")).unwrap();
    std::fs::remove_file(out.join("model.fmnm")).unwrap();
    for n in [10, 20, 30] {
        std::fs::remove_file(out.join(format!("checkpoint-{n:07}.fmck"))).unwrap();
    }
    let o = train(&[]);
    assert_bad_input(&o, "events.out.tfevents.fmnist-train");
    // ... and --overwrite replaces it; --no-tensorboard writes none.
    ok(train(&["--overwrite", "--no-tensorboard"]));
    assert!(!out.join(tensorboard::FILE_NAME).exists());
}

#[test]
fn wide_events_equal_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("wide");
    ok(run(
        "fmnist-train",
        &[
            "train",
            "--model",
            "wide",
            "--steps",
            "4",
            "--batch",
            "16",
            "--checkpoint-every",
            "2",
            "--threads",
            "2",
            "--out",
            s(&out),
        ],
    ));
    assert_events_match_log(&out, 4, &[2, 4]);
}
