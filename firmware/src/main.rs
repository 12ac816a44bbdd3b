//! fmnist firmware: Fashion-MNIST inference on a Cortex-M4F, bit-exact with the host: LeNet-BN
//! (int8 or f32) and, on the QEMU profile, the wide CNN (int8).
//!
//! Boot: paint the stack, put the FPU in IEEE mode, check the model file in its flash region and
//! pick the network by its header (refusing a bad or unsupported one with exit status 2 before
//! classifying anything), then run the mode the command line asks for (QEMU) or the demo (a
//! board). See README.md.

#![no_std]
#![no_main]

#[cfg(all(feature = "qemu", feature = "board"))]
compile_error!("features `qemu` and `board` are exclusive");
#[cfg(not(any(feature = "qemu", feature = "board")))]
compile_error!("select a profile: feature `qemu` (default) or `board`");

mod cost;
mod fpu;
#[cfg(feature = "qemu")]
mod host;
mod model;
mod net;
mod stack;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use defmt::{error, info};
use fmnist_core::CLASS_NAMES;
use fmnist_core::lenet::IMAGE_PIXELS;

#[cfg(feature = "board")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

use net::{MAX_LOGIT_BYTES, Net};

/// Exit status: a panic or a HardFault.
pub const EXIT_FAULT: i32 = 1;
/// Exit status: the model file was refused.
pub const EXIT_MODEL: i32 = 2;
/// Exit status: bad command line or host I/O failure.
pub const EXIT_USAGE: i32 = 3;

/// Ends the program: under QEMU (and `probe-rs run`) through semihosting, so the host sees
/// `code` as the exit status.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

unsafe extern "C" {
    fn DefaultHandler();
}

/// No device interrupt is ever enabled, so the vector table ends after the system exceptions
/// and one interrupt entry (cortex-m-rt insists on one): 960 bytes less than the generic
/// 240-entry table.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".vector_table.interrupts")]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [DefaultHandler];

/// Logs where the panic happened and exits with failure. The message itself is not printed:
/// formatting it would link `core::fmt` (about 5 KB of flash); file and line are enough to find it.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => error!("panicked at {=str}:{=u32}", l.file(), l.line()),
        None => error!("panicked"),
    }
    exit(EXIT_FAULT)
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    error!("HardFault at pc {=u32:#010x}", ef.pc());
    exit(EXIT_FAULT)
}

#[entry]
fn main() -> ! {
    stack::paint();
    let fpscr = fpu::ieee_mode();
    cost::start();
    info!(
        "fmnist firmware: FPSCR at boot {=u32:#010x}, stack {=usize} bytes",
        fpscr,
        stack::size()
    );

    let refused = match model::load() {
        Ok(file) => net::start(&file).err().map(model::Refusal::Format),
        Err(r) => Some(r),
    };
    if let Some(r) = refused {
        model::log_refusal(&r);
        exit(EXIT_MODEL)
    }
    info!("stack peak: {=usize} bytes", stack::peak());
    exit(0)
}

#[cfg(feature = "qemu")]
fn run(net: &dyn Net) {
    use host::Command;
    match host::command() {
        Command::Demo {
            mut images,
            mut labels,
            count,
        } => demo(net, &mut images, &mut labels, count),
        Command::Verify {
            mut images,
            mut labels,
            mut out,
        } => {
            if images.count != labels.count {
                error!("{} images but {} labels", images.count, labels.count);
                exit(EXIT_USAGE);
            }
            verify(net, &mut images, &mut labels, &mut out);
        }
        Command::Bench { images } => bench_first(net, images),
    }
}

// Each mode's image buffer lives in its own frame (`inline(never)`), not in one frame holding
// them all under the inference: the RAM peak is the demo's (firmware/README.md).

#[cfg(feature = "qemu")]
#[inline(never)]
fn demo(net: &dyn Net, images: &mut host::Images, labels: &mut host::Labels, count: u32) {
    let mut image = [0u8; IMAGE_PIXELS];
    for i in 0..count.min(images.count).min(labels.count) {
        images.next(&mut image);
        let mut label = [0u8];
        labels.next(&mut label);
        demo_one(net, i, &image, label[0]);
    }
}

#[cfg(feature = "qemu")]
#[inline(never)]
fn bench_first(net: &dyn Net, images: Option<host::Images>) {
    let mut image = pattern();
    if let Some(mut images) = images {
        images.next(&mut image);
    }
    bench(net, &image);
}

/// Images streamed per write of logits.
#[cfg(feature = "qemu")]
const CHUNK: usize = 16;

#[cfg(feature = "qemu")]
#[inline(never)]
fn verify(
    net: &dyn Net,
    images: &mut host::Images,
    labels: &mut host::Labels,
    out: &mut semihosting::fs::File,
) {
    let n = net.logit_bytes();
    let mut image = [0u8; IMAGE_PIXELS];
    let mut logits = [0u8; CHUNK * MAX_LOGIT_BYTES];
    let mut truth = [0u8; CHUNK];
    let mut correct = 0u32;
    let mut done = 0u32;
    // The inferences' summed cost (the mean instructions per image: data dependent, e.g. a
    // ReLU output ≤ 0 skips its requantization).
    let mut spent = 0u64;
    while done < images.count {
        let k = (images.count - done).min(CHUNK as u32) as usize;
        labels.next(&mut truth[..k]);
        for (j, &label) in truth[..k].iter().enumerate() {
            images.next(&mut image);
            let (class, c) = cost::measure(|| net.infer(&image, &mut logits[j * n..(j + 1) * n]));
            spent += u64::from(c);
            correct += u32::from(class == label as usize);
        }
        host::write(out, &logits[..k * n]);
        done += k as u32;
    }
    info!(
        "verify {=str}: {=u32} images, {=u32} correct ({=u32} per 10000), inference {=u64} {=str} in all",
        net.name(),
        done,
        correct,
        (correct * 10_000).checked_div(done).unwrap_or(0),
        spent,
        cost::UNIT,
    );
}

#[cfg(feature = "board")]
fn run(net: &dyn Net) {
    for (i, (image, &label)) in demo_images::IMAGES
        .iter()
        .zip(demo_images::LABELS)
        .enumerate()
    {
        demo_one(net, i as u32, image, label);
    }
    bench(net, &demo_images::IMAGES[0]);
}

#[cfg(feature = "board")]
mod demo_images {
    //! A few Fashion-MNIST test images linked into the board build (the first eight of
    //! t10k, raw 28x28 u8), so the demo needs no host.
    use fmnist_core::lenet::IMAGE_PIXELS;
    pub static IMAGES: [[u8; IMAGE_PIXELS]; 8] =
        unsafe { core::mem::transmute(*include_bytes!("../demo/t10k-first8-images.bin")) };
    pub static LABELS: &[u8; 8] = include_bytes!("../demo/t10k-first8-labels.bin");
}

fn demo_one(net: &dyn Net, index: u32, image: &[u8; IMAGE_PIXELS], label: u8) {
    let mut logits = [0u8; MAX_LOGIT_BYTES];
    let (class, c) = cost::measure(|| net.infer(image, &mut logits));
    let name = |c: usize| CLASS_NAMES.get(c).copied().unwrap_or("?");
    info!(
        "image {=u32}: predicted {=str}, true {=str}{=str} ({=u32} {=str})",
        index,
        name(class),
        name(label as usize),
        if class == label as usize {
            ""
        } else {
            "  <- wrong"
        },
        c,
        cost::UNIT
    );
}

/// A fixed test pattern for `bench` without an image file.
#[cfg_attr(feature = "board", allow(dead_code))]
fn pattern() -> [u8; IMAGE_PIXELS] {
    let mut image = [0u8; IMAGE_PIXELS];
    for (i, p) in image.iter_mut().enumerate() {
        *p = ((i * 37 + i / 28 * 11) % 256) as u8;
    }
    image
}

fn bench(net: &dyn Net, image: &[u8; IMAGE_PIXELS]) {
    let layers = net.bench(image);
    let mut logits = [0u8; MAX_LOGIT_BYTES];
    let (_, total) = cost::measure(|| net.infer(image, &mut logits));
    info!(
        "bench {=str}: layers {=u32}, inference {=u32} {=str}",
        net.name(),
        layers,
        total,
        cost::UNIT
    );
}
