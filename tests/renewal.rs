//! Renewal (`keyward enroll --renew NAME`) on SoftHSM2 with the real binary: locally and by
//! request file, the keyset keeping its name with a certificate history, the old encryption
//! key kept (old mail still reads), the old certificates superseded (or revoked with
//! `--revoke-old`); and every refusal — wrong password, another authority, a revoked or
//! expired certificate, a keyset never enrolled — leaving the token, the registry and the
//! authority's users as they were.

mod util;

use util::{p11_object_set, AuthorityBed, Run, AUTHORITY_PIN, USER_PIN};

const ALICE: &str = "Alice 1";
const BOB: &str = "Bob 1";
const ALICE_CARD: &str = "alice-card";
const BOB_CARD: &str = "bob-card";

/// One keyset's table in `keysets.toml`.
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

fn p(bed: &AuthorityBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

/// `enroll --renew NAME EXTRA…` with `pin` as the keyset password and the authority's PIN.
fn renew(bed: &AuthorityBed, name: &str, pin: &str, extra: &[&str]) -> Run {
    let mut args = vec!["enroll", "--renew", name];
    args.extend_from_slice(extra);
    bed.run_env(
        &args,
        &[
            ("KEYWARD_PIN", pin),
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
        ],
    )
}

fn send_to_self(bed: &AuthorityBed, keyset: &str, content: &[u8], out: &str) {
    let input = bed.file(&format!("{out}.txt"), content);
    bed.run_env(
        &[
            "send",
            "--keyset",
            keyset,
            "--to",
            keyset,
            &input,
            "-o",
            &p(bed, out),
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
}

fn read(bed: &AuthorityBed, keyset: &str, msg: &str) -> Vec<u8> {
    let out = format!("{msg}.out");
    bed.run_env(
        &[
            "read",
            "--keyset",
            keyset,
            &p(bed, msg),
            "-o",
            &p(bed, &out),
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    std::fs::read(bed.path(&out)).unwrap()
}

/// (serial, kind, superseded?, revocation reason) of a user's certificates.
fn certs(bed: &AuthorityBed, user: &str) -> Vec<(String, String, bool, Option<String>)> {
    bed.user(user)["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["serial"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
                c.get("superseded").is_some_and(|s| !s.is_null()),
                c["revoked"]["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Everything a refused renewal must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    registry: Option<String>,
    objects: std::collections::BTreeSet<(String, String, String)>,
    users: serde_json::Value,
}

fn snapshot(bed: &AuthorityBed, card: &str) -> Snapshot {
    Snapshot {
        registry: bed.registry_text(),
        objects: p11_object_set(&bed.token_objects(card, USER_PIN)),
        users: bed.users(),
    }
}

#[test]
fn renewal_keeps_the_name_the_history_and_old_mail() {
    let bed = AuthorityBed::new(&[ALICE_CARD, BOB_CARD], "CN=Renewal Authority,O=Example");
    let key = bed.add_user("alice", &["--email", "alice@example.org"]);
    bed.enroll_local("alice", ALICE, ALICE_CARD, &key, &[], &[])
        .ok();
    let before = registry_keyset(&bed, ALICE);
    let old_signing = before["enrollment"]["signing_certificate"]
        .as_str()
        .unwrap()
        .to_string();
    send_to_self(&bed, ALICE, b"old mail before the renewal\n", "old.p7m");
    let objects_before = bed.token_objects(ALICE_CARD, USER_PIN).len();

    // Local renewal: the password, the authority's PIN, no temporary key.
    let run = renew(&bed, ALICE, USER_PIN, &["--authority", &bed.dir]).ok();
    assert!(
        run.stdout.contains("renewed keyset \"Alice 1\""),
        "{}",
        run.stdout
    );
    assert_eq!(
        bed.keyset_states(),
        vec![(ALICE.to_string(), "active".to_string())]
    );
    let after = registry_keyset(&bed, ALICE);
    let e = after["enrollment"].as_table().unwrap();
    assert_ne!(
        after["signing_id"], before["signing_id"],
        "a new signing key"
    );
    assert_ne!(e["signing_certificate"].as_str().unwrap(), old_signing);
    let history = e["history"].as_array().expect("certificate history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["certificate"].as_str().unwrap(), old_signing);
    assert_eq!(history[0]["signing_id"], before["signing_id"]);
    assert!(e.get("renewal").is_none(), "no renewal left pending");
    let keys = e["encryption_key"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the old encryption key stays: {keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| k["current"].as_bool() == Some(true))
            .count(),
        1
    );
    assert_eq!(
        keys[0]["current"].as_bool(),
        Some(false),
        "the old one is not current"
    );
    // The token: a new signing key pair + certificate and a new encryption key pair +
    // certificate, the old ones kept, no transport key.
    let objects = bed.token_objects(ALICE_CARD, USER_PIN);
    assert_eq!(objects.len(), objects_before + 6, "{objects:#?}");
    assert!(!objects.iter().any(|o| o.get("label").contains("transport")));
    // The new signing certificate is for the keyset's (new) key.
    let pubkey = bed.run(&["keyset", "pubkey", ALICE]).ok().stdout;
    let cert_file = bed.file(
        "new-sig.pem",
        e["signing_certificate"].as_str().unwrap().as_bytes(),
    );
    let cert_key = bed
        .run_tool(
            "openssl",
            "openssl",
            &["x509", "-in", &cert_file, "-noout", "-pubkey"],
        )
        .ok()
        .stdout;
    assert_eq!(pubkey.trim(), cert_key.trim());

    // The authority: same keyset name, the old certificates superseded (not revoked), both
    // encryption keys archived, the renewal in the audit log.
    let alice = bed.user("alice");
    assert_eq!(alice["state"], "active");
    assert_eq!(alice["keysets"], serde_json::json!([ALICE]));
    assert_eq!(alice["archived_keys"], 2);
    let c = certs(&bed, "alice");
    assert_eq!(c.len(), 4);
    assert_eq!(c.iter().filter(|c| c.2).count(), 2, "{c:?}");
    assert!(c.iter().all(|c| c.3.is_none()), "nothing revoked: {c:?}");
    let log = bed.authority("log", &[]).ok().stdout;
    assert!(log.contains("renew"), "{log}");
    bed.authority("log", &["--verify"]).ok();
    let crl = p(&bed, "alice.crl");
    bed.authority("crl", &["-o", &crl]).ok();
    let listed = bed
        .run_tool(
            "openssl",
            "openssl",
            &["crl", "-in", &crl, "-noout", "-text"],
        )
        .ok()
        .stdout;
    assert!(listed.contains("No Revoked Certificates"), "{listed}");

    // Old mail reads; new mail goes to the new key and reads; the listing warns of nothing.
    assert_eq!(
        read(&bed, ALICE, "old.p7m"),
        b"old mail before the renewal\n"
    );
    send_to_self(&bed, ALICE, b"new mail\n", "new.p7m");
    assert_eq!(read(&bed, ALICE, "new.p7m"), b"new mail\n");
    let list = bed.run(&["--json", "keyset", "list"]).ok().json();
    assert!(list["keysets"][0]["expires"].is_string(), "{list}");
    assert!(list["keysets"][0]["expiry_warning"].is_null(), "{list}");
    let expiring = bed
        .bed
        .run(&[
            "--json",
            "authority",
            "users",
            "--dir",
            &bed.dir,
            "--expiring",
            "30d",
        ])
        .ok()
        .json();
    assert_eq!(expiring["users"], serde_json::json!([]));

    // Bob: by request file, with --revoke-old; completed with `enroll --complete`.
    let bob_key = bed.add_user("bob", &[]);
    bed.request("bob", BOB, BOB_CARD, &bob_key, "bob.req").ok();
    bed.process("bob.req", "bob.reply").ok();
    bed.complete_env("bob.reply", USER_PIN, &[]).ok();
    let run = renew(
        &bed,
        BOB,
        USER_PIN,
        &["-o", &p(&bed, "bob-renew.req"), "--revoke-old"],
    )
    .ok();
    assert!(run.stdout.contains("renewal request"), "{}", run.stdout);
    let req = std::fs::read_to_string(bed.path("bob-renew.req")).unwrap();
    assert!(req.contains("renews = "), "{req}");
    assert!(req.contains("encrypted_temp_key = \"\""), "{req}");
    // Pending meanwhile, still active and usable.
    assert!(registry_keyset(&bed, BOB)["enrollment"]
        .get("renewal")
        .is_some());
    assert!(bed
        .keyset_states()
        .contains(&(BOB.to_string(), "active".to_string())));
    let run = bed.process("bob-renew.req", "bob-renew.reply").ok();
    assert!(run.stdout.contains("+0 archived"), "{}", run.stdout);
    let done = bed.complete_env("bob-renew.reply", USER_PIN, &[]).ok();
    assert!(
        done.stdout.contains("renewed keyset \"Bob 1\""),
        "{}",
        done.stdout
    );
    let c = certs(&bed, "bob");
    assert_eq!(c.len(), 4);
    assert_eq!(
        c.iter()
            .filter(|c| c.3.as_deref() == Some("superseded"))
            .count(),
        2,
        "{c:?}"
    );
    bed.authority("crl", &["-o", &crl]).ok();
    let listed = bed
        .run_tool(
            "openssl",
            "openssl",
            &["crl", "-in", &crl, "-noout", "-text"],
        )
        .ok()
        .stdout;
    assert_eq!(listed.matches("Superseded").count(), 2, "{listed}");
    // The same reply again: nothing pending any more.
    bed.complete_env("bob-renew.reply", USER_PIN, &[])
        .fails(1, "no pending enrollment request matches");

    // Removing the keyset with its keys takes the replaced signing key too.
    let bob = registry_keyset(&bed, BOB);
    let ids = [
        bob["signing_id"].as_str().unwrap().to_string(),
        bob["enrollment"]["history"][0]["signing_id"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    bed.run_env(
        &["keyset", "remove", BOB, "--destroy-keys", "--yes"],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    let left = bed.token_objects(BOB_CARD, USER_PIN);
    for id in &ids {
        assert!(
            !left.iter().any(|o| o.get("ID") == id.as_str()),
            "signing key {id} left behind: {left:#?}"
        );
    }
}

#[test]
fn refused_renewals_change_nothing() {
    let bed = AuthorityBed::new(
        &[ALICE_CARD, "other-auth"],
        "CN=Renewal Authority,O=Example",
    );
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", ALICE, ALICE_CARD, &key, &[], &[])
        .ok();
    let start = snapshot(&bed, ALICE_CARD);

    // A wrong password.
    renew(&bed, ALICE, "not-the-password", &["--authority", &bed.dir]).fails(1, "wrong user PIN");
    assert_eq!(snapshot(&bed, ALICE_CARD), start);

    // Another authority: refused before the password is even asked for.
    let other = p(&bed, "other");
    bed.run_env(
        &[
            "authority",
            "init",
            "--dir",
            &other,
            "--token",
            "other-auth",
            "--name",
            "CN=Other",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    renew(&bed, ALICE, USER_PIN, &["--authority", &other])
        .fails(1, "not enrolled with this authority");
    assert_eq!(snapshot(&bed, ALICE_CARD), start);

    // A request taken to another authority: refused there, that authority's users unchanged.
    renew(&bed, ALICE, USER_PIN, &["-o", &p(&bed, "r.req")]).ok();
    let pending = snapshot(&bed, ALICE_CARD);
    bed.run_env(
        &[
            "authority",
            "process",
            "--dir",
            &other,
            &p(&bed, "r.req"),
            "-o",
            &p(&bed, "r.reply"),
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .fails(1, "not enrolled with this authority");
    assert!(!bed.path("r.reply").exists());
    // A second renewal while one is pending is refused.
    renew(&bed, ALICE, USER_PIN, &["--authority", &bed.dir])
        .fails(1, "is waiting for the authority's reply");
    assert_eq!(snapshot(&bed, ALICE_CARD), pending);
    // The pending one completes with the right authority.
    bed.process("r.req", "r.reply").ok();
    bed.complete_env("r.reply", USER_PIN, &[]).ok();
    let renewed = snapshot(&bed, ALICE_CARD);
    assert_ne!(renewed, start);

    // Revoked: the authority refuses, and the local renewal takes back its new keys.
    bed.authority("revoke", &["alice"]).ok();
    let revoked = snapshot(&bed, ALICE_CARD);
    renew(&bed, ALICE, USER_PIN, &["--authority", &bed.dir]).fails(1, "was revoked");
    assert_eq!(snapshot(&bed, ALICE_CARD), revoked);

    // A keyset never enrolled.
    bed.create_keyset("Local", ALICE_CARD, USER_PIN, &[]).ok();
    let local = snapshot(&bed, ALICE_CARD);
    renew(&bed, "Local", USER_PIN, &["--authority", &bed.dir])
        .fails(1, "not enrolled with an authority");
    assert_eq!(snapshot(&bed, ALICE_CARD), local);
}

#[test]
fn an_expired_certificate_cannot_renew_and_expiry_is_shown() {
    let bed = AuthorityBed::new(&[ALICE_CARD], "CN=Renewal Authority,O=Example");
    let key = bed.add_user("carol", &[]);
    bed.request("carol", "Carol 1", ALICE_CARD, &key, "c.req")
        .ok();
    let lifetime = 25;
    bed.authority(
        "process",
        &[
            &p(&bed, "c.req"),
            "-o",
            &p(&bed, "c.reply"),
            "--cert-lifetime",
            &format!("{lifetime}s"),
        ],
    )
    .ok();
    let enrolled_at = std::time::Instant::now();
    bed.complete_env("c.reply", USER_PIN, &[]).ok();

    // In the last 20% of its life (the certificate starts five minutes back): warned.
    let list = bed.run(&["--json", "keyset", "list"]).ok().json();
    let warning = list["keysets"][0]["expiry_warning"]
        .as_str()
        .expect("a warning");
    assert!(warning.contains("enroll --renew \"Carol 1\""), "{warning}");
    let text = bed.run(&["keyset", "list"]).ok();
    assert!(
        text.stderr.contains("warning: keyset \"Carol 1\""),
        "{}",
        text.stderr
    );
    let expiring = bed
        .bed
        .run(&[
            "--json",
            "authority",
            "users",
            "--dir",
            &bed.dir,
            "--expiring",
            "30d",
        ])
        .ok()
        .json();
    assert_eq!(expiring["users"].as_array().unwrap().len(), 1, "{expiring}");
    assert_eq!(expiring["users"][0]["name"], "carol");

    // A renewal requested in time but reaching the authority after the expiry: refused there.
    renew(&bed, "Carol 1", USER_PIN, &["-o", &p(&bed, "late.req")]).ok();
    let wait = std::time::Duration::from_secs(lifetime + 2).saturating_sub(enrolled_at.elapsed());
    std::thread::sleep(wait);
    let users = bed.users();
    bed.process("late.req", "late.reply")
        .fails(1, "not valid now");
    assert!(!bed.path("late.reply").exists());
    assert_eq!(bed.users(), users);

    // And refused on the user's side before anything changes.
    let before = snapshot(&bed, ALICE_CARD);
    renew(&bed, "Carol 1", USER_PIN, &["--authority", &bed.dir]).fails(1, "is not current");
    assert_eq!(snapshot(&bed, ALICE_CARD), before);
    let list = bed.run(&["--json", "keyset", "list"]).ok().json();
    assert!(
        list["keysets"][0]["expiry_warning"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{list}"
    );
}
