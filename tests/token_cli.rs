//! `keyward token …` end to end: the real binary on a throw-away SoftHSM2 token per test.

mod util;

use util::{TestBed, SO_PIN, USER_PIN};

/// The slots of `token list --json`.
fn slots(bed: &TestBed) -> Vec<serde_json::Value> {
    let run = bed.run(&["token", "list", "--json"]).ok();
    run.json()["slots"].as_array().expect("slots array").clone()
}

/// The tokens of `token list --json` that are initialised, as (label, serial).
fn initialised(bed: &TestBed) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = slots(bed)
        .iter()
        .filter_map(|s| s.get("token").filter(|t| !t.is_null()))
        .filter(|t| t["initialized"] == true)
        .map(|t| {
            (
                t["label"].as_str().unwrap().to_string(),
                t["serial"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `token info --json` of one token.
fn info(bed: &TestBed, token: &str) -> serde_json::Value {
    bed.run(&["--json", "token", "info", "--token", token])
        .ok()
        .json()
}

fn change_pin(bed: &TestBed, token: &str, old: &str, new: &str) -> util::Run {
    bed.run_env(
        &["token", "change-pin", "--token", token],
        &[("KEYWARD_PIN", old), ("KEYWARD_NEW_PIN", new)],
    )
}

// ---- token list -------------------------------------------------------------------------

#[test]
fn list_fresh_bed_shows_the_uninitialised_slot() {
    let bed = TestBed::new();
    let run = bed.run(&["token", "list"]).ok();
    assert!(run.stdout.contains("Module: "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&*util::keyward_module().to_string_lossy()),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("uninitialised token"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("label:"),
        "no initialised token yet:\n{}",
        run.stdout
    );
}

#[test]
fn list_json_global_flag_before_and_after_the_subcommand() {
    let bed = TestBed::new();
    let before = bed.run(&["--json", "token", "list"]).ok().json();
    let after = bed.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(before, after);
    let slots = before["slots"].as_array().expect("slots");
    assert_eq!(
        slots.len(),
        1,
        "a fresh SoftHSM has one free slot: {before}"
    );
    let t = &slots[0]["token"];
    assert_eq!(t["initialized"], false);
    assert_eq!(t["label"], "");

    let serial = bed.init_token("listed", USER_PIN);
    let list = bed.run(&["token", "list", "--json"]).ok().json();
    let tokens: Vec<&serde_json::Value> = list["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["token"])
        .filter(|t| t["initialized"] == true)
        .collect();
    assert_eq!(tokens.len(), 1, "{list}");
    let t = tokens[0];
    assert_eq!(t["label"], "listed");
    assert_eq!(t["serial"], serial.as_str());
    assert!(!serial.is_empty());
    for role in ["user_pin", "so_pin"] {
        for flag in ["count_low", "final_try", "locked"] {
            assert_eq!(t[role][flag], false, "{role}.{flag} on a fresh token: {t}");
        }
    }
    assert_eq!(t["user_pin_initialized"], true);
    // SoftHSM offers a new free slot once the first token is initialised.
    assert!(list["slots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["token"]["initialized"] == false));
}

#[test]
fn list_human_shows_initialised_token_details() {
    let bed = TestBed::new();
    let serial = bed.init_token("human", USER_PIN);
    let run = bed.run(&["token", "list"]).ok();
    assert!(run.stdout.contains("label:        human"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("serial:       {serial}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("user PIN:     set"), "{}", run.stdout);
    assert!(run.stdout.contains("uninitialised token"), "{}", run.stdout);
}

// ---- token init -------------------------------------------------------------------------

#[test]
fn init_by_slot_id_from_token_list() {
    let bed = TestBed::new();
    let slot = slots(&bed)
        .iter()
        .find(|s| s["token"]["initialized"] == false)
        .expect("a free slot")["slot_id"]
        .as_u64()
        .expect("slot id");
    let slot = slot.to_string();
    let run = bed
        .run_env(
            &[
                "--json", "token", "init", "--slot", &slot, "--label", "by-slot",
            ],
            &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
        )
        .ok();
    let serial = run.json()["token"]["serial"].as_str().unwrap().to_string();
    assert_eq!(initialised(&bed), vec![("by-slot".to_string(), serial)]);
    change_pin(&bed, "by-slot", USER_PIN, "user-secret-2").ok();
}

#[test]
fn an_uninitialised_token_is_named_by_its_slot_and_init_takes_that_uri() {
    let bed = TestBed::new();
    let free = slots(&bed)
        .into_iter()
        .find(|s| s["token"]["initialized"] == false)
        .expect("a free slot");
    let uri = free["token"]["uri"].as_str().expect("uri").to_string();
    let slot = free["slot_id"].as_u64().expect("slot id");
    // Nothing empty: no `token=` or `serial=` with no value.
    assert!(uri.contains(&format!("slot-id={slot}")), "{uri}");
    assert!(!uri.contains("token=") && !uri.contains("serial="), "{uri}");
    assert!(!uri.contains("=;") && !uri.ends_with('='), "{uri}");
    bed.run_env(
        &["token", "init", "--token", &uri, "--label", "by-uri"],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .ok();
    let names: Vec<String> = initialised(&bed).into_iter().map(|(l, _)| l).collect();
    assert_eq!(names, vec!["by-uri".to_string()]);
}

#[test]
fn init_refuses_a_label_another_token_has() {
    let bed = TestBed::new();
    let serial = bed.init_token("twin", USER_PIN);
    let before = slots(&bed);
    bed.run_env(
        &["token", "init", "--free", "--label", "twin"],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .fails(
        2,
        &format!("(serial {serial}) already has the label \"twin\""),
    );
    assert_eq!(slots(&bed), before, "nothing was initialised");
    // Re-initialising the token itself under its own label is still allowed.
    bed.run_env(
        &[
            "token", "init", "--token", "twin", "--label", "twin", "--force",
        ],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .ok();
}

#[test]
fn init_unknown_slot_is_refused() {
    let bed = TestBed::new();
    bed.run_env(
        &["token", "init", "--slot", "987654", "--label", "x"],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .fails(1, "no slot 987654");
}

#[test]
fn init_initialised_token_needs_force() {
    let bed = TestBed::new();
    let serial = bed.init_token("keep-me", USER_PIN);
    let snap = bed.token_snapshot();
    let env = [
        ("KEYWARD_SO_PIN", SO_PIN),
        ("KEYWARD_NEW_PIN", "user-secret-2"),
    ];
    bed.run_env(
        &["token", "init", "--token", "keep-me", "--label", "wiped"],
        &env,
    )
    .fails(1, "--force");
    // --slot of an initialised token is refused the same way.
    let slot = info(&bed, "keep-me")["slot_id"]
        .as_u64()
        .unwrap()
        .to_string();
    bed.run_env(
        &["token", "init", "--slot", &slot, "--label", "wiped"],
        &env,
    )
    .fails(1, "--force");
    assert_eq!(
        bed.token_snapshot(),
        snap,
        "a refused init changed the token"
    );
    assert_eq!(
        initialised(&bed),
        vec![("keep-me".to_string(), serial.clone())]
    );
    bed.pkcs11_tool_login("keep-me", USER_PIN).ok();

    let run = bed
        .run_env(
            &[
                "--json", "token", "init", "--token", "keep-me", "--label", "wiped", "--force",
            ],
            &env,
        )
        .ok();
    assert_eq!(run.json()["token"]["label"], "wiped");
    assert_eq!(initialised(&bed), vec![("wiped".to_string(), serial)]);
    bed.run(&["token", "info", "--token", "keep-me"])
        .fails(1, "no token matches");
    change_pin(&bed, "wiped", USER_PIN, "user-secret-3").fails(1, "wrong user PIN");
    bed.pkcs11_tool_login("wiped", USER_PIN)
        .refused("CKR_PIN_INCORRECT");
    bed.pkcs11_tool_login("wiped", "user-secret-2").ok();
}

#[test]
fn reinit_checks_the_current_so_pin() {
    let bed = TestBed::new();
    bed.init_token("so-check", USER_PIN);
    bed.run_env(
        &[
            "token", "init", "--token", "so-check", "--label", "other", "--force",
        ],
        &[
            ("KEYWARD_SO_PIN", "not-the-so-pin"),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .fails(1, "wrong SO PIN");
    assert_eq!(initialised(&bed)[0].0, "so-check");
    bed.pkcs11_tool_login("so-check", USER_PIN).ok();
    // Re-initialising asks for the current SO PIN, not a new one.
    bed.run_env(
        &[
            "token", "init", "--token", "so-check", "--label", "other", "--force",
        ],
        &[("KEYWARD_NEW_PIN", "user-secret-2")],
    )
    .fails(1, "no SO PIN given");
}

#[test]
fn init_label_over_32_bytes_is_refused_before_anything_changes() {
    let bed = TestBed::new();
    bed.init_token("first", USER_PIN);
    let snap = bed.token_snapshot();
    let env = [("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)];
    let long = "a".repeat(33);
    bed.run_env(&["token", "init", "--free", "--label", &long], &env)
        .fails(1, "32 bytes");
    // 17 characters but 34 bytes: the limit is in bytes.
    let wide = "é".repeat(17);
    bed.run_env(&["token", "init", "--free", "--label", &wide], &env)
        .fails(1, "34 bytes");
    bed.run_env(
        &[
            "token", "init", "--token", "first", "--label", &long, "--force",
        ],
        &env,
    )
    .fails(1, "32 bytes");
    bed.run_env(&["token", "init", "--free", "--label", ""], &env)
        .fails(1, "label is empty");
    assert_eq!(bed.token_snapshot(), snap);
    assert_eq!(initialised(&bed).len(), 1);
    // Exactly 32 bytes is fine.
    let max = "é".repeat(16);
    bed.run_env(&["token", "init", "--free", "--label", &max], &env)
        .ok();
    assert!(initialised(&bed).iter().any(|(l, _)| *l == max));
}

#[test]
fn init_without_target_is_a_usage_error() {
    let bed = TestBed::new();
    let run = bed.run_env(
        &["token", "init", "--label", "nowhere"],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--slot") && run.stderr.contains("--free"),
        "{}",
        run.stderr
    );
    assert!(initialised(&bed).is_empty());
}

#[test]
fn init_without_secrets_fails_clearly() {
    let bed = TestBed::new();
    bed.run_env_timeout(
        &["token", "init", "--free", "--label", "x"],
        &[("KEYWARD_NEW_PIN", USER_PIN)],
        30,
    )
    .fails(1, "no new SO PIN given")
    .fails(1, "KEYWARD_SO_PIN");
    bed.run_env_timeout(
        &["token", "init", "--free", "--label", "x"],
        &[("KEYWARD_SO_PIN", SO_PIN)],
        30,
    )
    .fails(1, "no new PIN given")
    .fails(1, "--new-pin-file");
    assert!(initialised(&bed).is_empty());
}

#[test]
fn init_short_user_pin_is_refused_before_the_token_sees_it() {
    let bed = TestBed::new();
    let snap = bed.token_snapshot();
    bed.run_env(
        &["token", "init", "--free", "--label", "short"],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", "123")],
    )
    .fails(1, "4 to 255 characters");
    assert_eq!(bed.token_snapshot(), snap);
    assert!(initialised(&bed).is_empty());
}

// ---- token info -------------------------------------------------------------------------

#[test]
fn info_by_label_and_by_uri_with_serial() {
    let bed = TestBed::new();
    let serial = bed.init_token("alpha", USER_PIN);
    bed.init_token("beta", USER_PIN);

    let run = bed.run(&["token", "info", "--token", "alpha"]).ok();
    assert!(run.stdout.contains("label:        alpha"), "{}", run.stdout);
    assert!(run.stdout.contains(&serial), "{}", run.stdout);

    let by_label = info(&bed, "alpha");
    assert_eq!(by_label["serial"], serial.as_str());
    let uri = by_label["uri"].as_str().unwrap().to_string();
    assert!(
        uri.starts_with("pkcs11:") && uri.contains(&format!("serial={serial}")),
        "{uri}"
    );
    assert_eq!(info(&bed, &uri), by_label);
    let short = format!("pkcs11:serial={serial}");
    assert_eq!(info(&bed, &short)["label"], "alpha");
    // --json after the subcommand too.
    let after = bed
        .run(&["token", "info", "--token", "alpha", "--json"])
        .ok()
        .json();
    assert_eq!(after, by_label);
}

#[test]
fn info_unknown_label_lists_the_tokens_present() {
    let bed = TestBed::new();
    let a = bed.init_token("alpha", USER_PIN);
    let b = bed.init_token("beta", USER_PIN);
    let run = bed
        .run(&["token", "info", "--token", "gamma"])
        .fails(1, "no token matches");
    for needle in ["gamma", "\"alpha\"", "\"beta\"", &a, &b] {
        assert!(
            run.stderr.contains(needle),
            "lacks {needle}: {}",
            run.stderr
        );
    }
    bed.run(&[
        "token",
        "info",
        "--token",
        "pkcs11:token=alpha;serial=0000000000000000",
    ])
    .fails(1, "no token matches");
}

#[test]
fn info_duplicate_labels_are_ambiguous_and_the_serial_picks_one() {
    let bed = TestBed::new();
    let s1 = bed.init_token("twin", USER_PIN);
    // keyward refuses to make a second "twin"; another tool does not.
    bed.run_tool(
        "softhsm2-util",
        "softhsm2",
        &[
            "--init-token",
            "--free",
            "--label",
            "twin",
            "--so-pin",
            SO_PIN,
            "--pin",
            "user-secret-2",
        ],
    )
    .ok();
    let serials: Vec<String> = initialised(&bed)
        .into_iter()
        .filter(|(label, _)| label == "twin")
        .map(|(_, serial)| serial)
        .collect();
    assert_eq!(serials.len(), 2, "{serials:?}");
    let s2 = serials
        .into_iter()
        .find(|s| *s != s1)
        .expect("the second twin");
    let run = bed
        .run(&["token", "info", "--token", "twin"])
        .fails(1, "ambiguous");
    for s in [&s1, &s2] {
        assert!(
            run.stderr.contains(&format!("serial={s}")),
            "no URI with {s}: {}",
            run.stderr
        );
    }
    for (serial, pin) in [(&s1, USER_PIN), (&s2, "user-secret-2")] {
        let uri = format!("pkcs11:token=twin;serial={serial}");
        assert_eq!(info(&bed, &uri)["serial"], serial.as_str());
        // The picked token is the one acted on: its own PIN changes.
        change_pin(&bed, &uri, pin, "user-secret-9").ok();
    }
    change_pin(&bed, "twin", "user-secret-9", "user-secret-8").fails(1, "ambiguous");
}

#[test]
fn info_malformed_uri_is_refused_clearly() {
    let bed = TestBed::new();
    bed.init_token("a", USER_PIN);
    let run = bed
        .run(&["token", "info", "--token", "pkcs11:bogus=1"])
        .fails(1, "bogus");
    assert!(
        run.stderr.contains("unknown PKCS#11 URI attribute"),
        "{}",
        run.stderr
    );
    let run = bed
        .run(&["token", "info", "--token", "pkcs11:token=a?pin-value=x"])
        .fails(1, "pin-value");
    assert!(run.stderr.contains("--pin-file"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

// ---- token change-pin -------------------------------------------------------------------

#[test]
fn change_pin_new_pin_works_and_old_one_does_not() {
    let bed = TestBed::new();
    bed.init_token("cp", USER_PIN);
    let run = change_pin(&bed, "cp", USER_PIN, "user-secret-2").ok();
    assert!(
        run.stdout.contains("changed the user PIN"),
        "{}",
        run.stdout
    );
    bed.pkcs11_tool_login("cp", "user-secret-2").ok();
    bed.pkcs11_tool_login("cp", USER_PIN)
        .refused("CKR_PIN_INCORRECT");
    // A second change with the new PIN, JSON this time.
    let run = bed
        .run_env(
            &["--json", "token", "change-pin", "--token", "cp"],
            &[
                ("KEYWARD_PIN", "user-secret-2"),
                ("KEYWARD_NEW_PIN", "user-secret-3"),
            ],
        )
        .ok();
    assert_eq!(run.json()["token"]["label"], "cp");
    bed.pkcs11_tool_login("cp", "user-secret-3").ok();
}

#[test]
fn change_pin_wrong_old_pin_changes_nothing() {
    let bed = TestBed::new();
    bed.init_token("cp", USER_PIN);
    change_pin(&bed, "cp", "not-the-pin", "user-secret-2").fails(1, "wrong user PIN");
    bed.pkcs11_tool_login("cp", "user-secret-2")
        .refused("CKR_PIN_INCORRECT");
    bed.pkcs11_tool_login("cp", USER_PIN).ok();
}

#[test]
fn change_pin_out_of_range_is_refused_before_the_token_sees_it() {
    let bed = TestBed::new();
    bed.init_token("cp", USER_PIN);
    let snap = bed.token_snapshot();
    let run = change_pin(&bed, "cp", USER_PIN, "123").fails(1, "4 to 255 characters");
    assert!(
        run.stderr.contains("nothing was sent to the token"),
        "{}",
        run.stderr
    );
    let long = "x".repeat(256);
    change_pin(&bed, "cp", USER_PIN, &long).fails(1, "4 to 255 characters");
    // A too-short *old* PIN costs no try either.
    change_pin(&bed, "cp", "12", "user-secret-2").fails(1, "4 to 255 characters");
    assert_eq!(
        bed.token_snapshot(),
        snap,
        "a refused PIN reached the token"
    );
    assert_eq!(info(&bed, "cp")["user_pin"]["count_low"], false);
    bed.pkcs11_tool_login("cp", USER_PIN).ok();
}

#[test]
fn change_pin_reads_pin_files() {
    let bed = TestBed::new();
    bed.init_token("files", USER_PIN);
    let old = bed.secret_file("old.pin", USER_PIN);
    let new = bed.secret_file("new.pin", "user-secret-2");
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    bed.run(&[
        "token",
        "change-pin",
        "--token",
        "files",
        "--pin-file",
        old,
        "--new-pin-file",
        new,
    ])
    .ok();
    bed.pkcs11_tool_login("files", "user-secret-2").ok();
    // A file wins over the environment.
    let newer = bed.secret_file("newer.pin", "user-secret-3");
    bed.run_env(
        &[
            "--pin-file",
            new,
            "--new-pin-file",
            newer.to_str().unwrap(),
            "token",
            "change-pin",
            "--token",
            "files",
        ],
        &[
            ("KEYWARD_PIN", "wrong-env-pin"),
            ("KEYWARD_NEW_PIN", "ignored-env-pin"),
        ],
    )
    .ok();
    bed.pkcs11_tool_login("files", "user-secret-3").ok();
    let missing = bed.path("missing.pin");
    bed.run_env(
        &[
            "token",
            "change-pin",
            "--token",
            "files",
            "--pin-file",
            missing.to_str().unwrap(),
        ],
        &[("KEYWARD_NEW_PIN", "user-secret-4")],
    )
    .fails(1, "cannot read PIN from");
}

#[test]
fn change_pin_without_a_pin_source_errors_instead_of_hanging() {
    let bed = TestBed::new();
    bed.init_token("nopin", USER_PIN);
    let run = bed
        .run_env_timeout(
            &["token", "change-pin", "--token", "nopin"],
            &[("KEYWARD_NEW_PIN", "user-secret-2")],
            30,
        )
        .fails(1, "no PIN given");
    assert!(
        run.stderr.contains("--pin-file") && run.stderr.contains("KEYWARD_PIN"),
        "{}",
        run.stderr
    );
    let run = bed
        .run_env_timeout(
            &["token", "change-pin", "--token", "nopin"],
            &[("KEYWARD_PIN", USER_PIN)],
            30,
        )
        .fails(1, "no new PIN given");
    assert!(
        run.stderr.contains("--new-pin-file") && run.stderr.contains("KEYWARD_NEW_PIN"),
        "{}",
        run.stderr
    );
    bed.pkcs11_tool_login("nopin", USER_PIN).ok();
}

// ---- token unblock ----------------------------------------------------------------------

#[test]
fn unblock_with_so_pin_sets_a_new_user_pin() {
    let bed = TestBed::new();
    bed.init_token("ub", USER_PIN);
    let so = bed.secret_file("so.pin", SO_PIN);
    let run = bed
        .run_env(
            &[
                "token",
                "unblock",
                "--token",
                "ub",
                "--so-pin-file",
                so.to_str().unwrap(),
            ],
            &[("KEYWARD_NEW_PIN", "user-secret-2")],
        )
        .ok();
    assert!(run.stdout.contains("set a new user PIN"), "{}", run.stdout);
    bed.pkcs11_tool_login("ub", "user-secret-2").ok();
    bed.pkcs11_tool_login("ub", USER_PIN)
        .refused("CKR_PIN_INCORRECT");
}

#[test]
fn unblock_wrong_so_pin_changes_nothing() {
    let bed = TestBed::new();
    bed.init_token("ub", USER_PIN);
    bed.run_env(
        &["token", "unblock", "--token", "ub"],
        &[
            ("KEYWARD_SO_PIN", "not-the-so-pin"),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .fails(1, "wrong SO PIN");
    bed.pkcs11_tool_login("ub", USER_PIN).ok();
    bed.pkcs11_tool_login("ub", "user-secret-2")
        .refused("CKR_PIN_INCORRECT");
    bed.run_env_timeout(
        &["token", "unblock", "--token", "ub"],
        &[("KEYWARD_NEW_PIN", "user-secret-2")],
        30,
    )
    .fails(1, "no SO PIN given");
}

// ---- module loading ---------------------------------------------------------------------

#[test]
fn missing_module_flag_fails_to_load() {
    let bed = TestBed::new();
    bed.run(&["--module", "/nonexistent.so", "token", "list"])
        .fails(1, "cannot load PKCS#11 module /nonexistent.so");
    // After the subcommand too.
    bed.run(&["token", "list", "--module", "/nonexistent.so"])
        .fails(1, "cannot load PKCS#11 module /nonexistent.so");
    // A file that is not a shared library.
    let junk = bed.secret_file("junk.so", "not a library");
    bed.run(&["--module", junk.to_str().unwrap(), "token", "list"])
        .fails(1, "cannot load PKCS#11 module");
}

#[test]
fn keyward_module_env_is_used() {
    let bed = TestBed::new();
    bed.run_env(&["token", "list"], &[("KEYWARD_MODULE", "/nonexistent.so")])
        .fails(1, "cannot load PKCS#11 module /nonexistent.so");
    // --module wins over the environment.
    let module = util::module();
    bed.run_env(
        &["--module", module.to_str().unwrap(), "token", "list"],
        &[("KEYWARD_MODULE", "/nonexistent.so")],
    )
    .ok();
}

#[test]
fn config_toml_module_is_used() {
    let bed = TestBed::new().native();
    bed.write_config("module = \"/nonexistent-from-config.so\"\n");
    bed.run(&["token", "list"])
        .fails(1, "cannot load PKCS#11 module /nonexistent-from-config.so");
    // The flag and the environment win over config.toml.
    let module = util::module();
    let module = module.to_str().unwrap();
    bed.run(&["--module", module, "token", "list"]).ok();
    bed.run_env(&["token", "list"], &[("KEYWARD_MODULE", module)])
        .ok();
    // --home points at another config.toml.
    let other = bed.path("other-home");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.toml"), "module = \"/other-home.so\"\n").unwrap();
    bed.run(&["--home", other.to_str().unwrap(), "token", "list"])
        .fails(1, "/other-home.so");
}

#[test]
fn config_toml_syntax_error_names_line_and_column() {
    let bed = TestBed::new().native();
    let text = "# keyward\nmodule = = \"/x.so\"\n";
    bed.write_config(text);
    let run = bed.run(&["token", "list"]).fails(1, "config.toml:2:10");
    assert!(
        run.stderr.contains(&*bed.home.to_string_lossy()),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(bed.home.join("config.toml")).unwrap(),
        text
    );
}

#[test]
fn bad_softhsm2_conf_fails_to_initialise_naming_it() {
    let bed = TestBed::new().native();
    let missing = bed.path("no-such-softhsm2.conf");
    let missing = missing.to_str().unwrap();
    let run = bed
        .run_env(&["token", "list"], &[("SOFTHSM2_CONF", missing)])
        .fails(1, "failed to initialise");
    assert!(
        run.stderr.contains(&format!("SOFTHSM2_CONF={missing}")),
        "{}",
        run.stderr
    );
    // A config whose token directory does not exist fails the same way.
    let conf = bed.path("bad-tokendir.conf");
    let gone = bed.path("gone-tokens");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\n",
            gone.display()
        ),
    )
    .unwrap();
    bed.run_env(
        &["token", "list"],
        &[("SOFTHSM2_CONF", conf.to_str().unwrap())],
    )
    .fails(1, "SOFTHSM2_CONF");
}

// ---- errors, verbosity and secrets ------------------------------------------------------

#[test]
fn verbose_shows_the_failing_pkcs11_call() {
    let bed = TestBed::new();
    bed.init_token("v", USER_PIN);
    let env = [
        ("KEYWARD_PIN", "not-the-pin"),
        ("KEYWARD_NEW_PIN", "user-secret-2"),
    ];
    let quiet = bed
        .run_env(&["token", "change-pin", "--token", "v"], &env)
        .fails(1, "wrong user PIN");
    assert!(!quiet.stderr.contains("detail"), "{}", quiet.stderr);
    assert_eq!(
        quiet.stderr.lines().count(),
        1,
        "one line:\n{}",
        quiet.stderr
    );
    bed.run_env(&["-v", "token", "change-pin", "--token", "v"], &env)
        .fails(1, "keyward: detail: C_SetPIN: CKR_PIN_INCORRECT (0xa0)");
    bed.run_env(
        &["token", "unblock", "--token", "v", "-v"],
        &[
            ("KEYWARD_SO_PIN", "not-the-so-pin"),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .fails(1, "keyward: detail: C_Login: CKR_PIN_INCORRECT (0xa0)");
}

#[test]
fn secrets_never_appear_in_output_or_trace_logs() {
    let bed = TestBed::new();
    let so = "So-Leak-Canary-5517";
    let first = "User-Leak-Canary-1934";
    let second = "User-Leak-Canary-2861";
    let third = "User-Leak-Canary-3702";
    let wrong = "Wrong-Leak-Canary-4419";
    let secrets = [so, first, second, third, wrong];
    let trace = ("RUST_LOG", "trace");
    let mut runs = vec![
        bed.run_env(
            &[
                "-vvv", "--json", "token", "init", "--free", "--label", "leak",
            ],
            &[trace, ("KEYWARD_SO_PIN", so), ("KEYWARD_NEW_PIN", first)],
        )
        .ok(),
        bed.run_env(
            &["-vvv", "token", "change-pin", "--token", "leak"],
            &[trace, ("KEYWARD_PIN", first), ("KEYWARD_NEW_PIN", second)],
        )
        .ok(),
        bed.run_env(
            &["-vvv", "token", "change-pin", "--token", "leak"],
            &[trace, ("KEYWARD_PIN", wrong), ("KEYWARD_NEW_PIN", third)],
        )
        .fails(1, "wrong user PIN"),
        bed.run_env(
            &["-vvv", "token", "unblock", "--token", "leak"],
            &[trace, ("KEYWARD_SO_PIN", wrong), ("KEYWARD_NEW_PIN", third)],
        )
        .fails(1, "wrong SO PIN"),
        bed.run_env(
            &["-vvv", "--json", "token", "unblock", "--token", "leak"],
            &[trace, ("KEYWARD_SO_PIN", so), ("KEYWARD_NEW_PIN", third)],
        )
        .ok(),
        bed.run_env(
            &["-vvv", "token", "change-pin", "--token", "leak"],
            &[trace, ("KEYWARD_PIN", third), ("KEYWARD_NEW_PIN", "x")],
        )
        .fails(1, "4 to 255"),
    ];
    let file = bed.secret_file("first.pin", third);
    runs.push(
        bed.run_env(
            &[
                "-vvv",
                "token",
                "change-pin",
                "--token",
                "leak",
                "--pin-file",
                file.to_str().unwrap(),
            ],
            &[trace, ("KEYWARD_NEW_PIN", second)],
        )
        .ok(),
    );
    // The trace logs are really on: they say something, just not the secrets.
    assert!(runs[1].stderr.contains("C_SetPIN"), "{}", runs[1].stderr);
    for run in &runs {
        for secret in secrets {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{secret} leaked:\n{run:?}"
            );
        }
    }
    bed.pkcs11_tool_login("leak", second).ok();
}

#[test]
fn there_is_no_pin_flag() {
    let bed = TestBed::new();
    bed.init_token("argv", USER_PIN);
    for flag in ["--pin", "--new-pin", "--so-pin"] {
        let run = bed.run(&["token", "change-pin", "--token", "argv", flag, "1234"]);
        assert_eq!(run.code, 2, "{flag}: {run:?}");
        assert!(
            run.stderr
                .contains(&format!("unexpected argument '{flag}'")),
            "{}",
            run.stderr
        );
    }
    bed.pkcs11_tool_login("argv", USER_PIN).ok();
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let bed = TestBed::new();
    let run = bed.run(&["frobnicate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("frobnicate"), "{}", run.stderr);
    let run = bed.run(&["token", "frobnicate"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = bed.run(&["token", "info"]);
    assert_eq!(run.code, 2, "missing --token: {run:?}");
    let run = bed.run(&[
        "token",
        "init",
        "--free",
        "--label",
        "x",
        "--slot",
        "notanumber",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = bed.run(&[]);
    assert_eq!(run.code, 2, "no command: {run:?}");

    let run = bed.run(&["--help"]).ok();
    assert!(run.stdout.contains("token"), "{}", run.stdout);
    let run = bed.run(&["token", "--help"]).ok();
    for cmd in ["list", "info", "init", "change-pin", "unblock"] {
        assert!(run.stdout.contains(cmd), "{cmd} missing:\n{}", run.stdout);
    }
    let run = bed.run(&["token", "init", "--help"]).ok();
    assert!(run.stdout.contains("--force"), "{}", run.stdout);
    bed.run(&["--version"]).ok();
}
