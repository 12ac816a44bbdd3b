//! Fashion-MNIST loading: the four IDX files, gzip-compressed or raw, fully validated.
//!
//! Where the files are looked for, in order: `--data DIR`, `$FMNIST_DATA`, `./data/fashion-mnist`,
//! `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist` package).

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use fmnist_core::lenet::{IMAGE_PIXELS, IMAGE_SIDE};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The largest count a header may claim (decompression stops there: no gzip bomb).
pub const MAX_IMAGES: usize = 1_000_000;

/// The environment variable naming the data directory.
pub const DATA_ENV: &str = "FMNIST_DATA";
/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The project-local default.
pub const LOCAL_DIR: &str = "data/fashion-mnist";

/// Training or test half of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// 60,000 training images.
    Train,
    /// 10,000 test images.
    Test,
}

impl Split {
    /// File stem prefix: `train` or `t10k`.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Images and labels of one split.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Row-major 28x28 u8 images.
    pub images: Vec<[u8; IMAGE_PIXELS]>,
    /// Labels 0..=9, one per image.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// What is wrong with the data.
#[derive(Debug)]
pub enum DataError {
    /// None of the candidate directories holds the files.
    NotFound {
        /// Every directory tried, with the reason it was passed over.
        tried: Vec<(PathBuf, String)>,
    },
    /// A file could not be read.
    Io(PathBuf, std::io::Error),
    /// A file was read but its content is wrong.
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::NotFound { tried } => {
                // One line: every place tried with its reason, then how to get the data.
                write!(f, "Fashion-MNIST not found: ")?;
                for (i, (dir, why)) in tried.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{}: {why}", dir.display())?;
                }
                write!(
                    f,
                    " (get it with `apt-get install dataset-fashion-mnist` on Debian, or download \
                     the four *-ubyte.gz files of github.com/zalandoresearch/fashion-mnist \
                     (data/fashion) into ./data/fashion-mnist, or point --data or ${DATA_ENV} at \
                     them)"
                )
            }
            DataError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            DataError::Invalid { file, problem } => write!(f, "{}: {problem}", file.display()),
        }
    }
}

impl std::error::Error for DataError {}

/// Why `p` cannot be read as a data file, or `None` when nothing is there at all.
fn unusable(p: &Path) -> Option<String> {
    let name = p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Some(format!("{name} is a directory")),
        Ok(_) => Some(format!("{name} is not a regular file")),
        // A symlink whose target is missing or which loops: say so, not "missing".
        Err(e) if std::fs::symlink_metadata(p).is_ok() => {
            Some(format!("{name} is a broken symlink ({e})"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("{name}: {e}")),
    }
}

/// The file of `split` and `kind` (`images-idx3` or `labels-idx1`) in `dir`: `.gz` or raw, a
/// regular file (or a link to one). `Err` says why neither name will do: missing, or there but a
/// directory, a FIFO, a broken or looping symlink, unreadable.
fn find_file(dir: &Path, split: Split, kind: &str) -> Result<PathBuf, String> {
    let stem = format!("{}-{kind}-ubyte", split.prefix());
    let candidates = [dir.join(format!("{stem}.gz")), dir.join(&stem)];
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let reasons: Vec<String> = candidates.iter().filter_map(|p| unusable(p)).collect();
    if reasons.is_empty() {
        Err(format!("missing {stem}[.gz]"))
    } else {
        Err(reasons.join(", "))
    }
}

/// Why `dir` is not a data directory for `splits`, or `None` when their files are all there.
fn missing_files(dir: &Path, splits: &[Split]) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Some("not a directory".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some("no such directory".into());
        }
        Err(e) => return Some(e.to_string()),
    }
    let mut why = Vec::new();
    for &split in splits {
        for kind in ["images-idx3", "labels-idx1"] {
            if let Err(w) = find_file(dir, split, kind) {
                why.push(w);
            }
        }
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Resolves the data directory: `cli`, else `$FMNIST_DATA`, else `./data/fashion-mnist`, else
/// the Debian package's directory. An explicitly named directory (flag or variable) must hold the
/// files: a typo is reported, not silently replaced by another directory. The directory must hold
/// both splits; [`locate_splits`] asks for fewer.
pub fn locate(cli: Option<&Path>) -> Result<PathBuf, DataError> {
    locate_splits(cli, &[Split::Train, Split::Test])
}

/// As [`locate`], for a command that reads only `splits` (inference reads only the test set, so a
/// folder holding just the two `t10k-*` files will do).
pub fn locate_splits(cli: Option<&Path>, splits: &[Split]) -> Result<PathBuf, DataError> {
    let explicit = cli.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(DATA_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let candidates = match explicit {
        Some(dir) => vec![dir],
        None => vec![PathBuf::from(LOCAL_DIR), PathBuf::from(DEBIAN_DIR)],
    };
    let mut tried = Vec::new();
    for dir in candidates {
        match missing_files(&dir, splits) {
            None => return Ok(dir),
            Some(why) => tried.push((dir, why)),
        }
    }
    Err(DataError::NotFound { tried })
}

/// Gunzips `bytes` when they start with the gzip magic (all members, as `gzip -d` does),
/// stopping after `limit + 1` bytes of output so a small input cannot inflate without bound (the
/// extra byte lets the parser report "bytes after"); other bytes are returned as they are.
/// `Err` holds the reason the gzip data is bad.
pub fn decode_maybe_gz(bytes: &[u8], limit: u64) -> Result<Cow<'_, [u8]>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("bad gzip data: {e}"))?;
    Ok(Cow::Owned(out))
}

/// The bytes of an IDX file, gunzipped when they start with the gzip magic (whatever the file's
/// name). Inflation stops one byte past what the header announces (`header` bytes, then the
/// count at bytes 4..8, capped at [`MAX_IMAGES`], times `record` bytes), so a small file cannot
/// inflate without bound and the parser can still report trailing data. `Err` holds the reason
/// the gzip data is bad.
pub fn decode_idx(bytes: &[u8], header: usize, record: usize) -> Result<Cow<'_, [u8]>, String> {
    let head = decode_maybe_gz(bytes, header as u64)?;
    let n = if head.len() >= 8 {
        (be_u32(&head, 4) as usize).min(MAX_IMAGES)
    } else {
        0
    };
    decode_maybe_gz(bytes, (header + n * record) as u64)
}

/// Reads an IDX file whole through [`decode_idx`].
fn read_idx(path: &Path, header: usize, record: usize) -> Result<Vec<u8>, DataError> {
    let raw = crate::inputs::read(path).map_err(|e| DataError::Io(path.to_owned(), e))?;
    match decode_idx(&raw, header, record) {
        Ok(Cow::Owned(out)) => Ok(out),
        Ok(Cow::Borrowed(_)) => Ok(raw),
        Err(problem) => Err(invalid(path, problem)),
    }
}

fn invalid(file: &Path, problem: impl Into<String>) -> DataError {
    DataError::Invalid {
        file: file.to_owned(),
        problem: problem.into(),
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The one rule for a header's count, images or labels: between 1 and [`MAX_IMAGES`]. An empty
/// set is refused here, at the reader, so no command trains, evaluates, calibrates or benchmarks
/// on zero images (nor divides by their count).
fn check_count(file: &Path, n: usize, what: &str) -> Result<(), DataError> {
    if n == 0 {
        return Err(invalid(
            file,
            format!("header says 0 {what}: the data set is empty"),
        ));
    }
    if n > MAX_IMAGES {
        return Err(invalid(
            file,
            format!("header says {n} {what}, more than the {MAX_IMAGES} accepted"),
        ));
    }
    Ok(())
}

/// Parses IDX image bytes: magic 0x803, 28x28, exact length.
pub fn parse_images(file: &Path, b: &[u8]) -> Result<Vec<[u8; IMAGE_PIXELS]>, DataError> {
    if b.len() < 16 {
        return Err(invalid(
            file,
            format!("truncated: {} bytes, an image header needs 16", b.len()),
        ));
    }
    let magic = be_u32(b, 0);
    if magic != IMAGES_MAGIC {
        return Err(invalid(
            file,
            format!("bad magic {magic:#010x}, expected {IMAGES_MAGIC:#010x} (IDX u8 images)"),
        ));
    }
    let (n, rows, cols) = (
        be_u32(b, 4) as usize,
        be_u32(b, 8) as usize,
        be_u32(b, 12) as usize,
    );
    if rows != IMAGE_SIDE || cols != IMAGE_SIDE {
        return Err(invalid(
            file,
            format!("images are {rows}x{cols}, expected 28x28"),
        ));
    }
    check_count(file, n, "images")?;
    let body = &b[16..];
    let expected = n * IMAGE_PIXELS;
    if body.len() < expected {
        return Err(invalid(
            file,
            format!(
                "truncated: header says {n} images, found {} ({} bytes of pixels)",
                body.len() / IMAGE_PIXELS,
                body.len()
            ),
        ));
    }
    if body.len() > expected {
        return Err(invalid(
            file,
            format!(
                "{} bytes after the {n} images the header announces",
                body.len() - expected
            ),
        ));
    }
    Ok(body
        .chunks_exact(IMAGE_PIXELS)
        .map(|c| c.try_into().expect("chunks_exact gives 784 bytes"))
        .collect())
}

/// Parses IDX label bytes: magic 0x801, labels 0..=9, exact length.
pub fn parse_labels(file: &Path, b: &[u8]) -> Result<Vec<u8>, DataError> {
    if b.len() < 8 {
        return Err(invalid(
            file,
            format!("truncated: {} bytes, a label header needs 8", b.len()),
        ));
    }
    let magic = be_u32(b, 0);
    if magic != LABELS_MAGIC {
        return Err(invalid(
            file,
            format!("bad magic {magic:#010x}, expected {LABELS_MAGIC:#010x} (IDX u8 labels)"),
        ));
    }
    let n = be_u32(b, 4) as usize;
    check_count(file, n, "labels")?;
    let body = &b[8..];
    if body.len() < n {
        return Err(invalid(
            file,
            format!("truncated: header says {n} labels, found {}", body.len()),
        ));
    }
    if body.len() > n {
        return Err(invalid(
            file,
            format!(
                "{} bytes after the {n} labels the header announces",
                body.len() - n
            ),
        ));
    }
    if let Some(i) = body.iter().position(|&l| l > 9) {
        return Err(invalid(
            file,
            format!("label {} at index {i} is out of range 0..=9", body[i]),
        ));
    }
    Ok(body.to_vec())
}

/// Loads one split from `dir`, checking that image and label counts agree.
pub fn load(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let find = |kind| {
        find_file(dir, split, kind).map_err(|why| DataError::NotFound {
            tried: vec![(dir.to_owned(), why)],
        })
    };
    let images_path = find("images-idx3")?;
    let labels_path = find("labels-idx1")?;
    let images = parse_images(&images_path, &read_idx(&images_path, 16, IMAGE_PIXELS)?)?;
    let labels = parse_labels(&labels_path, &read_idx(&labels_path, 8, 1)?)?;
    if images.len() != labels.len() {
        return Err(invalid(
            &labels_path,
            format!(
                "{} labels but {} has {} images",
                labels.len(),
                images_path.display(),
                images.len()
            ),
        ));
    }
    Ok(Dataset { images, labels })
}

/// Resolves the directory and loads both splits.
pub fn load_both(cli: Option<&Path>) -> Result<(Dataset, Dataset), DataError> {
    let dir = locate(cli)?;
    Ok((load(&dir, Split::Train)?, load(&dir, Split::Test)?))
}

/// IDX bytes for images (for tests and tools).
pub fn encode_images(images: &[[u8; IMAGE_PIXELS]]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + images.len() * IMAGE_PIXELS);
    for v in [
        IMAGES_MAGIC,
        images.len() as u32,
        IMAGE_SIDE as u32,
        IMAGE_SIDE as u32,
    ] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    images.iter().for_each(|i| b.extend_from_slice(i));
    b
}

/// IDX bytes for labels (for tests and tools).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + labels.len());
    b.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn p() -> &'static Path {
        Path::new("t10k-labels-idx1-ubyte.gz")
    }

    fn images(n: usize) -> Vec<[u8; IMAGE_PIXELS]> {
        (0..n).map(|i| [i as u8; IMAGE_PIXELS]).collect()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write_set(dir: &Path, split: Split, imgs: &[u8], labels: &[u8], compress: bool) {
        let (i, l) = (
            format!("{}-images-idx3-ubyte", split.prefix()),
            format!("{}-labels-idx1-ubyte", split.prefix()),
        );
        if compress {
            std::fs::write(dir.join(i + ".gz"), gz(imgs)).unwrap();
            std::fs::write(dir.join(l + ".gz"), gz(labels)).unwrap();
        } else {
            std::fs::write(dir.join(i), imgs).unwrap();
            std::fs::write(dir.join(l), labels).unwrap();
        }
    }

    fn err(r: Result<impl fmt::Debug, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn good_files_parse() {
        let imgs = images(3);
        assert_eq!(parse_images(p(), &encode_images(&imgs)).unwrap(), imgs);
        assert_eq!(
            parse_labels(p(), &encode_labels(&[0, 9, 4])).unwrap(),
            vec![0, 9, 4]
        );
    }

    #[test]
    fn truncated_labels_name_file_and_counts() {
        let mut b = encode_labels(&[1; 10_000]);
        b.truncate(b.len() - 2);
        assert_eq!(
            err(parse_labels(p(), &b)),
            "t10k-labels-idx1-ubyte.gz: truncated: header says 10000 labels, found 9998"
        );
        assert!(err(parse_labels(p(), &b[..5])).contains("truncated: 5 bytes"));
    }

    #[test]
    fn each_bad_header_is_specific() {
        let mut b = encode_images(&images(2));
        b[3] = 0x01;
        assert!(err(parse_images(p(), &b)).contains("bad magic 0x00000801"));
        let mut b = encode_images(&images(2));
        b[11] = 29;
        b[15] = 29;
        assert!(err(parse_images(p(), &b)).contains("images are 29x29, expected 28x28"));
        let mut b = encode_images(&images(2));
        b.truncate(b.len() - 1);
        assert!(err(parse_images(p(), &b)).contains("truncated: header says 2 images, found 1"));
        let mut b = encode_images(&images(2));
        b.push(0);
        assert!(err(parse_images(p(), &b)).contains("1 bytes after the 2 images"));
        let mut b = encode_images(&images(0));
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(err(parse_images(p(), &b)).contains("more than the 1000000 accepted"));
        assert!(
            err(parse_labels(p(), &encode_labels(&[1, 10])))
                .contains("label 10 at index 1 is out of range 0..=9")
        );
        assert!(
            err(parse_labels(p(), &encode_images(&images(1)))).contains("bad magic 0x00000803")
        );
        assert_eq!(
            err(parse_images(p(), &encode_images(&images(0)))),
            "t10k-labels-idx1-ubyte.gz: header says 0 images: the data set is empty"
        );
        assert!(
            err(parse_labels(p(), &encode_labels(&[])))
                .contains("header says 0 labels: the data set is empty")
        );
        let mut b = encode_labels(&[1, 2]);
        b.push(3);
        assert!(err(parse_labels(p(), &b)).contains("1 bytes after the 2 labels"));
    }

    #[test]
    fn loads_gz_and_raw_and_checks_counts_agree() {
        let dir = tempfile::tempdir().unwrap();
        write_set(
            dir.path(),
            Split::Train,
            &encode_images(&images(4)),
            &encode_labels(&[0, 1, 2, 3]),
            true,
        );
        write_set(
            dir.path(),
            Split::Test,
            &encode_images(&images(2)),
            &encode_labels(&[5, 6]),
            false,
        );
        let (train, test) = load_both(Some(dir.path())).unwrap();
        assert_eq!(train.labels, vec![0, 1, 2, 3]);
        assert_eq!(train.images[3], [3; IMAGE_PIXELS]);
        assert_eq!(test.len(), 2);

        write_set(
            dir.path(),
            Split::Test,
            &encode_images(&images(2)),
            &encode_labels(&[5, 6, 7]),
            false,
        );
        let e = err(load(dir.path(), Split::Test));
        assert!(
            e.contains("t10k-labels-idx1-ubyte: 3 labels but") && e.contains("has 2 images"),
            "{e}"
        );
    }

    #[test]
    fn gzip_bomb_is_cut_off() {
        // A header claiming 1 image followed by 100 MB of zeros compresses to ~100 KB.
        let mut b = encode_images(&images(1));
        b.resize(16 + 100_000_000, 0);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("train-images-idx3-ubyte.gz");
        std::fs::write(&f, gz(&b)).unwrap();
        // Inflation stops one byte past what the header announces.
        let bytes = read_idx(&f, 16, IMAGE_PIXELS).unwrap();
        assert_eq!(bytes.len(), 16 + IMAGE_PIXELS + 1);
        assert!(err(parse_images(&f, &bytes)).contains("1 bytes after the 1 images"));
        // A header claiming more than MAX_IMAGES inflates no further than MAX_IMAGES allow,
        // and one cut short is read whole (the parser reports it truncated).
        let mut b = encode_images(&images(0));
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        b.resize(16 + 3 * IMAGE_PIXELS, 0);
        std::fs::write(&f, gz(&b)).unwrap();
        assert_eq!(read_idx(&f, 16, IMAGE_PIXELS).unwrap(), b);
        let l = dir.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&l, gz(&[0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3, 4, 5])).unwrap();
        assert_eq!(read_idx(&l, 8, 1).unwrap().len(), 8 + 2 + 1);
        std::fs::write(&l, gz(&[0, 0, 8])).unwrap();
        assert_eq!(read_idx(&l, 8, 1).unwrap().len(), 3);
    }

    #[test]
    fn corrupt_gzip_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t10k-images-idx3-ubyte.gz");
        let mut g = gz(&encode_images(&images(3)));
        let n = g.len();
        g.truncate(n / 2);
        std::fs::write(&f, g).unwrap();
        assert!(err(read_idx(&f, 16, IMAGE_PIXELS)).contains("bad gzip data"));
    }

    #[test]
    fn decode_maybe_gz_passes_raw_through_and_bounds_gzip() {
        let raw = encode_labels(&[1, 2, 3]);
        assert!(matches!(decode_maybe_gz(&raw, 0), Ok(Cow::Borrowed(b)) if b == &raw[..]));
        assert_eq!(&*decode_maybe_gz(&gz(&raw), 1 << 20).unwrap(), &raw[..]);
        // Output stops one byte past the limit; a huge limit does not overflow.
        assert_eq!(decode_maybe_gz(&gz(&raw), 4).unwrap().len(), 5);
        assert_eq!(&*decode_maybe_gz(&gz(&raw), u64::MAX).unwrap(), &raw[..]);
        assert!(
            decode_maybe_gz(&[0x1f, 0x8b], 10)
                .unwrap_err()
                .contains("bad gzip data")
        );
    }

    #[test]
    fn a_test_only_folder_serves_commands_that_read_only_the_test_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), b"x").unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), b"x").unwrap();
        let e = err(locate(Some(dir.path())));
        assert!(e.contains("missing train-images-idx3-ubyte[.gz]"), "{e}");
        assert_eq!(
            locate_splits(Some(dir.path()), &[Split::Test]).unwrap(),
            dir.path()
        );
        let e = err(locate_splits(Some(dir.path()), &[Split::Train]));
        assert!(e.contains("missing train-labels-idx1-ubyte[.gz]"), "{e}");
    }

    #[test]
    fn missing_directory_explains_how_to_get_the_data() {
        let e = err(locate(Some(Path::new("/nonexistent/fm"))));
        assert!(e.contains("/nonexistent/fm: no such directory"), "{e}");
        assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = err(locate(Some(dir.path())));
        assert!(e.contains("missing train-images-idx3-ubyte[.gz]"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        // Names that exist but cannot be read as files are not "missing".
        let d = dir.path();
        std::fs::create_dir(d.join("train-images-idx3-ubyte")).unwrap();
        std::os::unix::fs::symlink("loop", d.join("train-labels-idx1-ubyte.gz")).unwrap();
        std::os::unix::fs::symlink("train-labels-idx1-ubyte.gz", d.join("loop")).unwrap();
        let fifo = d.join("t10k-images-idx3-ubyte");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = err(locate(Some(d)));
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("train-images-idx3-ubyte is a directory"), "{e}");
        assert!(
            e.contains("train-labels-idx1-ubyte.gz is a broken symlink"),
            "{e}"
        );
        assert!(
            e.contains("t10k-images-idx3-ubyte is not a regular file"),
            "{e}"
        );
        assert!(e.contains("missing t10k-labels-idx1-ubyte[.gz]"), "{e}");
        let file = d.join("t10k-labels-idx1-ubyte");
        std::fs::write(&file, b"").unwrap();
        assert!(err(locate(Some(&file))).contains("not a directory"));
    }
}
