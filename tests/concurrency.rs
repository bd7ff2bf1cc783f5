//! Many `keyward enroll` processes at once against one local authority and one keyset
//! registry: every enrollment completes or fails cleanly, no record is lost, no temporary key
//! is spent twice, and the audit log still verifies.
//!
//! keyward processes using one SoftHSM configuration take turns (a lock on SOFTHSM2_CONF, see
//! `src/token/module.rs`), so with one configuration they run one after another in an order the
//! operating system picks. `eight_users_enroll_at_once_without_taking_turns` and the second
//! half of `one_temporary_key_two_processes_at_once` give each process a configuration file of
//! its own (same token directory), so that they really overlap and meet on the authority's and
//! the registry's locks.
//! `a_process_waiting_for_softhsm_s_lock_says_so_then_finishes` holds that lock itself and
//! checks that the waiting process says so.
//! The tests assert on outcomes, and print the timings (`--nocapture`).

mod util;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{AuthorityBed, Run, AUTHORITY_PIN, USER_PIN};

/// How many users enroll at once.
const USERS: usize = 8;
/// No enrollment may take longer than this (a deadlock fails the test instead of hanging it).
const DEADLINE: Duration = Duration::from_secs(600);

/// One `keyward enroll` child and when it was started.
struct Started {
    what: String,
    child: Child,
    at: Instant,
}

/// How one process ended.
struct Ended {
    what: String,
    run: Run,
    /// From the start of the batch to the process's exit.
    done_after: Duration,
    /// The process's own run time.
    took: Duration,
}

impl AuthorityBed {
    /// Starts `enroll --user USER --keyset KEYSET --token CARD --authority DIR` without waiting,
    /// with the bed's SoftHSM configuration or `conf` (another file naming the same tokens).
    fn spawn_enroll(
        &self,
        user: &str,
        keyset: &str,
        card: &str,
        temp_key: &str,
        conf: Option<&Path>,
    ) -> Started {
        let mut cmd = self.keyward();
        if let Some(conf) = conf {
            cmd.env("SOFTHSM2_CONF", conf);
        }
        cmd.args([
            "enroll",
            "--user",
            user,
            "--keyset",
            keyset,
            "--token",
            card,
            "--authority",
            &self.dir,
        ])
        .env("KEYWARD_PIN", USER_PIN)
        .env("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN)
        .env("KEYWARD_TEMP_KEY", temp_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        Started {
            what: format!("{user}/{keyset}"),
            at: Instant::now(),
            child: cmd.spawn().expect("spawn keyward enroll"),
        }
    }
}

/// Waits for every child, each in its own thread reading its output as it comes; kills them all
/// and fails if any is still running after [`DEADLINE`] (a deadlock must not hang the suite).
fn wait_all(batch: Instant, started: Vec<Started>) -> Vec<Ended> {
    let pids: Vec<u32> = started.iter().map(|s| s.child.id()).collect();
    let handles: Vec<_> = started
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let out = s.child.wait_with_output().expect("collect keyward");
                let now = Instant::now();
                Ended {
                    what: s.what,
                    run: Run {
                        code: out.status.code().unwrap_or(-1),
                        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    },
                    done_after: now - batch,
                    took: now - s.at,
                }
            })
        })
        .collect();
    while !handles.iter().all(|h| h.is_finished()) {
        if batch.elapsed() > DEADLINE {
            for pid in &pids {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
            panic!("keyward enroll still running after {DEADLINE:?}: deadlock?");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut ended: Vec<Ended> = handles
        .into_iter()
        .map(|h| h.join().expect("waiter thread"))
        .collect();
    ended.sort_by_key(|e| e.done_after);
    ended
}

/// Asserts the process succeeded or failed cleanly (exit 1, exactly one `keyward: error:`
/// line); returns whether it succeeded.
#[track_caller]
/// A local enrollment the authority recorded but that could not finish on the token (SoftHSM's
/// own race when processes do not take turns) says so and says to run the command again: that
/// is done here, once, and the retry's outcome replaces the first one. `again` starts the same
/// command for a process's `what`.
fn finish_recorded(ended: Vec<Ended>, again: impl Fn(&str) -> Started) -> Vec<Ended> {
    ended
        .into_iter()
        .map(|e| {
            if e.run.code == 1 && e.run.stderr.contains("the authority recorded it") {
                eprintln!("{}: recorded but not finished; running it again", e.what);
                let retry = wait_all(Instant::now(), vec![again(&e.what)]);
                retry.into_iter().next().expect("the retry's outcome")
            } else {
                e
            }
        })
        .collect()
}

fn clean(e: &Ended) -> bool {
    let errors: Vec<&str> = e
        .run
        .stderr
        .lines()
        .filter(|l| l.starts_with("keyward: error:"))
        .collect();
    match e.run.code {
        0 => {
            assert!(
                errors.is_empty(),
                "{} succeeded with an error line:\n{}",
                e.what,
                e.run.stderr
            );
            true
        }
        1 => {
            assert_eq!(
                errors.len(),
                1,
                "{} failed without exactly one error line:\n{}",
                e.what,
                e.run.stderr
            );
            false
        }
        code => panic!(
            "{} ended with exit {code} (crash or signal?)\nstdout:\n{}\nstderr:\n{}",
            e.what, e.run.stdout, e.run.stderr
        ),
    }
}

/// Prints each process's outcome and timing.
fn print_timings(title: &str, total: Duration, ended: &[Ended]) {
    eprintln!(
        "{title}: {} processes, all done after {:.2}s",
        ended.len(),
        total.as_secs_f64()
    );
    for e in ended {
        let outcome = if e.run.code == 0 {
            "enrolled".to_string()
        } else {
            let line = e
                .run
                .stderr
                .lines()
                .find(|l| l.starts_with("keyward: error:"))
                .unwrap_or("(no error line)");
            format!("exit {}: {line}", e.run.code)
        };
        eprintln!(
            "  {:<16} done at {:>6.2}s (ran {:>6.2}s): {outcome}",
            e.what,
            e.done_after.as_secs_f64(),
            e.took.as_secs_f64()
        );
    }
}

/// `audit.log` entries (one JSON object a line).
fn audit_entries(bed: &AuthorityBed) -> Vec<serde_json::Value> {
    String::from_utf8(bed.state_file("audit.log"))
        .expect("audit.log is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// How many `process` entries with outcome `ok` the audit log has for `user`.
fn processed_ok(entries: &[serde_json::Value], user: &str) -> usize {
    entries
        .iter()
        .filter(|e| e["action"] == "process" && e["subject"] == user && e["outcome"] == "ok")
        .count()
}

/// The user's certificates from `authority users --json`, as (kind, keyset) pairs.
fn certs_of(user: &serde_json::Value) -> Vec<(String, String)> {
    user["certificates"]
        .as_array()
        .expect("certificates array")
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_string(),
                c["keyset"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The authority's state after a success for `user` with `keyset`: active, the keyset recorded
/// once, exactly one signing and one encryption certificate, the temporary key spent.
#[track_caller]
fn assert_enrolled_once(
    bed: &AuthorityBed,
    entries: &[serde_json::Value],
    user: &str,
    keyset: &str,
) {
    let u = bed.user(user);
    assert_eq!(u["state"], "active", "{user}: {u:#}");
    assert_eq!(u["keysets"], serde_json::json!([keyset]), "{user}: {u:#}");
    let mut certs = certs_of(&u);
    certs.sort();
    assert_eq!(
        certs,
        vec![
            ("encryption".to_string(), keyset.to_string()),
            ("signing".to_string(), keyset.to_string()),
        ],
        "{user}: one signing and one encryption certificate, no more: {u:#}"
    );
    assert_eq!(u["temporary_key"]["spent"], true, "{user}: {u:#}");
    assert_eq!(
        processed_ok(entries, user),
        1,
        "{user}: the audit log must show one processed request"
    );
}

/// `authority log --verify` passes.
fn assert_log_verifies(bed: &AuthorityBed) {
    let run = bed
        .bed
        .run(&["authority", "log", "--verify", "--dir", &bed.dir])
        .ok();
    assert!(run.stdout.contains("hash chain intact"), "{}", run.stdout);
}

/// One user of the batch: name, keyset, card and temporary key.
struct User {
    name: String,
    keyset: String,
    card: String,
    temp_key: String,
}

impl User {
    fn what(&self) -> String {
        format!("{}/{}", self.name, self.keyset)
    }
}

/// An authority with [`USERS`] users added, each with a card of their own.
fn eight_users() -> (AuthorityBed, Vec<User>) {
    let cards: Vec<String> = (0..USERS).map(|i| format!("ccard{i}")).collect();
    let card_refs: Vec<&str> = cards.iter().map(String::as_str).collect();
    let setup = Instant::now();
    let bed = AuthorityBed::new(&card_refs, "CN=Concurrency CA,O=Example");
    let users: Vec<User> = (0..USERS)
        .map(|i| {
            let name = format!("user{i}");
            let temp_key = bed.add_user(&name, &[]);
            User {
                name,
                keyset: format!("Keyset {i}"),
                card: cards[i].clone(),
                temp_key,
            }
        })
        .collect();
    eprintln!(
        "set-up: {} tokens initialised, authority made, {USERS} users added in {:.2}s",
        USERS + 1,
        setup.elapsed().as_secs_f64()
    );
    (bed, users)
}

/// Where `keyward enroll` says it kept the authority's reply after a failed completion.
fn kept_reply(stderr: &str) -> Option<String> {
    let rest = stderr.split("the authority's reply is kept in ").nth(1)?;
    Some(rest.split(';').next()?.trim().to_string())
}

/// Checks every outcome of one batch and the state it left; returns how many users are enrolled.
///
/// A success must be recorded everywhere (registry active with its certificate; users.toml
/// active with exactly one signing and one encryption certificate; the temporary key spent; one
/// `process` entry in the audit log). A failure must be clean (exit 1, one error line) and
/// leave either nothing done (user pending, key unspent, no active keyset), or, when it came
/// after the authority spent the key, the reply kept for `enroll --complete`, which must then
/// finish the enrollment: never a spent key with nothing to show for it.
fn check_outcomes(bed: &AuthorityBed, users: &[User], ended: &[Ended]) -> usize {
    let mut enrolled = 0;
    for u in users {
        let e = ended
            .iter()
            .find(|e| e.what == u.what())
            .expect("every user ran");
        let mut ok = clean(e);
        if !ok && bed.user(&u.name)["state"] == "active" {
            let kept = kept_reply(&e.run.stderr).unwrap_or_else(|| {
                panic!(
                    "{}: the authority spent the key, yet the enrollment failed and no reply \
                     was kept to finish it:\n{}",
                    u.what(),
                    e.run.stderr
                )
            });
            eprintln!("  {}: finishing from the kept reply {kept}", u.what());
            bed.complete_env(&kept, USER_PIN, &[]).ok();
            ok = true;
        }
        let entries = audit_entries(bed);
        let states = bed.keyset_states();
        let state = states
            .iter()
            .find(|(n, _)| *n == u.keyset)
            .map(|(_, s)| s.as_str());
        if ok {
            enrolled += 1;
            assert_eq!(
                state,
                Some("active"),
                "{} lost from the registry: {states:?}",
                u.keyset
            );
            assert_enrolled_once(bed, &entries, &u.name, &u.keyset);
            let ks = bed.keyset_json(&u.keyset);
            assert_eq!(ks["enrollment"]["user"], u.name.as_str());
            assert!(
                ks["enrollment"]["signing_certificate"] == true,
                "{}: {ks:#}",
                u.keyset
            );
        } else {
            let at = bed.user(&u.name);
            assert_eq!(at["state"], "pending", "{}: {at:#}", u.name);
            assert_eq!(at["temporary_key"]["spent"], false, "{}: {at:#}", u.name);
            assert!(
                at["certificates"].as_array().is_some_and(Vec::is_empty),
                "{}: {at:#}",
                u.name
            );
            assert_eq!(
                processed_ok(&entries, &u.name),
                0,
                "{} failed yet processed",
                u.name
            );
            assert_ne!(state, Some("active"), "{} failed yet is active", u.keyset);
        }
    }
    let active = bed
        .keyset_states()
        .into_iter()
        .filter(|(_, s)| s == "active")
        .count();
    assert_eq!(
        active, enrolled,
        "the registry's active keysets are the enrolled ones"
    );
    assert_log_verifies(bed);
    enrolled
}

#[test]
fn eight_users_enroll_at_once() {
    let (bed, users) = eight_users();
    let batch = Instant::now();
    let started: Vec<Started> = users
        .iter()
        .map(|u| bed.spawn_enroll(&u.name, &u.keyset, &u.card, &u.temp_key, None))
        .collect();
    let ended = wait_all(batch, started);
    let total = batch.elapsed();
    print_timings("8 users at once (taking turns on SoftHSM)", total, &ended);
    let enrolled = check_outcomes(&bed, &users, &ended);
    eprintln!(
        "{enrolled} of {USERS} enrolled ({:.2}s a process on average)",
        total.as_secs_f64() / USERS as f64
    );
    // Nothing in the test makes an enrollment fail: taking turns must not cost one.
    assert_eq!(
        enrolled, USERS,
        "every enrollment should succeed when users differ"
    );
}

/// The same, with the turn-taking on SoftHSM defeated: each process gets its own copy of the
/// SoftHSM configuration (same token directory, so a lock file of its own), so the eight really
/// run at once and meet on the authority's and the registry's locks. SoftHSM itself is not safe
/// for that (SoftHSMv2 #757: a token read while another process writes it gives
/// CKR_GENERAL_ERROR), so an enrollment may fail here; it must fail cleanly and lose nothing.
#[test]
fn eight_users_enroll_at_once_without_taking_turns() {
    let (bed, users) = eight_users();
    let confs: Vec<_> = (0..USERS)
        .map(|i| {
            let conf = bed.path(&format!("softhsm2-{i}.conf"));
            std::fs::copy(&bed.conf, &conf).expect("copy the SoftHSM configuration");
            conf
        })
        .collect();
    let batch = Instant::now();
    let started: Vec<Started> = users
        .iter()
        .zip(&confs)
        .map(|(u, conf)| bed.spawn_enroll(&u.name, &u.keyset, &u.card, &u.temp_key, Some(conf)))
        .collect();
    let ended = finish_recorded(wait_all(batch, started), |what| {
        let u = users
            .iter()
            .find(|u| u.what() == what)
            .expect("the user of a process");
        bed.spawn_enroll(&u.name, &u.keyset, &u.card, &u.temp_key, None)
    });
    let total = batch.elapsed();
    print_timings("8 users at once (not taking turns)", total, &ended);
    let enrolled = check_outcomes(&bed, &users, &ended);
    eprintln!(
        "{enrolled} of {USERS} enrolled, {} failed cleanly (SoftHSM's own race)",
        USERS - enrolled
    );
    // SoftHSM's race only strikes while processes start (seen: 0 to 3 of 8 under load); at
    // least two must get through, or the locks were not contended.
    assert!(
        enrolled >= 2,
        "only {enrolled} of {USERS} got past SoftHSM's race; the locks were not exercised"
    );
}

/// Two processes enroll one user with the same temporary key at once (two cards, two keyset
/// names), taking turns on SoftHSM and then not: at most one may succeed, and the user ends with
/// one enrollment's certificates, never two.
#[test]
fn one_temporary_key_two_processes_at_once() {
    for turns in [true, false] {
        let bed = AuthorityBed::new(&["dupcard-a", "dupcard-b"], "CN=Twice CA,O=Example");
        let key = bed.add_user("dup", &[]);
        let confs: Vec<Option<std::path::PathBuf>> = ["a", "b"]
            .iter()
            .map(|c| {
                (!turns).then(|| {
                    let conf = bed.path(&format!("softhsm2-{c}.conf"));
                    std::fs::copy(&bed.conf, &conf).expect("copy the SoftHSM configuration");
                    conf
                })
            })
            .collect();
        let batch = Instant::now();
        let started = vec![
            bed.spawn_enroll("dup", "Dup A", "dupcard-a", &key, confs[0].as_deref()),
            bed.spawn_enroll("dup", "Dup B", "dupcard-b", &key, confs[1].as_deref()),
        ];
        let ended = finish_recorded(wait_all(batch, started), |what| {
            let (keyset, card) = if what.ends_with("Dup A") {
                ("Dup A", "dupcard-a")
            } else {
                ("Dup B", "dupcard-b")
            };
            bed.spawn_enroll("dup", keyset, card, &key, None)
        });
        let title = if turns {
            "one user's key twice at once (taking turns)"
        } else {
            "one user's key twice at once (not taking turns)"
        };
        print_timings(title, batch.elapsed(), &ended);

        let won: Vec<&Ended> = ended.iter().filter(|e| clean(e)).collect();
        assert!(won.len() <= 1, "the temporary key was spent twice");
        let entries = audit_entries(&bed);
        let states = bed.keyset_states();
        let Some(winner) = won.first() else {
            // Only SoftHSM's race (not taking turns) can fail both: then nothing was spent.
            assert!(!turns, "one of the two must succeed when they take turns");
            let at = bed.user("dup");
            assert_eq!(at["state"], "pending", "{at:#}");
            assert_eq!(at["temporary_key"]["spent"], false, "{at:#}");
            assert_eq!(processed_ok(&entries, "dup"), 0);
            assert!(states.iter().all(|(_, s)| s != "active"), "{states:?}");
            assert_log_verifies(&bed);
            continue;
        };
        let keyset = winner
            .what
            .strip_prefix("dup/")
            .expect("keyset of the winner");
        assert_enrolled_once(&bed, &entries, "dup", keyset);
        // The loser was refused by the authority (or, not taking turns, may have lost
        // SoftHSM's race) and took its pending keyset back out.
        let lost = ended.iter().find(|e| e.run.code != 0).expect("a loser");
        if turns {
            assert!(
                lost.run.stderr.contains("already enrolled"),
                "the loser should be told the user is enrolled:\n{}",
                lost.run.stderr
            );
        }
        // Not taking turns, SoftHSM's race can also fail the loser's undo: then it must say
        // so and name the command that removes its pending keyset, and that command must work.
        let stuck = lost.run.stderr.contains("could not be removed");
        assert!(!(turns && stuck), "{}", lost.run.stderr);
        if stuck {
            let name = lost.what.strip_prefix("dup/").expect("keyset of the loser");
            assert!(
                lost.run.stderr.contains("keyward keyset remove"),
                "{}",
                lost.run.stderr
            );
            bed.remove_keyset(name);
        }
        let states = bed.keyset_states();
        assert_eq!(
            states,
            vec![(keyset.to_string(), "active".to_string())],
            "only the winner's keyset remains; the loser said:\n{}",
            lost.run.stderr
        );
        assert_log_verifies(&bed);
    }
}

/// A keyward process that must wait for another one using the same SoftHSM configuration (here
/// the test holds its lock, as a running `authority serve` does) says so on stderr at once,
/// then finishes normally when the lock is let go.
#[test]
fn a_process_waiting_for_softhsm_s_lock_says_so_then_finishes() {
    use std::io::{BufRead, BufReader};
    let bed = util::TestBed::new();
    let held = std::fs::File::open(&bed.conf).expect("open the SoftHSM configuration");
    held.lock().expect("lock the SoftHSM configuration");
    let mut child = bed
        .keyward()
        .args(["token", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyward token list");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a line on stderr while the lock is held");
    assert!(
        first.contains("waiting for another keyward process using the SoftHSM2 configuration")
            && first.contains("authority serve"),
        "{first}"
    );
    // Still waiting: nothing done while the lock is held.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "it did not wait"
    );
    drop(held);
    let out = child
        .wait_with_output()
        .expect("wait for keyward token list");
    let rest = reader.join().expect("stderr reader");
    assert!(out.status.success(), "{rest}");
    assert_eq!(rest.lines().count(), 1, "one warning only:\n{rest}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("slot"),
        "token list lists the slots:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
