//! Stack high-water mark by painting: at boot every free word between the end of the static data
//! (`_stack_end`) and just below the current stack pointer is filled with a pattern; the deepest
//! word no longer holding it is the deepest the stack has ever reached.

const PAINT: u32 = 0xDEAD_BEEF;
/// Left unpainted below the stack pointer, for the painting function's own frame.
const MARGIN: usize = 256;

unsafe extern "C" {
    static mut _stack_end: u32;
    static mut _stack_start: u32;
}

fn bottom() -> *mut u32 {
    &raw mut _stack_end
}

fn top() -> *mut u32 {
    &raw mut _stack_start
}

/// Paints the free stack. Call once, first thing in `main`.
#[inline(never)]
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = bottom();
    let stop = (sp - MARGIN) as *mut u32;
    while p < stop {
        // SAFETY: between the end of the statics and below the live stack: memory nobody uses.
        unsafe {
            p.write_volatile(PAINT);
            p = p.add(1);
        }
    }
}

/// Bytes of stack used so far at the deepest point (since boot).
#[inline(never)]
pub fn peak() -> usize {
    let mut p = bottom();
    let top = top();
    // SAFETY: reads of the painted region, up to the top of the stack.
    while p < top && unsafe { p.read_volatile() } == PAINT {
        p = unsafe { p.add(1) };
    }
    top as usize - p as usize
}

/// Bytes of RAM reserved for the stack (top of RAM down to the end of the statics).
pub fn size() -> usize {
    top() as usize - bottom() as usize
}
