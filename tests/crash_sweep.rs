//! The syscall crash sweep (issue 11, item 6a): every state-changing command killed with
//! SIGKILL at the file-system calls it makes, and those calls failed with ENOSPC and with EIO
//! (`strace -e inject=SYSCALL:signal=KILL|error=E:when=N`; see `tests/util/crash.rs` for which
//! calls are points and how the state is read).
//!
//! For each command: set up its starting state, run it once under `strace -f -y` to list its
//! calls on keyward's files, learn the state after a clean run (and check that a second clean
//! run looks the same through the masks). Then for each point, on a fresh copy of the start:
//!
//! * inject the fault; strace must show it was injected (the run took the same path);
//! * for ENOSPC/EIO: the command exits 0 only if it reached the after-state, else it exits
//!   non-zero with exactly one `keyward: error:` line and no panic;
//! * the state, through keyward's command line (`authority users`, `authority log`,
//!   `keyset list`, the tokens' objects, the output files), is exactly as before (the audit
//!   log may have grown by entries that are not `ok`) or exactly as after;
//!   `authority log --verify` passes;
//! * the command is retried: from "before" it must succeed; from "after" it may succeed or
//!   say in one line that it was done. Two more ways to finish are allowed for a command that
//!   committed but never wrote its output file (nothing else differs from after): the retry
//!   writes it (`authority process` gives the stored reply; `authority crl` makes the next
//!   CRL, the committed number skipped, never reused), or the retry's error names
//!   `keyward authority reply` (or `keyward enroll --complete PATH`), which the sweep runs;
//! * after the retry the state is exactly the after-state, `log --verify` passes, and the
//!   bed holds exactly the files of a clean run (the same names, masked, as a multiset): no
//!   temp file, orphan or copy is left behind, in `TMPDIR` either.
//!
//! The client commands that change a token and the keyset registry (`keyset create`, `enroll
//! --complete`) write an intent journal before the token changes; the next keyward that opens
//! the registry — the view's `keyset list` included — finishes or drops it without a login,
//! so they too are judged as before or after right after the fault. Two commands span stores
//! that no read-only command can settle without a login, and are marked so, with the reason
//! ([`Case::interrupted_until_retry`]): `authority init` (keys on the token before the new
//! database exists) and local `enroll --authority` (the user's token, the registry and the
//! authority). For them, right after the fault the state may be in between (outcome
//! `Interrupted`); the retry of the same command must then succeed and leave exactly the
//! after-state and the files of a clean run — no key, keyset or file of the interrupted run
//! left over (`interrupted_init_is_named_and_finished_by_its_rerun` shows what every other
//! command says meanwhile). The commands documented as resumable (`authority add-users`,
//! `token provision`, `authority rollover --archive`: one commit per batch) may be part way
//! (outcome `Partial`); the rerun must finish them to exactly the after-state.
//!
//! A point whose fault came before the command changed a byte (the bed's digest is the
//! start's) is judged by the faulted run's exit alone (outcome `Untouched`): its view is the
//! before-view and its retry the clean run the reference already made.
//!
//! What is sampled, and why (each summary line says it): of a run of consecutive writes to one
//! file, the first, the middle and the last call (every point of a run leaves the same state;
//! see `sample_write_runs` — SQLite writes each transaction as such runs, most of an
//! authority command's calls); of the remaining points, all for the authority's commands but
//! the two that generate CA keys (`authority init`, whose key generations, twice per point with
//! the retry, make it the slowest — 230 points in 5–7 minutes — every 2nd point; `authority
//! rollover --ca`, one RSA 3072 key generation per run, every 4th); for the client commands (`keyset create`, `enroll --complete`,
//! local `enroll --authority`) every second point; in the shim pass of `testbeds/test-all.sh`
//! a quarter of those. `KEYWARD_CRASH_STRIDE=1` sweeps every point (but the inner writes of a
//! run) of every command; a larger number thins them all. Points known to fail (keyward defects not yet fixed) are listed, exactly, in
//! `KNOWN_FAILURES` with the reason; the sweep fails on any other inconsistent point and on a
//! listed point that has become consistent. Summaries go to `target/tmp/crash-sweep.txt` (printed by
//! `testbeds/test-all.sh`); run with `-- --nocapture` to see them here.

mod util;

#[path = "util/crash.rs"]
mod crash;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crash::{Event, Fault, Probe, View};
use util::beds::owned;
use util::*;

// ---- the world the commands start from -------------------------------------------------------

struct World {
    /// Alice, Bob and Erin enrolled (P-256 signing keys), Erin revoked; Carol's request made
    /// (`carol.req`), not processed; Dave added, his card empty; the token "spare" initialised
    /// with no authority on it; the token "maker" empty.
    requested: PathBuf,
    /// `requested` with Carol's request processed (`carol.reply`), not completed.
    processed: PathBuf,
    /// Dave's temporary key.
    dave_key: String,
    /// `processed` with Alice's renewal requested (`alice-renew.req`, by the keyset "Alice").
    renew_requested: PathBuf,
    /// `renew_requested` with the renewal processed (`alice-renew.reply`), not completed.
    renew_processed: PathBuf,
    /// `renew_processed` with Bob's token lost (his certificates on hold).
    bob_lost: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        crash::require_strace();
        let root = crash::states_root("crash-sweep");
        let _ = std::fs::remove_dir_all(&root);
        let bed = AuthorityBed::new(
            &[
                "alice-card",
                "bob-card",
                "carol-card",
                "dave-card",
                "erin-card",
                "maker",
            ],
            "CN=Crash Sweep Authority",
        );
        bed.init_token("spare", AUTHORITY_PIN);
        for (user, keyset, card) in [
            ("alice", "Alice", "alice-card"),
            ("bob", "Bob", "bob-card"),
            ("erin", "Erin", "erin-card"),
        ] {
            let key = bed.add_user(user, &["--email", &format!("{user}@example.org")]);
            bed.enroll_local(user, keyset, card, &key, &["--key-type", "p256"], &[])
                .ok();
        }
        bed.authority("revoke", &["erin"]).ok();
        let carol_key = bed.add_user("carol", &[]);
        bed.request("carol", "Carol", "carol-card", &carol_key, "carol.req")
            .ok();
        let dave_key = bed.add_user("dave", &[]);
        // The inputs of the bulk commands: Dave exists (skipped), Frank and Grace are new; two
        // tokens to provision with the SO PIN from a file.
        bed.file(
            "users.csv",
            b"user,email\nfrank,frank@example.org\ndave,\ngrace,\n",
        );
        bed.secret_file("so.pin", SO_PIN);
        bed.file(
            "tokens.toml",
            b"so_pin_file = \"so.pin\"\npin_out = \"pins\"\n[[token]]\nlabel = \"prov-1\"\n[[token]]\nlabel = \"prov-2\"\n",
        );
        let requested = root.join("requested");
        crash::save_state(&bed, &requested);
        bed.process("carol.req", "carol.reply").ok();
        let processed = root.join("processed");
        crash::save_state(&bed, &processed);
        let renew_out = bed.path("alice-renew.req");
        bed.run_env(
            &["enroll", "--renew", "Alice", "-o", &renew_out.to_string_lossy()],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
        let renew_requested = root.join("renew-requested");
        crash::save_state(&bed, &renew_requested);
        bed.process("alice-renew.req", "alice-renew.reply").ok();
        let renew_processed = root.join("renew-processed");
        crash::save_state(&bed, &renew_processed);
        bed.authority("token", &["bob", "--state", "lost"]).ok();
        let bob_lost = root.join("bob-lost");
        crash::save_state(&bed, &bob_lost);
        World {
            requested,
            processed,
            dave_key,
            renew_requested,
            renew_processed,
            bob_lost,
        }
    })
}

// ---- one command's sweep --------------------------------------------------------------------

/// Work beds per command (each with its own copy of the start), so a sweep uses both cores.
const WORKERS: usize = 2;

/// Every how-manieth point the client commands sweep by default.
const CLIENT_STRIDE: usize = 2;

/// Every how-manieth point the lifecycle commands (issue 14) sweep by default: their
/// transactions are the same as the authority commands swept at every point, and the whole
/// `.ci/run` has to stay under 45 minutes; `KEYWARD_CRASH_STRIDE=1` sweeps them whole.
const LIFECYCLE_STRIDE: usize = 2;

/// Every how-manieth point `authority init` sweeps by default: every 2nd. Each run generates
/// its keys on SoftHSM (twice with the retry); points whose fault came before any change are
/// judged without a view or retry (`Untouched`). The whole sweep (`KEYWARD_CRASH_STRIDE=1`):
/// 230 points, all consistent, in 300 s (load average ~2) to 440 s (~5) on the 2-core machine,
/// 2026-12-02; every 2nd point halves that to keep `.ci/run` under 45 minutes.
const INIT_STRIDE: usize = 2;

struct Case {
    name: &'static str,
    start: PathBuf,
    /// keyward's arguments and environment; `{dir}` is the work bed's directory.
    args: Vec<String>,
    env: Vec<(String, String)>,
    probe: Probe,
    /// Every how-manieth point is swept (1: all).
    stride: usize,
    /// For an enrollment: the user whose reply `keyward authority reply` writes again, where
    /// to, and whether it must then be completed (local enroll).
    reply: Option<(&'static str, String, bool)>,
    /// The command spans stores that no one step can change together and that a read-only
    /// command cannot repair without a login (see [`Case::interrupted_until_retry`]).
    interruptible: Option<&'static str>,
    /// The command commits its work in steps and a rerun finishes it (see
    /// [`Case::resumable`]).
    resumable: Option<&'static str>,
}

/// How many points to step: `KEYWARD_CRASH_STRIDE` when set, else the case's default — times
/// [`SHIM_PASS_STRIDE`] in the shim pass of `testbeds/test-all.sh`, whose point is that the
/// shim forwards faithfully, not a second full sweep.
fn stride(default: usize) -> usize {
    match std::env::var("KEYWARD_CRASH_STRIDE") {
        Ok(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| panic!("KEYWARD_CRASH_STRIDE={s:?}: want a whole number ≥ 1")),
        Err(_) if via_shim() => default * SHIM_PASS_STRIDE,
        Err(_) => default,
    }
}

/// The shim pass sweeps every this-many-th of the points the direct pass sweeps.
const SHIM_PASS_STRIDE: usize = 4;

impl Case {
    fn new(
        name: &'static str,
        start: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        probe: Probe,
        default_stride: usize,
    ) -> Case {
        Case {
            name,
            start: start.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: owned(env),
            probe,
            stride: stride(default_stride),
            reply: None,
            interruptible: None,
            resumable: None,
        }
    }

    /// Allows one more ending for this command only: right after the fault the state may be
    /// neither before nor after (`why`: which stores no one step changes together, and why no
    /// read-only command can settle them), provided the faulted run, if it lived, failed with
    /// one clear line, and the retry of the same command (no fault) then succeeds and leaves
    /// exactly the after-state and the files of a clean run: nothing made by the interrupted
    /// run — no key on a token, no file — is left over.
    fn interrupted_until_retry(mut self, why: &'static str) -> Case {
        self.interruptible = Some(why);
        self
    }

    /// Allows one more ending for a command that commits its work in steps (batches of
    /// users, of tokens, of archived keys) and is documented to resume: right after the fault
    /// the state may be part way (`why`: which steps), provided the faulted run, if it lived,
    /// failed with one clear line, and the rerun of the same command finishes it to exactly
    /// the after-state and the files of a clean run: nothing issued twice, nothing left over.
    fn resumable(mut self, why: &'static str) -> Case {
        self.resumable = Some(why);
        self
    }

    fn with_reply(mut self, user: &'static str, out: &str, complete: bool) -> Case {
        self.reply = Some((user, out.to_string(), complete));
        self
    }
}

/// How a point ended when it was consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The fault came before the command changed a byte: the bed is exactly the start (see
    /// [`crash::bed_digest`]), so neither the view nor the retry is run again — they would be
    /// the reference's before-view and clean run.
    Untouched,
    /// The state stayed as before; the retry did the work.
    Before,
    /// The work was done; the retry succeeded or said so.
    After,
    /// The enrollment was committed without its reply; the retry named `authority reply`
    /// (or `enroll --complete`), which finished it.
    Resumed,
    /// The work was committed without its output file; the retry wrote it (`authority
    /// process`: the stored reply) or made a new one (`authority crl`: the committed number
    /// is skipped, never reused). What the retry left is checked like any retry's.
    Redone,
    /// Only for a case marked [`Case::interrupted_until_retry`]: the fault left the command
    /// half done; the retry removed what it had made and finished the work.
    Interrupted,
    /// Only for a case marked [`Case::resumable`]: the fault left some of the command's
    /// steps committed; the rerun finished the rest.
    Partial,
    /// An ENOSPC/EIO point at a write of SQLite's checkpoint into the database file that the
    /// faulted run did not make (fewer checkpoint pages this time) and that succeeded.
    Missed,
}

struct Point {
    fault: Fault,
    event: Event,
}

/// What the faulted runs are compared with.
struct Reference {
    before: View,
    after: View,
    /// The names of the bed's files after a clean run.
    after_files: Vec<String>,
    /// The state after the command ran twice (None: the second run refuses, as `add-user`
    /// of the same user does).
    twice: Option<(View, Vec<String>)>,
    /// [`crash::bed_digest`] of a fresh copy of the start.
    start: [u8; 32],
}

impl Point {
    fn label(&self, case: &str) -> String {
        format!(
            "{case}: {} at {} #{} ({} class) `{}`",
            self.fault.name(),
            self.event.syscall,
            self.event.n,
            crash::class_of(&self.event.syscall),
            self.event.what
        )
    }
}

struct Worker<'a> {
    case: &'a Case,
    bed: TestBed,
    traces: tempfile::TempDir,
}

impl<'a> Worker<'a> {
    fn new(case: &'a Case) -> Worker<'a> {
        Worker {
            case,
            bed: TestBed::new(),
            traces: tempfile::tempdir().expect("trace dir"),
        }
    }

    fn here(&self, text: &str) -> String {
        text.replace("{dir}", &self.bed.dir.path().to_string_lossy())
    }

    /// `text` with this bed's directory shown as `{dir}`.
    fn unhere(&self, text: &str) -> String {
        text.replace(&*self.bed.dir.path().to_string_lossy(), "{dir}")
    }

    fn args(&self) -> Vec<String> {
        self.case.args.iter().map(|a| self.here(a)).collect()
    }

    /// The case's environment with `TMPDIR` in the bed.
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .case
            .env
            .iter()
            .map(|(k, v)| (k.clone(), self.here(v)))
            .collect();
        env.push(self.tmpdir());
        env
    }

    fn tmpdir(&self) -> (String, String) {
        (
            "TMPDIR".to_string(),
            self.bed.path("tmp").to_string_lossy().into_owned(),
        )
    }

    /// The environment of the commands that read the state.
    fn view_env(&self) -> Vec<(String, String)> {
        vec![
            ("KEYWARD_PIN".to_string(), AUTHORITY_PIN.to_string()),
            self.tmpdir(),
        ]
    }

    fn view(&self) -> View {
        crash::view(&self.bed, &self.case.probe, &self.view_env())
    }

    /// Runs keyward with `args` and `env` (plus `TMPDIR`).
    fn keyward(&self, args: &[String], env: &[(String, String)]) -> Run {
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let tmp = self.tmpdir();
        env.push((&tmp.0, &tmp.1));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bed.run_env(&args, &env)
    }

    /// Runs the case's command without a fault.
    fn clean(&self) -> Run {
        self.keyward(&self.args(), &self.env())
    }

    fn tmp_left(&self) -> Vec<String> {
        std::fs::read_dir(self.bed.path("tmp"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check(&self, point: &Point, r: &Reference) -> Result<Outcome, String> {
        let (before, after, after_files) = (&r.before, &r.after, &r.after_files[..]);
        crash::restore_state(&self.bed, &self.case.start);
        let trace = self.traces.path().join("inject.trace");
        let injected = crash::inject(
            &self.bed,
            &self.args(),
            &self.env(),
            &point.event.syscall,
            point.event.n,
            point.fault,
            &trace,
        );
        let run = &injected.run;
        // SQLite's checkpoint copies the WAL's pages into the database file, and how many it
        // writes varies run to run when a command commits many times (B-tree pages split by
        // random keys): a write to the database file that a rerun no longer makes is not a
        // different path, only fewer checkpoint pages. Counted apart (`Missed`).
        let checkpoint_write =
            written_file(&point.event).is_some_and(|f| f.ends_with("authority.db>"));
        if !injected.hit && checkpoint_write && run.status.success() {
            return Ok(Outcome::Missed);
        }
        if !injected.hit {
            return Err(format!(
                "the fault was not injected (the run took another path); exit {:?}\nstderr: {}",
                run.status.code(),
                run.stderr.trim()
            ));
        }
        let mut problems = Vec::new();
        // The fault came before the command changed anything: the bed is byte for byte the
        // start, so the view is `before` and the retry would be the clean run the reference
        // made (twice). Only the faulted run's own exit is left to judge.
        let untouched = !run.status.success() && crash::bed_digest(&self.bed) == r.start;
        let error_lines = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("keyward: error:"))
            .count();
        if point.fault != Fault::Kill && !run.status.success() {
            if run.stderr.contains("panicked") || run.status.code() != Some(1) {
                problems.push(format!(
                    "exit {:?} with a panic or an unexpected status: {}",
                    run.status.code(),
                    run.stderr.trim()
                ));
            } else if error_lines != 1 {
                problems.push(format!(
                    "{error_lines} `keyward: error:` lines, want 1: {}",
                    run.stderr.trim()
                ));
            } else if !point
                .fault
                .named_in(&crash::error_line(&self.bed, &run.stderr))
                && !sqlite_open_refused(point, &crash::error_line(&self.bed, &run.stderr))
                && !sqlite_header_write_lost(point, &crash::error_line(&self.bed, &run.stderr))
            {
                problems.push(format!(
                    "the error line does not name the cause ({}): {}",
                    point.fault.name(),
                    crash::error_line(&self.bed, &run.stderr)
                ));
            }
        }
        if untouched {
            return if problems.is_empty() {
                Ok(Outcome::Untouched)
            } else {
                Err(format!(
                    "{}\n    state after the fault: byte for byte the start\n    exit {:?}; stderr: {}",
                    problems.join("\n    "),
                    run.status.code(),
                    one_line(&self.unhere(&run.stderr)),
                ))
            };
        }
        let now = self.view();
        let why_not_before = crash::differs_from_before(&now, before);
        let why_not_after = crash::differs_from_after(&now, after);
        let committed_no_output =
            why_not_after.is_some() && crash::only_outputs_differ(&now, after);
        let state = match (&why_not_before, &why_not_after) {
            (None, _) => "as before".to_string(),
            (_, None) => "as after".to_string(),
            _ if committed_no_output => "committed, output not written".to_string(),
            (Some(b), Some(a)) if self.case.interruptible.is_some() => {
                format!("interrupted — not before ({b}); not after ({a})")
            }
            (Some(b), Some(a)) if self.case.resumable.is_some() => {
                format!("part way — not before ({b}); not after ({a})")
            }
            (Some(b), Some(a)) => format!("IN BETWEEN — not before ({b}); not after ({a})"),
        };
        if point.fault != Fault::Kill && run.status.success() && why_not_after.is_some() {
            problems.push("exit 0, but the work is not done".to_string());
        }
        let interrupted = (self.case.interruptible.is_some() || self.case.resumable.is_some())
            && why_not_before.is_some()
            && why_not_after.is_some()
            && !committed_no_output;
        // `log --verify` must pass, unless there was no authority before and still is none
        // (an interrupted `authority init` has not made it yet).
        let no_authority_yet = matches!(before.verify, Some(Err(_)))
            && (why_not_before.is_none() || interrupted)
            && matches!(now.verify, Some(Err(_)));
        if let (Some(Err(e)), false) = (&now.verify, no_authority_yet) {
            problems.push(format!("authority log --verify fails: {e}"));
        }
        if why_not_before.is_some()
            && why_not_after.is_some()
            && !committed_no_output
            && !interrupted
        {
            problems.push("the state is neither as before nor as after".to_string());
        }

        // The retry (no fault).
        let retry = self.clean();
        let mut retry_note = format!(
            "retry: exit {}{}",
            retry.code,
            if retry.code == 0 {
                String::new()
            } else {
                format!(", {}", crash::error_line(&self.bed, &retry.stderr))
            }
        );
        let mut resumed = false;
        if retry.code != 0 {
            let one_line = retry.code == 1
                && !retry.stderr.contains("panicked")
                && retry
                    .stderr
                    .lines()
                    .filter(|l| l.starts_with("keyward: error:"))
                    .count()
                    == 1;
            if let Some(how) = self.resume(&retry.stderr)? {
                resumed = true;
                retry_note.push_str(&format!("; then {how}"));
            } else if why_not_before.is_none() {
                problems.push("the retry from the before-state fails".to_string());
            } else if interrupted {
                problems.push(format!("state {state}, and the retry fails"));
            } else if !one_line {
                problems.push("the retry fails without one clear error line".to_string());
            }
        }
        let redone = committed_no_output && retry.code == 0;
        if committed_no_output && !resumed && !redone {
            problems.push(format!(
                "state {state}, and the retry does not name `keyward authority reply`"
            ));
        }
        // The retry of a command that was done may do it again (a second recover, a second
        // CRL): then the state is that of two clean runs.
        let again = self.view();
        let files = crash::file_names(&self.bed);
        let (want, want_files, which) = match &r.twice {
            Some((twice, twice_files))
                if retry.code == 0 && why_not_before.is_some() && !interrupted =>
            {
                (twice, &twice_files[..], "the state after two clean runs")
            }
            _ => (after, after_files, "the after-state"),
        };
        if let Some(why) = crash::differs_from_after(&again, want) {
            problems.push(format!("after the retry, not {which}: {why}"));
        }
        if let Some(Err(e)) = &again.verify {
            problems.push(format!(
                "after the retry, authority log --verify fails: {e}"
            ));
        }
        let (extra, missing) = crash::names_diff(&files, want_files);
        if !extra.is_empty() || !missing.is_empty() {
            problems.push(format!(
                "after the retry, files left behind {extra:?}, missing {missing:?}"
            ));
        }
        let left = self.tmp_left();
        if !left.is_empty() {
            problems.push(format!("after the retry, left in TMPDIR: {left:?}"));
        }
        if !problems.is_empty() {
            return Err(format!(
                "{}\n    state after the fault: {state}\n    exit {:?}; stderr: {}\n    {retry_note}",
                problems.join("\n    "),
                run.status.code(),
                one_line(&self.unhere(&run.stderr)),
            ));
        }
        Ok(if interrupted && self.case.resumable.is_some() {
            Outcome::Partial
        } else if interrupted {
            Outcome::Interrupted
        } else if resumed {
            Outcome::Resumed
        } else if redone {
            Outcome::Redone
        } else if why_not_before.is_none() {
            Outcome::Before
        } else {
            Outcome::After
        })
    }

    /// When the retry's error names the command that finishes an enrollment
    /// (`keyward authority reply …` or `keyward enroll --complete PATH`), runs it; returns
    /// what was run, or why it failed.
    fn resume(&self, stderr: &str) -> Result<Option<String>, String> {
        let user_env = owned(&[("KEYWARD_PIN", USER_PIN)]);
        if stderr.contains("keyward authority reply") {
            let Some((user, out, complete)) = &self.case.reply else {
                return Ok(None);
            };
            let out = self.here(out);
            let dir = self.here(self.case.probe.authority.as_deref().unwrap_or("{dir}/auth"));
            let args: Vec<String> = ["authority", "reply", "--dir", &dir, user, "-o", &out]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let r = self.keyward(&args, &self.view_env());
            if r.code != 0 {
                return Err(format!(
                    "the retry names `keyward authority reply`, which fails: {}",
                    r.stderr.trim()
                ));
            }
            if *complete {
                let args = vec!["enroll".into(), "--complete".into(), out.clone()];
                let r = self.keyward(&args, &user_env);
                if r.code != 0 {
                    return Err(format!(
                        "`keyward enroll --complete` of the reply `authority reply` wrote fails: {}",
                        r.stderr.trim()
                    ));
                }
                return Ok(Some("`authority reply` and `enroll --complete`".into()));
            }
            return Ok(Some("`authority reply`".into()));
        }
        if let Some(at) = stderr.find("keyward enroll --complete ") {
            let rest = &stderr[at + "keyward enroll --complete ".len()..];
            let path: String = rest
                .trim_start_matches(['"', '\''])
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '`' | '"' | '\''))
                .collect();
            let args = vec!["enroll".into(), "--complete".into(), path.clone()];
            let r = self.keyward(&args, &user_env);
            if r.code != 0 {
                return Err(format!(
                    "the retry names `keyward enroll --complete {path}`, which fails: {}",
                    r.stderr.trim()
                ));
            }
            return Ok(Some(format!("`enroll --complete {path}`")));
        }
        Ok(None)
    }
}

/// An open of the authority's database files failed (ENOSPC/EIO injected at it) and SQLite
/// says so in its own words only: it falls back to a read-only open, or reports "unable to
/// open database file", and keeps no errno of the refused open (`sqlite3_system_errno` is 0 or
/// a later call's), so keyward cannot name the cause. Allowed, with the database named.
fn sqlite_open_refused(point: &Point, line: &str) -> bool {
    crash::class_of(&point.event.syscall) == "openat"
        && point.event.what.contains("authority.db")
        && line.contains("the authority's database")
        && (line.contains("unable to open database file")
            || line.contains("attempt to write a readonly database"))
}

/// A write of the new database's first page failed (ENOSPC/EIO injected at it) and SQLite
/// absorbed it: the file is left without its WAL header, which the check before the rename
/// finds and reports as a journal-mode mismatch, but SQLite kept no errno of the failed write
/// on any connection keyward still has. Allowed, with the database named and the likely cause
/// said; nothing is left half done (the state is the one before).
///
/// The same ending after a failed fsync of the new database or of its rollback journal, or
/// a failed removal of that journal, while the first transaction switches it to WAL (found
/// by the first full sweep of `authority init`, `KEYWARD_CRASH_STRIDE=1`: ENOSPC and EIO at
/// fsync #3, #5, #6 and unlink #4; the state was the one before and the retry succeeded).
/// Open question: whether the writing connection's `sqlite3_system_errno` still holds the
/// cause there, which would let keyward name it.
fn sqlite_header_write_lost(point: &Point, line: &str) -> bool {
    matches!(
        crash::class_of(&point.event.syscall),
        "write" | "fsync" | "unlink"
    ) && point.event.what.contains("authority.db")
        && line.contains("the authority's database")
        && line.contains("instead of WAL")
}

fn one_line(text: &str) -> String {
    let t = text.trim().replace('\n', " | ");
    let mut s: String = t.chars().take(400).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    s
}

/// The file a call writes (`pwrite64(6<{dir}/auth/authority.db-wal>` → the part up to `>`).
fn written_file(e: &Event) -> Option<&str> {
    if crash::class_of(&e.syscall) != "write" || e.stdout {
        return None;
    }
    let start = e.what.find('(')?;
    let end = e.what[start..].find('>')? + start;
    Some(&e.what[start..=end])
}

/// Of each run of consecutive writes to one file (no other call between them), keeps the
/// first, the middle and the last: within a run every point leaves the same state. A kill
/// anywhere before a run's last write leaves what the run writes incomplete, and the next
/// call that would give it meaning (the fsync of SQLite's WAL after its commit frame, the
/// rename of a temporary file) never happens; an ENOSPC or EIO at any of them fails the same
/// write loop the same way. SQLite writes a transaction as such runs (its WAL frames, its
/// shared-memory index, the checkpoint into the database), which makes most of the calls of
/// an authority command.
fn sample_write_runs(events: Vec<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    let mut run: Vec<Event> = Vec::new();
    let flush = |run: &mut Vec<Event>, out: &mut Vec<Event>| {
        let n = run.len();
        for (i, e) in run.drain(..).enumerate() {
            if i == 0 || i == n / 2 || i + 1 == n {
                out.push(e);
            }
        }
    };
    for e in events {
        let same = match (run.last().and_then(written_file), written_file(&e)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if !same {
            flush(&mut run, &mut out);
        }
        run.push(e);
    }
    flush(&mut run, &mut out);
    out
}

/// Keeps every `stride`-th of `items` (and the last one).
fn thin<T>(items: Vec<T>, stride: usize) -> Vec<T> {
    let last = items.len().saturating_sub(1);
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || *i == last)
        .map(|(_, t)| t)
        .collect()
}

fn sweep(case: Case) {
    crash::require_strace();
    let started = std::time::Instant::now();
    let first = Worker::new(&case);
    crash::restore_state(&first.bed, &case.start);
    let start = crash::bed_digest(&first.bed);
    let before = first.view();
    let (counted, trace) = crash::count(
        &first.bed,
        &first.args(),
        &first.env(),
        &first.traces.path().join("count.trace"),
    );
    assert!(
        counted.status.success(),
        "{}: the clean run under strace failed: {:?}\n{}",
        case.name,
        counted.status,
        counted.stderr
    );
    assert_eq!(
        trace.other_pids, 0,
        "{}: the command ran more than one thread or process; strace counts `when=N` per \
         thread, so the points would be ambiguous",
        case.name
    );
    assert!(
        !trace.events.is_empty(),
        "{}: strace shows no call on keyward's files (is the trace parsed right?)\n{}",
        case.name,
        counted
            .trace
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = first.view();
    let after_files = crash::file_names(&first.bed);
    assert!(
        crash::differs_from_before(&after, &before).is_some(),
        "{}: a clean run changed nothing",
        case.name
    );
    if let Some(Err(e)) = &after.verify {
        panic!(
            "{}: after a clean run, authority log --verify fails: {e}",
            case.name
        );
    }
    assert!(
        first.tmp_left().is_empty(),
        "{}: a clean run leaves {:?} in TMPDIR",
        case.name,
        first.tmp_left()
    );
    // A second clean run must look the same: the masks hide only what varies anyway.
    crash::restore_state(&first.bed, &case.start);
    first.clean().ok();
    let second = first.view();
    if let Some(why) = crash::differs_from_after(&second, &after) {
        panic!("{}: two clean runs differ: {why}", case.name);
    }
    assert_eq!(
        crash::file_names(&first.bed),
        after_files,
        "{}: two clean runs leave different files",
        case.name
    );
    // And once more on top: what a retry of a command that was done may reach.
    let twice = (first.clean().code == 0).then(|| (first.view(), crash::file_names(&first.bed)));
    let reference = Reference {
        before,
        after,
        after_files,
        twice,
        start,
    };

    let mut points = Vec::new();
    // The points a sweep of every point would try (the summary says how many of them ran).
    let mut every = 0;
    for fault in Fault::ALL {
        let eligible: Vec<Event> = trace
            .events
            .iter()
            .filter(|e| fault == Fault::Kill || !e.stdout)
            .cloned()
            .collect();
        let sampled = sample_write_runs(eligible);
        every += sampled.len();
        for event in thin(sampled, case.stride) {
            points.push(Point { fault, event });
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let work = |worker: &Worker| loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(point) = points.get(i) else {
            break;
        };
        let result = worker.check(point, &reference);
        results.lock().expect("results").push((i, result));
    };
    std::thread::scope(|scope| {
        for _ in 1..WORKERS.min(points.len().max(1)) {
            scope.spawn(|| work(&Worker::new(&case)));
        }
        work(&first);
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    report(&case, &trace, &points, every, results, started.elapsed());
}

/// A crash point known to leave an inconsistent state (a keyward defect not yet fixed): the
/// command, the fault, the syscall class, a piece of the call's strace line that picks the
/// call (`""`: every call of that class), and why. The sweep asserts that exactly the points
/// these match fail: a point not listed must be consistent, and a listed point that is
/// consistent fails the sweep ("now consistent: remove it from the table").
struct Known {
    command: &'static str,
    fault: Fault,
    class: &'static str,
    at: &'static str,
    reason: &'static str,
}

const KNOWN_FAILURES: &[Known] = &[];

fn known_for(case: &str, p: &Point) -> Option<&'static Known> {
    KNOWN_FAILURES.iter().find(|k| {
        k.command == case
            && k.fault == p.fault
            && k.class == crash::class_of(&p.event.syscall)
            && p.event.what.contains(k.at)
    })
}

fn report(
    case: &Case,
    trace: &crash::Trace,
    points: &[Point],
    every: usize,
    results: Vec<(usize, Result<Outcome, String>)>,
    took: std::time::Duration,
) {
    let mut per_fault: BTreeMap<Fault, (usize, usize)> = BTreeMap::new();
    let mut outcomes: BTreeMap<Outcome, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut known_failing = 0;
    let mut now_consistent = Vec::new();
    for (i, result) in &results {
        let p = &points[*i];
        let known = known_for(case.name, p);
        let slot = per_fault.entry(p.fault).or_default();
        slot.0 += 1;
        match (result, known) {
            (Ok(o), None) => {
                slot.1 += 1;
                *outcomes.entry(*o).or_default() += 1;
            }
            (Ok(_), Some(k)) => now_consistent.push(format!(
                "{}\n    now consistent: remove it from the table (known failure {:?}/{}/{:?}: {})",
                p.label(case.name),
                k.fault,
                k.class,
                k.at,
                k.reason
            )),
            (Err(_), Some(_)) => known_failing += 1,
            (Err(why), None) => failures.push(format!("{}\n    {why}", p.label(case.name))),
        }
    }
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &trace.events {
        *per_class.entry(crash::class_of(&e.syscall)).or_default() += 1;
    }
    let consistent = points.len() - failures.len() - known_failing - now_consistent.len();
    let line = format!(
        "crash sweep: {:<20} {:>3} calls on its files ({}); {:>3} points tried of {} ({}{}), {:>3} consistent ({}), {:>3} known-failing, in {}s",
        case.name,
        trace.events.len(),
        per_class
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        points.len(),
        every,
        per_fault
            .iter()
            .map(|(f, (t, ok))| format!("{} {ok}/{t}", f.name()))
            .collect::<Vec<_>>()
            .join(", "),
        match case.stride {
            1 => "; every point".to_string(),
            2 => "; every 2nd point".to_string(),
            3 => "; every 3rd point".to_string(),
            n => format!("; every {n}th point"),
        } + " (of a run of writes to one file: first, middle, last)"
            + if via_shim() { ", through the shim" } else { "" },
        consistent,
        outcomes
            .iter()
            .map(|(o, n)| format!("{o:?} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        known_failing,
        took.as_secs()
    );
    println!("{line}");
    crash::record_summary(&line);
    assert!(
        failures.is_empty() && now_consistent.is_empty(),
        "{}: {} of {} crash points left an inconsistent state or a bad failure (not in KNOWN_FAILURES), {} listed points are now consistent:\n\n{}",
        case.name,
        failures.len(),
        points.len(),
        now_consistent.len(),
        failures
            .iter()
            .chain(&now_consistent)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

// ---- the commands ---------------------------------------------------------------------------

fn authority_probe(outputs: &[&str]) -> Probe {
    Probe {
        authority: Some("{dir}/auth".into()),
        keysets: false,
        tokens: Vec::new(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        token_labels: false,
    }
}

fn authority_env() -> [(&'static str, &'static str); 1] {
    [("KEYWARD_PIN", AUTHORITY_PIN)]
}

#[test]
fn crash_authority_init() {
    let w = world();
    sweep(Case::new(
        "authority init",
        &w.requested,
        &[
            "authority",
            "init",
            "--dir",
            "{dir}/auth2",
            "--token",
            "spare",
            "--name",
            "CN=Second Authority",
        ],
        &authority_env(),
        Probe {
            authority: Some("{dir}/auth2".into()),
            keysets: false,
            tokens: vec![("spare".into(), AUTHORITY_PIN.into())],
            outputs: Vec::new(),
            token_labels: false,
        },
        INIT_STRIDE,
    )
    .interrupted_until_retry(
        "the new keys on the token and the new database: between making the keys and the database's rename the token holds keys no authority names yet, and only a login can remove them, which read-only commands do not make; the retry (same command) removes them, as the intent it wrote first names them, and makes the authority",
    ));
}

#[test]
fn crash_authority_add_user() {
    let w = world();
    sweep(Case::new(
        "authority add-user",
        &w.requested,
        &[
            "authority",
            "add-user",
            "--dir",
            "{dir}/auth",
            "frank",
            "--email",
            "frank@example.org",
        ],
        &authority_env(),
        authority_probe(&[]),
        1,
    ));
}

#[test]
fn crash_authority_recover() {
    let w = world();
    sweep(Case::new(
        "authority recover",
        &w.requested,
        &["authority", "recover", "--dir", "{dir}/auth", "bob"],
        &authority_env(),
        authority_probe(&[]),
        1,
    ));
}

#[test]
fn crash_authority_revoke() {
    let w = world();
    sweep(Case::new(
        "authority revoke",
        &w.requested,
        &["authority", "revoke", "--dir", "{dir}/auth", "alice"],
        &authority_env(),
        authority_probe(&[]),
        1,
    ));
}

#[test]
fn crash_authority_crl() {
    let w = world();
    sweep(Case::new(
        "authority crl",
        &w.requested,
        &[
            "authority",
            "crl",
            "--dir",
            "{dir}/auth",
            "-o",
            "{dir}/ca.crl",
        ],
        &authority_env(),
        authority_probe(&["{dir}/ca.crl"]),
        1,
    ));
}

#[test]
fn crash_authority_process() {
    let w = world();
    sweep(
        Case::new(
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
            &authority_env(),
            authority_probe(&["{dir}/carol.reply"]),
            1,
        )
        .with_reply("carol", "{dir}/carol.reply", false),
    );
}

#[test]
fn crash_enroll_complete() {
    let w = world();
    sweep(Case::new(
        "enroll --complete",
        &w.processed,
        &["enroll", "--complete", "{dir}/carol.reply"],
        &[("KEYWARD_PIN", USER_PIN)],
        Probe {
            authority: None,
            keysets: true,
            tokens: vec![("carol-card".into(), USER_PIN.into())],
            outputs: Vec::new(),
            token_labels: false,
        },
        CLIENT_STRIDE,
    ));
}

#[test]
fn crash_enroll_local() {
    let w = world();
    sweep(
        Case::new(
            "enroll --authority",
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
            Probe {
                authority: Some("{dir}/auth".into()),
                keysets: true,
                tokens: vec![("dave-card".into(), USER_PIN.into())],
                outputs: Vec::new(),
                token_labels: false,
            },
            CLIENT_STRIDE,
        )
        .with_reply("dave", "{dir}/dave.reply", true)
        .interrupted_until_retry(
            "the user's token, the keyset registry and the authority: a kill after the request's keys are made and before the authority records the enrollment leaves a pending keyset whose keys only the user's login removes, and one after the authority recorded it leaves the reply to complete on the token; the retry (same command) removes the pending keyset and enrolls again, or completes the recorded reply",
        ),
    );
}

#[test]
fn crash_keyset_create() {
    let w = world();
    sweep(Case::new(
        "keyset create",
        &w.requested,
        &[
            "keyset",
            "create",
            "Made",
            "--token",
            "maker",
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
        Probe {
            authority: None,
            keysets: true,
            tokens: vec![("maker".into(), USER_PIN.into())],
            outputs: Vec::new(),
            token_labels: false,
        },
        CLIENT_STRIDE,
    ));
}

// ---- the lifecycle commands (issue 14) ------------------------------------------------------

#[test]
fn crash_enroll_renew_local() {
    let w = world();
    sweep(
        Case::new(
            "enroll --renew (local)",
            &w.requested,
            &["enroll", "--renew", "Bob", "--authority", "{dir}/auth"],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ],
            Probe {
                authority: Some("{dir}/auth".into()),
                keysets: true,
                tokens: vec![("bob-card".into(), USER_PIN.into())],
                outputs: Vec::new(),
                token_labels: false,
            },
            CLIENT_STRIDE,
        )
        .with_reply("bob", "{dir}/bob-renew.reply", true)
        .interrupted_until_retry(
            "the user's token, the keyset registry and the authority, as for a local enroll",
        ),
    );
}

#[test]
fn crash_authority_process_renewal() {
    let w = world();
    sweep(
        Case::new(
            "authority process (renewal)",
            &w.renew_requested,
            &[
                "authority",
                "process",
                "--dir",
                "{dir}/auth",
                "{dir}/alice-renew.req",
                "-o",
                "{dir}/alice-renew.reply",
            ],
            &authority_env(),
            authority_probe(&["{dir}/alice-renew.reply"]),
            LIFECYCLE_STRIDE,
        )
        .with_reply("alice", "{dir}/alice-renew.reply", false),
    );
}

#[test]
fn crash_enroll_complete_renewal() {
    let w = world();
    sweep(Case::new(
        "enroll --complete (renewal)",
        &w.renew_processed,
        &["enroll", "--complete", "{dir}/alice-renew.reply"],
        &[("KEYWARD_PIN", USER_PIN)],
        Probe {
            authority: None,
            keysets: true,
            tokens: vec![("alice-card".into(), USER_PIN.into())],
            outputs: Vec::new(),
            token_labels: false,
        },
        CLIENT_STRIDE,
    ));
}

#[test]
fn crash_authority_token_lost() {
    let w = world();
    sweep(Case::new(
        "authority token lost",
        &w.requested,
        &[
            "authority",
            "token",
            "--dir",
            "{dir}/auth",
            "bob",
            "--state",
            "lost",
        ],
        &authority_env(),
        authority_probe(&[]),
        LIFECYCLE_STRIDE,
    ));
}

/// Every how-manieth point `found` and `terminated` sweep: a token-state change is one
/// transaction whatever the state, making the same calls as `lost` (swept at every point).
const TOKEN_STATE_STRIDE: usize = 2;

#[test]
fn crash_authority_token_found() {
    let w = world();
    sweep(Case::new(
        "authority token found",
        &w.bob_lost,
        &[
            "authority",
            "token",
            "--dir",
            "{dir}/auth",
            "bob",
            "--state",
            "found",
        ],
        &authority_env(),
        authority_probe(&[]),
        TOKEN_STATE_STRIDE,
    ));
}

#[test]
fn crash_authority_token_terminated() {
    let w = world();
    sweep(Case::new(
        "authority token terminated",
        &w.requested,
        &[
            "authority",
            "token",
            "--dir",
            "{dir}/auth",
            "alice",
            "--state",
            "terminated",
        ],
        &authority_env(),
        authority_probe(&[]),
        TOKEN_STATE_STRIDE,
    ));
}

/// The steps `authority add-users` commits one by one here (one user per batch).
const BULK_RESUMES: &str = "one batch of users per commit (`KEYWARD_BULK_BATCH=1`): the users of the committed batches are issued, their keys written; the rerun skips them and issues the rest";

#[test]
fn crash_authority_add_users_files() {
    let w = world();
    sweep(
        Case::new(
            "authority add-users",
            &w.requested,
            &[
                "authority",
                "add-users",
                "--dir",
                "{dir}/auth",
                "--from",
                "{dir}/users.csv",
                "--out",
                "{dir}/keys",
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN), ("KEYWARD_BULK_BATCH", "1")],
            authority_probe(&["{dir}/keys/frank.tempkey", "{dir}/keys/grace.tempkey"]),
            LIFECYCLE_STRIDE,
        )
        .resumable(BULK_RESUMES),
    );
}

#[test]
fn crash_authority_add_users_csv() {
    let w = world();
    sweep(
        Case::new(
            "authority add-users --format csv",
            &w.requested,
            &[
                "authority",
                "add-users",
                "--dir",
                "{dir}/auth",
                "--from",
                "{dir}/users.csv",
                "--out",
                "{dir}/mail",
                "--format",
                "csv",
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN), ("KEYWARD_BULK_BATCH", "1")],
            authority_probe(&["{dir}/mail/temporary-keys.csv"]),
            LIFECYCLE_STRIDE,
        )
        .resumable(BULK_RESUMES),
    );
}

#[test]
fn crash_token_provision() {
    let w = world();
    sweep(
        Case::new(
            "token provision",
            &w.requested,
            &["token", "provision", "--manifest", "{dir}/tokens.toml"],
            &[],
            Probe {
                authority: None,
                keysets: false,
                tokens: Vec::new(),
                outputs: vec!["{dir}/pins/prov-1.pin".into(), "{dir}/pins/prov-2.pin".into()],
                token_labels: true,
            },
            LIFECYCLE_STRIDE,
        )
        .resumable(
            "one token per step: the tokens initialised, each with its PIN file written first; the rerun skips them and provisions the rest",
        ),
    );
}

#[test]
fn crash_authority_rollover_archive() {
    let w = world();
    sweep(
        Case::new(
            "authority rollover --archive",
            &w.requested,
            &["authority", "rollover", "--dir", "{dir}/auth", "--archive"],
            &[
                ("KEYWARD_PIN", AUTHORITY_PIN),
                ("KEYWARD_ROLLOVER_BATCH", "1"),
            ],
            Probe {
                authority: Some("{dir}/auth".into()),
                keysets: false,
                tokens: vec![(AUTHORITY_TOKEN.into(), AUTHORITY_PIN.into())],
                outputs: Vec::new(),
                token_labels: false,
            },
            LIFECYCLE_STRIDE,
        )
        .resumable(
            "the new archive key made and recorded, then one archived key re-wrapped per commit (`KEYWARD_ROLLOVER_BATCH=1`); the rerun re-wraps the rest and destroys the old key",
        ),
    );
}

/// Every how-manieth point `authority rollover --ca` sweeps by default: each run generates an
/// RSA 3072 key on SoftHSM (twice with the retry), the second-slowest command after `authority
/// init`. The whole sweep (`KEYWARD_CRASH_STRIDE=1`): 133 points, all consistent, 667 s on a
/// loaded machine, 2026-12-02; every 4th point (34) in `.ci/run`'s budget.
const ROLLOVER_CA_STRIDE: usize = 4;

#[test]
fn crash_authority_rollover_ca() {
    let w = world();
    sweep(
        Case::new(
            "authority rollover --ca",
            &w.requested,
            &["authority", "rollover", "--dir", "{dir}/auth", "--ca"],
            &authority_env(),
            Probe {
                authority: Some("{dir}/auth".into()),
                keysets: false,
                tokens: vec![(AUTHORITY_TOKEN.into(), AUTHORITY_PIN.into())],
                outputs: Vec::new(),
                token_labels: false,
            },
            ROLLOVER_CA_STRIDE,
        )
        .interrupted_until_retry(
            "the new CA key on the authority's token and the commit that names it: between making the key and the commit the token holds a key no state names, and only a login can remove it, which read-only commands do not make; the rerun (same command) removes it — its CKA_ID is derived from the current CA key's — and rolls over",
        ),
    );
}

// ---- what an interrupted `authority init` leaves, and who finishes it ----------------------

/// `authority init` killed at the rename that commits its database (the last call of the
/// window the sweep marks `Interrupted`): the token holds keys no authority names and the
/// directory holds no authority. Every command on the directory — read-only or not — says so
/// in one line naming the token and the command that finishes it; running that command
/// removes the interrupted run's keys and creates the authority, with no key left over.
#[test]
fn interrupted_init_is_named_and_finished_by_its_rerun() {
    let w = world();
    let bed = TestBed::new();
    crash::restore_state(&bed, &w.requested);
    let dir = bed.path("auth2").to_string_lossy().into_owned();
    let init: Vec<String> = [
        "authority",
        "init",
        "--dir",
        &dir,
        "--token",
        "spare",
        "--name",
        "CN=Second Authority",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = owned(&[("KEYWARD_PIN", AUTHORITY_PIN)]);
    let trace = bed.path("init.trace");
    let strace_args: Vec<String> = [
        "-f",
        "-q",
        "-P",
        &format!("{dir}/authority.db.init"),
        "-e",
        "trace=rename,renameat,renameat2",
        "-e",
        "inject=rename,renameat,renameat2:signal=KILL:when=1",
        "-o",
        &trace.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let killed = crash::run_straced(crash::straced(&bed, &strace_args, &init, &env), &trace);
    assert!(
        killed.trace.contains("killed by SIGKILL"),
        "the kill at the database's rename was not injected: {}\n{}",
        killed.trace,
        killed.stderr
    );
    let keys = |what: &str| {
        bed.token_objects("spare", AUTHORITY_PIN)
            .iter()
            .filter(|o| o.header.starts_with(what))
            .count()
    };
    assert!(
        keys("Private Key Object") > 0,
        "killed at its commit, the init had made its keys on the token"
    );
    let pin = [("KEYWARD_PIN", AUTHORITY_PIN)];
    for args in [
        vec!["authority", "users", "--dir", &dir],
        vec!["authority", "log", "--dir", &dir, "--verify"],
        vec!["authority", "add-user", "--dir", &dir, "zoe"],
    ] {
        let run = bed.run_env(&args, &pin);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("keyward: error:"))
                .count(),
            1,
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("was interrupted")
                && run
                    .stderr
                    .contains(&format!("keyward authority init --dir {dir} --token spare")),
            "{args:?} names neither the interrupted init nor the command that finishes it: {}",
            run.stderr
        );
    }
    let args: Vec<&str> = init.iter().map(String::as_str).collect();
    bed.run_env(&args, &pin).ok();
    bed.run_env(&["authority", "log", "--dir", &dir, "--verify"], &pin)
        .ok();
    assert_eq!(
        keys("Private Key Object"),
        2,
        "the CA and exchange keys, once"
    );
    assert_eq!(keys("Secret Key Object"), 1, "the archive key, once");
    assert!(!bed.path("auth2/init.intent.toml").exists());
}
