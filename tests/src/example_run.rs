//! The example application (`example/`: a user's firmware on `fmnist-core` alone, and the
//! project's size build) under QEMU, driven through QEMU's gdbstub: it has no semihosting and
//! no log, so the test plays its camera and its display.
//!
//! * [`example_elf`] builds `example/` (release) for a [`Core`]'s target, once per process, and
//!   returns a private copy of the ELF.
//! * [`run`] starts QEMU halted (`-S`, `-icount shift=0`) with the model file at the ELF's
//!   `_model_start`, paints the stack region (`_stack_end` .. `_stack_start`) through the
//!   gdbstub, sets breakpoints on the example's `capture`, `show` and `refused` (and the
//!   fault handlers), and then, stop after stop:
//!   - at `capture(image)` writes the next test image into the buffer `r0` points to, as a
//!     camera's DMA would;
//!   - at `show(name, logits)` reads the class name (`r0`, `r1`) and the ten int8 logits
//!     (`r2`);
//!   - at `refused` records the refusal and stops.
//!
//!   After the last image it reads the stack region back: the deepest overwritten word gives
//!   the stack peak. On the an385, an386 and an500 it also reads the FPGAIO's free-running
//!   `COUNTER` (25 MHz, counting from reset without any setup) at each stop: under `-icount
//!   shift=0,sleep=off` one instruction is one nanosecond of virtual time and the clock stands
//!   still while the CPU is held (`sleep=on` let real time leak in), so the difference between
//!   two stops is the instructions of one iteration of the loop (40 per count), the same run
//!   to run. The micro:bit has no counter running from reset: the M0's count comes from the
//!   same ELF on `mps2-an385` ([`Core::M0OnAn385`]; its memory layout lies inside the an385's
//!   map, and the Cortex-M3 executes ARMv6-M code instruction for instruction). The an505's
//!   virtual clock jumps while the CPU is held, so the M33 is not counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fmnist_core::lenet::IMAGE_PIXELS;

use crate::firmware_build::{Core, root, user_cargo};
use crate::gdb::{Gdb, Qemu, Stop};

/// The example crate.
pub fn example_dir() -> PathBuf {
    root().join("example")
}

/// Builds `example/` (release) for `core`'s target once per process; returns a copy of the
/// ELF. The M7 runs the M4F's ELF, the M0 on the an385 the M0's (its layout fits the an385).
pub fn example_elf(core: Core) -> PathBuf {
    let core = match core {
        Core::M7 => Core::M4F,
        Core::M0OnAn385 => Core::M0,
        c => c,
    };
    static BUILDS: Mutex<Option<HashMap<Core, PathBuf>>> = Mutex::new(None);
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let builds = builds.get_or_insert_with(HashMap::new);
    if let Some(elf) = builds.get(&core) {
        return elf.clone();
    }
    let dir = example_dir();
    let target = core.target();
    let t = Instant::now();
    let out = user_cargo(&dir)
        .args(["build", "--release", "--target", target])
        .stdout(Stdio::inherit())
        .output()
        .expect("cannot run cargo to build the example");
    assert!(
        out.status.success(),
        "building example/ for {target} failed:\n{}\nIs the target installed? \
         `rustup target add {target}`",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "example ({}) built in {:.1} s",
        core.name(),
        t.elapsed().as_secs_f64()
    );
    let built = dir.join(format!("target/{target}/release/fmnist-example"));
    let copy = dir.join(format!(
        "target/fmnist-tests/fmnist-example-{}.elf",
        core.name()
    ));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&built, &copy).unwrap();
    builds.insert(core, copy.clone());
    copy
}

/// What a run of the example produced.
#[derive(Debug)]
pub struct ExampleRun {
    /// The ten int8 logits `show` received, image after image.
    pub logits: Vec<[i8; 10]>,
    /// The class names `show` received.
    pub names: Vec<String>,
    /// Whether the program refused the model (stopped at `refused`, nothing classified).
    pub refused: bool,
    /// Instructions of all the iterations of the loop (`capture`, the forward pass, the argmax,
    /// `show`), where counted (an385, an386, an500); `None` elsewhere.
    pub instructions: Option<u64>,
    /// Deepest stack use, in bytes (painted region).
    pub stack_peak: u32,
    /// QEMU's CPU time (user + system) over the run.
    pub cpu: Duration,
    /// Wall time.
    pub elapsed: Duration,
}

/// The symbols the harness needs, from the ELF.
struct Symbols {
    capture: u32,
    show: u32,
    refused: u32,
    faults: Vec<u32>,
    model_start: u32,
    stack_end: u32,
    stack_start: u32,
}

fn symbols(elf: &Path) -> Symbols {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*bytes).expect("not an ELF");
    let find = |pred: &dyn Fn(&str) -> bool, what: &str| -> u32 {
        file.symbols()
            .find(|s| s.name().is_ok_and(pred))
            .unwrap_or_else(|| panic!("{}: no symbol {what}", elf.display()))
            .address() as u32
    };
    // Thumb functions: the symbol's bit 0 is set; the breakpoint goes on the even address.
    let function = |name: &str| {
        let mangled = format!("14fmnist_example{}{name}17h", name.len());
        find(&|s: &str| s.contains(&mangled), name) & !1
    };
    let exact = |name: &str| find(&|s: &str| s == name, name);
    Symbols {
        capture: function("capture"),
        show: function("show"),
        refused: function("refused"),
        faults: vec![exact("HardFault_") & !1, exact("DefaultHandler_") & !1],
        model_start: exact("_model_start"),
        stack_end: exact("_stack_end"),
        stack_start: exact("_stack_start"),
    }
}

/// The painted stack word.
const PAINT: [u8; 4] = [0xa5, 0x5a, 0xc3, 0x3c];

/// The FPGAIO `COUNTER` register and the instructions per count under `-icount
/// shift=0,sleep=off` (25 MHz: 40), on the machines where it counts instructions while the
/// debugger stops and resumes the CPU. Not the micro:bit (no counter running from reset) nor
/// the an505: its virtual clock jumps while the CPU is held (an active timer of its IoT Kit
/// subsystem that QEMU warps to), so its count there is tens of times the instructions.
fn counter(machine: &str) -> Option<(u32, u64)> {
    match machine {
        "mps2-an385" | "mps2-an386" | "mps2-an500" => Some((0x4002_8018, 40)),
        _ => None,
    }
}

/// Runs the example ELF on `core`'s QEMU machine with `model` at its `_model_start`, feeding
/// it `images` one by one; stops after the last result, at a refusal, or fails at a fault or
/// after `timeout`.
pub fn run(
    core: Core,
    elf: &Path,
    model: &Path,
    images: &[[u8; IMAGE_PIXELS]],
    timeout: Duration,
) -> ExampleRun {
    crate::qemu_run::require_qemu();
    let sym = symbols(elf);
    let (machine, cpu) = core.machine();
    let counter = counter(machine);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gdb.sock");
    let t = Instant::now();
    let child = Command::new("qemu-system-arm")
        .args(["-machine", machine, "-cpu", cpu])
        .args(["-display", "none", "-serial", "none", "-monitor", "none"])
        .args(["-icount", "shift=0,sleep=off"])
        .arg("-gdb")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .arg("-S")
        .arg("-device")
        .arg(format!(
            "loader,file={},addr={:#x}",
            model.display(),
            sym.model_start
        ))
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start qemu-system-arm");
    let mut qemu = Qemu(child);
    let mut gdb = Gdb::connect(&sock, &mut qemu.0);
    let deadline = t + timeout;

    // Paint the stack region before the first instruction runs.
    let stack_len = sym.stack_start - sym.stack_end;
    gdb.write_memory(sym.stack_end, &PAINT.repeat(stack_len as usize / 4));
    for a in [sym.capture, sym.show, sym.refused]
        .iter()
        .chain(&sym.faults)
    {
        gdb.expect_ok(&format!("Z0,{a:x},2"));
    }
    let read_counter = |gdb: &mut Gdb| -> Option<u64> {
        let (addr, _) = counter?;
        let b = gdb.read_memory(addr, 4);
        Some(u32::from_le_bytes(b.try_into().unwrap()) as u64)
    };

    let mut logits = Vec::with_capacity(images.len());
    let mut names = Vec::with_capacity(images.len());
    let mut name_cache: HashMap<(u32, u32), String> = HashMap::new();
    let mut ticks = 0u64;
    let mut last = None;
    let mut buffer = None;
    let mut refused = false;
    let mut next = images.iter();
    gdb.send("c");
    loop {
        let stop = deadline
            .checked_duration_since(Instant::now())
            .and_then(|left| gdb.reply(left))
            .unwrap_or_else(|| {
                panic!(
                    "{}: the example did not finish within {timeout:?} ({} images done)",
                    core.name(),
                    logits.len()
                )
            });
        if !matches!(Stop::parse(&stop), Stop::Stopped) {
            panic!("{}: QEMU ended ({stop}): {}", core.name(), qemu.finish());
        }
        let r = gdb.registers();
        let pc = r[15];
        if pc == sym.capture && buffer.is_none() {
            // The first image. `image` is the same local of `main` on every iteration: from
            // now on the next image is written at `show`, and `capture` runs on its own.
            let Some(image) = next.next() else { break };
            gdb.write_memory(r[0], image);
            buffer = Some(r[0]);
            gdb.expect_ok(&format!("z0,{:x},2", sym.capture));
        } else if pc == sym.show {
            let name = name_cache
                .entry((r[0], r[1]))
                .or_insert_with(|| String::from_utf8_lossy(&gdb.read_memory(r[0], r[1])).into())
                .clone();
            names.push(name);
            let l = gdb.read_memory(r[2], 10);
            logits.push(std::array::from_fn(|i| l[i] as i8));
            let Some(image) = next.next() else { break };
            gdb.write_memory(buffer.expect("show before capture"), image);
        } else if pc == sym.refused {
            refused = true;
            break;
        } else {
            panic!(
                "{}: the example stopped in a fault handler (pc {pc:#x}, lr {:#x}) after {} images",
                core.name(),
                r[14],
                logits.len()
            );
        }
        // The count from here to the next stop: one iteration of `main`'s loop.
        let now = read_counter(&mut gdb);
        if let (Some(t0), Some(t1)) = (last, now) {
            ticks += t1.wrapping_sub(t0) & 0xffff_ffff;
        }
        last = now;
        // Return from the function at once (its body only tells the compiler that memory may
        // have changed): QEMU would stop again at a breakpoint it is continued from, and
        // removing and setting breakpoints flushes its translated code.
        gdb.set_register(15, r[14] & !1);
        gdb.send("c");
    }
    let painted = gdb.read_memory(sym.stack_end, stack_len);
    let cpu = qemu.cpu_time();
    drop(gdb);
    drop(qemu);
    let deepest = painted
        .chunks_exact(4)
        .position(|w| w != PAINT)
        .unwrap_or(painted.len() / 4);
    ExampleRun {
        logits,
        names,
        refused,
        instructions: counter.map(|(_, per_tick)| ticks * per_tick),
        stack_peak: stack_len - 4 * deepest as u32,
        cpu,
        elapsed: t.elapsed(),
    }
}
