//! The host side under QEMU, through semihosting: the command line and the data files.
//!
//! Command line (`qemu-system-arm ... -append "MODE ARGS"`, read with SYS_GET_CMDLINE; QEMU puts
//! the kernel path first, which is skipped; paths must not contain spaces):
//!
//! ```text
//! demo   IMAGES LABELS [N]   classify the first N (default 8) images, log class and cost
//! verify IMAGES LABELS OUT   classify every image, write its logits to OUT, log the accuracy
//! bench  [IMAGES]            per-layer cost of one image (the first of IMAGES, or a pattern)
//! ```
//! IMAGES and LABELS are the un-gzipped IDX files (`t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`). OUT receives, per image in order, the 10 int8 logits (10 bytes) or
//! the 10 f32 logits' bits (40 bytes, little-endian), depending on the model.

use core::ffi::CStr;

use defmt::error;
use fmnist_core::lenet::IMAGE_PIXELS;
use semihosting::fs::File;
use semihosting::io::{Read, Write};

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

fn fail(what: &str, arg: &str) -> ! {
    error!("{=str}: {=str}", what, arg);
    exit(EXIT_USAGE)
}

fn open(path: &str) -> File {
    let mut buf = [0u8; 256];
    if path.len() >= buf.len() {
        fail("path too long", path);
    }
    buf[..path.len()].copy_from_slice(path.as_bytes());
    let c = CStr::from_bytes_until_nul(&buf).unwrap_or_else(|_| fail("bad path", path));
    File::open(c).unwrap_or_else(|_| fail("cannot open", path))
}

fn create(path: &str) -> File {
    let mut buf = [0u8; 256];
    if path.len() >= buf.len() {
        fail("path too long", path);
    }
    buf[..path.len()].copy_from_slice(path.as_bytes());
    let c = CStr::from_bytes_until_nul(&buf).unwrap_or_else(|_| fail("bad path", path));
    File::create(c).unwrap_or_else(|_| fail("cannot create", path))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn images(path: &str) -> Images {
    let mut file = open(path);
    let mut h = [0u8; 16];
    if file.read_exact(&mut h).is_err()
        || be_u32(&h[0..]) != 0x0803
        || be_u32(&h[8..]) != 28
        || be_u32(&h[12..]) != 28
    {
        fail("not an IDX file of 28x28 images (un-gzipped)", path);
    }
    Images {
        file,
        count: be_u32(&h[4..]),
    }
}

fn labels(path: &str) -> Labels {
    let mut file = open(path);
    let mut h = [0u8; 8];
    if file.read_exact(&mut h).is_err() || be_u32(&h[0..]) != 0x0801 {
        fail("not an IDX label file (un-gzipped)", path);
    }
    Labels {
        file,
        count: be_u32(&h[4..]),
    }
}

impl Images {
    /// Reads the next image.
    pub fn next(&mut self, image: &mut [u8; IMAGE_PIXELS]) {
        if self.file.read_exact(image).is_err() {
            fail("read failed", "images");
        }
    }
}

impl Labels {
    /// Reads the next `out.len()` labels.
    pub fn next(&mut self, out: &mut [u8]) {
        if self.file.read_exact(out).is_err() {
            fail("read failed", "labels");
        }
    }
}

/// Writes all of `bytes` to `file`.
pub fn write(file: &mut File, bytes: &[u8]) {
    if file.write_all(bytes).is_err() {
        fail("write failed", "logits");
    }
}

/// Parses the semihosting command line and opens the files it names.
#[inline(never)]
pub fn command() -> Command {
    let args = semihosting::experimental::env::args::<512>()
        .unwrap_or_else(|_| fail("cannot read the command line", "SYS_GET_CMDLINE"));
    let mut it = (&args).map(|a| a.unwrap_or(""));
    let _kernel = it.next();
    let mode = it.next().unwrap_or("");
    let mut arg = |name: &str| it.next().unwrap_or_else(|| fail("missing argument", name));
    let cmd = match mode {
        "demo" => {
            let images = images(arg("IMAGES"));
            let labels = labels(arg("LABELS"));
            let count = it
                .next()
                .map(|n| n.parse().unwrap_or_else(|_| fail("bad count", n)))
                .unwrap_or(8);
            Command::Demo {
                images,
                labels,
                count,
            }
        }
        "verify" => {
            let images = images(arg("IMAGES"));
            let labels = labels(arg("LABELS"));
            let out = create(arg("OUT"));
            Command::Verify {
                images,
                labels,
                out,
            }
        }
        "bench" => Command::Bench {
            images: it.next().map(images),
        },
        other => fail(
            "usage: demo IMAGES LABELS [N] | verify IMAGES LABELS OUT | bench [IMAGES]; got",
            other,
        ),
    };
    if let Some(extra) = it.next() {
        fail("unexpected argument", extra);
    }
    cmd
}
