//! Reading the firmware's ELF: section sizes, disassembly and the call graph reachable from an
//! entry point.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Section sizes of an ELF, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `.vector_table` + `.text`.
    pub text: u64,
    /// `.rodata`.
    pub rodata: u64,
    /// `.data` (flash and RAM).
    pub data: u64,
    /// `.bss` + `.uninit`.
    pub bss: u64,
}

/// Section sizes, read with `llvm-size -A` (rustup's llvm-tools or a system LLVM) or
/// `arm-none-eabi-size -A`.
pub fn sizes(elf: &Path) -> Sizes {
    let out = size_tools()
        .into_iter()
        .find_map(|tool| {
            Command::new(&tool)
                .arg("-A")
                .arg(elf)
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .expect(
            "no size tool: `rustup component add llvm-tools` or \
             `apt-get install binutils-arm-none-eabi`",
        );
    let text = String::from_utf8(out.stdout).unwrap();
    let section = |name: &str| -> u64 {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next()? == name).then(|| f.next()?.parse::<u64>().ok())?
            })
            .sum()
    };
    Sizes {
        text: section(".vector_table") + section(".text"),
        rodata: section(".rodata"),
        data: section(".data"),
        bss: section(".bss") + section(".uninit"),
    }
}

/// `llvm-objdump -d -C` of an ELF (rustup's llvm-tools, or one on the PATH).
pub fn disassemble(elf: &Path) -> String {
    let mut tools: Vec<PathBuf> = size_tools()
        .into_iter()
        .filter_map(|t| {
            let name = t
                .file_name()?
                .to_str()?
                .replace("llvm-size", "llvm-objdump");
            (name.ends_with("llvm-objdump")).then(|| t.with_file_name(name))
        })
        .collect();
    tools.push("arm-none-eabi-objdump".into());
    for tool in tools {
        let Ok(out) = Command::new(&tool)
            .args(["-d", "--no-show-raw-insn", "-C"])
            .arg(elf)
            .output()
        else {
            continue;
        };
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    panic!(
        "no disassembler: `rustup component add llvm-tools` (or apt-get install binutils-arm-none-eabi)"
    );
}

/// The functions reachable through direct calls and branches from every function whose name
/// contains `entry`, keyed by name, from a disassembly; plus the functions among them that make
/// an indirect call (`blx rN`, `bx` to a register other than `lr`), which this walk cannot follow.
pub fn reachable_functions(disassembly: &str, entry: &str) -> (Vec<String>, Vec<String>) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut indirect: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in disassembly.lines() {
        let t = line.trim();
        // "000051ac <fmnist_core::quant::lenet::LeNetQ::forward::h...>:"
        if let Some(name) = t
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .map(|(_, n)| n)
        {
            current = Some(name.to_string());
            calls.entry(name.to_string()).or_default();
            continue;
        }
        let Some(cur) = &current else { continue };
        let mut words = t.split_whitespace().skip(1);
        let Some(op) = words.next() else { continue };
        let operand = words.next().unwrap_or("");
        let is_branch = op == "bl"
            || op == "blx"
            || op.starts_with('b')
                && !op.starts_with("bic")
                && !op.starts_with("bfc")
                && !op.starts_with("bfi")
                && !op.starts_with("bkpt");
        if !is_branch {
            continue;
        }
        if (op.starts_with("blx") || op.starts_with("bx")) && operand.starts_with('r') {
            indirect.insert(cur.clone());
            continue;
        }
        if let Some(target) = t
            .split_once('<')
            .and_then(|(_, r)| r.split(['>', '+']).next())
            && target != cur
        {
            calls.get_mut(cur).unwrap().insert(target.to_string());
        }
    }
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = calls
        .keys()
        .filter(|k| k.contains(entry))
        .cloned()
        .collect();
    assert!(
        !stack.is_empty(),
        "no function named like {entry} in the disassembly"
    );
    while let Some(f) = stack.pop() {
        if seen.insert(f.clone())
            && let Some(callees) = calls.get(&f)
        {
            stack.extend(callees.iter().cloned());
        }
    }
    let indirect = seen
        .iter()
        .filter(|f| indirect.contains(*f))
        .cloned()
        .collect();
    (seen.into_iter().collect(), indirect)
}

fn size_tools() -> Vec<PathBuf> {
    let mut tools = Vec::new();
    // rustup's llvm-tools: <sysroot>/lib/rustlib/<host>/bin/llvm-size
    if let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() {
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Ok(entries) = std::fs::read_dir(sysroot.join("lib/rustlib")) {
            for e in entries.flatten() {
                let p = e.path().join("bin/llvm-size");
                if p.exists() {
                    tools.push(p);
                }
            }
        }
    }
    tools.push("llvm-size".into());
    tools.push("arm-none-eabi-size".into());
    tools
}
