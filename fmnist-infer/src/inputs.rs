//! Reading input files: only regular files (or links to them). A FIFO would block the reader
//! forever, a directory or a device gives nonsense; each is refused with its kind named.

use std::io;
use std::path::Path;

/// Why `path` cannot be read as an input file, or `None` when it is a regular file (or a link to
/// one) or does not exist (the read itself then reports that).
fn not_regular(path: &Path) -> Option<io::Error> {
    let m = std::fs::metadata(path).ok()?;
    if m.is_file() {
        return None;
    }
    let what = if m.is_dir() {
        "is a directory"
    } else {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            "is a FIFO, not a regular file"
        } else if t.is_socket() {
            "is a socket, not a regular file"
        } else {
            "is a device, not a regular file"
        }
    };
    Some(io::Error::new(io::ErrorKind::InvalidInput, what))
}

/// [`std::fs::read`] of a regular file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    match not_regular(path) {
        Some(e) => Err(e),
        None => std::fs::read(path),
    }
}

/// [`std::fs::read_to_string`] of a regular file.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    match not_regular(path) {
        Some(e) => Err(e),
        None => std::fs::read_to_string(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_refuses_directories_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(read(&f).unwrap(), b"x");
        assert_eq!(read(dir.path()).unwrap_err().to_string(), "is a directory");
        let fifo = dir.path().join("p");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Returns at once instead of waiting for a writer.
        assert!(
            read_to_string(&fifo)
                .unwrap_err()
                .to_string()
                .contains("FIFO")
        );
        assert_eq!(
            read(&dir.path().join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
