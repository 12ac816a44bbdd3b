//! A deterministic cost counter.
//!
//! * QEMU (`qemu`): the CMSDK TIMER0 of the mps2 boards at `0x4000_0000`, a 32-bit down counter
//!   clocked at 25 MHz. With QEMU's `-icount shift=0` one instruction takes 1 ns of virtual time,
//!   so one tick is 40 instructions and the count is identical run to run.
//! * A real board (`board`): the DWT cycle counter (`DWT.CYCCNT`), in core clock cycles.
//!
//! [`now`] returns a wrapping `u32` count; subtract two readings with `wrapping_sub`.

/// What [`now`] counts.
#[cfg(feature = "qemu")]
pub const UNIT: &str = "instructions";
/// What [`now`] counts.
#[cfg(feature = "board")]
pub const UNIT: &str = "cycles";

#[cfg(feature = "qemu")]
mod imp {
    const TIMER0: usize = 0x4000_0000;
    const CTRL: *mut u32 = TIMER0 as *mut u32;
    const VALUE: *mut u32 = (TIMER0 + 4) as *mut u32;
    const RELOAD: *mut u32 = (TIMER0 + 8) as *mut u32;
    /// Instructions per TIMER0 tick under `-icount shift=0` (1 ns per instruction, 25 MHz).
    const INSTRUCTIONS_PER_TICK: u32 = 40;

    pub fn start() {
        // SAFETY: the CMSDK timer registers of the mps2 machines; nothing else uses TIMER0.
        unsafe {
            RELOAD.write_volatile(u32::MAX);
            VALUE.write_volatile(u32::MAX);
            CTRL.write_volatile(1);
        }
    }

    #[inline(always)]
    pub fn now() -> u32 {
        // SAFETY: a read of the running timer's VALUE register.
        let value = unsafe { VALUE.read_volatile() };
        (u32::MAX - value).wrapping_mul(INSTRUCTIONS_PER_TICK)
    }
}

#[cfg(feature = "board")]
mod imp {
    use cortex_m::peripheral::{DCB, DWT};

    pub fn start() {
        // SAFETY: single-threaded start-up; only this module touches DCB and DWT.
        let mut p = unsafe { cortex_m::Peripherals::steal() };
        p.DCB.enable_trace();
        p.DWT.enable_cycle_counter();
        let _ = DCB::is_debugger_attached();
    }

    #[inline(always)]
    pub fn now() -> u32 {
        DWT::cycle_count()
    }
}

/// Starts the counter (once, at boot).
pub fn start() {
    imp::start()
}

/// The current count (wrapping).
#[inline(always)]
pub fn now() -> u32 {
    imp::now()
}

/// Runs `f` and returns its result and its cost.
#[inline(always)]
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u32) {
    use core::sync::atomic::{Ordering, compiler_fence};
    // The fences keep the compiler from moving `f`'s work across the counter reads.
    compiler_fence(Ordering::SeqCst);
    let t0 = now();
    compiler_fence(Ordering::SeqCst);
    let r = core::hint::black_box(f());
    compiler_fence(Ordering::SeqCst);
    let t1 = now();
    compiler_fence(Ordering::SeqCst);
    (r, t1.wrapping_sub(t0))
}
