//! The fault sweep (issue 6, item 3): every PKCS#11 call of every state-changing command,
//! failed in turn through the fault-injecting shim (`shim/`).
//!
//! For each command: set up its starting state, run it once through the shim to count its
//! PKCS#11 calls (N), and run it twice more without a fault to learn what "after a success"
//! looks like. Then, for every k in 1..=N, restore the starting state exactly (SoftHSM's token
//! store is plain files: the whole test-bed directory is copied back) and run the command with
//! `KEYWARD_SHIM_FAULT=CKR_DEVICE_ERROR@k`; for the calls that change a token, log in or clean
//! up, once more with `CKR_DEVICE_REMOVED@k`. Each run must
//!
//! * exit 1 with a one-line error (stderr holds nothing but one `keyward: error:` line and
//!   `[`-prefixed log lines), or exit 0 — allowed only when the state is exactly the state
//!   after a success (the fault hit clean-up after the work was durable, or a call whose
//!   failure keyward rightly works around);
//! * leave the state exactly as before the command or exactly as after a success;
//! * leave nothing in its `TMPDIR`, and actually have met the fault (the shim's count file says
//!   so).
//!
//! One documented exception: `token init` cannot be undone once `C_InitToken` has run (see
//! [`Resume`]); a fault after it must fail with one line naming `keyward token unblock`, which
//! must then reach exactly the after-state.
//!
//! Besides the eight commands of the issue, the sweep covers `keyset create --harden` (the PIN
//! switch, with the shim counting wrong PINs: a try spent by keyward itself shows in the
//! state), and `authority process` and `enroll --complete` for a recovered user (archived keys
//! unwrapped and re-wrapped, two keys stored, the old keyset retired). `authority recover`
//! changes only the authority's files: it makes no PKCS#11 call, so it has no injection point.
//!
//! The state, and how it is compared:
//!
//! * every token's objects as (class header, label, CKA_ID), listed with `pkcs11-tool --login`
//!   on the real SoftHSM (not through the shim) — for a hardened keyset's token, with the PIN
//!   that works, and which one that is; for `token init`, the slots as `pkcs11-tool -L` shows
//!   them (label, flags, serial);
//! * every file of the bed but the token store and SoftHSM's configuration — the keyward
//!   home (keyset registry), the authority's directory (its database read as the files it
//!   replaced: `users.toml`, `authority.toml`, `issued/`, `archive/`, `reply/`, `audit.log`;
//!   and `ca.pem`), requests, replies, messages and outputs (lock files left out);
//! * "as before" is exact: the same objects with the same IDs, the same files byte for byte,
//!   with two allowances for the audit log: it may have grown by lines whose outcome is not
//!   `ok` (an audit entry recording the failure is allowed, and wanted);
//!   `authority log --verify` must then pass;
//! * the authority token's head objects (`keyward head …`) are not compared: every command
//!   checks them against the database;
//! * "as after" is structural: the same objects and files as after a clean run, with the values
//!   that differ from one clean run to the next anyway — key IDs, serial numbers, nonces,
//!   timestamps, certificates, wrapped keys, salts and hashes — masked, and the audit log's
//!   `ok` lines compared with those masks (its chain links dropped). Two clean runs must
//!   compare equal this way, which checks that the masks hide no real difference.
//!
//! The commands run concurrently (one test each), and each spreads its faulted runs over two
//! beds of its own; the authority's commands share one starting world, built once. Run with
//! `-- --nocapture` to see the per-command counts.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use util::beds::*;
use util::*;

/// The PKCS#11 calls that change a token, log in, or clean up: faulted with
/// `CKR_DEVICE_REMOVED` too.
const REMOVED_TOO: &[&str] = &[
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_Login",
    "C_Logout",
    "C_GenerateKeyPair",
    "C_GenerateKey",
    "C_CreateObject",
    "C_DestroyObject",
    "C_UnwrapKey",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_Finalize",
];

// ---- beds: start states and restoring them -------------------------------------------------

/// The world the authority's commands start from.
struct World {
    /// Alice and Bob enrolled (P-256 signing keys); Carol's request made (`carol.req`), not
    /// processed; Dave added (temporary key unspent), his card empty; `letter.txt` and
    /// `letter.p7m` (Alice to Bob).
    requested: PathBuf,
    /// `requested` with Carol's request processed (`carol.reply`), not completed.
    processed: PathBuf,
    /// `processed`, then Bob recovered and his new request made on his card for keyset
    /// "Bob 2" (`bob2.req`): processing it re-wraps his archived key.
    recovering: PathBuf,
    /// `recovering` with Bob's new request processed (`bob2.reply`): completing it stores two
    /// encryption keys and retires "Bob".
    reprocessed: PathBuf,
    /// Dave's temporary key.
    dave_key: String,
}

const LETTER: &[u8] = b"Dear Bob,\nthe fault sweep has run. Every call failed once.\n-- Alice\n";

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let root = states_root("fault-sweep");
        let _ = std::fs::remove_dir_all(&root);
        let bed = AuthorityBed::new(
            &["alice-card", "bob-card", "carol-card", "dave-card"],
            "CN=Fault Sweep Authority",
        );
        for (user, keyset, card) in [("alice", "Alice", "alice-card"), ("bob", "Bob", "bob-card")] {
            let email = format!("{user}@example.org");
            let key = bed.add_user(user, &["--email", &email]);
            bed.enroll_local(user, keyset, card, &key, &["--key-type", "p256"], &[])
                .ok();
        }
        let carol_key = bed.add_user("carol", &[]);
        bed.request("carol", "Carol", "carol-card", &carol_key, "carol.req")
            .ok();
        let dave_key = bed.add_user("dave", &[]);
        let letter = bed.file("letter.txt", LETTER);
        let sealed = bed.path("letter.p7m");
        bed.run_env(
            &[
                "send",
                "--keyset",
                "Alice",
                "--to",
                "Bob",
                &letter,
                "-o",
                &sealed.to_string_lossy(),
            ],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
        let requested = root.join("requested");
        save_state(&bed, &requested);
        bed.process("carol.req", "carol.reply").ok();
        let processed = root.join("processed");
        save_state(&bed, &processed);
        let bob_key = bed.authority("recover", &["bob"]).ok().stdout;
        bed.request("bob", "Bob 2", "bob-card", bob_key.trim(), "bob2.req")
            .ok();
        let recovering = root.join("recovering");
        save_state(&bed, &recovering);
        bed.process("bob2.req", "bob2.reply").ok();
        let reprocessed = root.join("reprocessed");
        save_state(&bed, &reprocessed);
        World {
            requested,
            processed,
            recovering,
            reprocessed,
            dave_key,
        }
    })
}

// ---- the state and how it compares -----------------------------------------------------------

/// Per token label: its objects as (header, label, ID), sorted; or why they could not be listed.
type Objects = BTreeMap<String, Result<Vec<(String, String, String)>, String>>;

/// What a command may change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    objects: Objects,
    /// For `token init`: the slots (label, flags, serial), sorted.
    slots: Option<Vec<(String, String, String)>>,
    /// Every file of the bed but the token store (relative path → bytes).
    files: BTreeMap<String, Vec<u8>>,
}

/// What a sweep inspects: tokens (label, PIN) and, for `token init`, the slots.
#[derive(Clone)]
struct Inspect {
    tokens: Vec<(&'static str, &'static str)>,
    slots: bool,
    /// A hardened keyset (token label, keyset, password): when its token does not take the
    /// listed PIN, the token PIN derived from the password (`keyward keyset pin`) is tried,
    /// and which of the two worked is part of the state.
    hardened: Option<(&'static str, &'static str, &'static str)>,
}

impl Inspect {
    fn tokens(tokens: &[(&'static str, &'static str)]) -> Inspect {
        Inspect {
            tokens: tokens.to_vec(),
            slots: false,
            hardened: None,
        }
    }
}

/// The objects `pkcs11-tool --login` lists on token `label` with `pin`.
fn list_objects(
    bed: &TestBed,
    label: &str,
    pin: &str,
) -> Result<Vec<(String, String, String)>, String> {
    let run = bed.pkcs11_tool_login(label, pin);
    if run.code != 0 {
        return Err(format!("pkcs11-tool --login failed: {}", run.stderr.trim()));
    }
    // The authority's head objects are left out: every command checks them against the
    // database (a missing one is restored from its pending copy), and they are replaced
    // (destroyed, created) by every change.
    let mut set: Vec<_> = p11_object_set(&parse_pkcs11_tool_objects(&run.stdout))
        .into_iter()
        .filter(|(_, label, _)| !label.starts_with("keyward head"))
        .collect();
    set.sort();
    Ok(set)
}

fn capture(bed: &TestBed, what: &Inspect) -> State {
    let mut objects = BTreeMap::new();
    for (label, pin) in &what.tokens {
        let mut key = label.to_string();
        let mut listed = list_objects(bed, label, pin);
        if let (Err(_), Some((token, keyset, password))) = (&listed, what.hardened) {
            if token == *label {
                let derived = bed.run_env(
                    &["keyset", "pin", keyset, "--no-check"],
                    &[("KEYWARD_PIN", password)],
                );
                if derived.code == 0 {
                    key = format!("{label} (with the PIN derived from {keyset:?}'s password)");
                    listed = list_objects(bed, label, derived.stdout.trim());
                }
            }
        }
        objects.insert(key, listed);
    }
    let slots = what.slots.then(|| slot_list(bed));
    let mut files = BTreeMap::new();
    collect_files(bed.dir.path(), bed.dir.path(), &mut files);
    State {
        objects,
        slots,
        files,
    }
}

/// The authority's database as the files of the directory it replaced: `users.toml` (one user
/// record a line), `audit.log` (one entry a line, JSON), `authority.toml` (the configuration),
/// `issued/SERIAL.pem`, `archive/USER/SERIAL.kwp`, `reply/USER` — so that "as before" and "as
/// after" compare records, not SQLite pages.
fn database_files(db: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    let dir = rel.trim_end_matches("authority.db");
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open authority.db");
    let mut rows = conn
        .prepare("SELECT kind, key, owner, body FROM records ORDER BY kind, key")
        .expect("the authority's schema");
    let mut users = Vec::new();
    for r in rows
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get_ref(3)?.as_bytes()?.to_vec(),
            ))
        })
        .expect("query")
    {
        let (kind, key, owner, body) = r.expect("row");
        match kind.as_str() {
            "user" => {
                users.extend(body);
                users.push(b'\n');
            }
            "config" => {
                out.insert(format!("{dir}authority.toml"), body);
            }
            "issued" => {
                out.insert(format!("{dir}issued/{key}.pem"), body);
            }
            "archive" => {
                out.insert(format!("{dir}archive/{owner}/{key}.kwp"), body);
            }
            other => {
                out.insert(format!("{dir}{other}/{key}"), body);
            }
        }
    }
    out.insert(format!("{dir}users.toml"), users);
    let mut audit = conn
        .prepare(
            "SELECT json_object('seq', seq, 'action', action, 'subject', subject,
             'outcome', outcome, 'detail', detail, 'hash', hash) FROM audit ORDER BY seq",
        )
        .expect("the authority's schema");
    let mut log = Vec::new();
    for line in audit
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query")
    {
        log.extend(line.expect("row").into_bytes());
        log.push(b'\n');
    }
    out.insert(format!("{dir}audit.log"), log);
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir)
        .expect("read bed directory")
        .flatten()
    {
        let p = entry.path();
        let rel = p
            .strip_prefix(root)
            .expect("under the bed")
            .to_string_lossy()
            .into_owned();
        if dir == root && (scratch(&rel) || rel == "tokens") {
            continue;
        }
        if rel.ends_with(".lock") || rel.ends_with("-wal") || rel.ends_with("-shm") {
            continue;
        }
        if rel.ends_with("authority.db") {
            database_files(&p, &rel, out);
            continue;
        }
        if p.is_dir() {
            collect_files(root, &p, out);
        } else {
            out.insert(rel, std::fs::read(&p).expect("read bed file"));
        }
    }
}

/// `pkcs11-tool -L` on the real module: (label, flags, serial) per slot with a token, and
/// ("", "uninitialized", "") per empty one.
fn slot_list(bed: &TestBed) -> Vec<(String, String, String)> {
    let module = util::module();
    let run = bed
        .run_tool(
            "pkcs11-tool",
            "opensc",
            &["--module", &module.to_string_lossy(), "-L"],
        )
        .ok();
    let mut out = Vec::new();
    let mut cur: Option<(String, String, String)> = None;
    for line in run.stdout.lines() {
        if line.starts_with("Slot ") {
            out.extend(cur.take());
            cur = Some(Default::default());
            continue;
        }
        let (Some(c), Some((k, v))) = (cur.as_mut(), line.split_once(':')) else {
            continue;
        };
        match k.trim() {
            "token label" => c.0 = v.trim().to_string(),
            "token flags" => c.1 = v.trim().to_string(),
            "token state" => c.1 = v.trim().to_string(),
            "serial num" => c.2 = v.trim().to_string(),
            _ => {}
        }
    }
    out.extend(cur);
    out.sort();
    out
}

/// One audit log line, parsed.
fn audit_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// `authority.toml` without the audit chain's head (`log_seq`, `log_hash`).
fn without_log_head(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.starts_with("log_seq") && !l.starts_with("log_hash"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_audit(path: &str) -> bool {
    path.ends_with("audit.log")
}

fn is_authority_config(path: &str) -> bool {
    path.ends_with("authority.toml")
}

/// Why `now` is not exactly `before` (None: it is).
fn differs_from_before(now: &State, before: &State) -> Option<String> {
    if now.objects != before.objects {
        return Some(format!(
            "token objects changed:\n  before: {:?}\n  now:    {:?}",
            before.objects, now.objects
        ));
    }
    if now.slots != before.slots {
        return Some(format!(
            "slots changed:\n  before: {:?}\n  now:    {:?}",
            before.slots, now.slots
        ));
    }
    let names = |s: &State| s.files.keys().cloned().collect::<BTreeSet<_>>();
    if names(now) != names(before) {
        return Some(format!(
            "files differ: new {:?}, gone {:?}",
            names(now).difference(&names(before)).collect::<Vec<_>>(),
            names(before).difference(&names(now)).collect::<Vec<_>>()
        ));
    }
    for (path, bytes) in &now.files {
        let old = &before.files[path];
        if is_audit(path) {
            let (old, new) = (audit_lines(old), audit_lines(bytes));
            if new.len() < old.len() || new[..old.len()] != old[..] {
                return Some(format!("{path}: earlier entries changed"));
            }
            if let Some(ok) = new[old.len()..].iter().find(|l| l["outcome"] == "ok") {
                return Some(format!("{path}: a new entry says ok: {ok}"));
            }
        } else if is_authority_config(path) {
            if without_log_head(bytes) != without_log_head(old) {
                return Some(format!("{path} changed"));
            }
        } else if bytes != old {
            return Some(format!("{path} changed"));
        }
    }
    None
}

/// The state with the values that differ between clean runs masked.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    objects: Objects,
    slots: Option<Vec<(String, String)>>,
    files: Vec<(String, String)>,
}

fn shape(s: &State) -> Shape {
    let objects = s
        .objects
        .iter()
        .map(|(label, listed)| {
            let listed = listed.as_ref().map(|objs| {
                // IDs renamed by first appearance in (header, label) order: which objects share
                // an ID is kept, the random value is not.
                let mut objs = objs.clone();
                objs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
                let mut names: BTreeMap<String, usize> = BTreeMap::new();
                let mut out: Vec<_> = objs
                    .into_iter()
                    .map(|(h, l, id)| {
                        let n = names.len();
                        let n = *names.entry(id).or_insert(n);
                        (h, l, format!("id{n}"))
                    })
                    .collect();
                out.sort();
                out
            });
            (label.clone(), listed.map_err(|e| mask(e)))
        })
        .collect();
    let slots = s.slots.as_ref().map(|v| {
        let mut v: Vec<_> = v.iter().map(|(l, f, _)| (l.clone(), f.clone())).collect();
        v.sort();
        v
    });
    let mut files: Vec<(String, String)> = s
        .files
        .iter()
        .map(|(path, bytes)| {
            let content = if is_audit(path) {
                audit_lines(bytes)
                    .into_iter()
                    .filter(|l| l["outcome"] == "ok")
                    .map(|l| {
                        format!(
                            "{} {} {} {}",
                            l["action"],
                            l["subject"],
                            l["outcome"],
                            mask(l["detail"].as_str().unwrap_or_default())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if is_authority_config(path) {
                mask(&without_log_head(bytes))
            } else {
                match std::str::from_utf8(bytes) {
                    Ok(text) => mask(text),
                    Err(_) => "<binary>".to_string(),
                }
            };
            (mask(path), content)
        })
        .collect();
    files.sort();
    Shape {
        objects,
        slots,
        files,
    }
}

// ---- one sweep ------------------------------------------------------------------------------

/// Work beds per command: the faulted runs of one command are spread over this many beds (each
/// with its own copy of the starting state), so that the long sweeps use both cores.
const WORKERS: usize = 2;

/// One command to sweep.
struct Case {
    name: &'static str,
    /// The starting state.
    start: PathBuf,
    /// keyward's arguments and environment; `{dir}` stands for the work bed's directory.
    args: Vec<String>,
    env: Vec<(String, String)>,
    inspect: Inspect,
    /// For a command that cannot be undone half-way: how it is finished instead.
    resume: Option<Resume>,
}

/// The one allowed ending besides "as before" and "as after", for `token init` only: PKCS#11
/// initialises a token (`C_InitToken`) and sets its first user PIN (`C_InitPIN`, in an SO
/// session on the re-enumerated token) in separate calls, and an initialised token cannot be
/// made uninitialised again. A fault in between must fail with one line naming the command
/// that finishes the job, and that command (run without faults) must reach exactly the
/// after-state.
struct Resume {
    needle: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// How one faulted run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exit 1, one-line error, state as before.
    FailedClean,
    /// Exit 0, state as after.
    Succeeded,
    /// Exit 1, one-line error, state as after (the work was durable; the error came later).
    FailedAfterDone,
    /// Exit 1, one-line error naming the command that finishes the job, which then reaches
    /// the after-state (see [`Resume`]).
    Resumed,
}

/// One faulted run: the call index, the code, and the function at that index.
#[derive(Debug, Clone)]
struct Point {
    k: u64,
    code: &'static str,
    function: String,
}

/// The sweep's result for one command.
struct Report {
    name: &'static str,
    calls: u64,
    /// Whether the command loaded the PKCS#11 module at all.
    loaded: bool,
    tried: usize,
    /// The points that survived, with how.
    survived: Vec<(Point, Outcome)>,
    /// What went wrong at the others.
    failures: Vec<String>,
}

impl Case {
    fn new(
        name: &'static str,
        start: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        inspect: Inspect,
    ) -> Case {
        Case {
            name,
            start: start.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: owned(env),
            inspect,
            resume: None,
        }
    }

    /// Allows the [`Resume`] ending: the error names `needle`, and `args` with `env` finish.
    fn resumable(mut self, needle: &'static str, args: &[&str], env: &[(&str, &str)]) -> Case {
        self.resume = Some(Resume {
            needle,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: owned(env),
        });
        self
    }

    /// Counts the calls, learns the after-state, then faults every call in turn (spread over
    /// [`WORKERS`] beds).
    fn sweep(&self) -> Report {
        let first = Worker::new(self);
        restore_state(&first.bed, &self.start);
        let before = capture(&first.bed, &self.inspect);
        let (clean, counts) = first.run(None);
        let clean = clean.ok();
        let after = capture(&first.bed, &self.inspect);
        assert!(
            differs_from_before(&after, &before).is_some(),
            "{}: a clean run changed nothing\n{}",
            self.name,
            clean.stderr
        );
        // No count file: the command never loaded the module.
        let loaded = counts.is_some();
        let counts = counts.unwrap_or_default();
        assert_eq!(counts.total, counts.calls.len() as u64, "{counts:?}");
        assert!(counts.faults.is_empty(), "{counts:?}");
        first
            .audit_verifies()
            .unwrap_or_else(|e| panic!("{}: after a clean run: {e}", self.name));
        // A second clean run must have the same shape: the masks hide only what varies anyway.
        first.run(None).0.ok();
        let after_shape = shape(&after);
        assert_eq!(
            shape(&capture(&first.bed, &self.inspect)),
            after_shape,
            "{}: two clean runs differ in shape",
            self.name
        );

        let mut points = Vec::new();
        for (i, function) in counts.calls.iter().enumerate() {
            let k = i as u64 + 1;
            points.push(Point {
                k,
                code: "CKR_DEVICE_ERROR",
                function: function.clone(),
            });
            if REMOVED_TOO.contains(&function.as_str()) {
                points.push(Point {
                    k,
                    code: "CKR_DEVICE_REMOVED",
                    function: function.clone(),
                });
            }
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        let work = |worker: &Worker| loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some(point) = points.get(i) else {
                break;
            };
            let result = worker.check_one(point, &before, &after_shape);
            results.lock().expect("results").push((i, result));
        };
        std::thread::scope(|scope| {
            for _ in 1..WORKERS.min(points.len().max(1)) {
                scope.spawn(|| work(&Worker::new(self)));
            }
            work(&first);
        });
        let mut results = results.into_inner().expect("results");
        results.sort_by_key(|(i, _)| *i);
        let mut report = Report {
            name: self.name,
            calls: counts.total,
            loaded,
            tried: points.len(),
            survived: Vec::new(),
            failures: Vec::new(),
        };
        for (i, result) in results {
            let p = &points[i];
            match result {
                Ok(outcome) => report.survived.push((p.clone(), outcome)),
                Err(why) => report.failures.push(format!(
                    "{} {}@{} (at {}): {why}",
                    self.name, p.code, p.k, p.function
                )),
            }
        }
        report
    }
}

/// One work bed of a sweep.
struct Worker<'a> {
    case: &'a Case,
    bed: TestBed,
}

impl<'a> Worker<'a> {
    fn new(case: &'a Case) -> Worker<'a> {
        Worker {
            case,
            bed: TestBed::new(),
        }
    }

    /// `text` with `{dir}` replaced by this bed's directory.
    fn here(&self, text: &str) -> String {
        text.replace("{dir}", &self.bed.dir.path().to_string_lossy())
    }

    /// Restores the start state and runs the command through the shim with `fault` (if any).
    fn run(&self, fault: Option<&str>) -> (Run, Option<ShimCounts>) {
        restore_state(&self.bed, &self.case.start);
        let counts = self.bed.path("shim-counts");
        let _ = std::fs::remove_file(&counts);
        let mut env: Vec<(String, String)> = self
            .case
            .env
            .iter()
            .map(|(k, v)| (k.clone(), self.here(v)))
            .collect();
        env.push((
            "KEYWARD_SHIM_COUNT_FILE".into(),
            counts.to_string_lossy().into_owned(),
        ));
        env.push((
            "TMPDIR".into(),
            self.bed.path("tmp").to_string_lossy().into_owned(),
        ));
        if let Some(f) = fault {
            env.push(("KEYWARD_SHIM_FAULT".into(), f.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<String> = self.case.args.iter().map(|a| self.here(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = self.bed.run_shim(&args, &env);
        let counts = counts.is_file().then(|| ShimCounts::read(&counts));
        (run, counts)
    }

    /// `authority log --verify` (direct on SoftHSM) when the bed has an authority.
    fn audit_verifies(&self) -> Result<(), String> {
        let dir = self.bed.path("auth");
        if !dir.is_dir() {
            return Ok(());
        }
        let run = self.bed.run(&[
            "authority",
            "log",
            "--dir",
            &dir.to_string_lossy(),
            "--verify",
        ]);
        match run.code {
            0 => Ok(()),
            _ => Err(format!(
                "authority log --verify failed: {}",
                run.stderr.trim()
            )),
        }
    }

    fn check_one(&self, point: &Point, before: &State, after: &Shape) -> Result<Outcome, String> {
        let fault = format!("{}@{}", point.code, point.k);
        let (run, counts) = self.run(Some(&fault));
        let hit = counts.as_ref().is_some_and(|c| c.faults.contains(&point.k));
        if !hit {
            return Err(format!(
                "the fault was not injected (the run took another path?)\nstderr:\n{}",
                run.stderr
            ));
        }
        let now = capture(&self.bed, &self.case.inspect);
        let kept = std::fs::read_dir(self.bed.path("tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        let as_before = differs_from_before(&now, before);
        let as_after = shape(&now) == *after;
        let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.starts_with('[')).collect();
        let one_line = lines.len() == 1 && lines[0].starts_with("keyward: error: ");
        let describe = || {
            format!(
                "exit {}, state {}\nstdout:\n{}stderr:\n{}",
                run.code,
                match (&as_before, as_after) {
                    (None, _) => "as before".to_string(),
                    (Some(_), true) => "as after".to_string(),
                    (Some(why), false) => format!("IN BETWEEN: {why}\n{}", shape_diff(&now, after)),
                },
                run.stdout,
                run.stderr
            )
        };
        let outcome = match (run.code, as_before.is_none(), as_after) {
            (1, true, _) if one_line => Outcome::FailedClean,
            (1, false, true) if one_line => Outcome::FailedAfterDone,
            (0, _, true) => Outcome::Succeeded,
            (1, false, false) if one_line && self.resumes(&run, after)? => Outcome::Resumed,
            _ => return Err(describe()),
        };
        if kept > 0 {
            return Err(format!("left {kept} file(s) in TMPDIR; {}", describe()));
        }
        // The audit log grew (a failure recorded, or the success): its chain must verify.
        let audit_changed = now
            .files
            .iter()
            .any(|(path, bytes)| is_audit(path) && before.files.get(path) != Some(bytes));
        if audit_changed {
            self.audit_verifies()?;
        }
        Ok(outcome)
    }

    /// For a [`Resume`] case whose error names its needle: runs the finishing command (no
    /// faults) and checks that it reaches the after-state.
    fn resumes(&self, run: &Run, after: &Shape) -> Result<bool, String> {
        let Some(resume) = &self.case.resume else {
            return Ok(false);
        };
        if !run.stderr.contains(resume.needle) {
            return Ok(false);
        }
        let args: Vec<String> = resume.args.iter().map(|a| self.here(a)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = resume
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let finish = self.bed.run_env(&args, &env);
        if finish.code != 0 {
            return Err(format!(
                "the error names {:?}, but {args:?} fails:\n{}\nthe error was:\n{}",
                resume.needle, finish.stderr, run.stderr
            ));
        }
        let now = capture(&self.bed, &self.case.inspect);
        if shape(&now) != *after {
            return Err(format!(
                "{args:?} does not reach the after-state:\n{}\nthe error was:\n{}",
                shape_diff(&now, after),
                run.stderr
            ));
        }
        Ok(true)
    }
}

/// The first difference between `now`'s shape and the after-shape, for the failure message.
fn shape_diff(now: &State, after: &Shape) -> String {
    let now = shape(now);
    if now.objects != after.objects {
        return format!(
            "  objects now:   {:?}\n  objects after: {:?}",
            now.objects, after.objects
        );
    }
    if now.slots != after.slots {
        return format!(
            "  slots now:   {:?}\n  slots after: {:?}",
            now.slots, after.slots
        );
    }
    for (a, b) in now.files.iter().zip(&after.files) {
        if a != b {
            return format!("  file now:   {a:?}\n  file after: {b:?}");
        }
    }
    format!(
        "  files now:   {:?}\n  files after: {:?}",
        now.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
        after.files.iter().map(|f| &f.0).collect::<Vec<_>>()
    )
}

/// Prints the report and fails the test unless every injection point survived.
fn finish(report: Report) {
    let mut besides: BTreeMap<String, usize> = BTreeMap::new();
    for (point, outcome) in &report.survived {
        if *outcome != Outcome::FailedClean {
            *besides
                .entry(format!("{outcome:?} at {}", point.function))
                .or_default() += 1;
        }
    }
    let line = format!(
        "fault sweep: {:<18} {:>4} PKCS#11 calls, {:>4} injection points tried, {:>4} survived{}",
        report.name,
        report.calls,
        report.tried,
        report.survived.len(),
        if !report.loaded {
            " (the PKCS#11 module is never loaded)".to_string()
        } else if besides.is_empty() {
            String::new()
        } else {
            format!("; not a clean failure: {besides:?}")
        }
    );
    println!("{line}");
    record_summary("fault-sweep.txt", &line);
    assert!(
        report.failures.is_empty(),
        "{}: {} of {} injection points did not survive:\n\n{}",
        report.name,
        report.failures.len(),
        report.tried,
        report.failures.join("\n\n")
    );
    assert_eq!(report.tried, report.survived.len());
}

fn sweep(case: Case) {
    finish(case.sweep());
}

fn authority_tokens() -> [(&'static str, &'static str); 1] {
    [(AUTHORITY_TOKEN, AUTHORITY_PIN)]
}

// ---- the commands ---------------------------------------------------------------------------

#[test]
fn sweep_token_init() {
    let bed = TestBed::new();
    bed.init_token("first", USER_PIN);
    let holder = tempfile::tempdir().expect("state dir");
    let start = holder.path().join("start");
    save_state(&bed, &start);
    let pins = [("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)];
    sweep(
        Case::new(
            "token init",
            &start,
            &["token", "init", "--free", "--label", "second"],
            &pins,
            Inspect {
                tokens: vec![("first", USER_PIN)],
                slots: true,
                hardened: None,
            },
        )
        .resumable(
            "keyward token unblock --token \"second\"",
            &["token", "unblock", "--token", "second"],
            &pins,
        ),
    );
}

#[test]
fn sweep_keyset_create() {
    let bed = TestBed::new();
    bed.init_token("maker", USER_PIN);
    bed.create_keyset("First", "maker", USER_PIN, &["--key-type", "p256"])
        .ok();
    let holder = tempfile::tempdir().expect("state dir");
    let start = holder.path().join("start");
    save_state(&bed, &start);
    sweep(Case::new(
        "keyset create",
        &start,
        &[
            "keyset",
            "create",
            "Second",
            "--token",
            "maker",
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
        Inspect::tokens(&[("maker", USER_PIN)]),
    ));
}

/// `keyset create --harden`: the token PIN is switched to one derived from the keyset password,
/// so `C_SetPIN` is among the calls faulted; the shim counts wrong PINs meanwhile, and a try
/// keyward spent by itself (a wrong old PIN when switching back) would show in its state file.
#[test]
fn sweep_keyset_create_hardened() {
    let bed = TestBed::new();
    bed.init_token("hard", USER_PIN);
    // The shim's wrong-PIN counts, part of the state: empty, and it must stay so.
    bed.file("shim-pin-state", b"");
    let holder = tempfile::tempdir().expect("state dir");
    let start = holder.path().join("start");
    save_state(&bed, &start);
    let password = "a long keyset password";
    sweep(Case::new(
        "keyset create --harden",
        &start,
        &[
            "keyset",
            "create",
            "Hard",
            "--token",
            "hard",
            "--key-type",
            "p256",
            "--harden",
        ],
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_NEW_PIN", password),
            ("KEYWARD_SHIM_PIN_TRIES", "3"),
            ("KEYWARD_SHIM_STATE", "{dir}/shim-pin-state"),
        ],
        Inspect {
            tokens: vec![("hard", USER_PIN)],
            slots: false,
            hardened: Some(("hard", "Hard", password)),
        },
    ));
}

#[test]
fn sweep_enroll_local() {
    let w = world();
    sweep(
        Case::new(
            "enroll (local)",
            &w.requested,
            &[
                "enroll",
                "--user",
                "dave",
                "--keyset",
                "Dave",
                "--token",
                "dave-card",
                "--authority",
                "{dir}/auth",
                "--key-type",
                "p256",
            ],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                ("KEYWARD_TEMP_KEY", &w.dave_key),
            ],
            Inspect::tokens(&[(AUTHORITY_TOKEN, AUTHORITY_PIN), ("dave-card", USER_PIN)]),
        )
        // The authority records the enrollment before the user's token takes the reply: a
        // failure on the user's token after that names the reply and says to run the command
        // again, which completes it.
        .resumable(
            "run this command again",
            &[
                "enroll",
                "--user",
                "dave",
                "--keyset",
                "Dave",
                "--token",
                "dave-card",
                "--authority",
                "{dir}/auth",
                "--key-type",
                "p256",
            ],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                ("KEYWARD_TEMP_KEY", &w.dave_key),
            ],
        ),
    );
}

#[test]
fn sweep_authority_process() {
    let w = world();
    sweep(Case::new(
        "authority process",
        &w.requested,
        &[
            "authority",
            "process",
            "--dir",
            "{dir}/auth",
            "{dir}/carol.req",
            "-o",
            "{dir}/carol.reply",
        ],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
        Inspect::tokens(&authority_tokens()),
    ));
}

#[test]
fn sweep_enroll_complete() {
    let w = world();
    sweep(Case::new(
        "enroll --complete",
        &w.processed,
        &["enroll", "--complete", "{dir}/carol.reply"],
        &[("KEYWARD_PIN", USER_PIN)],
        Inspect::tokens(&[("carol-card", USER_PIN)]),
    ));
}

/// `authority process` for a recovering user: the archived key is unwrapped and re-wrapped.
#[test]
fn sweep_authority_process_after_recovery() {
    let w = world();
    sweep(Case::new(
        "authority process (recovered user)",
        &w.recovering,
        &[
            "authority",
            "process",
            "--dir",
            "{dir}/auth",
            "{dir}/bob2.req",
            "-o",
            "{dir}/bob2.reply",
        ],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
        Inspect::tokens(&authority_tokens()),
    ));
}

/// `enroll --complete` after recovery: two encryption keys stored, the old keyset retired.
#[test]
fn sweep_enroll_complete_after_recovery() {
    let w = world();
    sweep(Case::new(
        "enroll --complete (recovered user)",
        &w.reprocessed,
        &["enroll", "--complete", "{dir}/bob2.reply"],
        &[("KEYWARD_PIN", USER_PIN)],
        Inspect::tokens(&[("bob-card", USER_PIN)]),
    ));
}

/// `authority recover` logs in to the authority's token (every change does) and signs its
/// checkpoint there.
#[test]
fn sweep_authority_recover() {
    let w = world();
    sweep(Case::new(
        "authority recover",
        &w.requested,
        &["authority", "recover", "--dir", "{dir}/auth", "bob"],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
        Inspect::tokens(&authority_tokens()),
    ));
}

#[test]
fn sweep_send() {
    let w = world();
    sweep(Case::new(
        "send",
        &w.requested,
        &[
            "send",
            "--keyset",
            "Alice",
            "--to",
            "Bob",
            "{dir}/letter.txt",
            "-o",
            "{dir}/again.p7m",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
        Inspect::tokens(&[("alice-card", USER_PIN)]),
    ));
}

#[test]
fn sweep_read() {
    let w = world();
    sweep(Case::new(
        "read",
        &w.requested,
        &[
            "read",
            "--keyset",
            "Bob",
            "{dir}/letter.p7m",
            "-o",
            "{dir}/letter.out",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
        Inspect::tokens(&[("bob-card", USER_PIN)]),
    ));
}
