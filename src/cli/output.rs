//! Printing results: human text, or JSON with `--json`.

use std::path::Path;

use serde::Serialize;

use crate::token::{PinState, SlotEntry, TokenSummary};

/// Prints a JSON value on one line.
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("keyward: cannot encode JSON: {e}"),
    }
}

#[derive(Serialize)]
struct SlotList<'a> {
    module: &'a Path,
    slots: &'a [SlotEntry],
}

/// `token list`.
pub fn slots(module: &Path, slots: &[SlotEntry], json: bool) {
    if json {
        print_json(&SlotList { module, slots });
        return;
    }
    println!("Module: {}", module.display());
    if slots.is_empty() {
        println!("No slots.");
    }
    for slot in slots {
        println!();
        match &slot.token {
            None => println!("Slot {} ({}): no token", slot.slot_id, slot.description),
            Some(t) if !t.initialized => {
                println!(
                    "Slot {} ({}): uninitialised token",
                    slot.slot_id, slot.description
                )
            }
            Some(t) => {
                println!("Slot {} ({})", slot.slot_id, slot.description);
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
        println!("Slot {} ({})", t.slot_id, t.slot_description);
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
        println!("{message}");
    }
}

fn token_lines(t: &TokenSummary, indent: &str) {
    println!("{indent}label:        {}", t.label);
    println!("{indent}serial:       {}", t.serial);
    println!("{indent}manufacturer: {}", t.manufacturer);
    println!("{indent}model:        {}", t.model);
    println!("{indent}flags:        {}", flags(t));
    println!(
        "{indent}user PIN:     {}",
        pin_state(&t.user_pin, t.user_pin_initialized)
    );
    println!("{indent}SO PIN:       {}", pin_state(&t.so_pin, true));
    println!("{indent}PIN length:   {}..{}", t.min_pin_len, t.max_pin_len);
    println!("{indent}uri:          {}", t.uri);
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
