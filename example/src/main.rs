//! A user's firmware in one file, depending on `fmnist-core` alone: the LeNet-BN int8 model file
//! read in place from its flash region, checked once at boot, then a loop that classifies a
//! 28x28 image and names its class. No semihosting, no logging, no heap.
//!
//! The two `#[inline(never)]` functions [`capture`] and [`show`] are where a product plugs in
//! its camera and its output. Under QEMU the tests (`tests/tests/example.rs`) stop the CPU at
//! them through QEMU's gdbstub: they write each test image into `capture`'s buffer, as a DMA
//! would, and read the class name and the logits `show` receives.
//!
//! This program is also the project's **size build**: its flash (vector table + `.text` +
//! `.rodata`; the model is flashed on its own) is what README.md reports per core.

#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use fmnist_core::CLASS_NAMES;
use fmnist_core::format::{self, Arch, FormatError, Kind};
use fmnist_core::layers::argmax;
use fmnist_core::lenet::IMAGE_PIXELS;
use fmnist_core::quant::{LeNetQ, LeNetQParams};

// ANCHOR: model
// The model file's flash address: the start of the MODEL region of the linker script
// (memory.x), where the model is flashed on its own, apart from the program.
unsafe extern "C" {
    static _model_start: u8;
}

/// Bytes of a LeNet-BN int8 model file: 64-byte header, 65,308 bytes of weights, CRC-32.
const MODEL_LEN: usize = format::HEADER_LEN + size_of::<LeNetQParams>() + format::TRAILER_LEN;

/// Checks the model file (magic, version, architecture, kind, shapes, length, CRC-32,
/// alignment, then every int8 constant the kernels' overflow proof relies on) and wraps its
/// weights, in place: nothing is copied to RAM.
fn load(model: &'static [u8]) -> Result<LeNetQ<'static>, FormatError> {
    let file = format::parse(model)?;
    let weights = file.view::<LeNetQParams>(Arch::LeNet, Kind::Int8)?;
    LeNetQ::new(weights).map_err(FormatError::BadQuantParams)
}
// ANCHOR_END: model

#[entry]
fn main() -> ! {
    // ANCHOR: main
    // SAFETY: the linker script reserves the MODEL region (at least MODEL_LEN bytes) for the
    // model file; nothing writes to it while the program runs.
    let model = unsafe { core::slice::from_raw_parts(&raw const _model_start, MODEL_LEN) };
    let net = match load(model) {
        Ok(net) => net,
        Err(e) => refused(e),
    };
    let mut image = [0u8; IMAGE_PIXELS];
    loop {
        capture(&mut image);
        let logits: [i8; 10] = net.forward(&image);
        let class = argmax(&logits);
        show(CLASS_NAMES[class], &logits);
    }
    // ANCHOR_END: main
}

/// Fills `image` with the next 28x28 grayscale picture (row by row, 0 = black background, as
/// Fashion-MNIST's): your camera or sensor driver goes here. Under QEMU the test writes each
/// test image into `image` while the CPU is stopped at this function's first instruction;
/// `black_box` tells the compiler that the buffer may have changed.
#[inline(never)]
fn capture(image: &mut [u8; IMAGE_PIXELS]) {
    core::hint::black_box(image);
}

/// Acts on a result: show the class name, send it, switch an output. Under QEMU the test reads
/// `name` and `logits` while the CPU is stopped at this function's first instruction.
#[inline(never)]
fn show(name: &'static str, logits: &[i8; 10]) {
    core::hint::black_box((name, logits));
}

/// The model was refused (`e` says why, e.g. `FormatError::CrcMismatch` for a corrupt file):
/// nothing is classified. A product would signal it (an LED, a log line) and wait for a new
/// model to be flashed.
#[inline(never)]
fn refused(e: FormatError) -> ! {
    core::hint::black_box(e);
    loop {
        core::hint::spin_loop();
    }
}

/// A panic stops the program here. The inference path cannot panic (the firmware's test
/// `inference_path_reaches_no_panic` walks its disassembly); a product would reset.
#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
