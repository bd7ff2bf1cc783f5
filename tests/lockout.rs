//! PIN lockout and device faults, through the PKCS#11 shim (`shim/`) that wraps the real
//! SoftHSM2: SoftHSM never locks a PIN and never fails mid-operation, smart cards do both.
//! Each test runs the real `keyward` binary with `--module <the shim>`.

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;

use util::*;

/// Wrong PINs a shim token takes before it locks.
const TRIES: &str = "3";

/// A test bed with one token on it, used through the shim with PIN counting on.
struct Card {
    bed: TestBed,
    label: &'static str,
    serial: String,
    state: PathBuf,
}

impl Card {
    /// A bed with token `label` initialised through the shim (user PIN [`USER_PIN`]).
    fn new(label: &'static str) -> Card {
        let bed = TestBed::new();
        let state = bed.path("shim-state");
        let card = Card {
            bed,
            label,
            serial: String::new(),
            state,
        };
        let run = card
            .run(
                &["--json", "token", "init", "--free", "--label", label],
                &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
            )
            .ok();
        let serial = run.json()["token"]["serial"]
            .as_str()
            .expect("serial")
            .to_string();
        Card { serial, ..card }
    }

    /// keyward through the shim with PIN counting on, plus `env`.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let state = self.state.to_string_lossy();
        let mut vars = vec![
            ("KEYWARD_SHIM_PIN_TRIES", TRIES),
            ("KEYWARD_SHIM_STATE", &*state),
        ];
        vars.extend_from_slice(env);
        self.bed.run_shim(args, &vars)
    }

    /// Like [`Card::run`], also writing the shim's call counts; returns them with the run.
    fn run_counted(&self, args: &[&str], env: &[(&str, &str)]) -> (Run, ShimCounts) {
        let file = self.bed.path("shim-counts");
        let _ = std::fs::remove_file(&file);
        let file_arg = file.to_string_lossy();
        let mut vars = vec![("KEYWARD_SHIM_COUNT_FILE", &*file_arg)];
        vars.extend_from_slice(env);
        let run = self.run(args, &vars);
        (run, ShimCounts::read(&file))
    }

    /// The wrong PINs the shim has counted for this token.
    fn failures(&self) -> u32 {
        shim_pin_failures(&self.state, &self.serial)
    }

    /// The user-PIN flags `token list --json` shows for this token: (count_low, final_try, locked).
    fn flags(&self) -> (bool, bool, bool) {
        let list = self.run(&["--json", "token", "list"], &[]).ok().json();
        let token = list["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .map(|s| &s["token"])
            .find(|t| t["serial"] == self.serial.as_str())
            .unwrap_or_else(|| panic!("token {} not listed: {list}", self.serial))
            .clone();
        let pin = &token["user_pin"];
        let flag = |f: &str| pin[f].as_bool().expect("PIN flag");
        (flag("count_low"), flag("final_try"), flag("locked"))
    }

    /// `keyset sign NAME in.txt -o in.sig` with `pin` and extra global flags.
    fn sign(&self, name: &str, pin: &str, flags: &[&str]) -> Run {
        let data = self.bed.file("in.txt", b"lockout test data\n");
        let sig = self.bed.path("in.sig");
        let _ = std::fs::remove_file(&sig);
        let mut args = flags.to_vec();
        args.extend(["keyset", "sign", name, &data, "-o"]);
        let sig = sig.to_string_lossy();
        args.push(&sig);
        self.run(&args, &[("KEYWARD_PIN", pin)])
    }

    /// `keyset verify NAME in.txt in.sig` (through the shim).
    fn verify(&self, name: &str) -> Run {
        let data = self.bed.path("in.txt");
        let sig = self.bed.path("in.sig");
        self.run(
            &[
                "keyset",
                "verify",
                name,
                &data.to_string_lossy(),
                &sig.to_string_lossy(),
            ],
            &[],
        )
    }
}

/// Asserts that the error is one line: stderr holds nothing but it and keyward's log lines
/// (`[WARN …]`, e.g. about a roll-back).
#[track_caller]
fn one_line(run: &Run) {
    let other: Vec<&str> = run.stderr.lines().filter(|l| !l.starts_with('[')).collect();
    assert!(
        other.len() == 1 && other[0].starts_with("keyward: error: "),
        "want a one-line error:\n{}",
        run.stderr
    );
}

/// The token's objects as (header, label, ID), read with pkcs11-tool on the real module.
fn objects(bed: &TestBed, label: &str, pin: &str) -> BTreeSet<(String, String, String)> {
    p11_object_set(&bed.token_objects(label, pin))
}

/// `token list --json` minus the module path, to compare the shim's view with SoftHSM's.
fn slots_json(run: Run) -> serde_json::Value {
    run.ok().json()["slots"].clone()
}

#[test]
fn the_shim_forwards_token_and_keyset_commands_faithfully() {
    let bed = TestBed::new();
    let real = util::module();
    let real = real.to_string_lossy();
    let direct = |args: &[&str]| {
        let mut all = vec!["--module", &*real];
        all.extend_from_slice(args);
        bed.run(&all)
    };

    // The same slots and tokens, before and after `token init` through the shim.
    assert_eq!(
        slots_json(bed.run_shim(&["--json", "token", "list"], &[])),
        slots_json(direct(&["--json", "token", "list"]))
    );
    let init = bed
        .run_shim(
            &["--json", "token", "init", "--free", "--label", "fwd"],
            &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
        )
        .ok();
    assert_eq!(init.json()["token"]["label"], "fwd");
    assert_eq!(
        slots_json(bed.run_shim(&["--json", "token", "list"], &[])),
        slots_json(direct(&["--json", "token", "list"]))
    );
    bed.run_shim(&["token", "list"], &[]).ok();
    bed.pkcs11_tool_login("fwd", USER_PIN).ok();

    // Keysets: RSA (multi-part signing) and P-256 with security high (the context-specific
    // login keyward makes through the module's raw function list).
    let pin = [("KEYWARD_PIN", USER_PIN)];
    bed.run_shim(&["keyset", "create", "Rsa", "--token", "fwd"], &pin)
        .ok();
    bed.run_shim(
        &[
            "keyset",
            "create",
            "Ec",
            "--token",
            "fwd",
            "--key-type",
            "p256",
            "--security",
            "high",
        ],
        &pin,
    )
    .ok();
    assert_eq!(bed.token_objects("fwd", USER_PIN).len(), 4);
    let data = bed.file("data.txt", b"forwarded faithfully\n");
    for name in ["Rsa", "Ec"] {
        let sig = bed.path(&format!("{name}.sig"));
        let sig = sig.to_string_lossy();
        let counts = bed.path("counts");
        let counts_arg = counts.to_string_lossy();
        bed.run_shim(
            &["keyset", "sign", name, &data, "-o", &sig],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_SHIM_COUNT_FILE", &counts_arg),
            ],
        )
        .ok();
        // Verified without the shim, and through it.
        direct(&["keyset", "verify", name, &data, &sig]).ok();
        bed.run_shim(&["keyset", "verify", name, &data, &sig], &[])
            .ok();
        let counts = ShimCounts::read(&counts);
        assert_eq!(counts.total, counts.calls.len() as u64, "{counts:?}");
        assert_eq!(
            counts.total,
            counts.per_function.values().sum::<u64>(),
            "{counts:?}"
        );
        assert_eq!(
            counts.calls.first().map(String::as_str),
            Some("C_Initialize")
        );
        assert_eq!(counts.calls.last().map(String::as_str), Some("C_Finalize"));
        assert_eq!(counts.of("C_Initialize"), 1);
        assert!(counts.faults.is_empty(), "{counts:?}");
        // One single-part signature for both key types (the host hashes): one C_SignInit,
        // C_Sign for the length and for the signature (cryptoki asks the length first).
        assert_eq!(counts.of("C_SignInit"), 1, "{name}: {counts:?}");
        assert!((1..=2).contains(&counts.of("C_Sign")), "{name}: {counts:?}");
        assert_eq!(counts.of("C_SignUpdate") + counts.of("C_SignFinal"), 0);
        // Security high: the user login, then one context-specific login for the signature.
        assert_eq!(
            counts.of("C_Login"),
            if name == "Ec" { 2 } else { 1 },
            "{counts:?}"
        );
    }
    // A signature made without the shim verifies through it.
    let sig = bed.path("direct.sig");
    let sig = sig.to_string_lossy();
    bed.run_env(
        &[
            "--module", &real, "keyset", "sign", "Rsa", &data, "-o", &sig,
        ],
        &pin,
    )
    .ok();
    bed.run_shim(&["keyset", "verify", "Rsa", &data, &sig], &[])
        .ok();

    // PIN administration through the shim.
    bed.run_shim(
        &["token", "change-pin", "--token", "fwd"],
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .ok();
    bed.pkcs11_tool_login("fwd", "user-secret-2").ok();
    bed.run_shim(
        &["token", "unblock", "--token", "fwd"],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .ok();
    bed.pkcs11_tool_login("fwd", USER_PIN).ok();
}

#[test]
fn an_enrollment_through_the_shim_with_pin_counting_on_works_and_spends_no_try() {
    let bed = AuthorityBed::new(&["alice-card", "bob-card"], "CN=Shim Authority");
    let shim = shim_module();
    let shim = shim.to_string_lossy();
    let real = util::module();
    let real = real.to_string_lossy();
    let state = bed.path("shim-state");
    let state = state.to_string_lossy();
    let via_shim = [
        ("KEYWARD_MODULE", &*shim),
        ("KEYWARD_SHIM_MODULE", &*real),
        ("KEYWARD_SHIM_PIN_TRIES", TRIES),
        ("KEYWARD_SHIM_STATE", &*state),
    ];

    // Alice in one command (security high); Bob by request, `authority process` and
    // `enroll --complete`, the authority and the completion through the shim.
    let alice_key = bed.add_user("alice", &[]);
    bed.enroll_local(
        "alice",
        "Alice",
        "alice-card",
        &alice_key,
        &["--security", "high"],
        &via_shim,
    )
    .ok();
    let bob_key = bed.add_user("bob", &[]);
    bed.request("bob", "Bob", "bob-card", &bob_key, "bob.req")
        .ok();
    bed.process_env("bob.req", "bob.reply", &via_shim).ok();
    bed.complete_env("bob.reply", USER_PIN, &via_shim).ok();
    for user in ["alice", "bob"] {
        assert_eq!(bed.user(user)["state"], "active");
    }
    assert_eq!(
        bed.keyset_states(),
        vec![
            ("Alice".to_string(), "active".to_string()),
            ("Bob".to_string(), "active".to_string())
        ]
    );
    bed.authority("log", &["--verify"]).ok();
    // The right PIN every time: no try counted on any token.
    assert_eq!(std::fs::read_to_string(&*state).unwrap_or_default(), "");
}

#[test]
fn lockout_story_count_low_final_try_refused_locked_unblocked() {
    let card = Card::new("locky");
    let label = card.label;
    card.run(
        &[
            "keyset",
            "create",
            "Sig",
            "--token",
            label,
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    assert_eq!(card.flags(), (false, false, false));
    card.sign("Sig", USER_PIN, &[]).ok();

    // A wrong PIN, then the right one: a successful login resets the counter.
    card.sign("Sig", "wrong-pin-1", &[])
        .fails(1, "wrong user PIN");
    assert_eq!(card.failures(), 1);
    card.sign("Sig", USER_PIN, &[]).ok();
    assert_eq!(card.failures(), 0);
    assert_eq!(card.flags(), (false, false, false));

    // First wrong PIN: the token reports its count is low.
    let run = card
        .sign("Sig", "wrong-pin-1", &[])
        .fails(1, "wrong user PIN for token \"locky\"");
    assert!(run.stderr.contains("fewer tries left"), "{}", run.stderr);
    assert_eq!(card.failures(), 1);
    assert_eq!(card.flags(), (true, false, false));
    let human = card.run(&["token", "list"], &[]).ok();
    assert!(human.stdout.contains("count low"), "{}", human.stdout);

    // Second wrong PIN: one try left, and the error says what to do.
    let run = card
        .sign("Sig", "wrong-pin-2", &[])
        .fails(1, "1 try left before the user PIN locks");
    assert!(run.stderr.contains("--final-try"), "{}", run.stderr);
    assert_eq!(card.failures(), 2);
    assert_eq!(card.flags(), (true, true, false));

    // The final try: keyward refuses to log in without --final-try, with the right PIN or a
    // wrong one, in every command that logs in, and never calls C_Login or C_SetPIN.
    let data = card.bed.file("in.txt", b"x");
    let sig = card.bed.path("in.sig").to_string_lossy().into_owned();
    for pin in [USER_PIN, "wrong-pin-3"] {
        let (run, counts) = card.run_counted(
            &["keyset", "sign", "Sig", &data, "-o", &sig],
            &[("KEYWARD_PIN", pin)],
        );
        let run = run.fails(1, "keyward will not log in without --final-try");
        assert!(
            run.stderr.contains("keyward token unblock"),
            "{}",
            run.stderr
        );
        one_line(&run);
        assert_eq!(counts.of("C_Login"), 0, "{counts:?}");
    }
    for (args, env) in [
        (
            vec!["token", "change-pin", "--token", label],
            vec![
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_NEW_PIN", "user-secret-9"),
            ],
        ),
        (
            vec!["keyset", "create", "Second", "--token", label],
            vec![("KEYWARD_PIN", USER_PIN)],
        ),
    ] {
        let (run, counts) = card.run_counted(&args, &env);
        run.fails(1, "--final-try");
        assert_eq!(
            counts.of("C_Login") + counts.of("C_SetPIN"),
            0,
            "{counts:?}"
        );
    }
    assert_eq!(card.failures(), 2, "keyward spent a try by itself");
    assert_eq!(card.flags(), (true, true, false));

    // With --final-try and a wrong PIN: locked, and the error says how to unblock.
    let run = card
        .sign("Sig", "wrong-pin-3", &["--final-try"])
        .fails(1, "now locked");
    assert!(
        run.stderr
            .contains("`keyward token unblock --token \"locky\"`"),
        "{}",
        run.stderr
    );
    assert_eq!(card.failures(), 3);
    assert_eq!(card.flags(), (true, false, true));
    let human = card.run(&["token", "list"], &[]).ok();
    assert!(human.stdout.contains("LOCKED"), "{}", human.stdout);

    // Locked: every command that logs in says so, even with the right PIN and --final-try,
    // and names `keyward token unblock`.
    for (args, env) in [
        (
            vec!["keyset", "sign", "Sig", &data, "-o", &sig],
            vec![("KEYWARD_PIN", USER_PIN)],
        ),
        (
            vec!["--final-try", "keyset", "sign", "Sig", &data, "-o", &sig],
            vec![("KEYWARD_PIN", USER_PIN)],
        ),
        (
            vec!["token", "change-pin", "--token", label],
            vec![
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_NEW_PIN", "user-secret-9"),
            ],
        ),
        (
            vec!["keyset", "create", "Second", "--token", label],
            vec![("KEYWARD_PIN", USER_PIN)],
        ),
    ] {
        let run = card.run(&args, &env).fails(1, "is locked");
        assert!(
            run.stderr.contains("keyward token unblock"),
            "{}",
            run.stderr
        );
        one_line(&run);
    }
    // The shim itself refuses a locked PIN without asking SoftHSM (another application).
    let shim = shim_module();
    let real = util::module();
    let pkcs11_tool = card
        .bed
        .tool("pkcs11-tool", "opensc")
        .args(["--module", &shim.to_string_lossy()])
        .args(["--token-label", label, "--login", "--pin", USER_PIN, "-O"])
        .env("KEYWARD_SHIM_MODULE", &real)
        .env("KEYWARD_SHIM_PIN_TRIES", TRIES)
        .env("KEYWARD_SHIM_STATE", &card.state)
        .output()
        .expect("run pkcs11-tool");
    let out = String::from_utf8_lossy(&pkcs11_tool.stdout).into_owned()
        + &String::from_utf8_lossy(&pkcs11_tool.stderr);
    assert!(!pkcs11_tool.status.success(), "{out}");
    assert!(out.contains("CKR_PIN_LOCKED"), "{out}");
    assert_eq!(card.failures(), 3);

    // Unblock with the SO PIN and a new user PIN: unlocked, and the new PIN works.
    card.run(
        &["token", "unblock", "--token", label],
        &[
            ("KEYWARD_SO_PIN", SO_PIN),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .ok();
    assert_eq!(card.failures(), 0);
    assert_eq!(card.flags(), (false, false, false));
    card.sign("Sig", "user-secret-2", &[]).ok();
    card.verify("Sig").ok();
    // The old PIN is wrong now, and counts again from the start.
    card.sign("Sig", USER_PIN, &[]).fails(1, "fewer tries left");
    assert_eq!(card.failures(), 1);
}

#[test]
fn the_final_try_with_the_right_pin_and_final_try_logs_in_and_resets() {
    let card = Card::new("last");
    card.run(
        &[
            "keyset",
            "create",
            "Sig",
            "--token",
            "last",
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    card.sign("Sig", "wrong-pin-1", &[])
        .fails(1, "wrong user PIN");
    // `token change-pin` with a wrong old PIN counts too (C_SetPIN checks the user PIN).
    card.run(
        &["token", "change-pin", "--token", "last"],
        &[
            ("KEYWARD_PIN", "wrong-pin-2"),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .fails(1, "1 try left");
    assert_eq!(card.flags(), (true, true, false));
    card.sign("Sig", USER_PIN, &[]).fails(1, "--final-try");
    card.sign("Sig", USER_PIN, &["--final-try"]).ok();
    card.verify("Sig").ok();
    assert_eq!(card.failures(), 0);
    assert_eq!(card.flags(), (false, false, false));
}

#[test]
fn device_removed_while_signing_is_one_clear_line_and_writes_no_signature() {
    let card = Card::new("gone");
    let pin = [("KEYWARD_PIN", USER_PIN)];
    card.run(
        &[
            "keyset",
            "create",
            "Ec",
            "--token",
            "gone",
            "--key-type",
            "p256",
        ],
        &pin,
    )
    .ok();
    card.run(&["keyset", "create", "Rsa", "--token", "gone"], &pin)
        .ok();
    let data = card.bed.file("in.txt", b"fault test\n");
    let sig = card.bed.path("in.sig");
    let sig_arg = sig.to_string_lossy();
    // Both key types sign with C_SignInit + one C_Sign (the host hashes).
    for (keyset, fault) in [
        ("Ec", "CKR_DEVICE_REMOVED@C_Sign:1"),
        ("Rsa", "CKR_DEVICE_REMOVED@C_Sign:1"),
        ("Rsa", "CKR_DEVICE_REMOVED@C_SignInit:1"),
    ] {
        let (run, counts) = card.run_counted(
            &["keyset", "sign", keyset, &data, "-o", &sig_arg],
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_SHIM_FAULT", fault)],
        );
        let run = run.fails(1, "token \"gone\" is not present (removed?)");
        one_line(&run);
        assert_eq!(counts.faults.len(), 1, "{fault} never hit: {counts:?}");
        assert!(!sig.exists(), "{fault}: a signature file was left behind");
    }
    // The token is fine without the fault; no try was counted.
    card.sign("Ec", USER_PIN, &[]).ok();
    card.verify("Ec").ok();
    assert_eq!(card.failures(), 0);
}

#[test]
fn a_fault_while_creating_a_keyset_leaves_registry_and_token_as_they_were() {
    let card = Card::new("makers");
    let pin = [("KEYWARD_PIN", USER_PIN)];
    card.run(
        &[
            "keyset",
            "create",
            "First",
            "--token",
            "makers",
            "--key-type",
            "p256",
        ],
        &pin,
    )
    .ok();
    let registry = card.bed.registry_text();
    let before = objects(&card.bed, "makers", USER_PIN);
    assert_eq!(before.len(), 2);

    // Where the key pair is generated, and the first read of the new public key after it.
    let create = [
        "keyset",
        "create",
        "Second",
        "--token",
        "makers",
        "--key-type",
        "p256",
    ];
    let faults = [
        "CKR_DEVICE_ERROR@C_GenerateKeyPair:1".to_string(),
        after_generation("C_GetAttributeValue"),
        after_generation("C_FindObjectsInit"),
    ];
    for fault in &faults {
        let run = card
            .run(
                &create,
                &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_SHIM_FAULT", fault)],
            )
            .fails(1, "the device reported an error");
        one_line(&run);
        assert_eq!(
            card.bed.registry_text(),
            registry,
            "{fault}: registry changed"
        );
        assert_eq!(
            objects(&card.bed, "makers", USER_PIN),
            before,
            "{fault}: objects left on the token"
        );
    }
    card.run(&create, &pin).ok();
    assert_eq!(objects(&card.bed, "makers", USER_PIN).len(), 4);
}

/// `CKR_DEVICE_ERROR@F:n` for the first call of `function` after `C_GenerateKeyPair` in a
/// successful `keyset create` (made in a scratch test bed).
fn after_generation(function: &str) -> String {
    let scratch = Card::new("scratch");
    let (run, counts) = scratch.run_counted(
        &[
            "keyset",
            "create",
            "Probe",
            "--token",
            "scratch",
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    );
    run.ok();
    let generated = counts
        .calls
        .iter()
        .position(|c| c == "C_GenerateKeyPair")
        .expect("keyset create generates a key pair");
    let nth = counts.calls[..=generated]
        .iter()
        .filter(|c| *c == function)
        .count()
        + 1;
    assert!(
        counts.calls[generated..].iter().any(|c| c == function),
        "keyset create calls no {function} after C_GenerateKeyPair: {counts:?}"
    );
    format!("CKR_DEVICE_ERROR@{function}:{nth}")
}

#[test]
fn token_not_present_at_login_is_a_clear_error_and_costs_no_try() {
    let card = Card::new("absent");
    card.run(
        &[
            "keyset",
            "create",
            "Sig",
            "--token",
            "absent",
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    for pin in [USER_PIN, "wrong-pin-1"] {
        let data = card.bed.file("in.txt", b"x");
        let sig = card.bed.path("in.sig").to_string_lossy().into_owned();
        let run = card
            .run(
                &["keyset", "sign", "Sig", &data, "-o", &sig],
                &[
                    ("KEYWARD_PIN", pin),
                    ("KEYWARD_SHIM_FAULT", "CKR_TOKEN_NOT_PRESENT@C_Login:1"),
                ],
            )
            .fails(1, "token \"absent\" is not present (removed?)");
        one_line(&run);
    }
    assert_eq!(card.failures(), 0);
    assert_eq!(card.flags(), (false, false, false));
}

#[test]
fn faults_by_overall_call_index_and_other_codes_give_clear_errors() {
    let card = Card::new("indexed");
    // Count `token list`'s calls, then fail the first C_GetTokenInfo by its overall index.
    let (run, counts) = card.run_counted(&["token", "list"], &[]);
    run.ok();
    assert!(counts.total >= 4, "{counts:?}");
    let k = counts
        .calls
        .iter()
        .position(|c| c == "C_GetTokenInfo")
        .expect("token list reads token info")
        + 1;
    let fault = format!("CKR_DEVICE_ERROR@{k}");
    let (run, faulted) = card.run_counted(&["token", "list"], &[("KEYWARD_SHIM_FAULT", &fault)]);
    let run = run.fails(1, "the device reported an error");
    one_line(&run);
    assert_eq!(faulted.faults, vec![k as u64]);
    assert_eq!(faulted.calls[k - 1], "C_GetTokenInfo");

    // At C_Initialize (call 1): the module fails to initialise.
    card.run(
        &["token", "list"],
        &[("KEYWARD_SHIM_FAULT", "CKR_DEVICE_ERROR@1")],
    )
    .fails(1, "failed to initialise");
    // A session closed underneath keyward (numeric code 0xB3).
    card.run(
        &[
            "keyset",
            "create",
            "Sig",
            "--token",
            "indexed",
            "--key-type",
            "p256",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    let data = card.bed.file("in.txt", b"x");
    let sig = card.bed.path("in.sig").to_string_lossy().into_owned();
    let run = card
        .run(
            &["keyset", "sign", "Sig", &data, "-o", &sig],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_SHIM_FAULT", "0xB3@C_SignInit:1"),
            ],
        )
        .fails(1, "lost keyward's session in the middle of the command (was it removed or reset?); insert it and run the command again");
    one_line(&run);
    // A bad fault specification stops the module, naming the variable.
    let run = card.run(&["token", "list"], &[("KEYWARD_SHIM_FAULT", "CKR_NOPE@3")]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("KEYWARD_SHIM_FAULT"), "{}", run.stderr);
}

/// A CA signature the token refuses (here on a CRL): the CA signer keeps the token's error as
/// the source of the certificate/CRL error, so `-v` names the PKCS#11 call and its code; no
/// CRL is written.
#[test]
fn a_refused_ca_signature_names_its_pkcs11_call_with_v() {
    let auth = AuthorityBed::new(&[], "CN=Fault CA");
    let crl = auth.bed.path("refused.crl");
    let crl_arg = crl.to_string_lossy();
    let (run, counts) = {
        let file = auth.bed.path("shim-counts");
        let file_arg = file.to_string_lossy();
        let run = auth.bed.run_shim(
            &["-v", "authority", "crl", "--dir", &auth.dir, "-o", &crl_arg],
            &[
                ("KEYWARD_PIN", AUTHORITY_PIN),
                ("KEYWARD_SHIM_FAULT", "CKR_DEVICE_ERROR@C_Sign:1"),
                ("KEYWARD_SHIM_COUNT_FILE", &*file_arg),
            ],
        );
        (run, ShimCounts::read(&file))
    };
    assert_eq!(counts.faults.len(), 1, "the fault never hit: {counts:?}");
    let run = run.fails(1, "the token could not sign");
    assert!(
        run.stderr
            .contains("keyward: detail: C_Sign: CKR_DEVICE_ERROR (0x30)"),
        "-v does not name the call:\n{}",
        run.stderr
    );
    assert!(!crl.exists(), "a CRL was written after the refusal");
    // With --json the error document names the same call.
    let run = auth.bed.run_shim(
        &[
            "--json",
            "authority",
            "crl",
            "--dir",
            &auth.dir,
            "-o",
            &crl_arg,
        ],
        &[
            ("KEYWARD_PIN", AUTHORITY_PIN),
            ("KEYWARD_SHIM_FAULT", "CKR_DEVICE_ERROR@C_Sign:1"),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(run.stderr.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stderr));
    let call = &doc["error"]["pkcs11"];
    assert_eq!(call["function"], "C_Sign", "{doc}");
    assert_eq!(call["code"], "CKR_DEVICE_ERROR", "{doc}");
    assert!(!crl.exists(), "a CRL was written after the refusal");
    // Without the fault the same command works.
    auth.authority("crl", &["-o", &crl_arg]).ok();
}

/// A local enrollment the authority refuses takes its pending keyset back out; when the token
/// refuses that too (every C_DestroyObject fails), the one error line is the authority's, a
/// second line names the keyset left behind and the command that removes it, and that command
/// works.
#[test]
fn a_refused_enrollment_whose_undo_fails_names_the_keyset_left_and_its_remedy() {
    let bed = AuthorityBed::new(&["first-card", "second-card"], "CN=Undo CA");
    let shim = shim_module();
    let shim = shim.to_string_lossy();
    let real = util::module();
    let real = real.to_string_lossy();
    let key = bed.add_user("carol", &[]);
    bed.enroll_local("carol", "Carol", "first-card", &key, &[], &[])
        .ok();
    let run = bed
        .enroll_local(
            "carol",
            "Carol Again",
            "second-card",
            &key,
            &[],
            &[
                ("KEYWARD_MODULE", &*shim),
                ("KEYWARD_SHIM_MODULE", &*real),
                ("KEYWARD_SHIM_FAULT", "CKR_DEVICE_ERROR@C_DestroyObject:1+"),
            ],
        )
        .fails(1, "already enrolled");
    one_line(&run);
    assert!(
        run.stderr
            .contains("\"Carol Again\" of this failed enrollment could not be removed")
            && run
                .stderr
                .contains("keyward keyset remove \"Carol Again\" --destroy-keys"),
        "{}",
        run.stderr
    );
    assert_eq!(
        bed.keyset_states(),
        vec![
            ("Carol".to_string(), "active".to_string()),
            ("Carol Again".to_string(), "pending".to_string())
        ]
    );
    bed.remove_keyset("Carol Again");
    assert_eq!(
        bed.keyset_states(),
        vec![("Carol".to_string(), "active".to_string())]
    );
    // Its keys went with it: the second card holds no object with a CKA_ID.
    let left = objects(&bed.bed, "second-card", USER_PIN);
    assert!(left.is_empty(), "{left:?}");
    bed.authority("log", &["--verify"]).ok();
}
