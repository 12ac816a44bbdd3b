//! Building `firmware/` for `thumbv7em-none-eabihf`, once per test process and profile.

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

static BUILDS: Mutex<Option<HashMap<Profile, PathBuf>>> = Mutex::new(None);

/// Builds the firmware (release) for `profile` and returns a private copy of the ELF.
pub fn firmware(profile: Profile) -> PathBuf {
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    if let Some(elf) = builds.get(&profile) {
        return elf.clone();
    }
    let dir = firmware_dir();
    let target_dir = dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let t = Instant::now();
    let out = Command::new(cargo)
        .current_dir(&dir)
        // The host build's flags (e.g. target-cpu=native) must not leak into the firmware.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .args(["build", "--release", "--target", "thumbv7em-none-eabihf"])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--no-default-features", "--features", profile.features()])
        .stdout(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the firmware");
    if !out.status.success() {
        panic!(
            "building the firmware ({}) failed:\n{}\nIs the target installed? \
             `rustup target add thumbv7em-none-eabihf`",
            profile.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "firmware ({}) built in {:.1} s",
        profile.name(),
        t.elapsed().as_secs_f64()
    );
    let built = target_dir.join("thumbv7em-none-eabihf/release/fmnist-firmware");
    let copy = target_dir.join(format!(
        "fmnist-tests/fmnist-firmware-{}.elf",
        profile.name()
    ));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&built, &copy).unwrap();
    builds.insert(profile, copy.clone());
    copy
}
