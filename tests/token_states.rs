//! Token states (`keyward authority token --dir DIR USER --state …`) on SoftHSM2 with the real
//! binary and OpenSSL: lost puts the certificates on hold (certificateHold in the CRL) and
//! allows a temporary token that reads old mail; found takes them off hold (gone from the next
//! CRL) and retires the temporary token's certificates; damaged and terminated revoke; every
//! transition not allowed is refused with nothing changed; every change is in the audit log.

mod util;

use util::{AuthorityBed, Run, USER_PIN};

const ALICE: &str = "Alice 1";
const ALICE_CARD: &str = "alice-card";
const LOANER: &str = "loaner-card";

fn p(bed: &AuthorityBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

fn set_state(bed: &AuthorityBed, user: &str, state: &str) -> Run {
    bed.authority("token", &[user, "--state", state])
}

fn token_state(bed: &AuthorityBed, user: &str) -> serde_json::Value {
    bed.bed
        .run(&["--json", "authority", "token", "--dir", &bed.dir, user])
        .ok()
        .json()
}

/// The CRL's text as OpenSSL prints it.
fn crl_text(bed: &AuthorityBed, name: &str) -> String {
    let crl = p(bed, name);
    bed.authority("crl", &["-o", &crl]).ok();
    bed.run_tool(
        "openssl",
        "openssl",
        &["crl", "-in", &crl, "-noout", "-text"],
    )
    .ok()
    .stdout
}

/// (serial, revocation reason) of a user's certificates.
fn reasons(bed: &AuthorityBed, user: &str) -> Vec<(String, Option<String>)> {
    bed.user(user)["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["serial"].as_str().unwrap().to_string(),
                c["revoked"]["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// A refused change: exit 1 naming `needle`, the users and the token state unchanged.
fn refused(bed: &AuthorityBed, user: &str, state: &str, needle: &str) {
    let users = bed.users();
    let token = token_state(bed, user);
    set_state(bed, user, state).fails(1, needle);
    assert_eq!(bed.users(), users, "{state}: users changed");
    assert_eq!(
        token_state(bed, user),
        token,
        "{state}: token state changed"
    );
}

#[test]
fn lost_then_found_with_a_temporary_token_and_every_refusal() {
    let bed = AuthorityBed::new(&[ALICE_CARD, LOANER], "CN=Token State Authority,O=Example");
    let key = bed.add_user("alice", &["--email", "alice@example.org"]);
    bed.enroll_local("alice", ALICE, ALICE_CARD, &key, &[], &[])
        .ok();
    let msg = bed.file("letter.txt", b"the old letter\n");
    bed.run_env(
        &[
            "send",
            "--keyset",
            ALICE,
            "--to",
            ALICE,
            &msg,
            "-o",
            &p(&bed, "old.p7m"),
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    assert_eq!(token_state(&bed, "alice")["state"], "active");
    let original: Vec<String> = reasons(&bed, "alice").into_iter().map(|r| r.0).collect();
    assert_eq!(original.len(), 2);

    // Transitions not allowed from active: refused, nothing changed.
    refused(&bed, "alice", "found", "only a lost token can be found");
    refused(&bed, "alice", "active", "cannot become active");
    bed.add_user("pending-pat", &[]);
    refused(&bed, "pending-pat", "lost", "only an enrolled user's token");

    // Lost: on hold, a temporary key for a temporary token.
    let run = set_state(&bed, "alice", "lost").ok();
    let temp_key = run.stdout.trim().to_string();
    assert!(!temp_key.is_empty(), "a temporary key: {}", run.stderr);
    assert!(run.stderr.contains("certificateHold"), "{}", run.stderr);
    let state = token_state(&bed, "alice");
    assert_eq!(state["state"], "lost");
    assert_eq!(state["held"].as_array().unwrap().len(), 2);
    assert!(reasons(&bed, "alice")
        .iter()
        .all(|r| r.1.as_deref() == Some("certificateHold")));
    let crl = crl_text(&bed, "lost.crl");
    assert_eq!(crl.matches("Certificate Hold").count(), 2, "{crl}");
    refused(&bed, "alice", "lost", "it is lost already");

    // The temporary token (a loaner, another keyward home): enrolled with the archived key
    // back, it reads the old mail; the held certificates are not revoked meanwhile.
    let loaner_home = p(&bed, "loaner-home");
    bed.run_env(
        &[
            "--home",
            &loaner_home,
            "enroll",
            "--user",
            "alice",
            "--keyset",
            "Alice loaner",
            "--token",
            LOANER,
            "--authority",
            &bed.dir,
        ],
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_AUTHORITY_PIN", util::AUTHORITY_PIN),
            ("KEYWARD_TEMP_KEY", &temp_key),
        ],
    )
    .ok();
    let out = p(&bed, "old.out");
    bed.run_env(
        &[
            "--home",
            &loaner_home,
            "read",
            "--keyset",
            "Alice loaner",
            &p(&bed, "old.p7m"),
            "-o",
            &out,
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    assert_eq!(std::fs::read(&out).unwrap(), b"the old letter\n");
    let during = reasons(&bed, "alice");
    assert_eq!(during.len(), 4);
    let temporary: Vec<String> = during
        .iter()
        .filter(|r| !original.contains(&r.0))
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(temporary.len(), 2);

    // Found: off hold (gone from the next CRL), the loaner's certificates retired.
    let run = set_state(&bed, "alice", "found").ok();
    assert!(
        run.stdout.contains(
            "2 certificates taken off hold; the temporary token's 2 certificates retired"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(token_state(&bed, "alice")["state"], "found");
    let after = reasons(&bed, "alice");
    for (serial, reason) in &after {
        if original.contains(serial) {
            assert_eq!(reason, &None, "{serial} still held: {after:?}");
        } else {
            assert_eq!(reason.as_deref(), Some("superseded"), "{after:?}");
        }
    }
    assert_eq!(bed.user("alice")["state"], "active");
    let crl = crl_text(&bed, "found.crl");
    assert!(!crl.contains("Certificate Hold"), "{crl}");
    assert_eq!(crl.matches("Superseded").count(), 2, "{crl}");
    refused(&bed, "alice", "found", "only a lost token can be found");
    // The found token still reads the old mail, with its original keyset.
    let out2 = p(&bed, "old2.out");
    bed.run_env(
        &["read", "--keyset", ALICE, &p(&bed, "old.p7m"), "-o", &out2],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    assert_eq!(std::fs::read(&out2).unwrap(), b"the old letter\n");

    // Damaged: revoked, a temporary key for a replacement; then terminated: the user revoked.
    let run = set_state(&bed, "alice", "damaged").ok();
    assert!(!run.stdout.trim().is_empty(), "a temporary key");
    assert!(reasons(&bed, "alice")
        .iter()
        .filter(|r| original.contains(&r.0))
        .all(|r| r.1.as_deref() == Some("superseded")));
    refused(&bed, "alice", "lost", "cannot become lost");
    set_state(&bed, "alice", "terminated").ok();
    assert_eq!(bed.user("alice")["state"], "revoked");
    refused(&bed, "alice", "found", "a terminated token is final");
    refused(&bed, "alice", "lost", "a terminated token is final");

    // Every change is audited, and the log verifies.
    let log = bed.authority("log", &[]).ok().stdout;
    for change in [
        "active → lost",
        "lost → found",
        "found → damaged",
        "damaged → terminated",
    ] {
        assert!(log.contains(change), "{change} not in the log:\n{log}");
    }
    bed.authority("log", &["--verify"]).ok();
}

#[test]
fn a_lost_token_can_be_terminated_as_compromised() {
    let bed = AuthorityBed::new(&[ALICE_CARD], "CN=Token State Authority,O=Example");
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", ALICE, ALICE_CARD, &key, &[], &[])
        .ok();
    set_state(&bed, "alice", "lost").ok();
    set_state(&bed, "alice", "terminated").ok();
    assert!(reasons(&bed, "alice")
        .iter()
        .all(|r| r.1.as_deref() == Some("keyCompromise")));
    let crl = crl_text(&bed, "t.crl");
    assert_eq!(crl.matches("Key Compromise").count(), 2, "{crl}");
    assert!(!crl.contains("Certificate Hold"), "{crl}");
    // The unused temporary key of the lost state no longer works.
    assert!(bed.user("alice")["temporary_key"].is_null());
}

/// A trigger planted in `authority.db` that would silently drop the user's new record:
/// `--state lost` refuses the database (exit 3) before it shows a loaner's temporary key.
#[test]
fn a_dropped_write_shows_no_loaner_key() {
    let bed = AuthorityBed::new(&[ALICE_CARD], "CN=Token State Trigger,O=Example");
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", ALICE, ALICE_CARD, &key, &[], &[])
        .ok();
    bed.tamper_sql(
        "CREATE TRIGGER drop_users BEFORE INSERT ON records
         WHEN NEW.kind = 'user' BEGIN SELECT RAISE(IGNORE); END;",
    );
    let run = set_state(&bed, "alice", "lost").fails(3, "trigger \"drop_users\"");
    assert!(run.stdout.trim().is_empty(), "no key shown: {}", run.stdout);
}
