//! Printing results: human text, or JSON with `--json`.

use std::io::Write;
use std::path::Path;

/// Writes to standard output; a closed pipe (`keyward … | head`) ends the process quietly.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("keyward: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` that does not panic on a closed pipe.
macro_rules! outln {
    () => { $crate::cli::output::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::output::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` that does not panic on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::output::write_out(format_args!($($t)*)) };
}

pub(crate) use {out, outln};

use serde::Serialize;

use crate::error::Error;
use crate::token::{LibraryInfo, PinState, SlotEntry, TokenSummary};

/// Prints a JSON value on one line.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("keyward: cannot encode JSON: {e}"),
    }
}

#[derive(Serialize)]
struct SlotList<'a> {
    module: &'a Path,
    library: &'a LibraryInfo,
    slots: &'a [SlotEntry],
}

/// `token list`.
pub fn slots(module: &Path, library: &LibraryInfo, slots: &[SlotEntry], json: bool) {
    if json {
        print_json(&SlotList {
            module,
            library,
            slots,
        });
        return;
    }
    outln!(
        "Module: {} ({} {}, version {})",
        module.display(),
        library.manufacturer,
        library.description,
        library.version
    );
    if slots.is_empty() {
        outln!("No slots.");
    }
    for slot in slots {
        outln!();
        match &slot.token {
            None => match &slot.unreadable {
                Some(why) => outln!("Slot {} ({}): {why}", slot.slot_id, slot.description),
                None => outln!("Slot {} ({}): no token", slot.slot_id, slot.description),
            },
            Some(t) if !t.initialized => {
                outln!(
                    "Slot {} ({}): uninitialised token",
                    slot.slot_id,
                    slot.description
                )
            }
            Some(t) => {
                outln!("Slot {} ({})", slot.slot_id, slot.description);
                token_lines(t, "  ");
            }
        }
    }
}

/// `token info`.
pub fn token(t: &TokenSummary, json: bool) {
    if json {
        print_json(t);
    } else {
        outln!("Slot {} ({})", t.slot_id, t.slot_description);
        token_lines(t, "  ");
    }
}

/// A finished action: one line, or the token as JSON.
pub fn done(message: &str, t: &TokenSummary, json: bool) {
    if json {
        #[derive(Serialize)]
        struct Done<'a> {
            result: &'a str,
            token: &'a TokenSummary,
        }
        print_json(&Done {
            result: message,
            token: t,
        });
    } else {
        outln!("{message}");
    }
}

fn token_lines(t: &TokenSummary, indent: &str) {
    outln!("{indent}label:        {}", t.label);
    outln!("{indent}serial:       {}", t.serial);
    outln!("{indent}manufacturer: {}", t.manufacturer);
    outln!("{indent}model:        {}", t.model);
    outln!("{indent}flags:        {}", flags(t));
    outln!(
        "{indent}user PIN:     {}",
        pin_state(&t.user_pin, t.user_pin_initialized)
    );
    outln!("{indent}SO PIN:       {}", pin_state(&t.so_pin, true));
    outln!("{indent}PIN length:   {}..{}", t.min_pin_len, t.max_pin_len);
    outln!("{indent}uri:          {}", t.uri);
}

fn flags(t: &TokenSummary) -> String {
    let mut f = Vec::new();
    if t.initialized {
        f.push("initialized");
    }
    if t.login_required {
        f.push("login required");
    }
    if t.write_protected {
        f.push("write-protected");
    }
    if t.protected_auth_path {
        f.push("PIN pad");
    }
    f.join(", ")
}

fn pin_state(p: &PinState, initialized: bool) -> String {
    if !initialized {
        return "not set".to_string();
    }
    if p.locked {
        return "LOCKED".to_string();
    }
    let mut s = vec!["set"];
    if p.final_try {
        s.push("final try (one wrong PIN locks it)");
    } else if p.count_low {
        s.push("count low (a wrong PIN was entered)");
    }
    if p.to_be_changed {
        s.push("to be changed");
    }
    s.join(", ")
}

/// Refuses an output path that names the input file (`-o` onto the file being signed or read
/// would destroy it): the same file by device and inode, so links and `./x` vs `x` count.
pub fn refuse_same_file(input: &std::path::Path, output: &std::path::Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(i), Ok(o)) = (std::fs::metadata(input), std::fs::metadata(output)) else {
        return Ok(()); // the output does not exist yet (or the input will fail to open)
    };
    if (i.dev(), i.ino()) == (o.dev(), o.ino()) {
        return Err(Error::Usage(format!(
            "-o {} is the input file itself; writing there would destroy it: choose another output",
            output.display()
        )));
    }
    Ok(())
}
