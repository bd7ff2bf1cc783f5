//! `keyward authority …` on SoftHSM2 with the real binary: requests that must be refused
//! (tampered, spliced, signed by another key, for another user, malformed), temporary keys
//! (expired, wrong, brute-forced, reused), `authority process` failing midway, operator
//! mistakes, and a tampered audit log. After every refusal the state is as it was: users.toml
//! byte for byte (but for a counted wrong try), no reply, no issued or archived file, and an
//! audit log that only grew.

mod util;

use std::collections::BTreeSet;

use base64ct::{Base64, Encoding};
use util::{p11_object_set, AuthorityBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

/// Asserts the audit log grew from `before` (appended to, never rewritten) by `entries`
/// lines, and returns it.
#[track_caller]
fn log_grew(bed: &AuthorityBed, before: &[u8], entries: usize) -> Vec<u8> {
    let now = bed.state_file("audit.log");
    assert!(now.starts_with(before), "the audit log was rewritten");
    let added = now[before.len()..].iter().filter(|b| **b == b'\n').count();
    assert_eq!(
        added,
        entries,
        "new audit entries:\n{}",
        String::from_utf8_lossy(&now[before.len()..])
    );
    now
}

/// The user records parsed, with `user`'s count of wrong tries set to 0.
fn without_attempts_of(bed: &AuthorityBed, user: &str) -> Vec<serde_json::Value> {
    let text = String::from_utf8(bed.state_file("users.toml")).unwrap();
    let mut users: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a user record parses"))
        .collect();
    for u in users.iter_mut() {
        if u["name"].as_str() == Some(user) {
            u["temp_key"]["attempts"] = serde_json::json!(0);
        }
    }
    users
}

/// The text of a file in the bed's directory.
fn read(bed: &AuthorityBed, name: &str) -> String {
    std::fs::read_to_string(bed.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A request's signed body: every byte before the `[signature]` table.
fn body_of(request: &str) -> &str {
    &request[..request.rfind("\n[signature]\n").expect("a signed request")]
}

/// A multi-line string field of a request, `key = """` up to and including the closing `"""`.
fn multiline_field<'a>(text: &'a str, key: &str) -> &'a str {
    let head = format!("\n{key} = \"\"\"\n");
    let start = text.find(&head).unwrap_or_else(|| panic!("no {key}")) + 1;
    let end = start + head.len() + text[start + head.len()..].find("\"\"\"\n").unwrap() + 3;
    &text[start..end]
}

/// A one-line field of a request, `key = …` up to the end of its line.
fn line_field<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text
        .find(&format!("\n{key} = "))
        .unwrap_or_else(|| panic!("no {key}"))
        + 1;
    let end = start + text[start..].find('\n').unwrap();
    &text[start..end]
}

/// Signs `body` with the (pending) keyset's own key through `keyset sign`, and returns a
/// request file text with that signature: a request the signing key really signed.
fn resigned(bed: &AuthorityBed, keyset: &str, body: &str, name: &str) -> String {
    let body_file = bed.file(&format!("{name}.body"), body.as_bytes());
    let sig_file = bed
        .path(&format!("{name}.sig"))
        .to_string_lossy()
        .into_owned();
    bed.run_env(
        &["keyset", "sign", keyset, &body_file, "-o", &sig_file],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    let sig = std::fs::read(&sig_file).unwrap();
    let text = format!(
        "{body}\n[signature]\nalgorithm = \"sha256WithRSAEncryption\"\nvalue = \"{}\"\n",
        Base64::encode_string(&sig)
    );
    bed.file(name, text.as_bytes());
    name.to_string()
}

#[test]
fn a_tampered_spliced_malformed_or_misaddressed_request_is_refused_and_changes_nothing() {
    let bed = AuthorityBed::new(&["carol-card", "dave-card"], "CN=Request Test CA");
    let carol_key = bed.add_user("carol", &[]);
    let dave_key = bed.add_user("dave", &[]);
    bed.request("carol", "carol 1", "carol-card", &carol_key, "carol.req")
        .ok();
    bed.request("dave", "dave 1", "dave-card", &dave_key, "dave.req")
        .ok();
    let carol = read(&bed, "carol.req");
    let dave = read(&bed, "dave.req");
    // The genuine request, re-signed unchanged, passes the signature check: `resigned` makes
    // requests the authority takes for real ones (this one is processed at the end).
    assert_eq!(
        resigned(&bed, "carol 1", body_of(&carol), "carol-resigned.req"),
        "carol-resigned.req"
    );

    let users = bed.state_file("users.toml");
    let files = bed.state_files();
    let log = bed.state_file("audit.log");

    let flip = |text: &str, at: usize| -> String {
        let mut b = text.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let nonce_at = carol.find("\nnonce = \"").unwrap() + 12;
    let csr_spliced = carol.replacen(
        multiline_field(&carol, "csr"),
        multiline_field(&dave, "csr"),
        1,
    );
    let carol_body = body_of(&carol);
    let cases: Vec<(String, String)> = vec![
        // One byte of the body changed after signing.
        (
            bed.file("byte.req", flip(&carol, nonce_at).as_bytes()),
            "does not verify".into(),
        ),
        // Dave's PKCS#10 in Carol's request: the envelope is signed by another key.
        (
            bed.file("csr.req", csr_spliced.as_bytes()),
            "signed by another key".into(),
        ),
        // Carol's request, genuinely signed by her key, but for Dave.
        (
            resigned(
                &bed,
                "carol 1",
                &carol_body.replacen("\nuser = \"carol\"\n", "\nuser = \"dave\"\n", 1),
                "for-dave.req",
            ),
            "belongs to another request".into(),
        ),
        // Dave's encrypted temporary key in Carol's request, re-signed.
        (
            resigned(
                &bed,
                "carol 1",
                &carol_body.replacen(
                    line_field(&carol, "encrypted_temp_key"),
                    line_field(&dave, "encrypted_temp_key"),
                    1,
                ),
                "key-spliced.req",
            ),
            "belongs to another request".into(),
        ),
        // A user the authority does not know.
        (
            resigned(
                &bed,
                "carol 1",
                &carol_body.replacen("\nuser = \"carol\"\n", "\nuser = \"nobody\"\n", 1),
                "nobody.req",
            ),
            "no user \"nobody\"".into(),
        ),
        (
            bed.file("cut.req", &carol.as_bytes()[..carol.len() / 2]),
            "cut.req: no [signature] table".into(),
        ),
        (
            bed.file(
                "syntax.req",
                carol
                    .replacen("\nversion = 1\n", "\nversion = = 1\n", 1)
                    .as_bytes(),
            ),
            "syntax.req:3:".into(),
        ),
        (
            bed.file(
                "format.req",
                carol
                    .replacen(
                        "\"keyward-enrollment-request\"",
                        "\"keyward-enrollment-invoice\"",
                        1,
                    )
                    .as_bytes(),
            ),
            "format.req: format is \"keyward-enrollment-invoice\"".into(),
        ),
        (
            bed.file(
                "newer.req",
                carol
                    .replacen("\nversion = 1\n", "\nversion = 2\n", 1)
                    .as_bytes(),
            ),
            "newer.req: version 2 is newer".into(),
        ),
        (
            bed.file("garbage.req", b"\x00\x01 not a request at all"),
            "garbage.req".into(),
        ),
    ];
    for (request, needle) in &cases {
        let path = bed.path(request);
        let reply = format!("{request}.reply");
        // A signature that does not verify was checked and found bad (3); the rest are
        // errors (1).
        let code = if ["does not verify", "signed by another key"].contains(&needle.as_str()) {
            3
        } else {
            1
        };
        bed.process(request, &reply).fails(code, needle);
        assert!(path.exists(), "{request}: the request file was removed");
        assert!(!bed.path(&reply).exists(), "{request}: a reply was written");
        assert_eq!(
            bed.state_file("users.toml"),
            users,
            "{request}: users.toml changed"
        );
        let now: BTreeSet<String> = bed.state_files();
        assert_eq!(now, files, "{request}: the authority's files changed");
    }
    // Every refusal is in the audit log, which only grew and still verifies.
    let log = log_grew(&bed, &log, cases.len());
    let entries = bed
        .run(&["--json", "authority", "log", "--dir", &bed.dir])
        .ok()
        .json();
    let refused = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "process" && e["outcome"] == "refused")
        .count();
    assert_eq!(refused, cases.len());
    bed.authority("log", &["--verify"]).ok();
    for user in ["carol", "dave"] {
        let u = bed.user(user);
        assert_eq!(u["state"], "pending", "{u}");
        assert_eq!(u["temporary_key"]["attempts"], 0, "{u}");
        assert_eq!(u["temporary_key"]["spent"], false, "{u}");
    }

    // Nothing was spent: the genuine requests go through.
    bed.process("carol-resigned.req", "carol.reply").ok();
    bed.process("dave.req", "dave.reply").ok();
    let log = log_grew(&bed, &log, 2);
    let users = bed.state_file("users.toml");
    let files = bed.state_files();
    assert_eq!(files.iter().filter(|f| f.starts_with("issued/")).count(), 4);

    // A reply passed as a request; and the same request processed twice, which gives the
    // recorded reply again (a retry after a crash) and records nothing new.
    bed.process("carol.reply", "again.reply")
        .fails(1, "format is \"keyward-enrollment-reply\"");
    bed.process("carol.req", "again.reply").ok();
    assert_eq!(read(&bed, "again.reply"), read(&bed, "carol.reply"));
    assert_eq!(bed.state_file("users.toml"), users);
    assert_eq!(bed.state_files(), files);
    log_grew(&bed, &log, 1);
}

#[test]
fn temporary_keys_expire_lock_after_five_wrong_tries_and_work_only_once() {
    let bed = AuthorityBed::new(&["key-card"], "CN=Temporary Key Test CA");
    let added = std::time::Instant::now();
    let erin_key = bed.add_user("erin", &["--expires", "1s"]);
    let frank_key = bed.add_user("frank", &[]);
    let gina_key = bed.add_user("gina", &[]);
    let decoy_key = bed.add_user("decoy", &[]);

    // Expired: refused, nothing counted or changed; the operator issues a new key.
    bed.request("erin", "erin 1", "key-card", &erin_key, "erin.req")
        .ok();
    if let Some(wait) = std::time::Duration::from_millis(2100).checked_sub(added.elapsed()) {
        std::thread::sleep(wait);
    }
    let users = bed.state_file("users.toml");
    let log = bed.state_file("audit.log");
    bed.process("erin.req", "erin.reply")
        .fails(1, "the temporary key of user \"erin\" expired");
    assert!(!bed.path("erin.reply").exists());
    assert_eq!(bed.state_file("users.toml"), users);
    let log = log_grew(&bed, &log, 1);
    let recovered = bed.authority("recover", &["erin"]).ok();
    // The operator is told the first key (never used) is void now.
    assert!(
        recovered
            .stderr
            .contains("replaces the unused temporary key issued"),
        "{}",
        recovered.stderr
    );
    let erin_key2 = recovered.stdout.trim().to_string();
    assert_eq!(bed.user("erin")["state"], "pending");
    bed.process("erin.req", "erin.reply")
        .fails(1, "wrong temporary key");
    bed.request("erin", "erin 2", "key-card", &erin_key2, "erin2.req")
        .ok();
    bed.process("erin2.req", "erin2.reply").ok();
    assert_eq!(bed.user("erin")["state"], "active");
    let log = log_grew(&bed, &log, 3);

    // Wrong keys (other users' valid ones) are counted; the fifth locks the key, and the sixth
    // try is refused even with the right key.
    bed.request("frank", "frank 1", "key-card", &gina_key, "wrong1.req")
        .ok();
    bed.request("frank", "frank 2", "key-card", &decoy_key, "wrong2.req")
        .ok();
    bed.request("frank", "frank 3", "key-card", &frank_key, "right.req")
        .ok();
    let others = |bed: &AuthorityBed| {
        for name in ["gina", "decoy"] {
            let u = bed.user(name);
            assert_eq!(u["temporary_key"]["attempts"], 0, "{u}");
            assert_eq!(u["state"], "pending", "{u}");
        }
    };
    let users = without_attempts_of(&bed, "frank");
    for (i, (request, needle)) in [
        (
            "wrong1.req",
            "wrong temporary key for user \"frank\": 4 tries left",
        ),
        (
            "wrong2.req",
            "wrong temporary key for user \"frank\": 3 tries left",
        ),
        (
            "wrong1.req",
            "wrong temporary key for user \"frank\": 2 tries left",
        ),
        (
            "wrong2.req",
            "wrong temporary key for user \"frank\": 1 try left",
        ),
        ("wrong1.req", "locked after too many wrong tries"),
    ]
    .iter()
    .enumerate()
    {
        bed.process(request, "frank.reply").fails(1, needle);
        assert!(!bed.path("frank.reply").exists());
        let frank = bed.user("frank");
        assert_eq!(frank["temporary_key"]["attempts"], i + 1, "{frank}");
        assert_eq!(frank["state"], "pending", "{frank}");
        // Only Frank's attempt count changed.
        assert_eq!(
            without_attempts_of(&bed, "frank"),
            users,
            "more than the attempt count changed"
        );
    }
    others(&bed);
    let locked = bed.state_file("users.toml");
    bed.process("right.req", "frank.reply")
        .fails(1, "locked after too many wrong tries");
    assert!(!bed.path("frank.reply").exists());
    assert_eq!(
        bed.state_file("users.toml"),
        locked,
        "the sixth try changed users.toml"
    );
    assert_eq!(bed.user("frank")["temporary_key"]["attempts"], 5);
    let log = log_grew(&bed, &log, 6);
    // The way out the message names: a new temporary key.
    let frank_key2 = bed
        .authority("recover", &["frank"])
        .ok()
        .stdout
        .trim()
        .to_string();
    bed.request("frank", "frank 4", "key-card", &frank_key2, "frank4.req")
        .ok();
    bed.process("frank4.req", "frank4.reply").ok();
    let frank = bed.user("frank");
    assert_eq!(frank["state"], "active", "{frank}");
    assert_eq!(frank["keysets"], serde_json::json!(["frank 4"]));
    let log = log_grew(&bed, &log, 2);

    // Single use: two requests made with the same key; the first is processed, then neither
    // it nor the other goes through again.
    bed.request("gina", "gina 1", "key-card", &gina_key, "gina1.req")
        .ok();
    bed.request("gina", "gina 2", "key-card", &gina_key, "gina2.req")
        .ok();
    bed.process("gina1.req", "gina1.reply").ok();
    assert_eq!(bed.user("gina")["temporary_key"]["spent"], true);
    let users = bed.state_file("users.toml");
    let files = bed.state_files();
    // The processed request again: its recorded reply, nothing new (a retry after a crash).
    bed.process("gina1.req", "gina-again.reply").ok();
    assert_eq!(read(&bed, "gina-again.reply"), read(&bed, "gina1.reply"));
    std::fs::remove_file(bed.path("gina-again.reply")).unwrap();
    bed.process("gina2.req", "gina-again.reply")
        .fails(1, "already enrolled");
    assert!(!bed.path("gina-again.reply").exists());
    assert_eq!(bed.state_file("users.toml"), users);
    assert_eq!(bed.state_files(), files);
    assert_eq!(bed.user("gina")["keysets"], serde_json::json!(["gina 1"]));
    log_grew(&bed, &log, 2);
    bed.authority("log", &["--verify"]).ok();
}

#[test]
fn a_process_failing_midway_spends_nothing_and_leaves_no_half_record() {
    let bed = AuthorityBed::new(&["hal-card"], "CN=Fault Test CA");
    let key = bed.add_user("hal", &["--email", "hal@example.org"]);
    bed.request("hal", "hal 1", "hal-card", &key, "hal.req")
        .ok();
    let users = bed.state_file("users.toml");
    let files = bed.state_files();
    // CA pair, exchange pair and archive key: private and secret keys sensitive, never
    // extractable (the data objects keeping the state's head are not keys).
    let objects = bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN);
    assert_eq!(objects.len(), 5, "{objects:#?}");
    for o in objects
        .iter()
        .filter(|o| o.is_private_key() || o.header.starts_with("Secret Key Object"))
    {
        let access = o.items("Access");
        assert!(access.contains(&"sensitive".to_string()), "{o:?}");
        assert!(access.contains(&"never extractable".to_string()), "{o:?}");
        assert!(!access.contains(&"extractable".to_string()), "{o:?}");
    }
    let authority_objects = p11_object_set(&objects);
    let mut log = bed.state_file("audit.log");

    for fault in ["users-save", "db-commit"] {
        bed.process_env("hal.req", "hal.reply", &[("KEYWARD_FAULT", fault)])
            .fails(1, &format!("injected fault (KEYWARD_FAULT={fault})"));
        assert!(!bed.path("hal.reply").exists(), "{fault}: a reply was left");
        assert_eq!(
            bed.state_file("users.toml"),
            users,
            "{fault}: half a user record"
        );
        assert_eq!(bed.state_files(), files, "{fault}: files left over");
        assert!(
            !bed.state_files()
                .iter()
                .any(|f| f.starts_with("issued/") || f.starts_with("archive/")),
            "{fault}"
        );
        assert_eq!(
            p11_object_set(&bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN)),
            authority_objects,
            "{fault}: objects left on the authority's token"
        );
        let hal = bed.user("hal");
        assert_eq!(hal["state"], "pending", "{hal}");
        assert_eq!(hal["temporary_key"]["spent"], false, "{hal}");
        assert_eq!(hal["temporary_key"]["attempts"], 0, "{hal}");
        log = log_grew(&bed, &log, 1);
        let last = bed
            .run(&["--json", "authority", "log", "--dir", &bed.dir])
            .ok()
            .json()["entries"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["outcome"], "failed", "{last}");
        assert_eq!(last["subject"], "hal", "{last}");
    }

    // The same request then goes through — but its reply cannot be written: the enrollment
    // is recorded (the reply leaves the authority only after it is), the operator is told to
    // write it again, and that reply completes.
    bed.process_env("hal.req", "hal.reply", &[("KEYWARD_FAULT", "reply-write")])
        .fails(1, "authority reply --dir DIR hal -o REPLY");
    assert!(!bed.path("hal.reply").exists());
    assert_eq!(bed.user("hal")["state"], "active");
    // Processing the same request again gives the recorded reply (nothing new recorded)...
    bed.process("hal.req", "hal.reply2").ok();
    assert!(!read(&bed, "hal.reply2").is_empty());
    log = log_grew(&bed, &log, 1);
    // ... and so does `authority reply`, read-only, without the PIN.
    let reply = bed.path("hal.reply").to_string_lossy().into_owned();
    bed.bed
        .run(&["authority", "reply", "--dir", &bed.dir, "hal", "-o", &reply])
        .ok();
    bed.complete_env("hal.reply", USER_PIN, &[]).ok();
    let hal = bed.user("hal");
    assert_eq!(hal["state"], "active", "{hal}");
    assert_eq!(hal["temporary_key"]["spent"], true, "{hal}");
    assert_eq!(hal["certificates"].as_array().unwrap().len(), 2);
    assert_eq!(hal["archived_keys"], 1);
    let files = bed.state_files();
    assert_eq!(files.iter().filter(|f| f.starts_with("issued/")).count(), 2);
    assert_eq!(
        files
            .iter()
            .filter(|f| f.starts_with("archive/hal/"))
            .count(),
        1
    );
    assert_eq!(
        p11_object_set(&bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN)),
        authority_objects,
        "the user's key stays off the authority's token"
    );
    assert_eq!(bed.keyset_states(), vec![("hal 1".into(), "active".into())]);
    log_grew(&bed, &log, 0);
    bed.authority("log", &["--verify"]).ok();
}

#[test]
fn operator_mistakes_are_refused_and_an_edited_audit_log_is_caught() {
    let bed = AuthorityBed::new(&[], "CN=Operator Test CA");
    let config = bed.state_file("authority.toml");
    let ca = bed.state_file("ca.pem");
    bed.authority("init", &["--token", AUTHORITY_TOKEN, "--name", "CN=Second"])
        .fails(1, "already holds an authority");
    assert_eq!(bed.state_file("authority.toml"), config);
    assert_eq!(bed.state_file("ca.pem"), ca);
    let nowhere = bed.path("nowhere").to_string_lossy().into_owned();
    bed.run(&["authority", "users", "--dir", &nowhere])
        .fails(1, "not an authority directory");
    bed.run(&["authority", "add-user", "--dir", &nowhere, "ivan"])
        .fails(1, "not an authority directory");
    // A directory that exists but holds no authority is left as it was (no lock file).
    let other = bed.path("some-dir");
    std::fs::create_dir(&other).unwrap();
    bed.run(&[
        "authority",
        "add-user",
        "--dir",
        &other.to_string_lossy(),
        "ivan",
    ])
    .fails(1, "not an authority directory");
    assert_eq!(
        std::fs::read_dir(&other).unwrap().count(),
        0,
        "files left in a non-authority directory"
    );

    bed.add_user("ivan", &["--email", "ivan@example.org"]);
    let users = bed.state_file("users.toml");
    let log = bed.state_file("audit.log");
    let refusals: [(&str, Vec<&str>, i32, &str); 8] = [
        ("add-user", vec!["ivan"], 1, "user \"ivan\" already exists"),
        ("add-user", vec!["iv an"], 1, "must be 1-64 characters"),
        (
            "add-user",
            vec!["jane", "--email", "not-an-address"],
            1,
            "is not an e-mail address",
        ),
        ("add-user", vec!["jane", "--expires", "0s"], 2, "zero"),
        ("add-user", vec!["jane", "--expires", "91d"], 2, "90 days"),
        ("recover", vec!["nobody"], 1, "no user \"nobody\""),
        ("revoke", vec!["nobody"], 1, "no user \"nobody\""),
        ("revoke", vec!["ivan", "--reason", "boredom"], 2, "boredom"),
    ];
    for (sub, args, code, needle) in &refusals {
        bed.authority(sub, args).fails(*code, needle);
        assert_eq!(
            bed.state_file("users.toml"),
            users,
            "{sub} {args:?} changed users.toml"
        );
        assert_eq!(
            bed.state_file("audit.log"),
            log,
            "{sub} {args:?} was logged"
        );
    }
    bed.authority("revoke", &["ivan"]).ok();
    let users = bed.state_file("users.toml");
    bed.authority("revoke", &["ivan"])
        .fails(1, "already revoked");
    bed.authority("recover", &["ivan"])
        .fails(1, "cannot be recovered");
    assert_eq!(bed.state_file("users.toml"), users);
    assert_eq!(bed.user("ivan")["state"], "revoked");
    bed.add_user("jane", &[]);
    bed.add_user("kim", &[]);

    // The audit log: 5 entries (init, add-user ivan, revoke ivan, add-user jane, kim).
    let verified = bed.authority("log", &["--verify"]).ok();
    assert!(verified.stdout.contains("5 entries"), "{}", verified.stdout);
    let users = bed.state_file("users.toml");
    // Edits to the audit table (as someone with write access to authority.db would make),
    // each undone after: `log --verify` names the entry, and changing commands refuse.
    let db = std::path::Path::new(&bed.dir).join("authority.db");
    let original = bed.bed.path("authority.db.orig");
    bed.db()
        .unwrap()
        .execute("VACUUM INTO ?1", [original.to_string_lossy()])
        .unwrap();
    let restore = || {
        for f in ["authority.db-wal", "authority.db-shm"] {
            let _ = std::fs::remove_file(std::path::Path::new(&bed.dir).join(f));
        }
        std::fs::copy(&original, &db).unwrap();
    };
    // Changing commands check the last checkpoint against the token (constant work); the
    // whole chain is `log --verify`'s job.
    for (what, sql, needle, last) in [
        (
            "edited",
            "UPDATE audit SET subject = 'mallory' WHERE seq = 2",
            "audit entry 2 fails verification: its contents do not match its hash",
            false,
        ),
        (
            "deleted",
            "DELETE FROM audit WHERE seq = 3",
            "audit entry 3 fails verification",
            false,
        ),
        (
            "reordered",
            "UPDATE audit SET seq = 100 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4;
             UPDATE audit SET seq = 4 WHERE seq = 100",
            "audit entry 3 fails verification",
            false,
        ),
        (
            "last entry deleted",
            "DELETE FROM audit WHERE seq = 5",
            "changed outside keyward",
            true,
        ),
        (
            "last entry edited",
            "UPDATE audit SET subject = 'kip' WHERE seq = 5",
            "audit entry 5 fails verification",
            true,
        ),
    ] {
        bed.tamper_sql(sql);
        bed.authority("log", &["--verify"]).fails(3, needle);
        let changing = if last {
            vec![
                ("add-user", vec!["zed"]),
                ("revoke", vec!["jane"]),
                ("recover", vec!["kim"]),
            ]
        } else {
            vec![]
        };
        for (sub, args) in changing {
            bed.authority(sub, &args)
                .fails(3, "changed outside keyward");
            assert_eq!(bed.state_file("users.toml"), users, "{what}: {sub} acted");
        }
        restore();
    }
    bed.authority("log", &["--verify"]).ok();
    bed.authority("revoke", &["jane"]).ok();
    bed.authority("log", &["--verify"]).ok();
}
