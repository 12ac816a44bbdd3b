//! Building `firmware/` for each Cortex-M core's target, once per test process, core and
//! profile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The firmware crate.
pub fn firmware_dir() -> PathBuf {
    root().join("firmware")
}

/// `cargo`, run in `dir` as from a user's shell: none of the host build's settings (its
/// RUSTFLAGS such as target-cpu=native, its target or target folder) leak into a Cortex-M build.
pub fn user_cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// A firmware build profile: cargo features on top of `--no-default-features`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// QEMU, LeNet-BN int8 and f32 and the wide CNN int8 (the default features).
    Qemu,
    /// QEMU, LeNet-BN int8 models only: the build the memory targets are about.
    QemuInt8,
    /// QEMU, LeNet-BN f32 models only.
    QemuF32,
    /// QEMU, int8 models: LeNet-BN and the wide CNN (the wide CNN's memory figures).
    QemuWide,
    /// STM32F407 with RTT logging: builds here, runs on hardware only.
    Board,
}

impl Profile {
    fn features(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu,int8,f32,wide",
            Profile::QemuInt8 => "qemu,int8",
            Profile::QemuF32 => "qemu,f32",
            Profile::QemuWide => "qemu,int8,wide",
            Profile::Board => "board",
        }
    }

    /// Short name used in file names and the sizes file.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu",
            Profile::QemuInt8 => "qemu-int8",
            Profile::QemuF32 => "qemu-f32",
            Profile::QemuWide => "qemu-wide",
            Profile::Board => "board",
        }
    }
}

/// A Cortex-M core and the QEMU machine the firmware runs it on (firmware/README.md, "Every
/// core").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Core {
    /// Cortex-M0 (`thumbv6m-none-eabi`) on `microbit` (nRF51: 256 KiB flash, 16 KiB RAM).
    M0,
    /// The Cortex-M0 build (`thumbv6m-none-eabi`, the same code) linked for `mps2-an385`,
    /// whose 4 MiB of code memory holds the f32 model file the micro:bit's flash cannot; the
    /// an385's Cortex-M3 runs ARMv6-M code unchanged, instruction for instruction.
    M0OnAn385,
    /// Cortex-M3 (`thumbv7m-none-eabi`) on `mps2-an385`.
    M3,
    /// Cortex-M4F (`thumbv7em-none-eabihf`) on `mps2-an386`.
    M4F,
    /// Cortex-M7 on `mps2-an500`: the M4F's ELF (same target, same memory map).
    M7,
    /// Cortex-M33 (`thumbv8m.main-none-eabihf`, DSP extension) on `mps2-an505`.
    M33,
}

impl Core {
    /// Every core, each on its own machine.
    pub const ALL: [Core; 5] = [Core::M0, Core::M3, Core::M4F, Core::M7, Core::M33];

    /// The Rust target.
    pub fn target(self) -> &'static str {
        match self {
            Core::M0 | Core::M0OnAn385 => "thumbv6m-none-eabi",
            Core::M3 => "thumbv7m-none-eabi",
            Core::M4F | Core::M7 => "thumbv7em-none-eabihf",
            Core::M33 => "thumbv8m.main-none-eabihf",
        }
    }

    /// The QEMU machine and CPU.
    pub fn machine(self) -> (&'static str, &'static str) {
        match self {
            Core::M0 => ("microbit", "cortex-m0"),
            Core::M0OnAn385 | Core::M3 => ("mps2-an385", "cortex-m3"),
            Core::M4F => ("mps2-an386", "cortex-m4"),
            Core::M7 => ("mps2-an500", "cortex-m7"),
            Core::M33 => ("mps2-an505", "cortex-m33"),
        }
    }

    /// Where the model region starts (`firmware/memory/qemu-*.x`).
    pub fn model_addr(self) -> u32 {
        match self {
            Core::M0 => 0x0001_0000,
            Core::M33 => 0x1002_0000,
            _ => 0x0002_0000,
        }
    }

    /// Short name for logs and the sizes file.
    pub fn name(self) -> &'static str {
        match self {
            Core::M0 => "m0",
            Core::M0OnAn385 => "m0-an385",
            Core::M3 => "m3",
            Core::M4F => "m4f",
            Core::M7 => "m7",
            Core::M33 => "m33",
        }
    }

    /// The core the firmware is built for (the M7 runs the M4F's ELF).
    fn build(self) -> Core {
        if self == Core::M7 { Core::M4F } else { self }
    }
}

static BUILDS: Mutex<Option<HashMap<(Core, Profile), PathBuf>>> = Mutex::new(None);

/// Builds the firmware (release) for `profile` on the Cortex-M4F and returns a private copy of
/// the ELF.
pub fn firmware(profile: Profile) -> PathBuf {
    firmware_for(Core::M4F, profile)
}

/// Builds the firmware (release) for `profile` and `core` and returns a private copy of the ELF.
pub fn firmware_for(core: Core, profile: Profile) -> PathBuf {
    let core = core.build();
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    if let Some(elf) = builds.get(&(core, profile)) {
        return elf.clone();
    }
    let target = core.target();
    let dir = firmware_dir();
    let target_dir = dir.join("target");
    let t = Instant::now();
    let mut cmd = user_cargo(&dir);
    if core == Core::M0OnAn385 {
        cmd.env("FMNIST_MACHINE", "mps2-an385");
    }
    // Its own target folder: the same target and features, linked for another machine.
    let target_dir = if core == Core::M0OnAn385 {
        dir.join("target/m0-an385")
    } else {
        target_dir
    };
    let out = cmd
        .args(["build", "--release", "--target", target])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--no-default-features", "--features", profile.features()])
        .stdout(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the firmware");
    if !out.status.success() {
        panic!(
            "building the firmware ({}) failed:\n{}\nIs the target installed? \
             `rustup target add {target}`",
            profile.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "firmware ({}, {}) built in {:.1} s",
        profile.name(),
        core.name(),
        t.elapsed().as_secs_f64()
    );
    let built = target_dir.join(format!("{target}/release/fmnist-firmware"));
    let copy = target_dir.join(format!(
        "fmnist-tests/fmnist-firmware-{}-{}.elf",
        core.name(),
        profile.name()
    ));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&built, &copy).unwrap();
    builds.insert((core, profile), copy.clone());
    copy
}
