//! What the two fault sweeps share (`tests/fault_sweep.rs`, the PKCS#11 one, and
//! `tests/crash_sweep.rs`, the syscall one): saving and restoring a bed's whole state, where the
//! shared starting states live, the summary files, and the masks that hide what differs between
//! two clean runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestBed;

/// Files of a bed's directory that are not part of its state.
pub fn scratch(name: &str) -> bool {
    name == "softhsm2.conf" || name == "shim-counts" || name == "tmp"
}

/// Copies everything of `bed`'s directory except its SoftHSM configuration and scratch files
/// into `to` (a new directory): the token store, the keyward home, the authority and every
/// other file.
pub fn save_state(bed: &TestBed, to: &Path) {
    std::fs::create_dir_all(to).expect("state directory");
    cp_a(bed.dir.path(), to);
    for entry in std::fs::read_dir(to).expect("state directory") {
        let entry = entry.expect("state entry");
        if scratch(&entry.file_name().to_string_lossy()) {
            remove(&entry.path());
        }
    }
}

fn remove(p: &Path) {
    if p.is_dir() {
        std::fs::remove_dir_all(p).expect("remove directory");
    } else {
        std::fs::remove_file(p).expect("remove file");
    }
}

/// Makes `bed`'s directory hold exactly what `from` holds (plus its own SoftHSM configuration,
/// whose token directory is this bed's), with an empty `tmp/` for `TMPDIR`: SoftHSM's store is
/// plain files, so this restores every token exactly. No keyward process may be running on
/// the bed.
pub fn restore_state(bed: &TestBed, from: &Path) {
    for entry in std::fs::read_dir(bed.dir.path()).expect("bed directory") {
        let entry = entry.expect("bed entry");
        if entry.file_name() != "softhsm2.conf" {
            remove(&entry.path());
        }
    }
    cp_a(from, bed.dir.path());
    std::fs::create_dir_all(bed.path("tmp")).expect("bed tmp");
}

/// `cp -a FROM/. INTO/`: everything in directory FROM into directory INTO.
pub fn cp_a(from: &Path, into: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(into)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        into.display()
    );
}

/// Where a sweep's shared starting states live: under Cargo's target directory, one
/// directory per test process (another may be sweeping at the same time), named
/// `PREFIX-PID`; those of processes that have ended are removed.
pub fn states_root(prefix: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dash = format!("{prefix}-");
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&dash) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tmp.join(format!("{prefix}-{}", std::process::id()))
}

/// Appends a sweep's summary line to `target/tmp/FILE`, which `testbeds/test-all.sh` prints
/// after the tests (cargo test shows a passing test's output only with --nocapture). One
/// short O_APPEND write per line: parallel sweeps do not interleave.
pub fn record_summary(file: &str, line: &str) {
    use std::io::Write;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("cannot record the summary in {}: {e}", path.display());
    }
}

/// `(k, v)` pairs as owned strings.
pub fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Masks what differs between clean runs: PEM blocks (one `<PEM …` line), Argon2 hashes, RFC
/// 3339 times (to the second, any fraction), percent-encoded IDs in PKCS#11 URIs, and runs of
/// 16 or more hex/base64 characters with a digit in them (IDs, serials, nonces, wrapped keys,
/// salts).
pub fn mask(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(kind) = line.strip_prefix("-----BEGIN ") {
            for rest in lines.by_ref() {
                if rest.starts_with("-----END ") {
                    break;
                }
            }
            out.push_str(&format!("<PEM {kind}\n"));
            continue;
        }
        out.push_str(&mask_line(line));
        out.push('\n');
    }
    out
}

/// [`mask`] of one line.
pub fn mask_line(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && chars[i..].iter().collect::<String>().starts_with("$argon2") {
            let end = chars[i..]
                .iter()
                .position(|c| *c == '"' || c.is_whitespace())
                .map_or(chars.len(), |p| i + p);
            out.push_str("<PHC>");
            i = end;
            continue;
        }
        if is_time_at(&chars[i..]) {
            out.push_str("<TIME>");
            i += 19;
            while i < chars.len() && (chars[i] == '.' || chars[i].is_ascii_digit()) {
                i += 1;
            }
            if i < chars.len() && chars[i] == 'Z' {
                i += 1;
            }
            continue;
        }
        if let Some(end) = percent_id_end(&chars, i) {
            out.push_str("<R>");
            i = end;
            continue;
        }
        let token = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
        if token(chars[i]) {
            let end = chars[i..]
                .iter()
                .position(|c| !token(*c))
                .map_or(chars.len(), |p| i + p);
            let run: String = chars[i..end].iter().collect();
            if run.len() >= 16 && run.chars().any(|c| c.is_ascii_digit()) {
                out.push_str("<R>");
            } else {
                out.push_str(&run);
            }
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Where a percent-encoded ID of four or more bytes that starts at `i` ends (`id=%3F%E6…` in
/// a PKCS#11 URI).
fn percent_id_end(chars: &[char], i: usize) -> Option<usize> {
    let mut end = i;
    while end + 2 < chars.len()
        && chars[end] == '%'
        && chars[end + 1].is_ascii_hexdigit()
        && chars[end + 2].is_ascii_hexdigit()
    {
        end += 3;
    }
    (end - i >= 12).then_some(end)
}

/// `YYYY-MM-DDTHH:MM:SS` at the start of `c`.
fn is_time_at(c: &[char]) -> bool {
    const PATTERN: &str = "dddd-dd-ddTdd:dd:dd";
    c.len() >= PATTERN.len()
        && PATTERN.chars().zip(c).all(|(p, ch)| {
            if p == 'd' {
                ch.is_ascii_digit()
            } else {
                p == *ch
            }
        })
}
