//! Pieces both command-line tools share: reading the command line (usage errors as one line,
//! exit code 2), the `--threads` parser, number formatting.

use crate::pool::MAX_THREADS;

/// Reads the command line of a tool. `--help` and `--version` print and exit 0; a usage error
/// (an unknown flag, a bad value, a missing argument, no command) is one line
/// `error: <problem> (see --help)` on stderr and exit code 2, like every other bad input.
///
/// Also lets a closed stdout end the process quietly, as it does other Unix tools
/// (`fmnist-infer eval --json | head -c 1`): Rust ignores SIGPIPE, which would make every
/// `println!` after the reader is gone panic; the default action stops the process without a
/// message instead.
pub fn parse_args<P: clap::Parser>() -> P {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match P::try_parse() {
        Ok(p) => p,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            eprintln!("error: {}", usage_error_line::<P>(&e));
            std::process::exit(2)
        }
    }
}

/// clap's error as one line: its text up to the usage block, lines joined, the `error: ` prefix
/// dropped.
pub fn usage_error_line<P: clap::CommandFactory>(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let mut cmd = P::command();
        // The deepest command named on the line is the one missing a subcommand.
        let mut path = vec![cmd.get_name().to_owned()];
        let args: Vec<String> = std::env::args().skip(1).collect();
        for a in &args {
            let Some(sub) = cmd.find_subcommand(a).cloned() else {
                break;
            };
            path.push(a.clone());
            cmd = sub;
        }
        let names: Vec<&str> = cmd
            .get_subcommands()
            .map(|c| c.get_name())
            .filter(|n| *n != "help")
            .collect();
        return format!(
            "no command given: `{}` takes one of {} (see --help)",
            path.join(" "),
            names.join(", ")
        );
    }
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut joined = String::new();
    for l in lines {
        let sep = match (joined.is_empty(), l.starts_with("tip:")) {
            (true, _) => "",
            (false, true) => "; ",
            (false, false) => " ",
        };
        joined.push_str(sep);
        joined.push_str(l);
    }
    let body = joined.strip_prefix("error: ").unwrap_or(&joined);
    format!("{body} (see --help)")
}

/// Parses `--threads`: 0 (all cores) to [`MAX_THREADS`]. Both command-line tools take it.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("expected a whole number from 0 to {MAX_THREADS}"))?;
    if n > MAX_THREADS {
        return Err(format!(
            "{n} is more than {MAX_THREADS} (0 means one per core)"
        ));
    }
    Ok(n)
}

/// Thousands separators: 61750 → "61,750".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_threads() {
        assert_eq!(thousands(61_750), "61,750");
        assert_eq!(thousands(850), "850");
        assert_eq!(thousands(1_630_282), "1,630,282");
        assert_eq!(parse_threads("256"), Ok(256));
        assert!(parse_threads("257").unwrap_err().contains("more than 256"));
    }
}
