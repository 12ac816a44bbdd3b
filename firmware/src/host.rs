//! The host side under QEMU, through semihosting: the command line and the data files.
//!
//! Command line (`qemu-system-arm ... -append "MODE ARGS"`, read with SYS_GET_CMDLINE; QEMU puts
//! the kernel path first, which is skipped; paths must not contain spaces):
//!
//! ```text
//! demo   IMAGES LABELS [N]   classify the first N (default 8) images, log class and cost
//! verify IMAGES LABELS OUT [FIRST COUNT]
//!                            classify every image (or COUNT from index FIRST), write the
//!                            logits to OUT, log the accuracy
//! bench  [IMAGES]            per-layer cost of one image (the first of IMAGES, or a pattern)
//! panic | fault              end in a panic or a HardFault (tests of the failure exit)
//! ```
//! IMAGES and LABELS are the un-gzipped IDX files (`t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`). OUT receives, per image in order, the 10 int8 logits (10 bytes) or
//! the 10 f32 logits' bits (40 bytes, little-endian), depending on the model.

use core::ffi::CStr;
use core::mem::MaybeUninit;

use defmt::error;
use fmnist_core::lenet::IMAGE_PIXELS;
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom, Write};
use semihosting::sys::arm_compat::sys_get_cmdline_uninit;

use crate::{EXIT_USAGE, exit};

/// What to do, with the files already open.
pub enum Command {
    /// Classify `count` images and log each.
    Demo {
        /// Images, header read.
        images: Images,
        /// Labels, header read.
        labels: Labels,
        /// How many.
        count: u32,
    },
    /// Classify every image, write the logits.
    Verify {
        /// Images, header read.
        images: Images,
        /// Labels, header read.
        labels: Labels,
        /// Logits out.
        out: File,
    },
    /// Per-layer cost of one image.
    Bench {
        /// Where the image comes from (`None`: a fixed pattern).
        images: Option<Images>,
    },
}

/// An IDX image file positioned at its first image.
pub struct Images {
    file: File,
    /// Images in the file.
    pub count: u32,
}

/// An IDX label file positioned at its first label.
pub struct Labels {
    file: File,
    /// Labels in the file.
    pub count: u32,
}

fn fail(what: &str, arg: &[u8]) -> ! {
    error!("{=str}: {=[u8]:a}", what, arg);
    exit(EXIT_USAGE)
}

/// One NUL-terminated word of the command line (the NUL included).
type Word<'a> = &'a [u8];

fn path(w: Word<'_>) -> &CStr {
    CStr::from_bytes_with_nul(w).unwrap_or_else(|_| fail("bad path", w))
}

fn text(w: Word<'_>) -> &[u8] {
    &w[..w.len() - 1]
}

fn open(w: Word<'_>) -> File {
    File::open(path(w)).unwrap_or_else(|_| fail("cannot open", text(w)))
}

fn create(w: Word<'_>) -> File {
    File::create(path(w)).unwrap_or_else(|_| fail("cannot create", text(w)))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn images(w: Word<'_>) -> Images {
    let mut file = open(w);
    let mut h = [0u8; 16];
    if file.read_exact(&mut h).is_err()
        || be_u32(&h[0..]) != 0x0803
        || be_u32(&h[8..]) != 28
        || be_u32(&h[12..]) != 28
    {
        fail("not an IDX file of 28x28 images (un-gzipped)", text(w));
    }
    Images {
        file,
        count: be_u32(&h[4..]),
    }
}

fn labels(w: Word<'_>) -> Labels {
    let mut file = open(w);
    let mut h = [0u8; 8];
    if file.read_exact(&mut h).is_err() || be_u32(&h[0..]) != 0x0801 {
        fail("not an IDX label file (un-gzipped)", text(w));
    }
    Labels {
        file,
        count: be_u32(&h[4..]),
    }
}

impl Images {
    /// Restricts the file to images `first .. first + count` (clamped to the file).
    pub fn select(&mut self, first: u32, count: u32) {
        let first = first.min(self.count);
        if self
            .file
            .seek(SeekFrom::Start(16 + u64::from(first) * IMAGE_PIXELS as u64))
            .is_err()
        {
            fail("seek failed", b"images");
        }
        self.count = count.min(self.count - first);
    }

    /// Reads the next image.
    pub fn next(&mut self, image: &mut [u8; IMAGE_PIXELS]) {
        if self.file.read_exact(image).is_err() {
            fail("read failed", b"images");
        }
    }
}

impl Labels {
    /// Restricts the file to labels `first .. first + count` (clamped to the file).
    pub fn select(&mut self, first: u32, count: u32) {
        let first = first.min(self.count);
        if self
            .file
            .seek(SeekFrom::Start(8 + u64::from(first)))
            .is_err()
        {
            fail("seek failed", b"labels");
        }
        self.count = count.min(self.count - first);
    }

    /// Reads the next `out.len()` labels.
    pub fn next(&mut self, out: &mut [u8]) {
        if self.file.read_exact(out).is_err() {
            fail("read failed", b"labels");
        }
    }
}

/// Writes all of `bytes` to `file`.
pub fn write(file: &mut File, bytes: &[u8]) {
    if file.write_all(bytes).is_err() {
        fail("write failed", b"logits");
    }
}

fn number(w: Word<'_>) -> u32 {
    let digits = text(w);
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        fail("bad count", digits);
    }
    digits.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'))
}

/// Most words on the command line (kernel path, mode, five arguments).
const MAX_WORDS: usize = 7;

/// Parses the semihosting command line and opens the files it names. Words are split at
/// spaces in place (each space becomes the NUL ending a C string), so no path is copied.
#[inline(never)]
pub fn command() -> Command {
    let mut buf = [MaybeUninit::<u8>::uninit(); 512];
    let len = sys_get_cmdline_uninit(&mut buf[..511])
        .unwrap_or_else(|_| fail("cannot read the command line", b"SYS_GET_CMDLINE"))
        .len();
    buf[len].write(0);
    // SAFETY: the call initialised `buf[..len]` and `buf[len]` was just written.
    let line = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), len + 1) };
    let mut spans = [(0usize, 0usize); MAX_WORDS];
    let mut n = 0;
    let mut start = 0;
    for i in 0..line.len() {
        if line[i] == b' ' || line[i] == 0 {
            line[i] = 0;
            if i > start {
                if n == MAX_WORDS {
                    fail("too many arguments", &line[start..i]);
                }
                spans[n] = (start, i + 1);
                n += 1;
            }
            start = i + 1;
        }
    }
    let line: &[u8] = line;
    // Word 0 is the kernel (ELF) path QEMU puts first.
    let word = |k: usize| (k < n).then(|| &line[spans[k].0..spans[k].1]);
    let arg =
        |k: usize, name: &str| word(k).unwrap_or_else(|| fail("missing argument", name.as_bytes()));
    let mode = word(1).map(text).unwrap_or(b"");
    let (cmd, used) = match mode {
        b"demo" => (
            Command::Demo {
                images: images(arg(2, "IMAGES")),
                labels: labels(arg(3, "LABELS")),
                count: word(4).map(number).unwrap_or(8),
            },
            5,
        ),
        b"verify" => {
            let mut images = images(arg(2, "IMAGES"));
            let mut labels = labels(arg(3, "LABELS"));
            let out = create(arg(4, "OUT"));
            let mut used = 5;
            if let Some(first) = word(5).map(number) {
                let count = number(arg(6, "COUNT"));
                images.select(first, count);
                labels.select(first, count);
                used = 7;
            }
            (
                Command::Verify {
                    images,
                    labels,
                    out,
                },
                used,
            )
        }
        b"bench" => (
            Command::Bench {
                images: word(2).map(images),
            },
            3,
        ),
        // Exercise the failure exits (for the tests): a panic, and a HardFault (an undefined
        // instruction escalates to HardFault since UsageFault is not enabled).
        b"panic" => defmt::panic!("panic requested on the command line"),
        b"fault" => cortex_m::asm::udf(),
        other => fail(
            "usage: demo IMAGES LABELS [N] | verify IMAGES LABELS OUT [FIRST COUNT] | bench [IMAGES]; got",
            other,
        ),
    };
    if let Some(extra) = word(used) {
        fail("unexpected argument", text(extra));
    }
    cmd
}
