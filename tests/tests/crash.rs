//! Crash-safe training: the trainer is killed with SIGKILL at random moments (during steps,
//! evaluations and checkpoint writes), resumed each time from its newest checkpoint, and still
//! ends with weights byte-identical to an uninterrupted run (each restart also shows that the
//! killed process's folder lock went with it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fmnist_tests::{bin, run, text};

const STEPS: &str = "150";
const ARGS: [&str; 8] = [
    "--preset",
    "fast",
    "--steps",
    STEPS,
    "--checkpoint-every",
    "10",
    "--seed",
    "5",
];

fn newest_checkpoint(dir: &Path) -> Option<PathBuf> {
    fmnist_train::run::newest_checkpoint(dir)
}

#[test]
fn killed_twenty_times_and_resumed_ends_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, crash) = (tmp.path().join("reference"), tmp.path().join("crash"));
    let mut args = vec!["train", "--out", reference.to_str().unwrap()];
    args.extend(ARGS);
    let o = run("fmnist-train", &args);
    assert!(o.status.success(), "{}", text(&o).1);
    let want = std::fs::read(reference.join("model.fmnm")).unwrap();

    // A fixed pseudo-random sequence of kill delays, 0.25 to 2 s: the first ~0.5 s of each run
    // loads the data, the rest trains, evaluates and writes checkpoints every 10 steps.
    let mut rng = fmnist_core::testutil::Lcg(0x2545_f491);
    let mut kills = 0;
    let mut resumes_from = Vec::new();
    loop {
        let mut cmd = Command::new(bin("fmnist-train"));
        match newest_checkpoint(&crash) {
            Some(ck) => {
                // Every newest checkpoint must load.
                let state =
                    fmnist_train::checkpoint::load_run::<fmnist_train::registry::TrainLeNet>(&ck)
                        .unwrap_or_else(|e| {
                            panic!("newest checkpoint after kill {kills} does not load: {e}")
                        });
                resumes_from.push(state.step);
                cmd.args([
                    "resume",
                    "--checkpoint",
                    ck.to_str().unwrap(),
                    "--out",
                    crash.to_str().unwrap(),
                ]);
            }
            None => {
                // A run killed before its first checkpoint left its log: start it over.
                cmd.args(["train", "--overwrite", "--out", crash.to_str().unwrap()])
                    .args(ARGS);
            }
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if kills >= 20 {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "final resume failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            break;
        }
        let delay = Duration::from_millis(250 + u64::from(rng.next_u32() >> 16) % 1750);
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            Some(status) => {
                // Finished before the kill: start over from scratch to keep killing.
                assert!(status.success(), "run failed before being killed");
                std::fs::remove_dir_all(&crash).unwrap();
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    eprintln!("{kills} kills; resumed from steps {resumes_from:?}");
    assert!(kills >= 20);
    assert!(
        resumes_from.iter().any(|&s| s > 0),
        "no kill landed after a checkpoint: the test did not exercise resume"
    );
    let got = std::fs::read(crash.join("model.fmnm")).unwrap();
    assert!(
        got == want,
        "weights after {kills} kills differ from the uninterrupted run"
    );
    // No temp file is left behind, and the log has each step once, in order.
    let names: Vec<String> = std::fs::read_dir(&crash)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp")),
        "temp files left: {names:?}"
    );
    let log = std::fs::read_to_string(crash.join("train-log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=150).collect::<Vec<u64>>(), "log steps");
}

/// A tmpfs of `kib` KiB mounted on a fresh directory, unmounted on drop. Needs root (CI and the
/// development machines run as root); fails loudly otherwise.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(kib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            o.status.success(),
            "cannot mount a tmpfs to simulate a full disk (needs root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let o = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_checkpoint_that_cannot_be_written_is_reported_and_the_previous_one_survives() {
    // A checkpoint is ~660 KB: the first fits in 1,000 KiB, the second does not.
    let disk = SmallDisk::new(1000);
    let out = disk.path().join("run");
    let o = run(
        "fmnist-train",
        &[
            "train",
            "--out",
            out.to_str().unwrap(),
            "--preset",
            "fast",
            "--steps",
            "30",
            "--checkpoint-every",
            "10",
            "--keep",
            "5",
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1 on a full disk: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("checkpoint-0000020.fmck") && err.contains("No space left"),
        "{err}"
    );
    let first = out.join("checkpoint-0000010.fmck");
    let state = fmnist_train::checkpoint::load_run::<fmnist_train::registry::TrainLeNet>(&first)
        .expect("the previous checkpoint is intact");
    assert_eq!(state.step, 10);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tmp") || n.contains("0000020")),
        "left behind: {names:?}"
    );

    // Read-only: resuming into it fails with a clear error and leaves the checkpoint as it was.
    let before = std::fs::read(&first).unwrap();
    disk.remount_read_only();
    let o = run(
        "fmnist-train",
        &["resume", "--checkpoint", first.to_str().unwrap()],
    );
    let (_, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1 on a read-only disk: {err}"
    );
    assert!(
        !err.contains("panicked") && err.contains("Read-only file system"),
        "{err}"
    );
    assert!(
        std::fs::read(&first).unwrap() == before,
        "the checkpoint changed"
    );
}
