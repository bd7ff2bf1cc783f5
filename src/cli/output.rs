//! Printing results: human text, or JSON with `--json`.
//!
//! Standard output carries what a command exists to give: its data (a PEM, a temporary key, a
//! message, a listing) or, for an action, its one result line (`say!`) — or, with `--json`,
//! one JSON document instead ([`print_json`], schema in docs/json.md). Standard error carries
//! everything else: prompts, progress, notes (`note!`), warnings and errors. `--quiet` drops
//! result lines, notes and progress; data, JSON and errors stay.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The version of the JSON documents `--json` prints (docs/json.md).
pub const JSON_SCHEMA_VERSION: u32 = 1;

static QUIET: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);
static COMMAND: OnceLock<String> = OnceLock::new();

/// Sets what every print obeys: `--quiet`, `--json`, and the command's name (`keyset list`)
/// that each JSON document carries. Called once, by `cli::main`.
pub fn configure(quiet: bool, json: bool, command: String) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
    let _ = COMMAND.set(command);
}

/// `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `--json` was given.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The command's name as JSON documents carry it, e.g. `keyset list`.
pub fn command_name() -> &'static str {
    COMMAND.get().map_or("", String::as_str)
}

/// Whether result lines and notes are printed: not with `--quiet`, not with `--json` (the
/// document says it).
pub fn chatty() -> bool {
    !quiet() && !json()
}

/// `s` made safe to print as one piece of a text line: control characters (C0 such as a line
/// end or ESC, DEL, C1), the Unicode bidirectional controls (U+061C, U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069) and the backslash are written as Rust escapes (`\n`,
/// `\u{1b}`, `\\`), so a stored field can neither start a line nor drive the terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

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

/// An action's result line on standard output (not with `--quiet` or `--json`).
macro_rules! say {
    ($($t:tt)*) => {
        if $crate::cli::output::chatty() {
            $crate::cli::output::write_out(format_args!("{}\n", format_args!($($t)*)))
        }
    };
}

/// A note on standard error (not with `--quiet`): what else the user should know.
macro_rules! note {
    ($($t:tt)*) => {
        if !$crate::cli::output::quiet() {
            eprintln!($($t)*)
        }
    };
}

pub(crate) use {note, out, outln, say};

use serde::Serialize;

use crate::error::Error;
use crate::token::caps::PadMeaning;
use crate::token::{Capabilities, LibraryInfo, PinState, SlotEntry, TokenSummary};

/// Prints the command's JSON document: `value`'s fields with `schema_version` and `command`
/// added (a value that is not an object goes under `result`). docs/json.md describes each.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(&document(value)) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("keyward: cannot encode JSON: {e}"),
    }
}

/// `value` as a document of this command.
fn document<T: Serialize>(value: &T) -> serde_json::Value {
    let mut doc = match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(other) => {
            let mut map = serde_json::Map::new();
            map.insert("result".into(), other);
            map
        }
        Err(e) => {
            let mut map = serde_json::Map::new();
            map.insert("result".into(), format!("cannot encode: {e}").into());
            map
        }
    };
    doc.insert("schema_version".into(), JSON_SCHEMA_VERSION.into());
    doc.insert("command".into(), command_name().into());
    serde_json::Value::Object(doc)
}

/// An error as JSON on standard error: the same fields the text has.
pub fn print_error_json(err: &Error) {
    let call = err.call().map(|c| {
        serde_json::json!({
            "function": c.function,
            "code": c.ckr(),
            "value": c.value(),
        })
    });
    let doc = serde_json::json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "command": command_value(),
        "error": {
            "message": err.to_string(),
            "hint": err.hint(),
            "exit_status": err.exit_code(),
            "pkcs11": call,
            "causes": causes(err),
        }
    });
    eprintln!("{}", serde_json::to_string(&doc).unwrap_or_default());
}

/// The texts of an error's sources, each once (a layer that wraps another says the same).
fn causes(err: &Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last = err.to_string();
    for e in crate::error::chain(err).skip(1) {
        let text = e.to_string();
        if text != last {
            out.push(text.clone());
        }
        last = text;
    }
    out
}

/// The command name for a document: `null` when the command line did not parse.
fn command_value() -> serde_json::Value {
    match command_name() {
        "" => serde_json::Value::Null,
        name => name.into(),
    }
}

/// A usage error (from the parser) as JSON on standard error.
pub fn print_usage_error_json(message: &str) {
    let doc = serde_json::json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "command": command_value(),
        "error": {
            "message": message,
            "hint": "see --help",
            "exit_status": 2,
            "pkcs11": null,
            "causes": [],
        }
    });
    eprintln!("{}", serde_json::to_string(&doc).unwrap_or_default());
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

/// `token info`: the token and its probed capabilities.
pub fn token_with_caps(t: &TokenSummary, caps: &Capabilities, json: bool) {
    if json {
        #[derive(Serialize)]
        struct Info<'a> {
            #[serde(flatten)]
            token: &'a TokenSummary,
            capabilities: &'a Capabilities,
        }
        print_json(&Info {
            token: t,
            capabilities: caps,
        });
        return;
    }
    outln!("Slot {} ({})", t.slot_id, t.slot_description);
    token_lines(t, "  ");
    capability_lines(caps, "  ");
}

fn capability_lines(c: &Capabilities, indent: &str) {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    outln!("{indent}capabilities:");
    let i = format!("{indent}  ");
    let w = &c.aes_wrap;
    outln!("{i}AES key wrap (RFC 3394):          {}", w.kw);
    outln!("{i}AES key wrap KWP (RFC 5649):      {}", w.kwp);
    outln!(
        "{i}AES key wrap PAD (0x210A):        {}",
        match w.pad {
            PadMeaning::Rfc5649 => "RFC 5649 (known-answer test)",
            PadMeaning::Rfc5649ZeroPadded =>
                "RFC 5649 to unwrap; wraps the key zero-padded to 8 bytes (known-answer test)",
            PadMeaning::NotRfc5649 => "not RFC 5649 (PKCS#7 + RFC 3394, as in PKCS#11 3.x)",
            PadMeaning::Absent => "not offered",
            PadMeaning::Unknown => "unknown (the known-answer test could not run)",
        }
    );
    outln!("{i}AES-CBC-PAD wrap:                 {}", w.cbc_pad);
    outln!(
        "{i}RSA-AES key wrap:                 {}",
        if w.rsa_aes_key_wrap {
            "offered (not tried)"
        } else {
            "no"
        }
    );
    outln!(
        "{i}RFC 5649 by:                      {}",
        c.rfc5649.map_or("none", |m| m.name())
    );
    let oaep: Vec<String> = c
        .oaep
        .iter()
        .map(|h| format!("{h:?}").to_uppercase())
        .collect();
    outln!(
        "{i}RSA-OAEP hashes:                  {}",
        if oaep.is_empty() {
            "none".to_string()
        } else {
            oaep.join(", ")
        }
    );
    let kg = &c.key_generation;
    outln!(
        "{i}generates:                        {}{}",
        kg.rsa_bits
            .map_or("no RSA".to_string(), |(a, b)| format!("RSA {a}–{b} bits")),
        if kg.ec_p256 {
            ", EC P-256"
        } else {
            ", no EC P-256"
        }
    );
    outln!(
        "{i}unwrap private key (RFC 5649):    {}",
        c.unwrap_private_key.rfc5649
    );
    outln!(
        "{i}unwrap private key (AES-CBC-PAD): {}",
        c.unwrap_private_key.aes_cbc_pad
    );
    outln!(
        "{i}import private key:               {}",
        c.import_private_key
    );
    outln!(
        "{i}context-specific login:           {}",
        c.context_specific_login
    );
    outln!(
        "{i}PIN pad:                          {}",
        yes_no(c.protected_auth_path)
    );
    outln!("{i}mechanisms:");
    for m in &c.mechanisms {
        outln!(
            "{i}  {} ({}): {} [{}..{}]",
            m.name,
            m.code,
            m.flags.join(" "),
            m.min_key_size,
            m.max_key_size
        );
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
        say!("{message}");
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

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_line_ends_escapes_and_bidi_controls() {
        assert_eq!(printable("alice add-user ok"), "alice add-user ok");
        assert_eq!(
            printable("a\nb\r\u{1b}[8m\u{9b}\u{7f}\t"),
            "a\\nb\\r\\u{1b}[8m\\u{9b}\\u{7f}\\t"
        );
        assert_eq!(
            printable("x\u{202e}y\u{2066}z\u{200f}"),
            "x\\u{202e}y\\u{2066}z\\u{200f}"
        );
        assert_eq!(printable("C:\\x"), "C:\\\\x");
        assert_eq!(printable("é ü 日本"), "é ü 日本");
    }
}
