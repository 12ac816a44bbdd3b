//! The STM32F407 board binary under QEMU `netduinoplus2` (STM32F405: the same Cortex-M4F core,
//! flash at `0x0800_0000`, SRAM at `0x2000_0000`), its defmt RTT log read out of the emulated RAM.
//!
//! * [`board_elf`] runs `cargo board-build` in `firmware/` (the alias a user runs; no extra
//!   feature) once per process and returns a private copy of that very ELF.
//! * [`run`] starts QEMU halted (`-S`) with its gdbstub on a Unix socket, the model file loaded
//!   at [`MODEL_ADDR`] (`-device loader`) and semihosting on (the firmware ends with a
//!   semihosting exit, which `probe-rs run` turns into its exit status on a real board; QEMU does
//!   the same). A small GDB remote-protocol client then plays the RTT host:
//!   - it finds the `_SEGGER_RTT` control block by its ELF symbol and, whenever the CPU is
//!     stopped, copies the up buffer's bytes between the read and write offsets and writes the
//!     read offset back (what probe-rs does over SWD);
//!   - it sets a breakpoint on every `bkpt 0xab` (the semihosting trap) in the ELF's code, so the
//!     CPU stops before the exit call and the last log bytes are read before QEMU ends;
//!   - between stops it interrupts the CPU every [`POLL`] to drain the buffer (defmt-rtt's
//!     default mode overwrites unread bytes once its 1 KiB ring is full), and gives up after the
//!     caller's timeout: a firmware that hangs yields what it logged so far, `status: None`.
//! * The bytes are decoded with the ELF's defmt table ([`crate::defmt_log::decode`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::defmt_log::decode;
use crate::firmware_build::{firmware_dir, user_cargo};
use crate::gdb::{Gdb, Qemu, Stop, hex};

/// Where the model region starts on the board (`firmware/memory/stm32f407.x`, sector 5).
pub const MODEL_ADDR: u32 = 0x0802_0000;

/// How often the running CPU is interrupted to drain the RTT buffer.
pub const POLL: Duration = Duration::from_millis(20);

/// The semihosting trap, `bkpt 0xab` in Thumb.
const SEMIHOSTING_BKPT: u16 = 0xbeab;

/// Builds the board binary with `cargo board-build` (once per process) and returns a copy of
/// `firmware/target/thumbv7em-none-eabihf/release/fmnist-firmware`.
pub fn board_elf() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let dir = firmware_dir();
    let t = Instant::now();
    let out = user_cargo(&dir)
        .arg("board-build")
        .stdout(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the board firmware");
    assert!(
        out.status.success(),
        "`cargo board-build` failed:\n{}\nIs the target installed? \
         `rustup target add thumbv7em-none-eabihf`",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("cargo board-build: {:.1} s", t.elapsed().as_secs_f64());
    let target = dir.join("target");
    let elf = target.join("thumbv7em-none-eabihf/release/fmnist-firmware");
    let copy = target.join("fmnist-tests/fmnist-firmware-board-build.elf");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&elf, &copy).unwrap();
    *built = Some(copy.clone());
    copy
}

/// What a run of the board binary produced.
#[derive(Debug)]
pub struct BoardRun {
    /// The firmware's semihosting exit status; `None` if it did not exit within the timeout
    /// (or QEMU ended otherwise, see `stderr`).
    pub status: Option<i32>,
    /// The decoded defmt log, one `LEVEL message` line per frame.
    pub log: Vec<String>,
    /// Raw RTT bytes read.
    pub rtt_bytes: usize,
    /// QEMU's stderr.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl BoardRun {
    /// The log as one string.
    pub fn text(&self) -> String {
        self.log.join("\n")
    }
}

/// Where the RTT control block and the semihosting traps are, from the ELF.
struct ElfInfo {
    rtt: u32,
    traps: Vec<u32>,
}

fn elf_info(elf: &Path) -> ElfInfo {
    use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
    let bytes = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*bytes).expect("not an ELF");
    let rtt = file
        .symbols()
        .find(|s| s.name() == Ok("_SEGGER_RTT"))
        .unwrap_or_else(|| {
            panic!(
                "{}: no _SEGGER_RTT symbol (not an RTT build)",
                elf.display()
            )
        })
        .address() as u32;
    // Every halfword-aligned 0xbeab in the code. One that is really the second half of a 32-bit
    // instruction or a literal is never executed, so its breakpoint never triggers.
    let mut traps = Vec::new();
    for s in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let data = s.data().unwrap();
        for (i, h) in data.chunks_exact(2).enumerate() {
            if u16::from_le_bytes([h[0], h[1]]) == SEMIHOSTING_BKPT {
                traps.push(s.address() as u32 + 2 * i as u32);
            }
        }
    }
    assert!(!traps.is_empty(), "{}: no semihosting trap", elf.display());
    ElfInfo { rtt, traps }
}

/// Runs the board ELF on QEMU `netduinoplus2` with `model` at [`MODEL_ADDR`] until its
/// semihosting exit, or `timeout`.
pub fn run(elf: &Path, model: Option<&Path>, timeout: Duration) -> BoardRun {
    crate::qemu_run::require_qemu();
    let info = elf_info(elf);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gdb.sock");
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-machine", "netduinoplus2"])
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-gdb")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .arg("-S");
    if let Some(m) = model {
        cmd.arg("-device")
            .arg(format!("loader,file={},addr={MODEL_ADDR:#x}", m.display()));
    }
    cmd.arg("-kernel").arg(elf);
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start qemu-system-arm");
    let mut qemu = Qemu(child);
    let mut gdb = Gdb::connect(&sock, &mut qemu.0);
    let mut rtt = Vec::new();
    let status = host(&mut gdb, &info, t + timeout, &mut rtt);
    drop(gdb);
    if let Some(code) = status {
        // QEMU exits with the semihosting status right after reporting it.
        let s = qemu.wait(Duration::from_secs(10));
        assert_eq!(
            s,
            Some(code),
            "QEMU's exit status differs from the firmware's"
        );
    }
    let stderr = qemu.finish();
    BoardRun {
        status,
        log: decode(elf, &rtt),
        rtt_bytes: rtt.len(),
        stderr,
        elapsed: t.elapsed(),
    }
}

/// Plays the RTT host until the firmware exits (its status) or `deadline` (`None`).
fn host(gdb: &mut Gdb, info: &ElfInfo, deadline: Instant, rtt: &mut Vec<u8>) -> Option<i32> {
    for &a in &info.traps {
        gdb.expect_ok(&format!("Z0,{a:x},2"));
    }
    gdb.send("c");
    loop {
        let stop = match gdb.reply(POLL) {
            Some(r) => r,
            None => {
                gdb.interrupt();
                gdb.reply(Duration::from_secs(5))
                    .expect("QEMU did not stop when interrupted")
            }
        };
        match Stop::parse(&stop) {
            Stop::Exited(code) => return Some(code),
            Stop::Gone => return None,
            Stop::Stopped => {}
        }
        drain(gdb, info.rtt, rtt);
        if Instant::now() > deadline {
            return None;
        }
        let pc = gdb.register(15);
        if info.traps.contains(&pc) {
            // Step over the trap (it may be the exit), then put the breakpoint back.
            gdb.expect_ok(&format!("z0,{pc:x},2"));
            gdb.send("s");
            let r = gdb
                .reply(Duration::from_secs(5))
                .expect("no reply to a single step");
            match Stop::parse(&r) {
                Stop::Exited(code) => return Some(code),
                Stop::Gone => return None,
                Stop::Stopped => {}
            }
            drain(gdb, info.rtt, rtt);
            gdb.expect_ok(&format!("Z0,{pc:x},2"));
        }
        gdb.send("c");
    }
}

/// Copies the RTT up buffer's unread bytes to `out` and advances its read offset.
fn drain(gdb: &mut Gdb, cb: u32, out: &mut Vec<u8>) {
    let header = gdb.read_memory(cb, 16 + 8 + 24);
    assert!(
        header.starts_with(b"SEGGER RTT\0"),
        "no RTT control block at {cb:#x}: {header:02x?}"
    );
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    // id[16], max_up, max_down, then up channel 0: name, buffer, size, write, read, flags.
    let (buf, size, write, read) = (word(28), word(32), word(36), word(40));
    assert!(
        size > 0 && write < size && read < size,
        "bad RTT header {header:02x?}"
    );
    if write == read {
        return;
    }
    if write > read {
        out.extend(gdb.read_memory(buf + read, write - read));
    } else {
        out.extend(gdb.read_memory(buf + read, size - read));
        out.extend(gdb.read_memory(buf, write));
    }
    gdb.expect_ok(&format!("M{:x},4:{}", cb + 40, hex(&write.to_le_bytes())));
}
