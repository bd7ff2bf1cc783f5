//! The Exchange 5.5 Key Management story end to end on SoftHSM2, with the real `keyward`
//! binary, OpenSSL and OpenSC: provision, enroll (local and request/reply), forget the
//! password, recover, re-enroll under a new name with the old encryption keys back, revoke,
//! CRL, audit log; and the user-side refusals (tampered reply, wrong token, local enrollment
//! refused), each leaving the card and the registry as they were.
//! RSA key generation is the slow part: each test shares one bed across its assertions.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use util::{p11_object_set, pem_blocks, AuthorityBed, Run, AUTHORITY_PIN, SO_PIN, USER_PIN};

const ALICE_CARD: &str = "alice-card";
const BOB_CARD: &str = "bob-card";

fn openssl(bed: &AuthorityBed, args: &[&str]) -> Run {
    bed.run_tool("openssl", "openssl", args)
}

/// Output of a tool, stdout and stderr together (OpenSSL says "verify OK" on either).
fn both(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

/// One keyset's table in `$KEYWARD_HOME/keysets.toml`.
fn registry_keyset(bed: &AuthorityBed, name: &str) -> toml::Table {
    let text = bed.registry_text().expect("keysets.toml");
    let table: toml::Table = toml::from_str(&text).expect("keysets.toml parses");
    table["keyset"]
        .as_array()
        .expect("keyset array")
        .iter()
        .filter_map(|k| k.as_table())
        .find(|k| k["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no keyset {name} in keysets.toml"))
        .clone()
}

/// An encryption key of a keyset as the registry records it.
#[derive(Debug, Clone)]
struct EncKey {
    id: String,
    serial: String,
    pem: String,
    current: bool,
}

/// The signing certificate (PEM) and the encryption keys the registry records for a keyset.
fn enrollment_of(bed: &AuthorityBed, name: &str) -> (String, Vec<EncKey>) {
    let k = registry_keyset(bed, name);
    let e = k["enrollment"].as_table().expect("enrollment table");
    let signing = e["signing_certificate"]
        .as_str()
        .expect("signing certificate")
        .to_string();
    let keys = e["encryption_key"]
        .as_array()
        .expect("encryption keys")
        .iter()
        .map(|v| {
            let t = v.as_table().expect("encryption key table");
            EncKey {
                id: t["id"].as_str().unwrap().to_string(),
                serial: t["cert_serial"].as_str().unwrap().to_string(),
                pem: t["certificate"].as_str().unwrap().to_string(),
                current: t["current"].as_bool().unwrap(),
            }
        })
        .collect();
    (signing, keys)
}

/// `openssl x509 -noout -ext keyUsage,extendedKeyUsage,subjectAltName` of a PEM file.
fn extensions(bed: &AuthorityBed, file: &str) -> String {
    openssl(
        bed,
        &[
            "x509",
            "-in",
            file,
            "-noout",
            "-ext",
            "keyUsage,extendedKeyUsage,subjectAltName",
        ],
    )
    .ok()
    .stdout
}

/// `openssl verify -CAfile CA [-crl_check -CRLfile CRL] FILE`.
fn verify(bed: &AuthorityBed, file: &str, crl: Option<&str>) -> Run {
    let mut args = vec!["verify", "-CAfile", &bed.ca];
    if let Some(crl) = crl {
        args.extend_from_slice(&["-crl_check", "-CRLfile", crl]);
    }
    args.push(file);
    openssl(bed, &args)
}

/// A temporary key in the two forms someone could leak it: as shown, and without dashes.
fn key_forms(key: &str) -> [String; 2] {
    [key.to_string(), key.replace('-', "")]
}

#[track_caller]
fn assert_no_key_in(text: &str, keys: &[&str], what: &str) {
    for key in keys {
        for form in key_forms(key) {
            assert!(!text.contains(&form), "{what} contains a temporary key");
        }
    }
}

fn module_arg() -> String {
    util::module().to_string_lossy().into_owned()
}

#[test]
fn the_whole_story_enroll_forget_the_password_recover_reenroll_revoke() {
    let bed = AuthorityBed::new(&[ALICE_CARD, BOB_CARD], "CN=Example Authority,O=Example");
    let bundle = std::fs::read_to_string(&bed.bundle).unwrap();
    assert_eq!(
        pem_blocks(&bundle).len(),
        2,
        "CA + exchange cert:\n{bundle}"
    );
    assert!(
        bundle
            .lines()
            .any(|l| l == "# keyward-exchange-oaep: sha1" || l == "# keyward-exchange-oaep: sha256"),
        "{bundle}"
    );
    let ca_text = openssl(
        &bed,
        &[
            "x509",
            "-in",
            &bed.ca,
            "-noout",
            "-subject",
            "-ext",
            "basicConstraints,keyUsage",
        ],
    )
    .ok()
    .stdout;
    assert!(ca_text.contains("Example Authority"), "{ca_text}");
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
    assert!(
        ca_text.contains("Certificate Sign") && ca_text.contains("CRL Sign"),
        "{ca_text}"
    );

    // Provision: two users with e-mail addresses; the temporary keys are shown once.
    let add = bed
        .authority("add-user", &["alice", "--email", "alice@example.org"])
        .ok();
    assert!(add.stderr.contains("shown once"), "{}", add.stderr);
    let alice_key = add.stdout.trim().to_string();
    let groups: Vec<&str> = alice_key.split('-').collect();
    assert_eq!(groups.len(), 7, "{alice_key}");
    assert!(
        groups[..6].iter().all(|g| g.len() == 4) && groups[6].len() == 1,
        "{alice_key}"
    );
    let bob_key = bed.add_user("bob", &["--email", "bob@example.org"]);
    let users = bed.users();
    assert_eq!(users.as_array().unwrap().len(), 2);
    for u in users.as_array().unwrap() {
        assert_eq!(u["state"], "pending", "{u}");
        assert_eq!(u["temporary_key"]["attempts"], 0, "{u}");
        assert_eq!(u["temporary_key"]["spent"], false, "{u}");
    }
    let users_toml = String::from_utf8(bed.state_file("users.toml")).unwrap();
    assert!(
        users_toml.contains("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{users_toml}"
    );
    assert_no_key_in(&users_toml, &[&alice_key, &bob_key], "users.toml");

    // Alice: one command with the local authority, security high, and a new password.
    bed.enroll_local(
        "alice",
        "Alice 2026",
        ALICE_CARD,
        &alice_key,
        &["--security", "high"],
        &[("KEYWARD_NEW_PIN", "alice-pin-2")],
    )
    .ok();

    // Bob: a request file, processed by the authority, completed with the reply.
    bed.request("bob", "Bob 2026", BOB_CARD, &bob_key, "bob.req")
        .ok();
    let request = std::fs::read_to_string(bed.path("bob.req")).unwrap();
    assert!(
        request.starts_with("# keyward enrollment request\n"),
        "{request}"
    );
    assert!(request.contains("\n[signature]\n"), "{request}");
    assert_no_key_in(&request, &[&bob_key], "the request");
    assert!(bed
        .keyset_states()
        .contains(&("Bob 2026".into(), "pending".into())));
    bed.process("bob.req", "bob.reply").ok();
    bed.complete_env("bob.reply", USER_PIN, &[]).ok();

    let alice = bed.user("alice");
    let bob = bed.user("bob");
    for (u, keyset) in [(&alice, "Alice 2026"), (&bob, "Bob 2026")] {
        assert_eq!(u["state"], "active", "{u}");
        assert_eq!(u["keysets"], serde_json::json!([keyset]), "{u}");
        assert_eq!(u["certificates"].as_array().unwrap().len(), 2, "{u}");
        assert_eq!(u["archived_keys"], 1, "{u}");
        assert_eq!(u["temporary_key"]["spent"], true, "{u}");
    }
    assert_eq!(
        bed.keyset_states(),
        vec![
            ("Alice 2026".to_string(), "active".to_string()),
            ("Bob 2026".to_string(), "active".to_string())
        ]
    );

    // The certificates: CA-issued, the right key usages and the e-mail address; the signing
    // certificate is for the keyset's own key.
    let mut current: Vec<String> = Vec::new();
    for (name, email) in [
        ("Alice 2026", "alice@example.org"),
        ("Bob 2026", "bob@example.org"),
    ] {
        let (signing, keys) = enrollment_of(&bed, name);
        assert_eq!(keys.len(), 1);
        assert!(keys[0].current);
        let file = name.replace(' ', "-");
        let sig_file = bed.file(&format!("{file}-sig.pem"), signing.as_bytes());
        let enc_file = bed.file(&format!("{file}-enc.pem"), keys[0].pem.as_bytes());
        for f in [&sig_file, &enc_file] {
            let run = verify(&bed, f, None).ok();
            assert!(run.stdout.contains(": OK"), "{}", run.stdout);
        }
        let sig_ext = extensions(&bed, &sig_file);
        assert!(sig_ext.contains("Digital Signature"), "{sig_ext}");
        assert!(!sig_ext.contains("Key Encipherment"), "{sig_ext}");
        assert!(sig_ext.contains("E-mail Protection"), "{sig_ext}");
        assert!(sig_ext.contains(&format!("email:{email}")), "{sig_ext}");
        let enc_ext = extensions(&bed, &enc_file);
        assert!(enc_ext.contains("Key Encipherment"), "{enc_ext}");
        assert!(!enc_ext.contains("Digital Signature"), "{enc_ext}");
        assert!(enc_ext.contains(&format!("email:{email}")), "{enc_ext}");
        let cert_key = openssl(&bed, &["x509", "-in", &sig_file, "-noout", "-pubkey"])
            .ok()
            .stdout;
        let keyset_key = bed.run(&["keyset", "pubkey", name]).ok().stdout;
        assert_eq!(
            cert_key.trim(),
            keyset_key.trim(),
            "{name}: signing certificate for another key"
        );
        current.push(sig_file);
        current.push(enc_file);
    }

    // Bob's card: signing key + certificate and encryption key + public key + certificate,
    // each sharing a CKA_ID; the encryption key sensitive and not extractable; no transport key.
    let (_, bob_keys) = enrollment_of(&bed, "Bob 2026");
    let bob_signing_id = registry_keyset(&bed, "Bob 2026")["signing_id"]
        .as_str()
        .unwrap()
        .to_string();
    let objects = bed.token_objects(BOB_CARD, USER_PIN);
    assert_eq!(objects.len(), 6, "{objects:#?}");
    assert!(
        !objects.iter().any(|o| o.get("label").contains("transport")),
        "transport key left behind: {objects:#?}"
    );
    for id in [&bob_signing_id, &bob_keys[0].id] {
        let with_id: Vec<_> = objects
            .iter()
            .filter(|o| o.get("ID") == id.as_str())
            .collect();
        assert_eq!(
            with_id.len(),
            3,
            "key, public key and certificate share {id}: {objects:#?}"
        );
        assert!(with_id
            .iter()
            .any(|o| o.header.starts_with("Certificate Object")));
        assert!(with_id.iter().any(|o| o.is_public_key()));
    }
    let enc_private = objects
        .iter()
        .find(|o| o.is_private_key() && o.get("ID") == bob_keys[0].id)
        .expect("encryption private key");
    let access = enc_private.items("Access");
    assert!(access.contains(&"sensitive".to_string()), "{access:?}");
    assert!(!access.contains(&"extractable".to_string()), "{access:?}");
    assert!(enc_private.items("Usage").contains(&"decrypt".to_string()));
    // Alice chose security high and a new password: her keys always authenticate.
    let alice_objects = bed.token_objects(ALICE_CARD, "alice-pin-2");
    assert_eq!(alice_objects.len(), 6, "{alice_objects:#?}");
    for o in alice_objects.iter().filter(|o| o.is_private_key()) {
        assert!(
            o.items("Access")
                .contains(&"always authenticate".to_string()),
            "{o:?}"
        );
        assert!(
            !o.items("Access").contains(&"extractable".to_string()),
            "{o:?}"
        );
    }
    assert_ne!(
        bed.pkcs11_tool_login(ALICE_CARD, USER_PIN).code,
        0,
        "the old password still works"
    );

    // Bob forgets his password: the authority revokes his certificates and issues a new key.
    let bob_key2 = bed
        .authority("recover", &["bob"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_ne!(bob_key2, bob_key);
    let bob = bed.user("bob");
    assert_eq!(bob["state"], "recovering", "{bob}");
    assert!(
        bob["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked"]["reason"] == "superseded"),
        "{bob}"
    );

    // The old keyset name is refused by the authority too (from another keyward home, in any
    // case), without counting a try.
    let other_home = bed.path("other-home").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "--home",
            &other_home,
            "enroll",
            "--user",
            "bob",
            "--keyset",
            "BOB 2026",
            "--token",
            BOB_CARD,
            "--authority-cert",
            &bed.bundle,
            "-o",
            &bed.path("old-name.req").to_string_lossy(),
        ],
        &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", &bob_key2)],
    )
    .ok();
    bed.process("old-name.req", "old-name.reply")
        .fails(1, "already used keyset name");
    assert!(!bed.path("old-name.reply").exists());
    let bob = bed.user("bob");
    assert_eq!(bob["state"], "recovering", "{bob}");
    assert_eq!(bob["temporary_key"]["attempts"], 0, "{bob}");

    // His card is re-initialised; the old name is refused, a new name enrolls and gets both
    // encryption keys back, and he sets a new password.
    bed.run_env(
        &[
            "token", "init", "--token", BOB_CARD, "--label", BOB_CARD, "--force",
        ],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .ok();
    let registry_before = bed.registry_text();
    bed.request("bob", "Bob 2026", BOB_CARD, &bob_key2, "again.req")
        .fails(1, "already exists");
    assert!(!bed.path("again.req").exists());
    assert_eq!(bed.registry_text(), registry_before);
    assert!(bed.token_objects(BOB_CARD, USER_PIN).is_empty());

    bed.request("bob", "Bob 2027", BOB_CARD, &bob_key2, "bob2.req")
        .ok();
    let processed = bed.process("bob2.req", "bob2.reply").ok();
    assert!(
        processed.stdout.contains("+1 archived"),
        "{}",
        processed.stdout
    );
    let done = bed
        .complete_env("bob2.reply", USER_PIN, &[("KEYWARD_NEW_PIN", "bob-pin-2")])
        .ok();
    assert!(
        done.stdout.contains("\"Bob 2026\" is now retired"),
        "{}",
        done.stdout
    );
    assert_eq!(
        bed.keyset_states(),
        vec![
            ("Alice 2026".to_string(), "active".to_string()),
            ("Bob 2026".to_string(), "retired".to_string()),
            ("Bob 2027".to_string(), "active".to_string())
        ]
    );
    let (bob2_signing, bob2_keys) = enrollment_of(&bed, "Bob 2027");
    assert_eq!(bob2_keys.len(), 2, "{bob2_keys:?}");
    let old = bob2_keys
        .iter()
        .find(|k| !k.current)
        .expect("the archived key");
    assert_eq!(
        old.serial, bob_keys[0].serial,
        "the archived key is Bob's old one"
    );
    let new = bob2_keys.iter().find(|k| k.current).expect("the new key");
    assert_ne!(new.serial, old.serial);
    let objects = bed.token_objects(BOB_CARD, "bob-pin-2");
    let decrypting: Vec<_> = objects
        .iter()
        .filter(|o| o.is_private_key() && o.items("Usage").contains(&"decrypt".to_string()))
        .collect();
    assert_eq!(decrypting.len(), 2, "{objects:#?}");
    assert!(!objects.iter().any(|o| o.get("label").contains("transport")));
    assert_ne!(
        bed.pkcs11_tool_login(BOB_CARD, USER_PIN).code,
        0,
        "the old password still works"
    );
    let bob = bed.user("bob");
    assert_eq!(bob["state"], "active", "{bob}");
    assert_eq!(bob["keysets"], serde_json::json!(["Bob 2026", "Bob 2027"]));
    assert_eq!(bob["archived_keys"], 2);
    assert_eq!(bob["certificates"].as_array().unwrap().len(), 4);

    // Mail encrypted to Bob's old certificate still opens, inside his new card.
    let old_cert = bed.file("bob-old-enc.pem", old.pem.as_bytes());
    let msg = bed.file("old-mail.txt", b"the quarterly numbers\n");
    let ct = bed.path("old-mail.bin").to_string_lossy().into_owned();
    openssl(
        &bed,
        &[
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            &old_cert,
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-in",
            &msg,
            "-out",
            &ct,
        ],
    )
    .ok();
    let plain = bed
        .run_tool(
            "pkcs11-tool",
            "opensc",
            &[
                "--module",
                &module_arg(),
                "--token-label",
                BOB_CARD,
                "--login",
                "--pin",
                "bob-pin-2",
                "--decrypt",
                "--id",
                &old.id,
                "-m",
                "RSA-PKCS-OAEP",
                "--hash-algorithm",
                "SHA-1",
                "--mgf",
                "MGF1-SHA1",
                "-i",
                &ct,
            ],
        )
        .ok();
    assert_eq!(plain.stdout, "the quarterly numbers\n");

    // Revocation and the CRL: OpenSSL checks its signature, rejects the revoked certificates
    // (Alice's, Bob's old ones) and accepts Bob's new ones.
    bed.authority("revoke", &["alice", "--reason", "keyCompromise"])
        .ok();
    assert_eq!(bed.user("alice")["state"], "revoked");
    let crl = bed.path("crl.pem").to_string_lossy().into_owned();
    bed.authority("crl", &["-o", &crl, "--valid-for", "0s"])
        .fails(2, "out of range");
    bed.authority("crl", &["-o", &crl, "--valid-for", "soon"])
        .fails(2, "7d");
    assert!(!Path::new(&crl).exists());
    // The authority's PIN: --pin-file / KEYWARD_PIN, or the names `enroll --authority` uses.
    let crl_args = ["authority", "crl", "--dir", &bed.dir, "-o", &crl];
    bed.bed
        .run_env(&crl_args, &[])
        .fails(1, "no authority token PIN given");
    bed.bed
        .run_env(&crl_args, &[("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN)])
        .ok();
    bed.authority("crl", &["-o", &crl, "--valid-for", "36h"])
        .ok();
    let dates = openssl(
        &bed,
        &["crl", "-in", &crl, "-noout", "-lastupdate", "-nextupdate"],
    )
    .ok()
    .stdout;
    let date = |key: &str| {
        let line = dates.lines().find(|l| l.starts_with(key)).expect(key);
        let out = Command::new("date")
            .args(["-d", &line[key.len()..], "+%s"])
            .output()
            .expect("date");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .expect("epoch")
    };
    assert_eq!(
        date("nextUpdate=") - date("lastUpdate="),
        36 * 3600,
        "{dates}"
    );
    let checked = openssl(&bed, &["crl", "-in", &crl, "-CAfile", &bed.ca, "-noout"]).ok();
    assert!(both(&checked).contains("verify OK"), "{}", both(&checked));
    let text = openssl(&bed, &["crl", "-in", &crl, "-noout", "-text"])
        .ok()
        .stdout;
    assert!(
        text.contains("Key Compromise") && text.contains("Superseded"),
        "{text}"
    );
    for f in &current {
        let run = verify(&bed, f, Some(&crl));
        assert_ne!(run.code, 0, "{f} is revoked but verifies:\n{}", both(&run));
        assert!(both(&run).contains("certificate revoked"), "{}", both(&run));
    }
    let bob2_sig = bed.file("bob2-sig.pem", bob2_signing.as_bytes());
    let bob2_enc = bed.file("bob2-enc.pem", new.pem.as_bytes());
    for f in [&bob2_sig, &bob2_enc] {
        let run = verify(&bed, f, Some(&crl)).ok();
        assert!(run.stdout.contains(": OK"), "{}", run.stdout);
    }

    // The audit log: every action, chained, no secret anywhere.
    let verified = bed.authority("log", &["--verify"]).ok();
    assert!(
        verified.stdout.contains("audit log OK"),
        "{}",
        verified.stdout
    );
    let entries = bed
        .run(&["--json", "authority", "log", "--dir", &bed.dir])
        .ok()
        .json();
    let actions: Vec<(String, String)> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |a: &str, o: &str| actions.iter().filter(|(x, y)| x == a && y == o).count();
    assert_eq!(count("init", "ok"), 1, "{actions:?}");
    assert_eq!(count("add-user", "ok"), 2, "{actions:?}");
    assert_eq!(count("process", "ok"), 3, "{actions:?}");
    assert_eq!(count("process", "refused"), 1, "{actions:?}");
    assert_eq!(count("recover", "ok"), 1, "{actions:?}");
    assert_eq!(count("revoke", "ok"), 1, "{actions:?}");
    assert_eq!(count("crl", "ok"), 2, "{actions:?}");
    let keys = [alice_key.as_str(), bob_key.as_str(), bob_key2.as_str()];
    let log = String::from_utf8(bed.state_file("audit.log")).unwrap();
    assert_no_key_in(&log, &keys, "the audit log");
    assert!(!log.contains(USER_PIN) && !log.contains(AUTHORITY_PIN));
    for f in ["users.toml", "authority.toml"] {
        assert_no_key_in(&String::from_utf8(bed.state_file(f)).unwrap(), &keys, f);
    }
    assert_no_key_in(&bed.registry_text().unwrap(), &keys, "keysets.toml");
    for f in ["bob.reply", "bob2.req", "bob2.reply"] {
        let text = std::fs::read_to_string(bed.path(f)).unwrap();
        assert_no_key_in(&text, &keys, f);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{f} holds a plaintext private key"
        );
    }
    let mut files = BTreeSet::new();
    for f in bed.state_files() {
        let bytes = bed.state_file(&f);
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "{f} holds a plaintext private key"
        );
        files.insert(f);
    }
    assert_eq!(
        files
            .iter()
            .filter(|f| f.starts_with("archive/bob/"))
            .count(),
        2,
        "{files:?}"
    );
}

/// An authority with users carol and dave, each with a processed request (replies
/// `carol.reply`, `dave.reply`) not yet completed.
fn bed_with_replies() -> AuthorityBed {
    let bed = AuthorityBed::new(&["carol-card", "dave-card"], "CN=Reply Test CA");
    for (user, card) in [("carol", "carol-card"), ("dave", "dave-card")] {
        let key = bed.add_user(user, &[]);
        bed.request(
            user,
            &format!("{user} 1"),
            card,
            &key,
            &format!("{user}.req"),
        )
        .ok();
        bed.process(&format!("{user}.req"), &format!("{user}.reply"))
            .ok();
    }
    bed
}

/// Replaces the first occurrence of `from` in the text file `src` (in the bed's directory)
/// and writes the result to `dst`.
fn edited(bed: &AuthorityBed, src: &str, dst: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(bed.path(src)).unwrap();
    assert!(text.contains(from), "{src} lacks {from:?}");
    bed.file(dst, text.replacen(from, to, 1).as_bytes())
}

/// Changes one character of the value of `key = "…"` in the text file `src`.
fn flip_in_field(bed: &AuthorityBed, src: &str, dst: &str, key: &str) -> String {
    let text = std::fs::read_to_string(bed.path(src)).unwrap();
    let start = text.find(&format!("\n{key} = \"")).unwrap() + key.len() + 6;
    let at = start + 10;
    let c = text.as_bytes()[at];
    let mut bytes = text.into_bytes();
    bytes[at] = if c == b'A' { b'B' } else { b'A' };
    bed.file(dst, &bytes)
}

#[test]
fn a_tampered_reply_or_one_completed_on_the_wrong_token_is_refused_and_stores_nothing() {
    let bed = bed_with_replies();
    let carol_objects = p11_object_set(&bed.token_objects("carol-card", USER_PIN));
    assert_eq!(
        carol_objects.len(),
        4,
        "signing pair + transport pair: {carol_objects:?}"
    );
    let registry = bed.registry_text();
    let unchanged = |what: &str| {
        assert_eq!(
            p11_object_set(&bed.token_objects("carol-card", USER_PIN)),
            carol_objects,
            "{what}: carol's card changed"
        );
        assert_eq!(
            bed.registry_text(),
            registry,
            "{what}: the registry changed"
        );
    };

    let carol = std::fs::read_to_string(bed.path("carol.reply")).unwrap();
    let dave = std::fs::read_to_string(bed.path("dave.reply")).unwrap();
    // A multi-line string field, `key = """` to the closing `"""`.
    let field = |text: &str, key: &str| -> String {
        let head = format!("\n{key} = \"\"\"\n");
        let body = text.find(&head).unwrap() + head.len();
        let end = body + text[body..].find("\"\"\"\n").unwrap() + 4;
        text[body - head.len() + 1..end].to_string()
    };
    let spliced = carol.replacen(
        &field(&carol, "signing_certificate"),
        &field(&dave, "signing_certificate"),
        1,
    );
    assert_ne!(spliced, carol);
    let cases: Vec<(String, &str)> = vec![
        (
            flip_in_field(&bed, "carol.reply", "t1.reply", "wrapped_aes_key"),
            "signature does not verify",
        ),
        (
            flip_in_field(&bed, "carol.reply", "t2.reply", "wrapped_key"),
            "signature does not verify",
        ),
        (
            edited(
                &bed,
                "carol.reply",
                "t3.reply",
                "current = true",
                "current = false",
            ),
            "signature does not verify",
        ),
        (
            flip_in_field(&bed, "carol.reply", "t4.reply", "value"),
            "signature does not verify",
        ),
        (
            bed.file("t5.reply", spliced.as_bytes()),
            "signature does not verify",
        ),
        (
            bed.file("t6.reply", &carol.as_bytes()[..carol.len() / 2]),
            "no [signature] table",
        ),
        (
            bed.path("carol.req").to_string_lossy().into_owned(),
            "format is \"keyward-enrollment-request\"",
        ),
    ];
    for (file, needle) in &cases {
        // A signature that does not verify was checked and found bad (3); a file that is not
        // a reply is an error (1).
        let code = if needle.contains("signature does not verify") {
            3
        } else {
            1
        };
        bed.run_env(
            &["enroll", "--complete", file],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .fails(code, needle);
        unchanged(file);
    }

    // A new password the card cannot take is refused before anything is stored.
    bed.complete_env("carol.reply", USER_PIN, &[("KEYWARD_NEW_PIN", "ab")])
        .fails(1, "must be 4 to 255 characters");
    unchanged("a new password too short");

    // The registry cannot be written after everything went onto the card: it is taken back.
    bed.complete_env(
        "carol.reply",
        USER_PIN,
        &[("KEYWARD_FAULT", "registry-save")],
    )
    .fails(1, "injected fault");
    unchanged("registry-save fault");

    // Another keyward home has no pending request for it.
    let other = bed.path("elsewhere").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "--home",
            &other,
            "enroll",
            "--complete",
            &bed.path("carol.reply").to_string_lossy(),
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .fails(1, "no pending enrollment request");
    unchanged("another home");

    // Dave's card re-initialised under the same label: the transport key is gone.
    bed.run_env(
        &[
            "token",
            "init",
            "--token",
            "dave-card",
            "--label",
            "dave-card",
            "--force",
        ],
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    )
    .ok();
    bed.complete_env("dave.reply", USER_PIN, &[])
        .fails(1, "does not hold its enrollment transport key");
    assert!(bed.token_objects("dave-card", USER_PIN).is_empty());
    assert_eq!(bed.registry_text(), registry);

    // Dave's card replaced by another with the same label: a different serial.
    bed.run_tool(
        "softhsm2-util",
        "softhsm2",
        &["--delete-token", "--token", "dave-card"],
    )
    .ok();
    bed.init_token("dave-card", USER_PIN);
    bed.complete_env("dave.reply", USER_PIN, &[])
        .fails(1, "swapped");
    assert!(bed.token_objects("dave-card", USER_PIN).is_empty());
    assert_eq!(bed.registry_text(), registry);

    // After all that, the genuine reply completes on the right card, once.
    bed.complete_env("carol.reply", USER_PIN, &[]).ok();
    assert!(bed
        .keyset_states()
        .contains(&("carol 1".into(), "active".into())));
    let objects = bed.token_objects("carol-card", USER_PIN);
    assert_eq!(objects.len(), 6, "{objects:#?}");
    let registry = bed.registry_text();
    bed.complete_env("carol.reply", USER_PIN, &[])
        .fails(1, "no pending enrollment request");
    assert_eq!(bed.token_objects("carol-card", USER_PIN).len(), 6);
    assert_eq!(bed.registry_text(), registry);
}

#[test]
fn a_refused_local_enrollment_leaves_the_card_the_registry_and_the_authority_as_they_were() {
    let bed = AuthorityBed::new(&["erin-card"], "CN=Local Test CA");
    let erin_key = bed.add_user("erin", &["--email", "erin@example.org"]);
    let frank_key = bed.add_user("frank", &[]);
    let users_before = bed.state_file("users.toml");
    let log_before = bed.state_file("audit.log");
    let objects_before = p11_object_set(&bed.token_objects("erin-card", USER_PIN));
    assert!(objects_before.is_empty());

    // A typo in the temporary key (a data character, then the check character), and a new
    // password the card cannot take, are caught before any token or file is touched.
    let chars: Vec<char> = erin_key.chars().collect();
    let typo = |at: usize| -> String {
        let mut c = chars.clone();
        c[at] = if c[at] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect()
    };
    let tokens_before = bed.token_snapshot();
    let short_pin = [("KEYWARD_NEW_PIN", "ab")];
    for (key, env, needle) in [
        (typo(5), &[][..], "typo"),
        (typo(chars.len() - 1), &[][..], "typo"),
        // A new password the card cannot take: refused before the authority spends the key.
        (
            erin_key.clone(),
            &short_pin[..],
            "must be 4 to 255 characters",
        ),
    ] {
        bed.enroll_local("erin", "Erin 1", "erin-card", &key, &[], env)
            .fails(1, needle);
        assert!(bed.token_snapshot() == tokens_before, "a token was touched");
        assert_eq!(bed.state_file("users.toml"), users_before);
        assert_eq!(bed.state_file("audit.log"), log_before);
        assert_eq!(bed.registry_text(), None);
    }

    // Each refusal by the authority removes the pending keyset from the card and the
    // registry; the authority's users file is unchanged except for counted wrong tries.
    let keysets_unchanged = |what: &str| {
        assert_eq!(
            p11_object_set(&bed.token_objects("erin-card", USER_PIN)),
            objects_before,
            "{what}: erin's card changed"
        );
        assert!(
            bed.keyset_states().is_empty(),
            "{what}: a keyset was left behind"
        );
    };
    let log_grew = |before: &[u8]| -> Vec<u8> {
        let now = bed.state_file("audit.log");
        assert!(
            now.len() > before.len() && now.starts_with(before),
            "the audit log was not appended to"
        );
        now
    };

    bed.enroll_local(
        "erin",
        "Erin 1",
        "erin-card",
        &erin_key,
        &[],
        &[("KEYWARD_AUTHORITY_PIN", "not-the-pin")],
    )
    .fails(1, "wrong user PIN");
    keysets_unchanged("wrong authority PIN");
    assert_eq!(bed.state_file("users.toml"), users_before);
    // Not logged: an entry needs a checkpoint signed on the token, which a wrong PIN cannot
    // open (the token itself counts the wrong PIN).
    assert_eq!(bed.state_file("audit.log"), log_before);
    let log = log_before.clone();

    bed.enroll_local("nobody", "Erin 1", "erin-card", &erin_key, &[], &[])
        .fails(1, "no user \"nobody\"");
    keysets_unchanged("unknown user");
    assert_eq!(bed.state_file("users.toml"), users_before);
    let log = log_grew(&log);

    bed.enroll_local("erin", "Erin 1", "erin-card", &frank_key, &[], &[])
        .fails(1, "wrong temporary key for user \"erin\": 4 tries left");
    keysets_unchanged("another user's key");
    let erin = bed.user("erin");
    assert_eq!(erin["temporary_key"]["attempts"], 1, "{erin}");
    assert_eq!(erin["state"], "pending");
    let frank = bed.user("frank");
    assert_eq!(frank["temporary_key"]["attempts"], 0, "{frank}");
    assert_eq!(frank["temporary_key"]["spent"], false, "{frank}");
    let users_after = String::from_utf8(bed.state_file("users.toml")).unwrap();
    assert_eq!(
        users_after.replacen("\"attempts\":1", "\"attempts\":0", 1),
        String::from_utf8(users_before.clone()).unwrap(),
        "only the attempt count may change"
    );
    let log = log_grew(&log);

    // The right key still works after a wrong try; then it is spent.
    let done = bed
        .enroll_local("erin", "Erin 1", "erin-card", &erin_key, &[], &[])
        .ok();
    assert!(
        done.stdout.contains("enrolled keyset \"Erin 1\""),
        "{}",
        done.stdout
    );
    assert_eq!(bed.user("erin")["state"], "active");
    let objects = p11_object_set(&bed.token_objects("erin-card", USER_PIN));
    assert_eq!(objects.len(), 6, "{objects:?}");
    let registry = bed.registry_text();
    let users = bed.state_file("users.toml");
    let log = log_grew(&log);

    // The same key again, under a new keyset name: refused, and nothing left behind.
    bed.enroll_local("erin", "Erin 2", "erin-card", &erin_key, &[], &[])
        .fails(1, "already enrolled");
    assert_eq!(
        p11_object_set(&bed.token_objects("erin-card", USER_PIN)),
        objects
    );
    assert_eq!(bed.registry_text(), registry);
    assert_eq!(bed.state_file("users.toml"), users);
    log_grew(&log);
    bed.authority("log", &["--verify"]).ok();
}
