//! `keyward keyset …` end to end: the real binary on a throw-away SoftHSM2 token per test.
//! Key generation is the slow part, so each test shares one bed across its assertions.

mod util;

use std::collections::BTreeSet;
use std::process::Stdio;

use util::{p11_object_set, Run, TestBed, USER_PIN};

/// The token every test here puts its keysets on.
const CARD: &str = "card";
const NEW_PIN: &str = "user-secret-2";
/// A second token, for keysets that need one of their own (not a prefix of `CARD` or vice versa).
const SPARE: &str = "spare";

fn bed_with_card() -> (TestBed, String) {
    let bed = TestBed::new();
    let serial = bed.init_token(CARD, USER_PIN);
    (bed, serial)
}

fn sign(bed: &TestBed, name: &str, file: &str, sig: &str, pin: &str) -> Run {
    bed.run_env(
        &["keyset", "sign", name, file, "-o", sig],
        &[("KEYWARD_PIN", pin)],
    )
}

fn verify(bed: &TestBed, name: &str, file: &str, sig: &str) -> Run {
    bed.run(&["keyset", "verify", name, file, sig])
}

fn sig_path(bed: &TestBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

/// The keyset's `CKA_ID` (hex) from `keyset show --json`.
fn signing_id(bed: &TestBed, name: &str) -> String {
    bed.keyset_json(name)["signing_id"]
        .as_str()
        .expect("signing_id")
        .to_string()
}

/// The objects on `CARD` with this `CKA_ID` (hex, as pkcs11-tool prints it).
fn objects_with_id(bed: &TestBed, id: &str) -> Vec<util::P11Object> {
    bed.token_objects(CARD, USER_PIN)
        .into_iter()
        .filter(|o| o.get("ID") == id)
        .collect()
}

/// The names in `keyset list --json`, in order.
fn listed_names(bed: &TestBed) -> Vec<String> {
    bed.run(&["keyset", "list", "--json"]).ok().json()["keysets"]
        .as_array()
        .expect("keysets is an array")
        .clone()
        .iter()
        .map(|k| k["name"].as_str().expect("name").to_string())
        .collect()
}

/// `%XX` per byte, as keyward writes ids in pkcs11: URIs.
fn uri_id(hex: &str) -> String {
    (0..hex.len())
        .step_by(2)
        .map(|i| format!("%{}", hex[i..i + 2].to_uppercase()))
        .collect()
}

/// The single token directory of a bed with one initialised token.
fn only_token_dir(bed: &TestBed) -> std::path::PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(bed.path("tokens"))
        .expect("tokens dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "want one token directory: {dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn flip_byte(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x40;
    b
}

// ---- create, show, pubkey, sign, verify per key type ------------------------------------

#[test]
fn each_key_type_is_created_shown_exported_and_signs() {
    let (bed, serial) = bed_with_card();
    let data = bed.file("data.txt", b"the quick brown fox jumps over the lazy dog\n");
    let other = bed.file(
        "other.txt",
        b"the quick brown fox jumps over the lazy dog.\n",
    );
    let pin_file = bed.secret_file("pin.txt", USER_PIN);
    let pin_file = pin_file.to_string_lossy().into_owned();
    let mut ids = BTreeSet::new();
    for (name, key_type, openssl_says, rsa_sig_len) in [
        ("Default RSA", None, "Public-Key: (2048 bit)", Some(256)),
        (
            "Big RSA",
            Some("rsa3072"),
            "Public-Key: (3072 bit)",
            Some(384),
        ),
        ("Small EC", Some("p256"), "prime256v1", None),
    ] {
        let mut extra = vec!["--json"];
        if let Some(k) = key_type {
            extra.extend(["--key-type", k]);
        }
        let created = bed.create_keyset(name, CARD, USER_PIN, &extra).ok().json();
        let shown = bed.keyset_json(name);

        assert_eq!(shown["name"], name, "{shown}");
        assert_eq!(shown["label"], name, "short names are their own label");
        assert_eq!(shown["state"], "local");
        assert_eq!(shown["security"], "standard");
        assert_eq!(shown["key_type"], key_type.unwrap_or("rsa2048"));
        assert_eq!(shown["token_label"], CARD);
        assert_eq!(shown["token_serial"], serial.as_str());
        assert_eq!(shown["token_status"], "present");
        assert!(shown["hardening"].is_null(), "{shown}");
        let id = shown["signing_id"].as_str().expect("signing_id");
        assert!(
            id.len() >= 2 && id.len() % 2 == 0 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "CKA_ID {id:?}"
        );
        assert!(ids.insert(id.to_string()), "ids are unique per keyset");
        let created_at = shown["created"].as_str().expect("created");
        assert!(
            created_at.len() == 20 && created_at.ends_with('Z') && created_at.contains('T'),
            "RFC 3339: {created_at}"
        );
        for (field, kind) in [("signing_key_uri", "private"), ("public_key_uri", "public")] {
            let uri = shown[field].as_str().expect(field);
            assert!(uri.starts_with("pkcs11:"), "{uri}");
            assert!(uri.contains(&format!("token={CARD}")), "{uri}");
            assert!(uri.contains(&format!("serial={serial}")), "{uri}");
            assert!(uri.contains(&format!("id={}", uri_id(id))), "{uri}");
            assert!(uri.contains(&format!("type={kind}")), "{uri}");
        }
        // `create --json` prints the record `show --json` shows (without the live token status).
        let mut without_status = shown.clone();
        let mut created = created;
        for key in ["token_status", "command"] {
            without_status.as_object_mut().unwrap().remove(key);
        }
        created.as_object_mut().unwrap().remove("command");
        assert_eq!(created, without_status);

        // pubkey: the registry's PEM, which OpenSSL parses as the right kind of key.
        let pem = bed.run(&["keyset", "pubkey", name]).ok().stdout;
        let as_json = bed.run(&["--json", "keyset", "pubkey", name]).ok().json();
        assert_eq!(pem, as_json["pem"].as_str().unwrap());
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        let pem_path = bed.file(&format!("{name}.pem"), pem.as_bytes());
        let parsed = bed
            .run_tool(
                "openssl",
                "openssl",
                &["pkey", "-pubin", "-in", &pem_path, "-noout", "-text"],
            )
            .ok();
        assert!(parsed.stdout.contains(openssl_says), "{}", parsed.stdout);

        // sign (PIN from a file) and verify; a changed file or signature does not verify.
        let sig = sig_path(&bed, &format!("{name}.sig"));
        bed.run(&[
            "keyset",
            "sign",
            name,
            &data,
            "-o",
            &sig,
            "--pin-file",
            &pin_file,
        ])
        .ok();
        let sig_bytes = std::fs::read(&sig).expect("signature written");
        if let Some(len) = rsa_sig_len {
            assert_eq!(sig_bytes.len(), len, "RSA PKCS#1 v1.5 signature size");
        } else {
            assert_eq!(sig_bytes[0], 0x30, "ECDSA signatures are DER SEQUENCEs");
        }
        let ok = verify(&bed, name, &data, &sig).ok();
        assert!(ok.stdout.contains("signature OK"), "{}", ok.stdout);
        verify(&bed, name, &other, &sig).fails(3, "does NOT verify");
        for at in [sig_bytes.len() / 2, sig_bytes.len() - 1] {
            let bad = bed.file("tampered.sig", &flip_byte(&sig_bytes, at));
            verify(&bed, name, &data, &bad).fails(3, "does NOT verify");
        }
        let truncated = bed.file("truncated.sig", &sig_bytes[..sig_bytes.len() / 2]);
        verify(&bed, name, &data, &truncated).fails(3, "does NOT verify");
    }
    // One key pair per keyset, nothing else.
    assert_eq!(bed.token_objects(CARD, USER_PIN).len(), 6);

    // Another keyset's key does not verify this one's signature.
    let sig = sig_path(&bed, "Default RSA.sig");
    verify(&bed, "Big RSA", &data, &sig).fails(3, "does NOT verify");
}

#[test]
fn sign_writes_a_relative_output_path_in_the_working_directory() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("Rel", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    bed.file("in.txt", b"relative paths\n");
    let out = bed
        .keyward()
        .current_dir(bed.dir.path())
        .args(["keyset", "sign", "Rel", "in.txt", "-o", "in.sig"])
        .env("KEYWARD_PIN", USER_PIN)
        .output()
        .expect("run keyward");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    .ok();
    assert!(
        run.stdout.contains("signed"),
        "the result line is on stdout: {}",
        run.stdout
    );
    let data = sig_path(&bed, "in.txt");
    let sig = sig_path(&bed, "in.sig");
    verify(&bed, "Rel", &data, &sig).ok();

    // `-o` naming a pipe (as `-o /dev/null` names a device) is written in place: the pipe
    // stays a pipe and carries the signature.
    use std::os::unix::fs::FileTypeExt;
    let fifo = sig_path(&bed, "sig.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = std::process::Command::new("timeout")
        .args(["120", "cat", &fifo])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cat");
    sign(&bed, "Rel", &data, &fifo, USER_PIN).ok();
    let through = reader.wait_with_output().expect("cat");
    assert!(
        through.status.success(),
        "cat ended with {}",
        through.status
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let piped_sig = bed.file("piped.sig", &through.stdout);
    verify(&bed, "Rel", &data, &piped_sig).ok();
}

// ---- list and show -----------------------------------------------------------------------

#[test]
fn list_and_show_in_human_and_json_form() {
    let (bed, serial) = bed_with_card();
    let empty = bed.run(&["keyset", "list"]).ok();
    assert!(empty.stdout.contains("No keysets"), "{}", empty.stdout);
    assert_eq!(
        bed.run(&["keyset", "list", "--json"]).ok().json(),
        serde_json::json!({"schema_version": 1, "command": "keyset list", "keysets": []})
    );

    bed.create_keyset("Alice Work", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    bed.create_keyset("Bob Home", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();

    let human = bed.run(&["keyset", "list"]).ok();
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", human.stdout);
    for (line, name) in lines.iter().zip(["Alice Work", "Bob Home"]) {
        for want in [
            format!("{name:?}"),
            "local".to_string(),
            "standard".to_string(),
            "p256".to_string(),
            format!("token {CARD:?}"),
            serial.clone(),
        ] {
            assert!(line.contains(&want), "{want:?} not in {line:?}");
        }
    }

    let json = bed.run(&["--json", "keyset", "list"]).ok().json();
    let list = json["keysets"].as_array().expect("array");
    assert_eq!(listed_names(&bed), ["Alice Work", "Bob Home"]);
    for entry in list {
        let name = entry["name"].as_str().unwrap();
        let mut shown = bed.keyset_json(name);
        for envelope_or_show_only in ["token_status", "schema_version", "command"] {
            shown.as_object_mut().unwrap().remove(envelope_or_show_only);
        }
        assert_eq!(entry, &shown, "list and show agree on {name}");
    }

    // --json after the subcommand is the same as before it.
    assert_eq!(
        bed.run(&["keyset", "show", "Alice Work", "--json"])
            .ok()
            .json(),
        bed.keyset_json("Alice Work")
    );

    let alice = bed.keyset_json("Alice Work");
    let show = bed.run(&["keyset", "show", "Alice Work"]).ok().stdout;
    for want in [
        "Keyset \"Alice Work\"".to_string(),
        "state:       local".to_string(),
        "security:    standard".to_string(),
        "key type:    p256".to_string(),
        format!("\"{CARD}\" (serial {serial}), present"),
        "key label:   Alice Work signing key".to_string(),
        format!(
            "signing key: {}",
            alice["signing_key_uri"].as_str().unwrap()
        ),
        format!("public key:  {}", alice["public_key_uri"].as_str().unwrap()),
        format!("created:     {}", alice["created"].as_str().unwrap()),
    ] {
        assert!(show.contains(&want), "{want:?} not in:\n{show}");
    }
    assert!(!show.contains("Bob Home"), "{show}");

    let missing = bed
        .run(&["keyset", "show", "Carol"])
        .fails(1, "no keyset named \"Carol\"");
    assert!(
        missing.stderr.contains("Alice Work") && missing.stderr.contains("Bob Home"),
        "names the known keysets: {}",
        missing.stderr
    );
}

// ---- names -------------------------------------------------------------------------------

#[test]
fn a_unicode_name_with_spaces_works_everywhere() {
    let (bed, _) = bed_with_card();
    let name = "Zoë Smith — Büro 2026";
    assert!(name.len() <= 32);
    bed.create_keyset(name, CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let shown = bed.keyset_json(name);
    assert_eq!(shown["name"], name);
    assert_eq!(shown["label"], name);
    assert_eq!(listed_names(&bed), [name]);
    let human = bed.run(&["keyset", "list"]).ok().stdout;
    assert!(human.contains(name), "{human}");

    let id = shown["signing_id"].as_str().unwrap();
    let objects = objects_with_id(&bed, id);
    let labels: BTreeSet<&str> = objects.iter().map(|o| o.get("label")).collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            "Zoë Smith — Büro 2026 signing key",
            "Zoë Smith — Büro 2026 signing key (public)"
        ])
    );

    let data = bed.file("data.txt", "grüße\n".as_bytes());
    let sig = sig_path(&bed, "data.sig");
    sign(&bed, name, &data, &sig, USER_PIN).ok();
    verify(&bed, name, &data, &sig).ok();
    // The exact name is needed: another spelling is a different (unknown) keyset.
    verify(&bed, "Zoe Smith — Buro 2026", &data, &sig).fails(1, "no keyset named");
}

#[test]
fn a_name_longer_than_a_token_label_gets_a_recorded_derived_label() {
    let (bed, _) = bed_with_card();
    let name = "Ångström Laboratory — Secure Mail Keyset for Alice Smith 2026";
    assert!(name.len() > 32);
    let created = bed
        .create_keyset(name, CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    assert!(
        created.stdout.contains("longer than a 32-byte token label"),
        "the derived label is announced:\n{}",
        created.stdout
    );

    let shown = bed.keyset_json(name);
    assert_eq!(shown["name"], name, "the full name is kept");
    let label = shown["label"].as_str().unwrap().to_string();
    assert!(label.len() <= 32, "{label:?} is {} bytes", label.len());
    assert_ne!(label, name);
    assert!(label.starts_with("Ångström Laboratory"), "{label:?}");
    assert!(label.contains('~'), "marked as derived, not cut: {label:?}");
    assert!(
        created.stdout.contains(&format!("{label:?}")),
        "{}",
        created.stdout
    );

    // Recorded in the registry and shown by `show`.
    let registry = bed.registry_text().expect("registry");
    assert!(
        registry.contains(&format!("label = \"{label}\"")),
        "{registry}"
    );
    let show = bed.run(&["keyset", "show", name]).ok().stdout;
    assert!(
        show.contains(&format!("key label:   {label} signing key")),
        "{show}"
    );

    // The token's objects carry the derived label.
    let id = shown["signing_id"].as_str().unwrap();
    let labels: BTreeSet<String> = objects_with_id(&bed, id)
        .iter()
        .map(|o| o.get("label").to_string())
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            format!("{label} signing key"),
            format!("{label} signing key (public)")
        ])
    );

    // A name past keyward's own limit is refused with the limit stated, before the token.
    let before = bed.token_snapshot();
    let registry_before = bed.registry_text();
    let huge = "x".repeat(300);
    bed.create_keyset(&huge, CARD, USER_PIN, &["--key-type", "p256"])
        .fails(1, "the limit is 256");
    assert_eq!(bed.token_snapshot(), before);
    assert_eq!(bed.registry_text(), registry_before);
}

#[test]
fn names_with_control_characters_or_edge_spaces_are_refused_before_anything_is_written() {
    let (bed, _) = bed_with_card();
    let before = bed.token_snapshot();
    for bad in [
        "tab\there",
        "new\nline",
        "escape \u{1b}[31m red",
        "bell\u{7}",
        "del\u{7f}",
        "c1\u{85}next",
    ] {
        bed.create_keyset(bad, CARD, USER_PIN, &["--key-type", "p256"])
            .fails(1, "control character");
    }
    for bad in [" leading", "trailing ", ""] {
        bed.create_keyset(bad, CARD, USER_PIN, &["--key-type", "p256"])
            .fails(1, "keyset name");
    }
    assert_eq!(bed.token_snapshot(), before, "the token was not touched");
    assert_eq!(bed.registry_text(), None, "no registry was written");
}

#[test]
fn a_name_in_use_even_in_another_case_is_refused_and_nothing_is_created() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("Alice", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let before = bed.token_snapshot();
    let registry = bed.registry_text();
    for dup in ["Alice", "alice", "ALICE"] {
        bed.create_keyset(dup, CARD, USER_PIN, &["--key-type", "p256"])
            .fails(1, "a keyset named \"Alice\" already exists");
    }
    assert_eq!(bed.token_snapshot(), before, "nothing created on the token");
    assert_eq!(bed.registry_text(), registry);
    assert_eq!(bed.token_objects(CARD, USER_PIN).len(), 2);
    assert_eq!(listed_names(&bed), ["Alice"]);
}

// ---- bad input and faults ----------------------------------------------------------------

#[test]
fn a_wrong_password_creates_nothing_and_signs_nothing() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("Existing", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let objects = p11_object_set(&bed.token_objects(CARD, USER_PIN));
    let registry = bed.registry_text();

    bed.create_keyset("Nope", CARD, "not-the-pin", &[])
        .fails(1, "wrong user PIN");
    // (SoftHSM rewrites its token file on a failed login, so compare objects, not bytes.)
    assert_eq!(p11_object_set(&bed.token_objects(CARD, USER_PIN)), objects);
    assert_eq!(bed.registry_text(), registry);
    // The same with --harden (on a token of its own): no keys, and the PIN is unchanged.
    bed.init_token(SPARE, USER_PIN);
    bed.run_env(
        &["keyset", "create", "Nope", "--token", SPARE, "--harden"],
        &[
            ("KEYWARD_PIN", "not-the-pin"),
            ("KEYWARD_NEW_PIN", "some password"),
        ],
    )
    .fails(1, "wrong user PIN");
    assert!(bed.token_objects(SPARE, USER_PIN).is_empty());
    assert_eq!(bed.registry_text(), registry);

    let data = bed.file("data.txt", b"data\n");
    let sig = sig_path(&bed, "data.sig");
    sign(&bed, "Existing", &data, &sig, "not-the-pin").fails(1, "wrong user PIN");
    assert!(!bed.path("data.sig").exists(), "no signature written");
}

#[test]
fn a_keyset_whose_token_is_gone_is_reported_as_not_present() {
    let (bed, serial) = bed_with_card();
    bed.create_keyset("Gone", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let data = bed.file("data.txt", b"data\n");
    let sig = sig_path(&bed, "data.sig");
    sign(&bed, "Gone", &data, &sig, USER_PIN).ok();

    std::fs::remove_dir_all(only_token_dir(&bed)).expect("remove the token");

    let sig2 = sig_path(&bed, "data2.sig");
    let run = sign(&bed, "Gone", &data, &sig2, USER_PIN).fails(1, "is not present");
    assert!(run.stderr.contains(&serial), "{}", run.stderr);
    bed.run_env(
        &["keyset", "csr", "Gone", "--subject", "CN=x"],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .fails(1, "is not present");
    // show still works and says so; verify needs no token.
    let shown = bed.keyset_json("Gone");
    let status = shown["token_status"].as_str().unwrap();
    assert!(status.contains("not present"), "{status}");
    let human = bed.run(&["keyset", "show", "Gone"]).ok().stdout;
    assert!(human.contains("not present"), "{human}");
    verify(&bed, "Gone", &data, &sig).ok();
}

#[test]
fn a_swapped_card_with_the_same_label_is_refused() {
    let (bed, serial) = bed_with_card();
    bed.create_keyset("Mine", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    std::fs::remove_dir_all(only_token_dir(&bed)).expect("remove the token");
    let other_serial = bed.init_token(CARD, USER_PIN);
    assert_ne!(other_serial, serial);

    let data = bed.file("data.txt", b"data\n");
    let sig = sig_path(&bed, "data.sig");
    let run = sign(&bed, "Mine", &data, &sig, USER_PIN).fails(1, "card was swapped");
    assert!(
        run.stderr.contains(&serial) && run.stderr.contains(&other_serial),
        "names both serials: {}",
        run.stderr
    );
    assert!(!bed.path("data.sig").exists());
    let shown = bed.keyset_json("Mine");
    assert!(
        shown["token_status"]
            .as_str()
            .unwrap()
            .contains("card was swapped"),
        "{shown}"
    );
    // The new card's PIN is the same, but nothing was created or changed on it.
    assert!(bed.token_objects(CARD, USER_PIN).is_empty());
}

#[test]
fn a_registry_with_a_syntax_error_is_reported_with_line_and_column_and_kept() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("Alice", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let path = bed.home.join("keysets.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let line = good
        .lines()
        .position(|l| l == "security = \"standard\"")
        .expect("security line")
        + 1;
    let broken = good.replace("security = \"standard\"", "security = standard");
    std::fs::write(&path, &broken).unwrap();
    let before = bed.token_snapshot();
    let at = format!("keysets.toml:{line}:12");

    let data = bed.file("data.txt", b"data\n");
    let sig = sig_path(&bed, "data.sig");
    let pin = [("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", NEW_PIN)];
    let runs = [
        bed.run(&["keyset", "list"]),
        bed.run(&["--quiet", "keyset", "list"]),
        bed.run(&["keyset", "show", "Alice"]),
        bed.run(&["keyset", "pubkey", "Alice"]),
        bed.run_env(&["keyset", "sign", "Alice", &data, "-o", &sig], &pin),
        bed.run_env(
            &[
                "keyset",
                "create",
                "Bob",
                "--token",
                CARD,
                "--key-type",
                "p256",
            ],
            &pin,
        ),
        bed.run_env(&["keyset", "passwd", "Alice"], &pin),
        bed.run_env(
            &["keyset", "remove", "Alice", "--destroy-keys", "--yes"],
            &pin,
        ),
        bed.run(&["keyset", "remove", "Alice"]),
    ];
    for run in runs {
        let run = run.fails(1, &at);
        assert!(run.stderr.contains("not changed"), "{}", run.stderr);
        assert_eq!(
            run.stderr.matches("not changed").count(),
            1,
            "said once: {}",
            run.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken, "file kept");
    assert_eq!(bed.token_snapshot(), before, "token untouched");
    assert!(!bed.path("data.sig").exists());
    // The PIN did not change either: the old one still works.
    assert_eq!(bed.token_objects(CARD, USER_PIN).len(), 2);
}

#[test]
fn concurrent_creates_on_one_registry_all_land() {
    let (bed, _) = bed_with_card();
    let mut names = Vec::new();
    // Two rounds of four processes at once (two RSA, two EC each round).
    for round in 0..2 {
        let children: Vec<_> = (0..4)
            .map(|i| {
                let name = format!("Parallel {round}-{i}");
                let key_type = if i % 2 == 0 { "p256" } else { "rsa2048" };
                names.push(name.clone());
                bed.keyward()
                    .args([
                        "keyset",
                        "create",
                        &name,
                        "--token",
                        CARD,
                        "--key-type",
                        key_type,
                    ])
                    .env("KEYWARD_PIN", USER_PIN)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn keyward")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait keyward");
            assert!(
                out.status.success(),
                "a concurrent create failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut listed = listed_names(&bed);
    listed.sort();
    names.sort();
    assert_eq!(listed, names, "every entry is in the registry");

    let objects = bed.token_objects(CARD, USER_PIN);
    assert_eq!(objects.len(), 16, "one key pair per keyset");
    for name in &names {
        let id = signing_id(&bed, name);
        assert_eq!(
            objects.iter().filter(|o| o.get("ID") == id).count(),
            2,
            "{name}'s keys"
        );
    }
}

#[test]
fn a_failure_after_key_generation_removes_the_new_keys() {
    let (bed, _) = bed_with_card();
    // A hardened keyset needs a token of its own: SPARE is that token.
    bed.init_token(SPARE, USER_PIN);
    bed.create_keyset("Kept", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let registry = bed.registry_text().expect("registry");
    let objects = p11_object_set(&bed.token_objects(CARD, USER_PIN));
    assert_eq!(objects.len(), 2);
    let files: BTreeSet<_> = bed.token_snapshot().into_iter().map(|(p, _)| p).collect();

    let fault = ("KEYWARD_FAULT", "registry-save");
    for (token, extra) in [
        (CARD, vec!["--key-type", "p256"]),
        (CARD, vec![]),
        (SPARE, vec!["--harden"]),
    ] {
        let mut args = vec!["keyset", "create", "Doomed", "--token", token];
        args.extend(&extra);
        bed.run_env(
            &args,
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_NEW_PIN", "doomed password"),
                fault,
            ],
        )
        .fails(1, "injected fault");
        // The PIN is the old one (a hardened create switched it back) and the keys are gone.
        assert_eq!(
            p11_object_set(&bed.token_objects(CARD, USER_PIN)),
            objects,
            "after {extra:?}"
        );
        assert!(
            bed.token_objects(SPARE, USER_PIN).is_empty(),
            "after {extra:?}"
        );
        let now: BTreeSet<_> = bed.token_snapshot().into_iter().map(|(p, _)| p).collect();
        assert_eq!(now, files, "no object files left behind after {extra:?}");
        assert_eq!(bed.registry_text().as_deref(), Some(registry.as_str()));
    }
    // The name is still free.
    bed.create_keyset("Doomed", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    assert_eq!(listed_names(&bed), ["Kept", "Doomed"]);
}

// ---- security levels ---------------------------------------------------------------------

#[test]
fn security_high_keys_always_authenticate_and_still_sign_with_the_password() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("High", CARD, USER_PIN, &["--security", "high"])
        .ok();
    bed.create_keyset(
        "High EC",
        CARD,
        USER_PIN,
        &["--security", "high", "--key-type", "p256"],
    )
    .ok();
    bed.create_keyset("Standard", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    for (name, key_type) in [("High", "rsa2048"), ("High EC", "p256")] {
        let shown = bed.keyset_json(name);
        assert_eq!(shown["security"], "high", "{shown}");
        assert_eq!(shown["key_type"], key_type, "{shown}");
    }
    assert_eq!(bed.keyset_json("Standard")["security"], "standard");

    for (name, always) in [("High", true), ("High EC", true), ("Standard", false)] {
        let id = signing_id(&bed, name);
        let objects = objects_with_id(&bed, &id);
        let private = objects
            .iter()
            .find(|o| o.is_private_key())
            .expect("private key");
        assert_eq!(
            private
                .items("Access")
                .iter()
                .any(|a| a == "always authenticate"),
            always,
            "{name}: {private:?}"
        );
    }

    // Signing (with the context-specific login) works with the password, not without it.
    let data = bed.file("data.txt", b"high security\n");
    for name in ["High", "High EC"] {
        let sig = sig_path(&bed, &format!("{name}.sig"));
        sign(&bed, name, &data, &sig, USER_PIN).ok();
        verify(&bed, name, &data, &sig).ok();
        let other = sig_path(&bed, "other.sig");
        sign(&bed, name, &data, &other, "wrong-pin").fails(1, "wrong user PIN");
        assert!(!bed.path("other.sig").exists());
        let csr = sig_path(&bed, &format!("{name}.csr"));
        bed.run_env(
            &["keyset", "csr", name, "--subject", "CN=High", "-o", &csr],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
        bed.run_tool(
            "openssl",
            "openssl",
            &["req", "-verify", "-in", &csr, "-noout"],
        )
        .ok();
    }
}

// ---- hardening and passwords -------------------------------------------------------------

#[test]
fn harden_derives_the_token_pin_and_passwd_changes_the_salt() {
    let (bed, _) = bed_with_card();
    const PW: &str = "correct horse battery staple";
    const PW2: &str = "tr0ub4dor & 3";
    let created = bed
        .run_env(
            &[
                "keyset",
                "create",
                "Hardened",
                "--token",
                CARD,
                "--key-type",
                "p256",
                "--harden",
            ],
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", PW)],
        )
        .ok();
    assert!(
        created.stdout.contains("derived from the keyset password"),
        "{}",
        created.stdout
    );

    let shown = bed.keyset_json("Hardened");
    let h = &shown["hardening"];
    assert_eq!(h["algorithm"], "argon2id", "{shown}");
    assert!(h["m_kib"].as_u64().unwrap() >= 19456, "{h}");
    assert!(h["t"].as_u64().unwrap() >= 2, "{h}");
    assert_eq!(h["p"].as_u64().unwrap(), 1, "{h}");
    let salt = h["salt"].as_str().unwrap().to_string();
    assert!(
        salt.len() >= 32 && salt.chars().all(|c| c.is_ascii_hexdigit()),
        "{salt:?}"
    );
    let registry = bed.registry_text().unwrap();
    assert!(registry.contains("[keyset.hardening]"), "{registry}");
    assert!(registry.contains(&salt), "{registry}");
    let human = bed.run(&["keyset", "show", "Hardened"]).ok().stdout;
    assert!(human.contains("hardened:    argon2id"), "{human}");

    // The token PIN is the derived one: OpenSC logs in with it, not with the password or the old PIN.
    let pin = bed
        .run_env(&["keyset", "pin", "Hardened"], &[("KEYWARD_PIN", PW)])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(pin.len() as u64, h["pin_len"].as_u64().unwrap());
    assert!(pin.len() >= 16, "a derived PIN is long: {pin:?}");
    assert_ne!(pin, PW);
    assert_eq!(bed.token_objects(CARD, &pin).len(), 2);
    bed.pkcs11_tool_login(CARD, PW).refused("CKR_PIN_INCORRECT");
    bed.pkcs11_tool_login(CARD, USER_PIN)
        .refused("CKR_PIN_INCORRECT");
    // A mistyped password is caught by a login, not turned into a wrong PIN; --no-check
    // derives without the token (and so cannot tell).
    let wrong = bed
        .run_env(&["keyset", "pin", "Hardened"], &[("KEYWARD_PIN", PW2)])
        .fails(1, "wrong user PIN");
    assert!(wrong.stdout.is_empty(), "{}", wrong.stdout);
    let unchecked = bed
        .run_env(
            &["keyset", "pin", "Hardened", "--no-check"],
            &[("KEYWARD_PIN", PW2)],
        )
        .ok();
    let unchecked = unchecked.stdout.trim();
    assert_eq!(unchecked.len(), pin.len());
    assert_ne!(unchecked, pin);

    // keyward signs with the password.
    let data = bed.file("data.txt", b"hardened\n");
    let sig = sig_path(&bed, "data.sig");
    sign(&bed, "Hardened", &data, &sig, PW).ok();
    // -o onto the file being signed would destroy it: refused, the file untouched.
    let before = std::fs::read(&data).unwrap();
    sign(&bed, "Hardened", &data, &data, PW).fails(2, "is the input file itself");
    assert_eq!(std::fs::read(&data).unwrap(), before);
    verify(&bed, "Hardened", &data, &sig).ok();
    sign(&bed, "Hardened", &data, &sig, USER_PIN).fails(1, "wrong user PIN");
    sign(&bed, "Hardened", &data, &sig, &pin).fails(1, "wrong user PIN");

    // passwd: new salt, same parameters; old password out, new one in.
    bed.run_env(
        &["keyset", "passwd", "Hardened"],
        &[("KEYWARD_PIN", PW), ("KEYWARD_NEW_PIN", PW2)],
    )
    .ok();
    let h2 = bed.keyset_json("Hardened")["hardening"].clone();
    assert_ne!(h2["salt"], h["salt"], "passwd draws a new salt");
    for k in ["algorithm", "m_kib", "t", "p", "pin_len"] {
        assert_eq!(h2[k], h[k], "{k}");
    }
    sign(&bed, "Hardened", &data, &sig, PW).fails(1, "wrong user PIN");
    sign(&bed, "Hardened", &data, &sig, PW2).ok();
    verify(&bed, "Hardened", &data, &sig).ok();
    let pin2 = bed
        .run_env(&["keyset", "pin", "Hardened"], &[("KEYWARD_PIN", PW2)])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_ne!(pin2, pin);
    assert_eq!(bed.token_objects(CARD, &pin2).len(), 2);
    bed.pkcs11_tool_login(CARD, &pin)
        .refused("CKR_PIN_INCORRECT");

    // The hardened keyset's token is its own: another keyset (hardened or not) would change or
    // share its derived PIN and lock one of them out, so both are refused and nothing changes.
    let objects = p11_object_set(&bed.token_objects(CARD, &pin2));
    bed.create_keyset("Second", CARD, &pin2, &["--key-type", "p256"])
        .fails(1, "holds hardened keyset \"Hardened\"");
    bed.run_env(
        &[
            "keyset",
            "create",
            "Second",
            "--token",
            CARD,
            "--key-type",
            "p256",
            "--harden",
        ],
        &[
            ("KEYWARD_PIN", &pin2),
            ("KEYWARD_NEW_PIN", "second password"),
        ],
    )
    .fails(1, "holds hardened keyset \"Hardened\"");
    assert_eq!(p11_object_set(&bed.token_objects(CARD, &pin2)), objects);
    sign(&bed, "Hardened", &data, &sig, PW2).ok();
}

#[test]
fn passwd_changes_the_token_pin_and_names_the_keysets_sharing_it() {
    let (bed, _) = bed_with_card();
    bed.init_token("other", USER_PIN);
    for (name, token) in [("One", CARD), ("Two", CARD), ("Elsewhere", "other")] {
        bed.create_keyset(name, token, USER_PIN, &["--key-type", "p256"])
            .ok();
    }
    // `keyset pin` is only for hardened keysets.
    bed.run_env(&["keyset", "pin", "One"], &[("KEYWARD_PIN", USER_PIN)])
        .fails(2, "not hardened");

    bed.run_env(
        &["keyset", "passwd", "One"],
        &[
            ("KEYWARD_PIN", "wrong-old-pin"),
            ("KEYWARD_NEW_PIN", NEW_PIN),
        ],
    )
    .fails(1, "wrong user PIN");

    let run = bed
        .run_env(
            &["keyset", "passwd", "One"],
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", NEW_PIN)],
        )
        .ok();
    assert!(
        run.stdout
            .contains("changed the password of keyset \"One\""),
        "{}",
        run.stdout
    );
    let sharing = run
        .stdout
        .lines()
        .find(|l| l.contains("shared"))
        .unwrap_or_else(|| panic!("no sharing note:\n{}", run.stdout));
    assert!(sharing.contains("\"Two\""), "{sharing}");
    assert!(!sharing.contains("\"One\""), "{sharing}");
    assert!(!sharing.contains("Elsewhere"), "other token: {sharing}");

    let data = bed.file("data.txt", b"passwd\n");
    let sig = sig_path(&bed, "data.sig");
    for name in ["One", "Two"] {
        sign(&bed, name, &data, &sig, USER_PIN).fails(1, "wrong user PIN");
        sign(&bed, name, &data, &sig, NEW_PIN).ok();
        verify(&bed, name, &data, &sig).ok();
    }
    assert_eq!(bed.token_objects(CARD, NEW_PIN).len(), 4);
    bed.pkcs11_tool_login(CARD, USER_PIN)
        .refused("CKR_PIN_INCORRECT");
    // The other token's PIN is untouched.
    sign(&bed, "Elsewhere", &data, &sig, USER_PIN).ok();

    // --harden on a shared token would change the others' password: refused, nothing changes.
    let objects = p11_object_set(&bed.token_objects(CARD, NEW_PIN));
    bed.run_env(
        &[
            "keyset",
            "create",
            "Three",
            "--token",
            CARD,
            "--key-type",
            "p256",
            "--harden",
        ],
        &[
            ("KEYWARD_PIN", NEW_PIN),
            ("KEYWARD_NEW_PIN", "three password"),
        ],
    )
    .fails(1, "--harden needs a token of its own");
    assert_eq!(p11_object_set(&bed.token_objects(CARD, NEW_PIN)), objects);

    // A lone keyset's passwd has no sharing note.
    let run = bed
        .run_env(
            &["keyset", "passwd", "Elsewhere"],
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", NEW_PIN)],
        )
        .ok();
    assert!(!run.stdout.contains("shared"), "{}", run.stdout);
}

// ---- remove ------------------------------------------------------------------------------

#[test]
fn remove_keeps_keys_unless_destroying_is_confirmed() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("Keep keys", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    bed.create_keyset("Destroy keys", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let keep = signing_id(&bed, "Keep keys");
    let destroy = signing_id(&bed, "Destroy keys");

    // Registry only: asks for confirmation (none without a terminal and --yes), keys stay.
    let registry = bed.registry_text();
    bed.run(&["keyset", "remove", "Keep keys"])
        .fails(2, "pass --yes");
    assert_eq!(bed.registry_text(), registry);
    let run = bed.run(&["keyset", "remove", "keep KEYS", "--yes"]).ok();
    assert!(run.stdout.contains("stay on token"), "{}", run.stdout);
    assert_eq!(listed_names(&bed), ["Destroy keys"]);
    assert_eq!(objects_with_id(&bed, &keep).len(), 2);
    bed.run(&["keyset", "show", "Keep keys"])
        .fails(1, "no keyset named");

    // Destroying without --yes and without a terminal: usage error, nothing changed.
    let registry = bed.registry_text();
    bed.run_env(
        &["keyset", "remove", "Destroy keys", "--destroy-keys"],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .fails(2, "--yes");
    assert_eq!(bed.registry_text(), registry);
    assert_eq!(objects_with_id(&bed, &destroy).len(), 2);

    // With a wrong password: refused, nothing changed.
    bed.run_env(
        &[
            "keyset",
            "remove",
            "Destroy keys",
            "--destroy-keys",
            "--yes",
        ],
        &[("KEYWARD_PIN", "wrong-pin")],
    )
    .fails(1, "wrong user PIN");
    assert_eq!(bed.registry_text(), registry);
    assert_eq!(objects_with_id(&bed, &destroy).len(), 2);

    // With --yes: the keys are destroyed and the entry removed.
    let run = bed
        .run_env(
            &[
                "keyset",
                "remove",
                "Destroy keys",
                "--destroy-keys",
                "--yes",
            ],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
    assert!(run.stdout.contains("destroyed 2 objects"), "{}", run.stdout);
    assert!(objects_with_id(&bed, &destroy).is_empty());
    assert_eq!(
        objects_with_id(&bed, &keep).len(),
        2,
        "other keys untouched"
    );
    assert!(listed_names(&bed).is_empty());
    bed.run(&["keyset", "remove", "Destroy keys"])
        .fails(1, "no keyset named");
}

// ---- csr ---------------------------------------------------------------------------------

#[test]
fn csr_is_accepted_by_openssl_with_the_subject_and_key() {
    let (bed, _) = bed_with_card();
    bed.create_keyset("RSA", CARD, USER_PIN, &[]).ok();
    bed.create_keyset("EC", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let subject = "CN=Alice Smith,O=Example Corp,C=DE";
    let pin = [("KEYWARD_PIN", USER_PIN)];
    for name in ["RSA", "EC"] {
        let file = sig_path(&bed, &format!("{name}.csr"));
        bed.run_env(
            &["keyset", "csr", name, "--subject", subject, "-o", &file],
            &pin,
        )
        .ok();
        let pem = std::fs::read_to_string(&file).expect("csr written");
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{pem}"
        );

        let checked = bed
            .run_tool(
                "openssl",
                "openssl",
                &["req", "-verify", "-in", &file, "-noout"],
            )
            .ok();
        assert!(
            format!("{}{}", checked.stdout, checked.stderr).contains("verify OK"),
            "{checked:?}"
        );
        let subj = bed
            .run_tool(
                "openssl",
                "openssl",
                &[
                    "req", "-in", &file, "-noout", "-subject", "-nameopt", "RFC2253",
                ],
            )
            .ok();
        assert_eq!(subj.stdout.trim(), format!("subject={subject}"));
        let key = bed
            .run_tool(
                "openssl",
                "openssl",
                &["req", "-in", &file, "-noout", "-pubkey"],
            )
            .ok();
        assert_eq!(
            key.stdout,
            bed.run(&["keyset", "pubkey", name]).ok().stdout,
            "the request carries the keyset's key"
        );
    }
    // Without -o: PEM on stdout (RSA PKCS#1 v1.5 is deterministic, so it is the same request).
    let out = bed
        .run_env(&["keyset", "csr", "RSA", "--subject", subject], &pin)
        .ok();
    assert_eq!(
        out.stdout,
        std::fs::read_to_string(bed.path("RSA.csr")).unwrap()
    );

    bed.run_env(
        &["keyset", "csr", "RSA", "--subject", "no equals sign"],
        &pin,
    )
    .fails(1, "not a distinguished name");
    let file = sig_path(&bed, "wrong.csr");
    bed.run_env(
        &["keyset", "csr", "RSA", "--subject", subject, "-o", &file],
        &[("KEYWARD_PIN", "wrong-pin")],
    )
    .fails(1, "wrong user PIN");
    assert!(!bed.path("wrong.csr").exists());
}
