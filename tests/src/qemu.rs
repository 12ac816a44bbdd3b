//! Building the firmware, running it on QEMU and reading what it says: everything a firmware
//! test needs, under one name. Each part lives in its own module:
//!
//! * [`firmware_build`](crate::firmware_build): [`firmware`] builds `firmware/` for the
//!   Cortex-M4F (`thumbv7em-none-eabihf`), [`firmware_for`] for any [`Core`], once per test
//!   process (one build at a time, under a lock) and returns a copy of the ELF;
//! * [`qemu_run`](crate::qemu_run): [`run`] starts `qemu-system-arm -machine mps2-an386` on it
//!   ([`run_on`]: the core's machine) with a model loaded into the model region and returns exit
//!   status and log lines, [`verify`] ([`verify_on`]) streams the test split that [`test_set`]
//!   writes as un-gzipped IDX files (read through semihosting);
//! * [`defmt_log`](crate::defmt_log): decodes the defmt log with the `defmt-decoder` crate (no
//!   `defmt-print` needed) and reads numbers out of its lines;
//! * [`fixtures`](crate::fixtures): [`random_int8`], [`random_folded`], [`random_wide_int8`]
//!   make valid pseudo-random models, and [`model_file`] wraps a payload in the FMNM container;
//! * [`trained`](crate::trained): [`trained()`] a briefly trained LeNet-BN, [`wide_model`] a wide
//!   CNN that classifies (random features, readout fitted with [`crate::linalg`], quantized);
//! * [`elf`](crate::elf): section [`sizes`], disassembly, reachable functions.
//!
//! Needs `qemu-system-arm` (Debian: `qemu-system-arm`), the `thumbv7em-none-eabihf` target (and
//! for [`Core`]s other than the M4F and M7 theirs)
//! and, for [`sizes`], `llvm-size` (`rustup component add llvm-tools`) or `arm-none-eabi-size`
//! (Debian: `binutils-arm-none-eabi`). A missing tool fails the test with the install command.

pub use crate::defmt_log::*;
pub use crate::elf::*;
pub use crate::firmware_build::*;
pub use crate::fixtures::*;
pub use crate::qemu_run::*;
pub use crate::trained::*;
