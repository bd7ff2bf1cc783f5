//! The module matrix: keyward's whole story, driven through the real `keyward` binary, on every
//! PKCS#11 module of `KEYWARD_TEST_MODULES` (default: softhsm, kryoptic, nss, opencryptoki,
//! tpm2), each on a throw-away bed made by `testbeds/<module>.sh`.
//!
//! Each module runs the story once (the first of its tests to start runs it; the others wait),
//! and every (module, step) is its own test: `cargo test --test module_matrix matrix::kryoptic::` runs
//! one module, and each failure is reported alone. A step either works, or is refused up front
//! (one `keyward: error:` line naming what is missing; the keyset registry and the authority's
//! directory unchanged), or is not run because a step it needs did not work. The expected
//! outcome of every step on every module is in [`expected`] below: the one place to update.
//! The observed matrix is written to `target/module-matrix.md` (for the README), and each
//! module's observed outcomes as table entries to `target/module-matrix/<module>.expect.rs`.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use util::modules::{BedTokens, Module, ModuleBed};
use util::Run;

// ---- the steps of the story ------------------------------------------------------------------

/// Declares the steps once: the enum (in story order), [`STEPS`] and [`Step::name`].
macro_rules! steps {
    ($($(#[doc = $doc:literal])* $step:ident => $name:literal,)*) => {
        /// One step of the story, in the order the story runs them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        enum Step {
            $($(#[doc = $doc])* $step,)*
        }

        /// Every step, in story order.
        const STEPS: &[Step] = &[$(Step::$step),*];

        impl Step {
            /// The name in test names and in the matrix.
            fn name(self) -> &'static str {
                match self {
                    $(Step::$step => $name,)*
                }
            }
        }
    };
}

steps! {
    /// `token list`.
    TokenList => "token list",
    /// `token init --free` of every token the story uses (authority, alice, bob, bob's new
    /// card); on a bed with one token made by its own tool, `token init --free` of one more
    /// (there is no free slot: to be refused).
    TokenInit => "token init",
    /// `token info` of alice's token.
    TokenInfo => "token info",
    /// `token change-pin` to a new PIN and back.
    ChangePin => "token change-pin",
    /// `keyset create --key-type rsa2048` (standard security).
    KeysetRsa2048 => "keyset rsa2048",
    /// `keyset create --key-type rsa3072`.
    KeysetRsa3072 => "keyset rsa3072",
    /// `keyset create --key-type p256`.
    KeysetP256 => "keyset p256",
    /// `keyset create --security high` (keys with CKA_ALWAYS_AUTHENTICATE).
    KeysetHigh => "keyset high security",
    /// `keyset sign` + `keyset verify` + OpenSSL verifies, with the RSA-2048 keyset.
    SignRsa2048 => "sign/verify rsa2048",
    /// The same with the RSA-3072 keyset.
    SignRsa3072 => "sign/verify rsa3072",
    /// The same with the P-256 keyset.
    SignP256 => "sign/verify p256",
    /// The same with the high-security keyset (the context-specific login).
    SignHigh => "sign/verify high security",
    /// `keyset csr` of the RSA-2048 keyset; OpenSSL checks its signature.
    Csr => "csr",
    /// `authority init` on this module's token.
    AuthorityInit => "authority init on this module",
    /// `enroll --authority DIR` (request, process and complete in one) with the authority on
    /// this module.
    EnrollLocal => "enroll --authority (local)",
    /// Enrollment by files: `enroll -o REQUEST`, `authority process`, `enroll --complete` (the
    /// authority: see [`file_authority_here`]).
    EnrollFile => "enroll by files (request, process, complete)",
    /// `send` from bob's keyset to himself.
    Send => "send",
    /// `read` of that message.
    Read => "read",
    /// `authority recover bob`.
    Recover => "authority recover",
    /// Bob re-enrolls (by files) under a new keyset name on a new token (on a one-token bed:
    /// the same token); the authority returns his archived encryption key.
    Reenroll => "re-enroll",
    /// The new keyset reads the message sent before the recovery.
    ReadOld => "read old mail",
    /// `authority log --verify` of every authority the story used.
    Audit => "audit log verify",
    /// `token init --token … --force` of bob's old token (keys and registered keysets on it).
    TokenReinit => "token re-init",
}

use Step::*;

impl Step {
    /// The steps this one needs to have worked (besides `token init` on beds with free slots).
    fn needs(self) -> &'static [Step] {
        match self {
            SignRsa2048 | Csr => &[KeysetRsa2048],
            SignRsa3072 => &[KeysetRsa3072],
            SignP256 => &[KeysetP256],
            SignHigh => &[KeysetHigh],
            EnrollLocal => &[AuthorityInit],
            Send | Recover => &[EnrollFile],
            Read => &[Send],
            Reenroll => &[Recover],
            ReadOld => &[Reenroll, Send],
            _ => &[],
        }
    }
}

/// Whether enrollment by files (and recovery, re-enrollment, audit) uses the authority on this
/// module; otherwise it uses an authority on a SoftHSM2 token beside it, so the user's side of
/// key delivery is tested on this module whatever the module can do as an authority (that
/// authority allows import: a token that cannot unwrap receives its keys by import).
fn file_authority_here(module: Module) -> bool {
    matches!(module, Module::Softhsm | Module::Kryoptic)
}

// ---- what each module is expected to do ------------------------------------------------------

/// How bob's encryption key reaches this module's token in enrollment by files (the reply's
/// `delivery`), where it is asserted: the best delivery both sides support.
fn expected_delivery(module: Module) -> Option<&'static str> {
    match module {
        Module::Softhsm | Module::Kryoptic => Some("rfc5649"),
        // The SoftHSM2 file authority offers rfc5649 (and import; SoftHSM2 has no CBC-PAD wrap).
        Module::Nss => Some("rfc5649"),
        // Not asserted since the cryptoki `wrap_key` length fix (vendor/cryptoki, patch 6):
        // observed before it as import; not run again here.
        Module::Opencryptoki => None,
        Module::Tpm2 => None,
    }
}

/// What a step is expected to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Exit 0 (and the checks of the step pass).
    Works,
    /// Refused up front: exit 1, one `keyward: error:` line containing this text, the keyset
    /// registry and the authority's directory unchanged.
    Refused(&'static str),
    /// NOT THE GOAL: the step fails in the middle with an error containing this text. Only with
    /// a comment saying why it is left so (no entry uses it now); asserted exactly so that a
    /// change is noticed.
    FailsToday(&'static str),
    /// A step it needs (see [`Step::needs`]) does not work on this module.
    NotRun,
}

use Expect::*;

/// THE EXPECTATION TABLE: step → outcome, per module. Every module lists every step.
///
/// Every step works or is refused up front (`Refused`: one sentence naming what the token
/// lacks, nothing changed); `FailsToday` marks a step that still fails in the middle, each with
/// the reason it is left so.
fn expected(module: Module) -> &'static [(Step, Expect)] {
    /// On a bed with one token made by its module's own tool there is no free slot.
    const NO_FREE_SLOT: Expect = Refused("no free (uninitialised) token slot");
    /// No C_Login(CKU_CONTEXT_SPECIFIC): probed at `keyset create`, before any key exists.
    const NO_CONTEXT_LOGIN: Expect =
        Refused("cannot hold --security high keys: it does not support the context-specific login");
    /// The authority's archive and deliveries need RFC 5649 AES key wrap on its own token:
    /// probed (mechanism list + known-answer test) before the authority directory is made.
    const NO_RFC5649: Expect = Refused("cannot hold a keyward authority: it has no RFC 5649 AES key wrap (neither CKM_AES_KEY_WRAP_KWP nor a CKM_AES_KEY_WRAP_PAD that passes RFC 5649's test vectors), which the authority's key archive and key deliveries need; put the authority on a token whose `keyward token info` shows one (SoftHSM2 and kryoptic do)");
    match module {
        Module::Softhsm => &[
            (TokenList, Works),
            (TokenInit, Works),
            (TokenInfo, Works),
            (ChangePin, Works),
            (KeysetRsa2048, Works),
            (KeysetRsa3072, Works),
            (KeysetP256, Works),
            (KeysetHigh, Works),
            (SignRsa2048, Works),
            (SignRsa3072, Works),
            (SignP256, Works),
            (SignHigh, Works),
            (Csr, Works),
            (AuthorityInit, Works),
            (EnrollLocal, Works),
            (EnrollFile, Works),
            (Send, Works),
            (Read, Works),
            (Recover, Works),
            (Reenroll, Works),
            (ReadOld, Works),
            (Audit, Works),
            (TokenReinit, Works),
        ],
        Module::Kryoptic => &[
            (TokenList, Works),
            (TokenInit, Works),
            (TokenInfo, Works),
            (ChangePin, Works),
            (KeysetRsa2048, Works),
            (KeysetRsa3072, Works),
            (KeysetP256, Works),
            (KeysetHigh, Works),
            (SignRsa2048, Works),
            (SignRsa3072, Works),
            (SignP256, Works),
            (SignHigh, Works),
            (Csr, Works),
            (AuthorityInit, Works),
            (EnrollLocal, Works),
            (EnrollFile, Works),
            (Send, Works),
            (Read, Works),
            (Recover, Works),
            (Reenroll, Works),
            (ReadOld, Works),
            (Audit, Works),
            (TokenReinit, Works),
        ],
        // NSS softokn 3.87 has CKM_AES_KEY_WRAP_KWP (RFC 5649) and CKM_AES_CBC_PAD wrap and
        // unwrap, once its wrap lengths are read right (vendor/cryptoki, patch 6): it receives
        // bob's key by RFC 5649 from the SoftHSM2 file authority. It cannot hold an authority:
        // its database keeps no CKO_DATA objects (the state head), probed up front.
        Module::Nss => &[
            (TokenList, Works),
            (TokenInit, NO_FREE_SLOT),
            (TokenInfo, Works),
            (ChangePin, Works),
            (KeysetRsa2048, Works),
            (KeysetRsa3072, Works),
            (KeysetP256, Works),
            (KeysetHigh, NO_CONTEXT_LOGIN),
            (SignRsa2048, Works),
            (SignRsa3072, Works),
            (SignP256, Works),
            (SignHigh, NotRun),
            (Csr, Works),
            (
                AuthorityInit,
                Refused("cannot hold a keyward authority: it does not keep private data objects (CKO_DATA"),
            ),
            (EnrollLocal, NotRun),
            (EnrollFile, Works),
            (Send, Works),
            (Read, Works),
            (Recover, Works),
            (Reenroll, Works),
            (ReadOld, Works),
            (Audit, Works),
            (
                TokenReinit,
                Refused("cannot re-initialise token \"NSS Certificate DB\" through PKCS#11"),
            ),
        ],
        // As NSS: no EC, no context-specific login, no AES key wrap; keys delivered by import.
        Module::Opencryptoki => &[
            (TokenList, Works),
            (TokenInit, NO_FREE_SLOT),
            (TokenInfo, Works),
            (ChangePin, Works),
            (KeysetRsa2048, Works),
            (KeysetRsa3072, Works),
            (KeysetP256, Refused("cannot generate EC P-256 key pairs")),
            (KeysetHigh, NO_CONTEXT_LOGIN),
            (SignRsa2048, Works),
            (SignRsa3072, Works),
            (SignP256, NotRun),
            (SignHigh, NotRun),
            (Csr, Works),
            (AuthorityInit, NO_RFC5649),
            (EnrollLocal, NotRun),
            (EnrollFile, Works),
            (Send, Works),
            (Read, Works),
            (Recover, Works),
            (Reenroll, Works),
            (ReadOld, Works),
            (Audit, Works),
            (TokenReinit, Works),
        ],
        Module::Tpm2 => &[
            (TokenList, Works),
            (TokenInit, Works),
            (TokenInfo, Works),
            (ChangePin, Works),
            (KeysetRsa2048, Works),
            (KeysetRsa3072, Works),
            (KeysetP256, Works),
            (KeysetHigh, Works),
            (SignRsa2048, Works),
            (SignRsa3072, Works),
            (SignP256, Works),
            (SignHigh, Works),
            (Csr, Works),
            (AuthorityInit, NO_RFC5649),
            (EnrollLocal, NotRun),
            (
                EnrollFile,
                Refused("cannot receive the encryption key: it has no RFC 5649 AES key wrap"),
            ),
            (Send, NotRun),
            (Read, NotRun),
            (Recover, NotRun),
            (Reenroll, NotRun),
            (ReadOld, NotRun),
            (Audit, Works),
            (
                TokenReinit,
                Refused("cannot re-initialise token \"bob-card\" through PKCS#11"),
            ),
        ],
    }
}

fn expectation(module: Module, step: Step) -> Expect {
    let found: Vec<Expect> = expected(module)
        .iter()
        .filter(|(s, _)| *s == step)
        .map(|(_, e)| *e)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "the expectation table of {} lists {:?} {} times (want once)",
        module.name(),
        step,
        found.len()
    );
    found[0]
}

// ---- what happened ---------------------------------------------------------------------------

/// What a step did.
#[derive(Clone, Debug)]
enum Outcome {
    Works,
    /// A command of the step failed.
    Failed {
        /// The command, without secrets (they are never in argv).
        command: String,
        code: i32,
        stdout: String,
        stderr: String,
        /// The failing command changed the keyset registry or an authority's directory.
        changed: bool,
    },
    /// A step it needs did not work.
    NotRun(Step),
}

impl Outcome {
    /// The `keyward: error:` lines of a failure.
    fn error_lines(&self) -> Vec<&str> {
        match self {
            Outcome::Failed { stderr, .. } => stderr
                .lines()
                .filter(|l| l.starts_with("keyward: error:"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether this is what `expect` says; else why not.
    fn check(&self, expect: Expect) -> Result<(), String> {
        match (expect, self) {
            (Works, Outcome::Works) | (NotRun, Outcome::NotRun(_)) => Ok(()),
            (Refused(text), Outcome::Failed { code, changed, .. }) => {
                let lines = self.error_lines();
                if *code != 1 {
                    Err(format!("a refusal exits 1, this exited {code}"))
                } else if lines.len() != 1 {
                    Err(format!(
                        "a refusal is one error line, this has {}",
                        lines.len()
                    ))
                } else if !lines[0].contains(text) {
                    Err(format!("the refusal does not say {text:?}"))
                } else if *changed {
                    Err("refused, but after changing the registry or the authority".into())
                } else {
                    Ok(())
                }
            }
            (FailsToday(text), Outcome::Failed { stderr, .. }) if stderr.contains(text) => Ok(()),
            (FailsToday(text), Outcome::Failed { .. }) => {
                Err(format!("it fails, but no longer with {text:?}"))
            }
            _ => Err("a different outcome".into()),
        }
    }

    /// One cell of the matrix.
    fn cell(&self, expect: Expect) -> String {
        match self {
            Outcome::Works => "works".into(),
            Outcome::NotRun(step) => format!("not run (needs {})", step.name()),
            Outcome::Failed { stderr, .. } => {
                let line = self
                    .error_lines()
                    .first()
                    .map(|l| l.trim_start_matches("keyward: error:").trim().to_string())
                    .unwrap_or_else(|| stderr.lines().last().unwrap_or("").to_string());
                let kind = match (expect, self.check(expect)) {
                    (Refused(_), Ok(())) => "refused",
                    _ => "fails",
                };
                format!("{kind}: {}", line.replace('|', "\\|"))
            }
        }
    }
}

/// One module's story, run.
struct Story {
    outcomes: BTreeMap<Step, Outcome>,
    seconds: f64,
}

/// Each module's story, run once per test process (the first test of the module runs it).
fn story(module: Module) -> &'static Result<Story, String> {
    static STORIES: [OnceLock<Result<Story, String>>; 5] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let index = Module::ALL
        .iter()
        .position(|m| *m == module)
        .expect("a module of Module::ALL");
    STORIES[index].get_or_init(|| {
        let started = Instant::now();
        // A panic is a broken bed or harness, not a step's outcome: every step test reports it.
        let run = std::panic::catch_unwind(|| run_story(module)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into())
        });
        let story = run.map(|outcomes| Story {
            outcomes,
            seconds: started.elapsed().as_secs_f64(),
        });
        if let Ok(story) = &story {
            write_matrix(module, story);
        }
        story
    })
}

/// The test of one (module, step).
fn check(module: Module, step: Step) {
    if !module.is_selected() {
        eprintln!(
            "{} is not in KEYWARD_TEST_MODULES: not tested in this run",
            module.name()
        );
        return;
    }
    let expect = expectation(module, step);
    let story = match story(module) {
        Ok(story) => story,
        Err(e) => panic!("the {} bed or story broke: {e}", module.name()),
    };
    let outcome = &story.outcomes[&step];
    if let Err(why) = outcome.check(expect) {
        let detail = match outcome {
            Outcome::Failed {
                command,
                code,
                stdout,
                stderr,
                ..
            } => format!("$ {command}\nexit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
            Outcome::NotRun(need) => format!("not run: it needs {}", need.name()),
            Outcome::Works => "it works".into(),
        };
        panic!(
            "{} / {}: expected {expect:?}, got {}: {why}\n{detail}",
            module.name(),
            step.name(),
            outcome.cell(expect)
        );
    }
}

// ---- the story -------------------------------------------------------------------------------

/// Every keyward command gets this long before it counts as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const NEW_PIN: &str = "23456789";
const MESSAGE: &str = "The module matrix: one keyward on every token.\n";

/// The tokens of the story, by role.
#[derive(Clone, Copy)]
enum Role {
    Authority,
    Alice,
    Bob,
    BobNew,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Authority => "authority",
            Role::Alice => "alice-card",
            Role::Bob => "bob-card",
            Role::BobNew => "bob-card-2",
        }
    }
}

/// Why a step stopped: the failing command, what it said, and whether it changed the keyset
/// registry or an authority's directory.
struct Failure {
    command: String,
    run: Run,
    changed: bool,
}

type StepResult = Result<(), Failure>;

/// An authority: the bed whose token holds it, and its directory.
struct Authority<'a> {
    bed: &'a ModuleBed,
    dir: String,
    bundle: String,
}

struct Ctx<'a> {
    bed: &'a ModuleBed,
    /// The SoftHSM2 bed of the file authority when it is not on this module.
    here: Option<Authority<'a>>,
    file: Option<Authority<'a>>,
    files: PathBuf,
}

impl Ctx<'_> {
    /// The URI of a role's token.
    fn token(&self, role: Role) -> String {
        match &self.bed.tokens {
            BedTokens::Free => format!("pkcs11:token={}", role.label()),
            BedTokens::One(label) => format!("pkcs11:token={}", label.replace(' ', "%20")),
        }
    }

    fn file(&self, name: &str) -> String {
        self.files.join(name).to_string_lossy().into_owned()
    }

    /// Runs keyward on `bed`; a non-zero exit is the step's failure.
    fn on(&self, bed: &ModuleBed, args: &[&str], env: &[(&str, &str)]) -> Result<Run, Failure> {
        let before = state_of(self);
        let run = bed.run_env_timeout(args, env, COMMAND_TIMEOUT);
        if run.code == 0 {
            Ok(run)
        } else {
            Err(Failure {
                command: format!("keyward {}", args.join(" ")),
                run,
                changed: state_of(self) != before,
            })
        }
    }

    /// Runs keyward on this module with the user PIN.
    fn kw(&self, args: &[&str]) -> Result<Run, Failure> {
        self.on(self.bed, args, &[("KEYWARD_PIN", &self.bed.pin)])
    }

    /// A step's own check failing (not a keyward command).
    fn fail(&self, what: &str, run: Run) -> Failure {
        Failure {
            command: what.to_string(),
            run,
            changed: false,
        }
    }

    fn create_keyset(&self, name: &str, extra: &[&str]) -> StepResult {
        let token = self.token(Role::Alice);
        let mut args = vec!["keyset", "create", name, "--token", &token];
        args.extend_from_slice(extra);
        self.kw(&args).map(drop)
    }

    /// Sign, verify with keyward, verify with OpenSSL.
    fn sign_verify(&self, keyset: &str) -> StepResult {
        let data = self.file("report.txt");
        std::fs::write(&data, MESSAGE).expect("write data");
        let sig = self.file(&format!("{keyset}.sig"));
        self.kw(&["keyset", "sign", keyset, &data, "-o", &sig])?;
        self.kw(&["keyset", "verify", keyset, &data, &sig])?;
        let pubkey = self.kw(&["keyset", "pubkey", keyset])?;
        let pem = self.file(&format!("{keyset}.pub.pem"));
        std::fs::write(&pem, pubkey.stdout).expect("write public key");
        let openssl = openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            &pem,
            "-signature",
            &sig,
            &data,
        ]);
        if openssl.code != 0 {
            return Err(self.fail("openssl dgst -verify (of keyward's signature)", openssl));
        }
        Ok(())
    }

    fn authority(&self, local: bool) -> &Authority<'_> {
        let which = if local { &self.here } else { &self.file };
        which
            .as_ref()
            .expect("an authority (checked by Step::needs)")
    }

    /// `authority SUB --dir DIR ARGS…` with the authority token's PIN.
    fn on_authority(&self, local: bool, sub: &str, args: &[&str]) -> Result<Run, Failure> {
        let a = self.authority(local);
        let mut all = vec!["authority", sub, "--dir", &a.dir];
        all.extend_from_slice(args);
        self.on(a.bed, &all, &[("KEYWARD_PIN", &a.bed.pin)])
    }

    /// Enrollment by files of `user`'s keyset on `role`'s token with the file authority.
    fn enroll_by_files(&self, user: &str, keyset: &str, role: Role, temp_key: &str) -> StepResult {
        let a = self.authority(false);
        let request = self.file(&format!("{keyset}.request"));
        let reply = self.file(&format!("{keyset}.reply"));
        let token = self.token(role);
        self.on(
            self.bed,
            &[
                "enroll",
                "--user",
                user,
                "--keyset",
                keyset,
                "--token",
                &token,
                "--authority-cert",
                &a.bundle,
                "-o",
                &request,
            ],
            &[
                ("KEYWARD_PIN", &self.bed.pin),
                ("KEYWARD_TEMP_KEY", temp_key),
            ],
        )?;
        self.on_authority(false, "process", &[&request, "-o", &reply])?;
        self.kw(&["enroll", "--complete", &reply])?;
        self.check_delivery(&reply)
    }

    /// The reply's delivery is the one expected of this module (see [`expected_delivery`]).
    fn check_delivery(&self, reply: &str) -> StepResult {
        let Some(want) = expected_delivery(self.bed.module) else {
            return Ok(());
        };
        let text = std::fs::read_to_string(reply).unwrap_or_default();
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix("delivery = "))
            .map(|v| v.trim().trim_matches('"'))
            .unwrap_or("rfc5649");
        if got == want {
            return Ok(());
        }
        Err(self.fail(
            "check the reply's delivery",
            Run {
                code: 1,
                stdout: String::new(),
                stderr: format!("the reply delivers by {got}, expected {want}\n"),
            },
        ))
    }

    /// `read --keyset KEYSET` of the message; the content must come back.
    fn read(&self, keyset: &str) -> StepResult {
        let out = self.file(&format!("{keyset}.read.txt"));
        self.kw(&[
            "read",
            "--keyset",
            keyset,
            &self.file("letter.p7m"),
            "-o",
            &out,
        ])?;
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        if got != MESSAGE {
            return Err(self.fail(
                "compare the read message with what was sent",
                Run {
                    code: 1,
                    stdout: got,
                    stderr: "the content read differs from the content sent\n".into(),
                },
            ));
        }
        Ok(())
    }
}

fn openssl(args: &[&str]) -> Run {
    util::require_tool("openssl", "openssl");
    util::modules::run_with_timeout(
        {
            let mut cmd = std::process::Command::new("openssl");
            cmd.args(args);
            cmd
        },
        COMMAND_TIMEOUT,
    )
}

/// A fingerprint of what a refused step must leave alone: the keyset registry and every file of
/// the authorities' directories.
fn state_of(ctx: &Ctx<'_>) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let registry = ctx.bed.home.join("keysets.toml");
    out.push((
        registry.clone(),
        std::fs::read(&registry).unwrap_or_default(),
    ));
    for a in ctx.here.iter().chain(ctx.file.iter()) {
        let dir = Path::new(&a.dir);
        for name in util::files_under(dir) {
            let p = dir.join(&name);
            let bytes = std::fs::read(&p).unwrap_or_default();
            out.push((p, bytes));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Makes an authority on `role`'s token of `bed` in `dir`: `authority init` and `authority cert`.
/// `allow_import`: `authority init --allow-import` (the SoftHSM2 authority beside a module
/// whose tokens cannot unwrap: their users' keys are then delivered by import where the token
/// takes one).
fn make_authority<'a>(
    bed: &'a ModuleBed,
    token: &str,
    dir: &Path,
    allow_import: bool,
) -> Result<Authority<'a>, Failure> {
    let dir = dir.to_string_lossy().into_owned();
    let mut args = vec![
        "authority",
        "init",
        "--dir",
        &dir,
        "--token",
        token,
        "--name",
        "CN=Matrix Authority",
    ];
    if allow_import {
        args.push("--allow-import");
    }
    let run = bed.run_env_timeout(&args, &[("KEYWARD_PIN", &bed.pin)], COMMAND_TIMEOUT);
    if run.code != 0 {
        return Err(Failure {
            command: format!("keyward {}", args.join(" ")),
            run,
            // A refused `authority init` leaves no directory behind.
            changed: Path::new(&dir).exists(),
        });
    }
    let cert = bed.run_env_timeout(&["authority", "cert", "--dir", &dir], &[], COMMAND_TIMEOUT);
    if cert.code != 0 {
        return Err(Failure {
            command: format!("keyward authority cert --dir {dir}"),
            run: cert,
            changed: false,
        });
    }
    let bundle = Path::new(&dir)
        .parent()
        .expect("authority dir parent")
        .join(format!(
            "{}-authority-cert.pem",
            Path::new(&dir)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
    std::fs::write(&bundle, cert.stdout).expect("write authority cert");
    Ok(Authority {
        bed,
        dir,
        bundle: bundle.to_string_lossy().into_owned(),
    })
}

/// Runs the story on a fresh bed of `module`; returns every step's outcome.
fn run_story(module: Module) -> BTreeMap<Step, Outcome> {
    let bed = ModuleBed::up(module);
    // The file authority on SoftHSM2 when it is not on this module: harness, not a step.
    let softhsm = (!file_authority_here(module)).then(|| {
        let s = ModuleBed::up(Module::Softhsm);
        let run = s.run_env_timeout(
            &["token", "init", "--free", "--label", "authority"],
            &[("KEYWARD_SO_PIN", &s.so_pin), ("KEYWARD_NEW_PIN", &s.pin)],
            COMMAND_TIMEOUT,
        );
        assert_eq!(run.code, 0, "SoftHSM2 authority token: {}", run.stderr);
        s
    });
    let files = bed.path("story");
    std::fs::create_dir_all(&files).expect("story dir");
    let mut ctx = Ctx {
        bed: &bed,
        here: None,
        file: None,
        files,
    };
    if let Some(s) = &softhsm {
        let a = make_authority(
            s,
            "pkcs11:token=authority",
            &s.path("softhsm-authority"),
            true,
        )
        .unwrap_or_else(|f| panic!("SoftHSM2 authority: {}: {}", f.command, f.run.stderr));
        ctx.file = Some(a);
    }

    let mut outcomes: BTreeMap<Step, Outcome> = BTreeMap::new();
    for &step in STEPS {
        let mut needs: Vec<Step> = step.needs().to_vec();
        if bed.tokens == BedTokens::Free && !matches!(step, TokenList | TokenInit) {
            needs.push(TokenInit);
        }
        if matches!(step, EnrollFile | Recover | Reenroll | ReadOld | Audit)
            && file_authority_here(module)
        {
            needs.push(AuthorityInit);
        }
        if let Some(blocked) = needs
            .iter()
            .find(|n| !matches!(outcomes.get(n), Some(Outcome::Works)))
        {
            outcomes.insert(step, Outcome::NotRun(*blocked));
            continue;
        }
        let outcome = match run_step(&mut ctx, step) {
            Ok(()) => Outcome::Works,
            Err(f) => Outcome::Failed {
                command: f.command,
                code: f.run.code,
                stdout: f.run.stdout,
                stderr: f.run.stderr,
                changed: f.changed,
            },
        };
        outcomes.insert(step, outcome);
    }
    drop(ctx);
    drop(softhsm);
    drop(bed);
    outcomes
}

/// One step.
fn run_step(ctx: &mut Ctx<'_>, step: Step) -> StepResult {
    let bed = ctx.bed;
    match step {
        TokenList => {
            let run = ctx.kw(&["--json", "token", "list"])?;
            if serde_json::from_str::<serde_json::Value>(&run.stdout).is_err() {
                return Err(ctx.fail("token list --json: not JSON", run));
            }
            Ok(())
        }
        TokenInit => {
            let so = [
                ("KEYWARD_SO_PIN", bed.so_pin.as_str()),
                ("KEYWARD_NEW_PIN", bed.pin.as_str()),
            ];
            match &bed.tokens {
                BedTokens::Free => {
                    for role in [Role::Authority, Role::Alice, Role::Bob, Role::BobNew] {
                        ctx.on(
                            bed,
                            &["token", "init", "--free", "--label", role.label()],
                            &so,
                        )?;
                    }
                }
                BedTokens::One(_) => {
                    // The bed's own tool made the one token there is. Re-initialising it here
                    // would wipe what the bed set up for the rest of the story (that is
                    // TokenReinit, the last step): ask for a free slot, which there is not.
                    ctx.on(bed, &["token", "init", "--free", "--label", "spare"], &so)?;
                }
            }
            Ok(())
        }
        TokenInfo => ctx
            .kw(&["token", "info", "--token", &ctx.token(Role::Alice)])
            .map(drop),
        ChangePin => {
            let token = ctx.token(Role::Alice);
            let args = ["token", "change-pin", "--token", &token];
            ctx.on(
                bed,
                &args,
                &[("KEYWARD_PIN", &bed.pin), ("KEYWARD_NEW_PIN", NEW_PIN)],
            )?;
            ctx.on(
                bed,
                &args,
                &[("KEYWARD_PIN", NEW_PIN), ("KEYWARD_NEW_PIN", &bed.pin)],
            )
            .map(drop)
        }
        KeysetRsa2048 => ctx.create_keyset("ks-rsa2048", &["--key-type", "rsa2048"]),
        KeysetRsa3072 => ctx.create_keyset("ks-rsa3072", &["--key-type", "rsa3072"]),
        KeysetP256 => ctx.create_keyset("ks-p256", &["--key-type", "p256"]),
        KeysetHigh => ctx.create_keyset("ks-high", &["--security", "high"]),
        SignRsa2048 => ctx.sign_verify("ks-rsa2048"),
        SignRsa3072 => ctx.sign_verify("ks-rsa3072"),
        SignP256 => ctx.sign_verify("ks-p256"),
        SignHigh => ctx.sign_verify("ks-high"),
        Csr => {
            let out = ctx.file("ks-rsa2048.csr.pem");
            ctx.kw(&[
                "keyset",
                "csr",
                "ks-rsa2048",
                "--subject",
                "CN=Matrix Test,O=keyward",
                "-o",
                &out,
            ])?;
            let check = openssl(&["req", "-in", &out, "-noout", "-verify"]);
            if check.code != 0 {
                return Err(ctx.fail("openssl req -verify (of keyward's CSR)", check));
            }
            Ok(())
        }
        AuthorityInit => {
            let token = ctx.token(Role::Authority);
            let a = make_authority(bed, &token, &bed.path("authority"), false)?;
            if file_authority_here(bed.module) {
                let again = Authority {
                    bed: a.bed,
                    dir: a.dir.clone(),
                    bundle: a.bundle.clone(),
                };
                ctx.file = Some(again);
            }
            ctx.here = Some(a);
            Ok(())
        }
        EnrollLocal => {
            let temp = ctx.on_authority(true, "add-user", &["alice"])?;
            let temp = temp.stdout.trim().to_string();
            let dir = ctx.authority(true).dir.clone();
            ctx.on(
                bed,
                &[
                    "enroll",
                    "--user",
                    "alice",
                    "--keyset",
                    "alice-1",
                    "--token",
                    &ctx.token(Role::Alice),
                    "--authority",
                    &dir,
                ],
                &[
                    ("KEYWARD_PIN", &bed.pin),
                    ("KEYWARD_AUTHORITY_PIN", &bed.pin),
                    ("KEYWARD_TEMP_KEY", &temp),
                ],
            )
            .map(drop)
        }
        EnrollFile => {
            let temp = ctx.on_authority(false, "add-user", &["bob"])?;
            let temp = temp.stdout.trim().to_string();
            ctx.enroll_by_files("bob", "bob-1", Role::Bob, &temp)
        }
        Send => {
            let data = ctx.file("letter.txt");
            std::fs::write(&data, MESSAGE).expect("write letter");
            let out = ctx.file("letter.p7m");
            ctx.kw(&[
                "send", "--keyset", "bob-1", "--to", "bob-1", &data, "-o", &out,
            ])
            .map(drop)
        }
        Read => ctx.read("bob-1"),
        Recover => {
            let run = ctx.on_authority(false, "recover", &["bob"])?;
            std::fs::write(ctx.file("bob-recover.tempkey"), run.stdout.trim())
                .expect("write temp key");
            Ok(())
        }
        Reenroll => {
            let temp = std::fs::read_to_string(ctx.file("bob-recover.tempkey"))
                .expect("the temporary key of Recover");
            ctx.enroll_by_files("bob", "bob-2", Role::BobNew, &temp)
        }
        ReadOld => ctx.read("bob-2"),
        Audit => {
            for local in [true, false] {
                let which = if local { &ctx.here } else { &ctx.file };
                if which.is_some() {
                    ctx.on_authority(local, "log", &["--verify"])?;
                }
            }
            Ok(())
        }
        TokenReinit => {
            let uri = ctx.token(Role::Bob);
            let label = match &bed.tokens {
                BedTokens::Free => Role::Bob.label().to_string(),
                BedTokens::One(label) => label.clone(),
            };
            ctx.on(
                bed,
                &[
                    "token", "init", "--token", &uri, "--label", &label, "--force",
                ],
                &[
                    ("KEYWARD_SO_PIN", &bed.so_pin),
                    ("KEYWARD_NEW_PIN", &bed.pin),
                ],
            )
            .map(drop)
        }
    }
}

// ---- the observed matrix, for the README -----------------------------------------------------

/// Writes this module's column to `target/module-matrix/<module>.tsv` and rebuilds
/// `target/module-matrix.md` from every column there (testbeds/test-all.sh runs each module in
/// its own process and empties the folder first).
fn write_matrix(module: Module, story: &Story) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let columns = target.join("module-matrix");
    std::fs::create_dir_all(&columns).expect("module-matrix dir");
    let mut tsv = format!("seconds\t{:.0}\n", story.seconds);
    for &step in STEPS {
        let cell = story.outcomes[&step].cell(expectation(module, step));
        tsv.push_str(&format!(
            "{:?}\t{}\n",
            step,
            cell.replace(['\t', '\n'], " ")
        ));
    }
    std::fs::write(columns.join(format!("{}.tsv", module.name())), tsv).expect("write column");
    std::fs::write(
        columns.join(format!("{}.expect.rs", module.name())),
        observed_table(module, story),
    )
    .expect("write observed table");

    let mut cols: Vec<(Module, BTreeMap<String, String>)> = Vec::new();
    for m in Module::ALL {
        if let Ok(text) = std::fs::read_to_string(columns.join(format!("{}.tsv", m.name()))) {
            let map = text
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            cols.push((m, map));
        }
    }
    let mut md = String::from(
        "<!-- written by tests/module_matrix.rs (testbeds/test-all.sh); do not edit -->\n| step |",
    );
    for (m, _) in &cols {
        md.push_str(&format!(" {} |", m.name()));
    }
    md.push_str("\n| --- |");
    md.push_str(&" --- |".repeat(cols.len()));
    md.push('\n');
    for &step in STEPS {
        md.push_str(&format!("| {} |", step.name()));
        for (_, map) in &cols {
            let cell = map
                .get(&format!("{step:?}"))
                .map(String::as_str)
                .unwrap_or("?");
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push_str("| seconds (story) |");
    for (_, map) in &cols {
        md.push_str(&format!(
            " {} |",
            map.get("seconds").map(String::as_str).unwrap_or("?")
        ));
    }
    md.push('\n');
    std::fs::write(target.join("module-matrix.md"), md).expect("write module-matrix.md");
}

/// What this run saw, written as entries of [`expected`] for a person to review and paste:
/// a one-line exit-1 failure that changed nothing and does not report a PKCS#11 call's return
/// code is a candidate `Refused` (whether it came before the token was touched is for a person
/// to judge; trim the text to the part that names what is missing); other failures are
/// `FailsToday`.
fn observed_table(module: Module, story: &Story) -> String {
    let mut out = format!("        Module::{module:?} => &[\n");
    for &step in STEPS {
        let outcome = &story.outcomes[&step];
        let entry = match outcome {
            Outcome::Works => "Works".to_string(),
            Outcome::NotRun(_) => "NotRun".to_string(),
            Outcome::Failed {
                code,
                stderr,
                changed,
                ..
            } => {
                let lines = outcome.error_lines();
                let text = lines
                    .first()
                    .map(|l| l.trim_start_matches("keyward: error:").trim())
                    .unwrap_or_else(|| stderr.lines().last().unwrap_or(""));
                // A line that reports a PKCS#11 call's return code is that call failing, not a
                // refusal before the token was asked — unless it says nothing was changed (a
                // probe's answer given as the reason for a refusal).
                let refusal = *code == 1
                    && lines.len() == 1
                    && !changed
                    && (!(text.contains(" returned CKR") || text.contains(": CKR_"))
                        || text.contains("nothing was changed"));
                let kind = if refusal { "Refused" } else { "FailsToday" };
                format!("{kind}({text:?})")
            }
        };
        out.push_str(&format!("            ({step:?}, {entry}),\n"));
    }
    out.push_str("        ],\n");
    out
}

// ---- one test per (module, step) -------------------------------------------------------------

/// The expectation table lists every step once for every module.
#[test]
fn expectation_table_is_complete() {
    for module in Module::ALL {
        let table = expected(module);
        assert_eq!(
            table.len(),
            STEPS.len(),
            "{} lists {} steps",
            module.name(),
            table.len()
        );
        for &step in STEPS {
            expectation(module, step);
        }
    }
}

/// The rules that tell a refusal from a failure in the middle.
#[test]
fn outcome_rules() {
    let failed = |code: i32, stderr: &str, changed: bool| Outcome::Failed {
        command: "keyward x".into(),
        code,
        stdout: String::new(),
        stderr: stderr.into(),
        changed,
    };
    let one_line = "keyward: error: token \"t\" has no AES key wrap; use another token\n";
    let refused = Refused("no AES key wrap");
    assert!(failed(1, one_line, false).check(refused).is_ok());
    assert!(
        failed(1, one_line, true).check(refused).is_err(),
        "it changed something"
    );
    assert!(failed(2, one_line, false).check(refused).is_err(), "exit 2");
    let two = format!("{one_line}{one_line}");
    assert!(
        failed(1, &two, false).check(refused).is_err(),
        "two error lines"
    );
    let other = "keyward: error: C_WrapKey failed\n";
    assert!(
        failed(1, other, false).check(refused).is_err(),
        "another sentence"
    );
    assert!(failed(1, other, true)
        .check(FailsToday("C_WrapKey"))
        .is_ok());
    assert!(failed(1, other, false)
        .check(FailsToday("C_UnwrapKey"))
        .is_err());
    assert!(failed(1, other, false).check(Works).is_err());
    assert!(Outcome::Works.check(refused).is_err());
    assert!(Outcome::Works.check(FailsToday("C_WrapKey")).is_err());
    assert!(Outcome::NotRun(KeysetRsa2048).check(Works).is_err());
    assert!(Outcome::NotRun(KeysetRsa2048).check(NotRun).is_ok());
    assert!(Outcome::Works.check(NotRun).is_err());
    assert_eq!(
        failed(1, one_line, false).cell(refused),
        "refused: token \"t\" has no AES key wrap; use another token"
    );
    assert!(failed(1, other, false)
        .cell(FailsToday("C_WrapKey"))
        .starts_with("fails: "));
}

macro_rules! module_tests {
    ($($module:ident => $value:expr;)*) => {$(
        mod $module {
            use super::*;
            #[test] fn t01_token_list() { check($value, TokenList) }
            #[test] fn t02_token_init() { check($value, TokenInit) }
            #[test] fn t03_token_info() { check($value, TokenInfo) }
            #[test] fn t04_change_pin() { check($value, ChangePin) }
            #[test] fn t05_keyset_rsa2048() { check($value, KeysetRsa2048) }
            #[test] fn t06_keyset_rsa3072() { check($value, KeysetRsa3072) }
            #[test] fn t07_keyset_p256() { check($value, KeysetP256) }
            #[test] fn t08_keyset_high() { check($value, KeysetHigh) }
            #[test] fn t09_sign_rsa2048() { check($value, SignRsa2048) }
            #[test] fn t10_sign_rsa3072() { check($value, SignRsa3072) }
            #[test] fn t11_sign_p256() { check($value, SignP256) }
            #[test] fn t12_sign_high() { check($value, SignHigh) }
            #[test] fn t13_csr() { check($value, Csr) }
            #[test] fn t14_authority_init() { check($value, AuthorityInit) }
            #[test] fn t15_enroll_local() { check($value, EnrollLocal) }
            #[test] fn t16_enroll_file() { check($value, EnrollFile) }
            #[test] fn t17_send() { check($value, Send) }
            #[test] fn t18_read() { check($value, Read) }
            #[test] fn t19_recover() { check($value, Recover) }
            #[test] fn t20_reenroll() { check($value, Reenroll) }
            #[test] fn t21_read_old() { check($value, ReadOld) }
            #[test] fn t22_audit() { check($value, Audit) }
            #[test] fn t23_token_reinit() { check($value, TokenReinit) }
        }
    )*};
}

/// `matrix::<module>::tNN_<step>`: `cargo test --test module_matrix matrix::kryoptic::` runs
/// one module; `--skip matrix::` leaves the matrix out (testbeds/test-all.sh runs it as its own
/// pass, one module at a time).
mod matrix {
    use super::*;
    module_tests! {
        softhsm => Module::Softhsm;
        kryoptic => Module::Kryoptic;
        nss => Module::Nss;
        opencryptoki => Module::Opencryptoki;
        tpm2 => Module::Tpm2;
    }
}
