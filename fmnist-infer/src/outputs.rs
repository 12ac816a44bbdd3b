//! The output files of a command: checked before any work is done, then written all or none.
//!
//! [`check`] refuses, as bad input (exit code 2), an output path that cannot be a file the
//! command writes: its folder is missing or is not a folder, it is an existing folder, FIFO,
//! device or socket, it names the same file as another output, or the same file as an input
//! (compared after resolving symlinks and `..`). [`write_all`] writes every output to a temp
//! file beside it, then renames them into place; if any step fails, the outputs already renamed
//! are put back as they were (the files they replaced restored, new ones removed) and no temp
//! file is left, so a failed command leaves its outputs as it found them.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A path given on the command line: the flag that named it (`--out`, or `IMAGE` for a
/// positional argument) and the path.
pub type Named<'a> = (&'a str, &'a Path);

/// Why an output cannot be written.
#[derive(Debug)]
pub struct OutputError {
    /// The output file.
    pub path: PathBuf,
    /// What is wrong (without the path).
    pub problem: String,
    /// True when the user can fix it by giving another path (exit 2); false for failures such as
    /// a full disk (exit 1).
    pub bad_input: bool,
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for OutputError {}

fn bad(path: &Path, problem: impl Into<String>) -> OutputError {
    OutputError {
        path: path.to_owned(),
        problem: problem.into(),
        bad_input: true,
    }
}

/// True when a failed write is the user's to fix (a missing or read-only folder, a folder
/// where the file should be): exit 2. A full disk and the like are not: exit 1.
pub fn is_bad_output(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::InvalidInput
    )
}

/// The folder an output goes into (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The file `path` names, symlinks and `..` resolved: the file itself when it exists, else its
/// resolved folder joined with its name. `None` when the folder cannot be resolved.
fn identity(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    std::fs::canonicalize(folder(path))
        .ok()
        .map(|d| d.join(name))
}

/// Checks one output path (see the module documentation).
pub fn check_one(path: &Path) -> Result<(), OutputError> {
    if path.file_name().is_none() {
        return Err(bad(path, "cannot write: not a file name"));
    }
    let dir = folder(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(bad(
                path,
                format!("cannot write: {} is not a directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(bad(
                path,
                format!("cannot write: no directory {}", dir.display()),
            ));
        }
        Err(e) => return Err(bad(path, format!("cannot write: {}: {e}", dir.display()))),
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(bad(path, "cannot write: is a directory")),
        Ok(m) if !m.is_file() => Err(bad(
            path,
            "cannot write: exists and is not a regular file (a FIFO, device or socket)",
        )),
        _ => Ok(()),
    }
}

/// Checks `outputs` before any work: each can be written (see [`check_one`]), no two name the
/// same file, and none names the same file as one of `inputs`.
pub fn check(outputs: &[Named<'_>], inputs: &[Named<'_>]) -> Result<(), OutputError> {
    for (_, p) in outputs {
        check_one(p)?;
    }
    let ids: Vec<Option<PathBuf>> = outputs.iter().map(|(_, p)| identity(p)).collect();
    for (i, (flag, p)) in outputs.iter().enumerate() {
        let Some(id) = &ids[i] else { continue };
        if let Some(j) = (0..i).find(|&j| ids[j].as_ref() == Some(id)) {
            return Err(bad(
                p,
                format!(
                    "given as two outputs ({} and {flag}); each output needs its own file",
                    outputs[j].0
                ),
            ));
        }
        if let Some((in_flag, _)) = inputs
            .iter()
            .find(|(_, q)| std::fs::canonicalize(q).ok().as_ref() == Some(id))
        {
            return Err(bad(
                p,
                format!("{flag} is also the input {in_flag}; refusing to overwrite it"),
            ));
        }
    }
    Ok(())
}

/// A name beside `path` for a temp or backup file of this process.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    folder(path).join(format!(".{name}.{}.{tag}", std::process::id()))
}

fn failed(path: &Path, e: io::Error) -> OutputError {
    OutputError {
        path: path.to_owned(),
        problem: format!("cannot write: {e}"),
        bad_input: is_bad_output(&e),
    }
}

fn write_temp(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_folder(path: &Path) {
    if let Ok(d) = std::fs::File::open(folder(path)) {
        let _ = d.sync_all();
    }
}

/// Writes every `(path, bytes)` or none of them (see the module documentation). The paths
/// should have passed [`check`].
pub fn write_all(files: &[(&Path, &[u8])]) -> Result<(), OutputError> {
    // 1. Every file to a temp file beside it.
    let temps: Vec<PathBuf> = files.iter().map(|(p, _)| sibling(p, "tmp")).collect();
    for (i, ((path, bytes), tmp)) in files.iter().zip(&temps).enumerate() {
        if let Err(e) = write_temp(tmp, bytes) {
            for t in &temps[..=i] {
                let _ = std::fs::remove_file(t);
            }
            return Err(failed(path, e));
        }
    }
    // 2. Into place, keeping each replaced file as a backup until all are in.
    let mut done: Vec<(usize, Option<PathBuf>)> = Vec::new();
    let mut failure = None;
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        let backup = path.is_file().then(|| sibling(path, "old"));
        let step = match &backup {
            // A hard link where the file system has them, else a copy (FAT, say).
            Some(b) => std::fs::hard_link(path, b).or_else(|_| std::fs::copy(path, b).map(drop)),
            None => Ok(()),
        }
        .and_then(|()| std::fs::rename(tmp, path));
        match step {
            Ok(()) => done.push((i, backup)),
            Err(e) => {
                if let Some(b) = backup {
                    let _ = std::fs::remove_file(b);
                }
                failure = Some(failed(path, e));
                break;
            }
        }
    }
    if let Some(err) = failure {
        // 3a. Undo: restore what was replaced, remove what was new, drop the temps.
        for (i, backup) in done.iter().rev() {
            let path = files[*i].0;
            let _ = match backup {
                Some(b) => std::fs::rename(b, path),
                None => std::fs::remove_file(path),
            };
        }
        for t in &temps {
            let _ = std::fs::remove_file(t);
        }
        return Err(err);
    }
    // 3b. All in place: drop the backups, make the renames durable.
    for (i, backup) in &done {
        if let Some(b) = backup {
            let _ = std::fs::remove_file(b);
        }
        sync_folder(files[*i].0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn check_refuses_each_bad_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("in.fmnm");
        std::fs::write(&input, b"model").unwrap();
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = |outs: &[Named<'_>]| {
            let e = check(outs, &[("--checkpoint", &input)]).unwrap_err();
            assert!(e.bad_input);
            e.to_string()
        };
        assert!(err(&[("--out", &d.join("none/x"))]).contains("no directory"));
        assert!(err(&[("--out", &input.join("x"))]).contains("is not a directory"));
        assert!(err(&[("--out", &sub)]).contains("is a directory"));
        assert!(err(&[("--out", Path::new("/"))]).contains("not a file name"));
        let same = sub.join("../out.fmq");
        let e = err(&[("--out", &d.join("out.fmq")), ("--folded-out", &same)]);
        assert!(
            e.contains("given as two outputs (--out and --folded-out)"),
            "{e}"
        );
        let e = err(&[("--out", &sub.join("../in.fmnm"))]);
        assert!(e.contains("--out is also the input --checkpoint"), "{e}");
        std::os::unix::fs::symlink(&input, d.join("link")).unwrap();
        assert!(err(&[("--out", &d.join("link"))]).contains("also the input"));
        check(
            &[("--out", &d.join("a")), ("--folded-out", &sub.join("a"))],
            &[("--checkpoint", &input)],
        )
        .unwrap();
    }

    #[test]
    fn write_all_writes_every_file_or_restores_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (a, b) = (d.join("a"), d.join("b"));
        write_all(&[(&a, b"new a"), (&b, b"new b")]).unwrap();
        assert_eq!(names(d), ["a", "b"]);
        std::fs::write(&a, b"old a").unwrap();
        std::fs::remove_file(&b).unwrap();
        // The second file cannot be renamed into place: a folder stands there.
        let c = d.join("c");
        std::fs::create_dir(&c).unwrap();
        std::fs::write(c.join("keep"), b"").unwrap();
        let e = write_all(&[(&a, b"newer a"), (&b, b"x"), (&c, b"y")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot write", c.display()))
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(names(d), ["a", "c"]);
        // A temp file that cannot be created (missing folder) leaves nothing either.
        let e = write_all(&[(&a, b"newer a"), (&d.join("none/z"), b"z")]).unwrap_err();
        assert!(e.bad_input, "{e}");
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(names(d), ["a", "c"]);
    }
}
