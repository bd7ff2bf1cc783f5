//! The syscall crash sweep's machinery (issue 11, item 6a), used by `tests/crash_sweep.rs`.
//!
//! A command is run once under `strace -f -y` to list the file-system calls it makes, then
//! again for each point with `strace -e inject=SYSCALL:signal=KILL:when=N` (and
//! `error=ENOSPC`, `error=EIO`). strace counts `when=N` per syscall (and per thread), so a point
//! is one syscall name and the index of one of its calls; keyward is single-threaded (the
//! counting run checks it).
//!
//! The points are the calls on keyward's own files: the bed's directory (keyward home,
//! authority directory, requests, replies, `TMPDIR`) but not the SoftHSM token store (a real
//! token commits each PKCS#11 call by itself, and the PKCS#11 fault sweep covers those calls)
//! nor SoftHSM's configuration, plus, for the kill only, the writes to stdout (a temporary key
//! printed, or not). The N of a point still counts every call of its syscall, token store
//! included, because that is what strace counts.
//!
//! The state is judged through keyward's own command line only, so that the sweep holds for
//! any storage format: `authority users --json`, `authority log --json` (and `--verify`),
//! `keyset list --json`, each inspected token's objects (`pkcs11-tool`), whether each output
//! file exists, and the names of the files under the bed (after the retry: no temp file may
//! be left). Values that differ between two clean runs (serials, IDs, times, PEM blocks) are
//! masked; two clean runs must compare equal, which checks the masks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

pub use crate::util::beds::{mask, mask_line, restore_state, save_state, states_root};
use crate::util::{
    files_under, p11_object_set, parse_pkcs11_tool_objects, require_tool, Run, TestBed,
};

/// The syscall classes swept, with the syscalls of each (the issue names write, fsync,
/// rename, openat and unlink; `pwrite64`/`writev`/`ftruncate`/`mkdir` are what an embedded
/// database or a directory tree adds).
pub const CLASSES: &[(&str, &[&str])] = &[
    (
        "write",
        &["write", "pwrite64", "writev", "pwritev", "pwritev2"],
    ),
    ("fsync", &["fsync", "fdatasync"]),
    ("rename", &["rename", "renameat", "renameat2"]),
    ("openat", &["openat", "open", "creat"]),
    ("unlink", &["unlink", "unlinkat", "rmdir"]),
    ("mkdir", &["mkdir", "mkdirat"]),
    ("ftruncate", &["ftruncate"]),
];

/// Every syscall of [`CLASSES`].
pub fn all_syscalls() -> Vec<&'static str> {
    CLASSES
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .collect()
}

/// The class of `syscall`.
pub fn class_of(syscall: &str) -> &'static str {
    CLASSES
        .iter()
        .find(|(_, s)| s.contains(&syscall))
        .map(|(c, _)| *c)
        .unwrap_or("other")
}

/// What is injected at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Kill,
    Enospc,
    Eio,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Kill, Fault::Enospc, Fault::Eio];

    fn action(self) -> &'static str {
        match self {
            Fault::Kill => "signal=KILL",
            Fault::Enospc => "error=ENOSPC",
            Fault::Eio => "error=EIO",
        }
    }

    /// Whether an error line names this fault as its cause: the system's message for the
    /// error, or SQLite's for it (SQLite reports a failed write of its files in its own
    /// words).
    pub fn named_in(self, line: &str) -> bool {
        let words: &[&str] = match self {
            Fault::Kill => return true,
            Fault::Enospc => &["No space left on device", "database or disk is full"],
            Fault::Eio => &["Input/output error", "disk I/O error"],
        };
        words.iter().any(|w| line.contains(w))
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Enospc => "ENOSPC",
            Fault::Eio => "EIO",
        }
    }
}

/// One call a command makes on its files.
#[derive(Debug, Clone)]
pub struct Event {
    pub syscall: String,
    /// The call's index among this syscall's calls (strace's `when=N`).
    pub n: u32,
    /// The strace line, with the bed's directory shown as `{dir}`, shortened.
    pub what: String,
    /// A write to stdout (swept with the kill only).
    pub stdout: bool,
}

/// What the counting run found.
#[derive(Debug, Default)]
pub struct Trace {
    /// Every call of [`CLASSES`] (token store and libraries included), per syscall.
    pub per_syscall: BTreeMap<String, u32>,
    /// The calls on keyward's files, in order.
    pub events: Vec<Event>,
    /// Process ids seen beyond the first (threads or children): `when=N` would hit each.
    pub other_pids: usize,
}

/// strace, or a panic saying how to install it.
pub fn require_strace() {
    require_tool("strace", "strace");
}

/// `strace … keyward ARGS` with the bed's environment (see [`TestBed::keyward`]) plus `env`.
pub fn straced(
    bed: &TestBed,
    strace_args: &[String],
    args: &[String],
    env: &[(String, String)],
) -> Command {
    let inner = bed.keyward();
    let mut cmd = Command::new("strace");
    cmd.args(strace_args)
        .arg("--")
        .arg(inner.get_program())
        .args(args)
        .stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KEYWARD_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The result of one straced run.
#[derive(Debug)]
pub struct Straced {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// strace's output file.
    pub trace: String,
}

pub fn run_straced(mut cmd: Command, trace: &Path) -> Straced {
    let out = cmd.output().expect("run strace");
    Straced {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        trace: std::fs::read_to_string(trace).unwrap_or_default(),
    }
}

/// The counting run: the command under `strace -f -y` tracing [`CLASSES`].
pub fn count(
    bed: &TestBed,
    args: &[String],
    env: &[(String, String)],
    trace_file: &Path,
) -> (Straced, Trace) {
    let strace_args = vec![
        "-f".to_string(),
        "-qq".to_string(),
        "--seccomp-bpf".to_string(),
        "-y".to_string(),
        "-s".to_string(),
        "48".to_string(),
        "-e".to_string(),
        format!("trace={}", all_syscalls().join(",")),
        "-o".to_string(),
        trace_file.to_string_lossy().into_owned(),
    ];
    let run = run_straced(straced(bed, &strace_args, args, env), trace_file);
    let trace = parse_trace(&run.trace, &bed.dir.path().to_string_lossy());
    (run, trace)
}

/// `PID name(rest` → (pid, name, rest).
fn split_line(line: &str) -> Option<(&str, &str, &str)> {
    let (pid, rest) = line.split_once(' ')?;
    // strace pads the pid column.
    let rest = rest.trim_start();
    if pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let open = rest.find('(')?;
    let name = &rest[..open];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((pid, name, &rest[open + 1..]))
}

/// Whether an strace line touches keyward's files under `bed` (not the token store, not
/// SoftHSM's configuration).
fn on_keyward_files(name: &str, rest: &str, bed: &str) -> bool {
    // For writes only the file descriptor counts, not the data written.
    let text = if class_of(name) == "write" {
        rest.split_once(">,").map_or(rest, |(fd, _)| fd)
    } else {
        rest
    };
    let text = strip_cwd(text);
    let mut found = false;
    let mut from = 0;
    while let Some(at) = text[from..].find(bed) {
        let after = &text[from + at + bed.len()..];
        if !(after.starts_with("/tokens") || after.starts_with("/softhsm2.conf")) {
            found = true;
        }
        from += at + bed.len();
    }
    found
}

/// `text` without the `AT_FDCWD</cwd>` decorations.
fn strip_cwd(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("AT_FDCWD<") {
        out.push_str(&rest[..at]);
        out.push_str("AT_FDCWD");
        let tail = &rest[at..];
        match tail.find('>') {
            Some(end) => rest = &tail[end + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses a counting run's strace output.
pub fn parse_trace(text: &str, bed: &str) -> Trace {
    let mut trace = Trace::default();
    let mut first_pid: Option<String> = None;
    let mut others = std::collections::BTreeSet::new();
    let mut counters: BTreeMap<(String, String), u32> = BTreeMap::new();
    for line in text.lines() {
        let Some((pid, name, rest)) = split_line(line) else {
            continue;
        };
        let first = first_pid.get_or_insert_with(|| pid.to_string());
        if pid != first {
            others.insert(pid.to_string());
        }
        let n = counters
            .entry((pid.to_string(), name.to_string()))
            .or_default();
        *n += 1;
        *trace.per_syscall.entry(name.to_string()).or_default() += 1;
        if pid != first {
            continue;
        }
        let stdout = class_of(name) == "write" && rest.starts_with("1<");
        if stdout || on_keyward_files(name, rest, bed) {
            trace.events.push(Event {
                syscall: name.to_string(),
                n: *n,
                what: describe(line, bed),
                stdout,
            });
        }
    }
    trace.other_pids = others.len();
    trace
}

/// An strace line for a message: without the pid, the bed shown as `{dir}`, shortened.
pub fn describe(line: &str, bed: &str) -> String {
    let line = line.split_once(' ').map_or(line, |(_, l)| l.trim_start());
    let line = strip_cwd(line).replace(bed, "{dir}");
    let mut short: String = line.chars().take(150).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

/// How an injected run ended, as strace saw it.
pub struct Injected {
    pub run: Straced,
    /// strace shows the injection (`(INJECTED)` or `killed by SIGKILL`).
    pub hit: bool,
    /// The injected call as strace printed it.
    pub call: String,
}

/// Runs the command with `fault` injected at `syscall` call number `n`.
pub fn inject(
    bed: &TestBed,
    args: &[String],
    env: &[(String, String)],
    syscall: &str,
    n: u32,
    fault: Fault,
    trace_file: &Path,
) -> Injected {
    let _ = std::fs::remove_file(trace_file);
    let mut strace_args = vec!["-f".to_string(), "-q".to_string()];
    // strace 6.1 does not deliver an injected signal in --seccomp-bpf mode (the call runs on):
    // the kill runs stop at every syscall, the error runs only at the swept one.
    if fault != Fault::Kill {
        strace_args.push("--seccomp-bpf".to_string());
    }
    strace_args.extend([
        "-y".to_string(),
        "-s".to_string(),
        "48".to_string(),
        "-e".to_string(),
        format!("trace={syscall}"),
        "-e".to_string(),
        format!("inject={syscall}:{}:when={n}", fault.action()),
        "-o".to_string(),
        trace_file.to_string_lossy().into_owned(),
    ]);
    let run = run_straced(straced(bed, &strace_args, args, env), trace_file);
    let bed_dir = bed.dir.path().to_string_lossy().into_owned();
    let (hit, call) = match fault {
        Fault::Kill => {
            let killed = run.trace.contains("killed by SIGKILL");
            let call = run
                .trace
                .lines()
                .rfind(|l| split_line(l).is_some())
                .map(|l| describe(l, &bed_dir))
                .unwrap_or_default();
            (killed, call)
        }
        _ => match run.trace.lines().find(|l| l.contains("(INJECTED)")) {
            Some(l) => (true, describe(l, &bed_dir)),
            None => (false, String::new()),
        },
    };
    Injected { run, hit, call }
}

// ---- the state, through keyward's command line ---------------------------------------------

/// What a case looks at.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// The authority directory (`{dir}` for the bed), if the command changes an authority.
    pub authority: Option<String>,
    /// Whether the keyset registry is part of the state (`keyset list --json`).
    pub keysets: bool,
    /// Tokens whose objects are part of the state: (label, user PIN).
    pub tokens: Vec<(String, String)>,
    /// Output files (`{dir}/…`) whose existence is part of the state.
    pub outputs: Vec<String>,
    /// Whether the labels of the initialised tokens (`token list --json`) are part of the
    /// state: for tokens whose PINs the sweep does not know (their slot IDs vary run to run).
    pub token_labels: bool,
}

/// One audit entry: its masked text and whether its outcome is `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub text: String,
    pub ok: bool,
}

/// The state as keyward's command line shows it, masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Named parts: "authority users", "keyset list", "token LABEL", "output PATH".
    pub parts: BTreeMap<String, String>,
    /// `authority log --json`, when there is an authority (Err: the command failed).
    pub log: Option<Result<Vec<LogEntry>, String>>,
    /// `authority log --verify`: Err with its error when it fails.
    pub verify: Option<Result<(), String>>,
}

/// Runs keyward on the bed (the view never changes the state, except that a command may clean
/// up what a killed one left).
fn keyward(bed: &TestBed, args: &[&str], env: &[(String, String)]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    bed.run_env(args, &env)
}

/// The first `keyward: error:` line (or the last line) of stderr, with the bed's directory
/// shown as `{dir}`, masked.
pub fn error_line(bed: &TestBed, stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("keyward: error:"))
        .or_else(|| stderr.lines().last())
        .unwrap_or("");
    let line = line.replace(&*bed.dir.path().to_string_lossy(), "{dir}");
    mask(&line).trim().to_string()
}

/// Captures the view of `bed` (`here` replaces `{dir}`; `env` holds the PINs).
pub fn view(bed: &TestBed, probe: &Probe, env: &[(String, String)]) -> View {
    let here = |s: &str| s.replace("{dir}", &bed.dir.path().to_string_lossy());
    let mut parts = BTreeMap::new();
    let mut log = None;
    let mut verify = None;
    if let Some(dir) = &probe.authority {
        let dir = here(dir);
        let users = keyward(bed, &["--json", "authority", "users", "--dir", &dir], env);
        parts.insert(
            "authority users".to_string(),
            if users.code == 0 {
                masked_json(&users.stdout)
            } else {
                format!("error: {}", error_line(bed, &users.stderr))
            },
        );
        let entries = keyward(bed, &["--json", "authority", "log", "--dir", &dir], env);
        log = Some(if entries.code == 0 {
            Ok(log_entries(&entries.stdout))
        } else {
            Err(error_line(bed, &entries.stderr))
        });
        let verified = keyward(bed, &["authority", "log", "--dir", &dir, "--verify"], env);
        verify = Some(if verified.code == 0 {
            Ok(())
        } else {
            Err(error_line(bed, &verified.stderr))
        });
    }
    if probe.keysets {
        let list = keyward(bed, &["--json", "keyset", "list"], env);
        parts.insert(
            "keyset list".to_string(),
            if list.code == 0 {
                masked_json(&list.stdout)
            } else {
                format!("error: {}", error_line(bed, &list.stderr))
            },
        );
    }
    for (label, pin) in &probe.tokens {
        parts.insert(format!("token {label}"), token_objects(bed, label, pin));
    }
    if probe.token_labels {
        let run = keyward(bed, &["--json", "token", "list"], env);
        let labels = if run.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
            let mut labels: Vec<String> = v["slots"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["token"]["initialized"] == true)
                .map(|s| s["token"]["label"].as_str().unwrap_or_default().to_string())
                .collect();
            labels.sort();
            labels.join(", ")
        } else {
            format!("error: {}", error_line(bed, &run.stderr))
        };
        parts.insert("token labels".to_string(), labels);
    }
    for out in &probe.outputs {
        let path = here(out);
        let present = Path::new(&path).exists();
        let mut what = if present { "present" } else { "absent" }.to_string();
        // A CSV of issued secrets (one row per user): whose rows it holds, in order, so that a
        // row issued twice or one the authority never recorded shows.
        if present && out.ends_with(".csv") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let users: Vec<&str> = text
                .lines()
                .map(|l| l.split(',').next().unwrap_or_default())
                .collect();
            what = format!("present, rows {users:?}");
        }
        parts.insert(format!("output {out}"), what);
    }
    View { parts, log, verify }
}

/// A token's objects as (class, label, ID) with the IDs renamed by first appearance.
fn token_objects(bed: &TestBed, label: &str, pin: &str) -> String {
    let run = bed.pkcs11_tool_login(label, pin);
    if run.code != 0 {
        return format!(
            "pkcs11-tool --login failed: {}",
            error_line(bed, &run.stderr)
        );
    }
    let mut objs: Vec<_> = p11_object_set(&parse_pkcs11_tool_objects(&run.stdout))
        .into_iter()
        .collect();
    objs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<String> = objs
        .into_iter()
        .map(|(h, l, id)| {
            let n = names.len();
            let n = *names.entry(id).or_insert(n);
            format!("{h} {l:?} id{n}")
        })
        .collect();
    out.sort();
    out.join("\n")
}

/// The audit log's entries, masked, without what chains them (sequence numbers, times,
/// hashes, signatures): what happened, to whom, how it ended.
fn log_entries(json: &str) -> Vec<LogEntry> {
    let value: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            return vec![LogEntry {
                text: format!("unparsable log JSON: {e}"),
                ok: false,
            }]
        }
    };
    let entries = match value {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(mut o) => match o.remove("entries") {
            Some(serde_json::Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    entries
        .into_iter()
        .map(|e| {
            let ok = e.get("outcome").and_then(|o| o.as_str()).unwrap_or("ok") == "ok";
            let mut e = e;
            if let serde_json::Value::Object(o) = &mut e {
                for k in [
                    "seq",
                    "time",
                    "prev",
                    "hash",
                    "signature",
                    "sig",
                    "checkpoint",
                ] {
                    o.remove(k);
                }
            }
            LogEntry {
                text: mask_value(&e).to_string(),
                ok,
            }
        })
        .collect()
}

/// Pretty JSON with every PEM block and varying value masked.
pub fn masked_json(json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) => serde_json::to_string_pretty(&mask_value(&v)).expect("JSON"),
        Err(_) => mask(json),
    }
}

fn mask_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains("-----BEGIN ") => Value::String("<PEM>".into()),
        Value::String(s) => Value::String(mask(s).trim_end_matches('\n').to_string()),
        Value::Array(a) => Value::Array(a.iter().map(mask_value).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), mask_value(v))).collect())
        }
        other => other.clone(),
    }
}

/// The names of the files under the bed (token store, SoftHSM configuration and lock files
/// left out), each path component masked, sorted: a multiset of names, so that a file left
/// behind shows even when its name looks like another's.
pub fn file_names(bed: &TestBed) -> Vec<String> {
    let mut out: Vec<String> = files_under(bed.dir.path())
        .into_iter()
        .filter(|p| !(p.starts_with("tokens/") || p == "softhsm2.conf" || p.ends_with(".lock")))
        .map(|p| p.split('/').map(mask_line).collect::<Vec<_>>().join("/"))
        .collect();
    out.sort();
    out
}

/// The files of `now` that `reference` lacks, and those it has that `now` lacks (multisets).
pub fn names_diff(now: &[String], reference: &[String]) -> (Vec<String>, Vec<String>) {
    let mut extra = now.to_vec();
    let mut missing = Vec::new();
    for r in reference {
        match extra.iter().position(|n| n == r) {
            Some(i) => {
                extra.remove(i);
            }
            None => missing.push(r.clone()),
        }
    }
    (extra, missing)
}

// ---- comparing views ------------------------------------------------------------------------

/// Why `now` is not the state before the command (None: it is). The audit log may have grown
/// by entries whose outcome is not `ok` (a failure recorded).
pub fn differs_from_before(now: &View, before: &View) -> Option<String> {
    if let Some(why) = parts_differ(now, before) {
        return Some(why);
    }
    match (&now.log, &before.log) {
        (Some(Ok(n)), Some(Ok(b))) => {
            if n.len() < b.len() || n[..b.len()] != b[..] {
                return Some("authority log: earlier entries changed or gone".to_string());
            }
            if let Some(e) = n[b.len()..].iter().find(|e| e.ok) {
                return Some(format!("authority log: a new ok entry {}", e.text));
            }
            None
        }
        (n, b) if n != b => Some(format!("authority log: now {n:?}, before {b:?}")),
        _ => None,
    }
}

/// Why `now` is not the state after a clean run (None: it is). Audit entries are compared by
/// their `ok` ones.
pub fn differs_from_after(now: &View, after: &View) -> Option<String> {
    if let Some(why) = parts_differ(now, after) {
        return Some(why);
    }
    let oks = |l: &Option<Result<Vec<LogEntry>, String>>| {
        l.clone()
            .map(|r| r.map(|v| v.into_iter().filter(|e| e.ok).collect::<Vec<_>>()))
    };
    let (n, a) = (oks(&now.log), oks(&after.log));
    if n != a {
        return Some(match (&n, &a) {
            (Some(Ok(n)), Some(Ok(a))) => first_log_difference(n, a),
            _ => format!("authority log: now {n:?}, after {a:?}"),
        });
    }
    None
}

fn first_log_difference(now: &[LogEntry], reference: &[LogEntry]) -> String {
    for (i, (n, r)) in now.iter().zip(reference).enumerate() {
        if n != r {
            return format!(
                "authority log entry {}: now {}, expected {}",
                i + 1,
                n.text,
                r.text
            );
        }
    }
    if now.len() > reference.len() {
        format!(
            "authority log: extra ok entries {:?}",
            now[reference.len()..]
                .iter()
                .map(|e| &e.text)
                .collect::<Vec<_>>()
        )
    } else {
        format!(
            "authority log: missing ok entries {:?}",
            reference[now.len()..]
                .iter()
                .map(|e| &e.text)
                .collect::<Vec<_>>()
        )
    }
}

fn parts_differ(now: &View, reference: &View) -> Option<String> {
    for (name, want) in &reference.parts {
        let got = now.parts.get(name).map(String::as_str).unwrap_or("<none>");
        if got != want {
            let why = named_json_diff(got, want).unwrap_or_else(|| text_diff(got, want));
            return Some(format!("{name}: {why}"));
        }
    }
    None
}

/// For two JSON arrays of objects with a `name` (users, keysets): which are new, gone, or
/// differ, and in which fields.
fn named_json_diff(now: &str, want: &str) -> Option<String> {
    use serde_json::Value;
    let by_name = |text: &str| -> Option<BTreeMap<String, Value>> {
        let Value::Array(items) = serde_json::from_str::<Value>(text).ok()? else {
            return None;
        };
        items
            .into_iter()
            .map(|v| Some((v.get("name")?.as_str()?.to_string(), v)))
            .collect()
    };
    let (n, w) = (by_name(now)?, by_name(want)?);
    let mut out = Vec::new();
    for name in n.keys().filter(|k| !w.contains_key(*k)) {
        out.push(format!("{name:?} is there and should not be"));
    }
    for name in w.keys().filter(|k| !n.contains_key(*k)) {
        out.push(format!("{name:?} is missing"));
    }
    for (name, wv) in &w {
        let Some(nv) = n.get(name) else { continue };
        if nv == wv {
            continue;
        }
        let (Value::Object(no), Value::Object(wo)) = (nv, wv) else {
            out.push(format!("{name:?} differs"));
            continue;
        };
        let keys: std::collections::BTreeSet<&String> = no.keys().chain(wo.keys()).collect();
        for k in keys {
            if no.get(k) != wo.get(k) {
                out.push(format!(
                    "{name:?}.{k} is {} but should be {}",
                    no.get(k).map_or("absent".into(), |v| v.to_string()),
                    wo.get(k).map_or("absent".into(), |v| v.to_string())
                ));
            }
        }
    }
    Some(out.join("; "))
}

/// The first differing line of two texts, with a little context.
pub fn text_diff(now: &str, want: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (now.lines().collect(), want.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let around = |v: &[&str]| {
        v.iter()
            .skip(i.saturating_sub(2))
            .take(4)
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "from line {}: now `{}`, expected `{}`",
        i + 1,
        around(&a),
        around(&b)
    )
}

/// Only the output files differ between `now` and `after` (a committed change whose output was
/// not written).
pub fn only_outputs_differ(now: &View, after: &View) -> bool {
    let mut n = now.clone();
    for (name, v) in &after.parts {
        if name.starts_with("output ") {
            n.parts.insert(name.clone(), v.clone());
        }
    }
    differs_from_after(&n, after).is_none()
}

// ---- beds -----------------------------------------------------------------------------------

/// Appends a sweep's summary line to `target/tmp/crash-sweep.txt` (printed by
/// `testbeds/test-all.sh`).
pub fn record_summary(line: &str) {
    crate::util::beds::record_summary("crash-sweep.txt", line);
}

/// A digest of everything under the bed but its SoftHSM configuration (which names the bed):
/// every directory and file by its path relative to the bed, its permission bits and, for a
/// file, its bytes. Two beds with the same digest hold the same state byte for byte, so
/// keyward run on either does the same.
pub fn bed_digest(bed: &TestBed) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, h: &mut Sha256) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if rel == "softhsm2.conf" {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(meta.permissions().mode().to_le_bytes());
            if meta.is_dir() {
                h.update(b"d");
                walk(root, &p, h);
            } else {
                h.update(b"f");
                let bytes = std::fs::read(&p).unwrap_or_default();
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
        }
    }
    let mut h = Sha256::new();
    walk(bed.dir.path(), bed.dir.path(), &mut h);
    h.finalize().into()
}
