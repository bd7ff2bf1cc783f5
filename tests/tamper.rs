//! Someone with write access to the authority's directory and no PIN: every change they make
//! to the state is caught by a real keyward command against a real SoftHSM authority — a
//! forged temporary key, an un-revoked user, a reset attempt counter, a rewritten audit log
//! with its head, a whole-directory rollback — even when they recompute every digest and hash
//! keyward uses (everything but the token's signature and the head kept on the token).
//! Also: a crash on either side of the database commit, and an auditor checking a copy with
//! the CA certificate alone.

mod util;

use keyward::authority::state::{bucket_digest, root_of, BUCKETS};
use keyward::authority::store::Row;
use util::{AuthorityBed, USER_PIN};

/// Exit status of "checked and found bad".
const TAMPERED: i32 = 3;

/// Recomputes every bucket digest from the records, as a forger who knows the format would,
/// so that only the root (signed on the token) and the token's head can give them away.
fn recompute_digests(bed: &AuthorityBed) {
    let db = bed.db().expect("authority.db");
    let mut stmt = db
        .prepare("SELECT kind, key, owner, bucket, body FROM records ORDER BY bucket, kind, key")
        .unwrap();
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok(Row {
                kind: r.get(0)?,
                key: r.get(1)?,
                owner: r.get(2)?,
                bucket: r.get(3)?,
                body: r.get_ref(4)?.as_bytes()?.to_vec(),
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut digests = vec![[0u8; 32]; usize::from(BUCKETS)];
    for (b, d) in digests.iter_mut().enumerate() {
        *d = bucket_digest(rows.iter().filter(|r| usize::from(r.bucket) == b));
    }
    for (b, d) in digests.iter().enumerate() {
        db.execute(
            "UPDATE buckets SET digest = ?2 WHERE bucket = ?1",
            rusqlite::params![b as i64, d.as_slice()],
        )
        .unwrap();
    }
    // And the last checkpoint's root and hash, for good measure (the signature cannot be).
    let root = hex(&root_of(&digests));
    db.execute(
        "UPDATE audit SET root = ?1 WHERE seq = (SELECT max(seq) FROM audit)",
        [root],
    )
    .unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One user's record, as JSON.
fn user_record(bed: &AuthorityBed, user: &str) -> serde_json::Value {
    let db = bed.db().unwrap();
    let body: Vec<u8> = db
        .query_row(
            "SELECT body FROM records WHERE kind = 'user' AND key = ?1",
            [user],
            |r| Ok(r.get_ref(0)?.as_bytes()?.to_vec()),
        )
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn set_user_record(bed: &AuthorityBed, user: &str, record: &serde_json::Value) {
    let db = bed.db().unwrap();
    db.execute(
        "UPDATE records SET body = ?2 WHERE kind = 'user' AND key = ?1",
        rusqlite::params![user, serde_json::to_vec(record).unwrap()],
    )
    .unwrap();
}

/// An enrolled user alice (the attacker wants her archived key) and a second authority the
/// attacker runs on their own token, whose temporary key for "alice" they know.
#[test]
fn a_forged_temporary_key_is_refused_and_releases_no_archived_key() {
    let bed = AuthorityBed::new(&["alice-card", "mallory-card", "evil-auth"], "CN=Forge CA");
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", "alice 1", "alice-card", &key, &[], &[])
        .ok();
    // The attacker's own authority, on a token they own, issues them a key "for alice".
    let evil = bed.path("evil").to_string_lossy().into_owned();
    bed.run_env(
        &["authority", "init", "--dir", &evil, "--token", "evil-auth"],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    let forged_key = bed
        .run_env(
            &["authority", "add-user", "--dir", &evil, "alice"],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
    let evil_db = rusqlite::Connection::open(bed.path("evil/authority.db")).unwrap();
    let evil_alice: serde_json::Value = evil_db
        .query_row(
            "SELECT body FROM records WHERE kind = 'user' AND key = 'alice'",
            [],
            |r| Ok(serde_json::from_slice(r.get_ref(0)?.as_bytes()?).unwrap()),
        )
        .unwrap();
    // Paste it into the real authority: alice "recovering", her certificates left valid.
    let mut alice = user_record(&bed, "alice");
    alice["state"] = "recovering".into();
    alice["temp_key"] = evil_alice["temp_key"].clone();
    set_user_record(&bed, "alice", &alice);
    bed.request(
        "alice",
        "alice 2",
        "mallory-card",
        &forged_key,
        "forged.req",
    )
    .ok();

    // The PIN holder processes it: refused, naming alice, and no reply.
    bed.process("forged.req", "forged.reply")
        .fails(TAMPERED, "user \"alice\"");
    assert!(!bed.path("forged.reply").exists());
    // Recomputing the digests does not help: the root is signed on the token.
    recompute_digests(&bed);
    bed.process("forged.req", "forged.reply")
        .fails(TAMPERED, "changed outside keyward");
    assert!(!bed.path("forged.reply").exists());
    bed.authority("log", &["--verify"])
        .fails(TAMPERED, "changed outside keyward");
}

#[test]
fn an_unrevoked_user_is_caught_by_crl_recover_and_listing() {
    let bed = AuthorityBed::new(&["bob-card"], "CN=Revoke CA");
    let key = bed.add_user("bob", &[]);
    bed.enroll_local("bob", "bob 1", "bob-card", &key, &[], &[])
        .ok();
    let before_revoke = user_record(&bed, "bob");
    bed.authority("revoke", &["bob", "--reason", "keyCompromise"])
        .ok();
    // One edit: revoked → active, revocations dropped.
    set_user_record(&bed, "bob", &before_revoke);
    for (sub, args) in [
        ("crl", vec!["-o", "crl.pem"]),
        ("recover", vec!["bob"]),
        ("revoke", vec!["bob"]),
    ] {
        bed.authority(sub, &args).fails(TAMPERED, "user \"bob\"");
    }
    bed.bed
        .run(&["authority", "users", "--dir", &bed.dir])
        .fails(TAMPERED, "user \"bob\"");
    // With every digest recomputed: still refused (the root no longer matches the signed one).
    recompute_digests(&bed);
    bed.authority("crl", &["-o", "crl.pem"])
        .fails(TAMPERED, "changed outside keyward");
    bed.bed
        .run(&["authority", "users", "--dir", &bed.dir])
        .fails(TAMPERED, "does not verify");
}

#[test]
fn a_reset_attempt_counter_is_caught() {
    let bed = AuthorityBed::new(&["carl-card"], "CN=Counter CA");
    bed.add_user("carl", &[]);
    let wrong = bed.add_user("someone-else", &[]);
    bed.request("carl", "carl 1", "carl-card", &wrong, "wrong.req")
        .ok();
    for _ in 0..2 {
        bed.process("wrong.req", "wrong.reply")
            .fails(1, "wrong temporary key");
    }
    assert_eq!(bed.user("carl")["temporary_key"]["attempts"], 2);
    let mut carl = user_record(&bed, "carl");
    carl["temp_key"]["attempts"] = 0.into();
    set_user_record(&bed, "carl", &carl);
    bed.process("wrong.req", "wrong.reply")
        .fails(TAMPERED, "user \"carl\"");
    bed.authority("recover", &["carl"])
        .fails(TAMPERED, "user \"carl\"");
}

#[test]
fn a_rewritten_audit_log_and_head_are_caught() {
    let bed = AuthorityBed::new(&[], "CN=Log CA");
    bed.add_user("dora", &[]);
    bed.add_user("ed", &[]);
    bed.authority("revoke", &["ed"]).ok();
    bed.authority("log", &["--verify"]).ok();
    // Rewrite entry 3 (add-user ed → add-user eve), recompute every hash after it, the
    // chain's head and the last root: everything but the signatures.
    let db = bed.db().unwrap();
    let mut stmt = db
        .prepare(
            "SELECT seq, time, actor, action, subject, outcome, detail FROM audit ORDER BY seq",
        )
        .unwrap();
    let rows: Vec<(u64, [String; 6])> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                [
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ],
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(stmt);
    let mut prev = keyward::authority::state::GENESIS.to_string();
    for (seq, mut f) in rows {
        if seq == 3 {
            assert_eq!(f[3], "ed");
            f[3] = "eve".into();
        }
        let e = keyward::authority::audit::AuditEntry {
            seq,
            time: f[0].clone(),
            actor: f[1].clone(),
            action: f[2].clone(),
            subject: f[3].clone(),
            outcome: f[4].clone(),
            detail: f[5].clone(),
            prev: prev.clone(),
            hash: String::new(),
        };
        let hash = e.compute_hash().unwrap();
        db.execute(
            "UPDATE audit SET subject = ?2, prev = ?3, hash = ?4 WHERE seq = ?1",
            rusqlite::params![seq as i64, e.subject, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
    drop(db);
    bed.authority("log", &["--verify"])
        .fails(TAMPERED, "signature does not verify");
    bed.authority("add-user", &["fay"])
        .fails(TAMPERED, "not the one the authority's token vouches for");
    // Dropping the last entry (and its change) instead: the token still knows the head.
    let bed = AuthorityBed::new(&[], "CN=Cut CA");
    bed.add_user("gus", &[]);
    let copy = bed.path("auth-copy");
    copy_dir(std::path::Path::new(&bed.dir), &copy);
    bed.add_user("hal", &[]);
    bed.tamper_sql(
        "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit);
         DELETE FROM records WHERE kind = 'user' AND key = 'hal';",
    );
    recompute_digests(&bed);
    bed.authority("revoke", &["gus"])
        .fails(TAMPERED, "changed outside keyward");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .args(["-a"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_whole_directory_rollback_is_caught() {
    let bed = AuthorityBed::new(&[], "CN=Rollback CA");
    bed.add_user("ida", &[]);
    let dir = std::path::Path::new(&bed.dir).to_path_buf();
    let yesterday = bed.path("yesterday");
    copy_dir(&dir, &yesterday);
    bed.authority("revoke", &["ida"]).ok();
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&yesterday, &dir);
    for (sub, args) in [
        ("add-user", vec!["jo"]),
        ("revoke", vec!["ida"]),
        ("crl", vec!["-o", "crl.pem"]),
    ] {
        bed.authority(sub, &args).fails(TAMPERED, "rolled back");
    }
}

#[test]
fn a_crash_on_either_side_of_the_commit_is_survived() {
    let bed = AuthorityBed::new(&[], "CN=Crash CA");
    // Before the database commits: the token's pending head is ahead; nothing happened.
    bed.authority_env("add-user", &["kai"], &[("KEYWARD_FAULT", "db-commit")])
        .fails(1, "KEYWARD_FAULT=db-commit");
    assert!(bed.users().as_array().unwrap().is_empty());
    bed.authority("log", &["--verify"]).ok();
    // After it commits, before the head is promoted: the change stands and the command
    // succeeds (the temporary key is shown); the next command promotes the pending head.
    let run = bed
        .authority_env("add-user", &["lea"], &[("KEYWARD_FAULT", "head-promote")])
        .ok();
    assert!(!run.stdout.trim().is_empty(), "no temporary key shown");
    assert_eq!(bed.user("lea")["state"], "pending");
    bed.add_user("kai", &[]);
    bed.authority("log", &["--verify"]).ok();
}

#[test]
fn an_auditor_verifies_a_copy_with_the_ca_certificate_alone() {
    let bed = AuthorityBed::new(&[], "CN=Audit CA");
    bed.add_user("max", &[]);
    bed.authority("revoke", &["max"]).ok();
    // The copy: the database file alone, in a directory of its own; no token, no PIN.
    let copy = bed.path("audit-copy");
    std::fs::create_dir(&copy).unwrap();
    bed.db()
        .unwrap()
        .execute(
            "VACUUM INTO ?1",
            [copy.join("authority.db").to_string_lossy()],
        )
        .unwrap();
    let copy_s = copy.to_string_lossy().into_owned();
    let ok = bed
        .bed
        .run(&[
            "authority",
            "log",
            "--dir",
            &copy_s,
            "--verify",
            "--ca",
            &bed.ca,
        ])
        .ok();
    assert!(ok.stdout.contains("3 entries"), "{}", ok.stdout);
    // Against another authority's CA, the same copy fails.
    let other = AuthorityBed::new(&[], "CN=Other CA");
    bed.bed
        .run(&[
            "authority",
            "log",
            "--dir",
            &copy_s,
            "--verify",
            "--ca",
            &other.ca,
        ])
        .fails(TAMPERED, "does not verify with the CA key");
}

/// A forged `init.intent.toml` naming the authority's own CA, exchange and archive keys, with
/// `authority.db` moved away: keyward says an init was interrupted, and the PIN holder reruns
/// `authority init` as told. Nothing may be removed from the token — it vouches for an
/// authority in use — and with the database put back the authority works on.
#[test]
fn a_forged_init_intent_removes_no_key_of_an_authority_in_use() {
    let bed = AuthorityBed::new(&[], "CN=Intent CA");
    bed.add_user("ivy", &[]);
    let config: serde_json::Value =
        serde_json::from_slice(&bed.state_file("authority.toml")).unwrap();
    let ids: Vec<String> = ["ca_key_id", "exchange_key_id", "archive_key_id"]
        .iter()
        .map(|k| config[*k].as_str().unwrap().to_string())
        .collect();
    let dir = std::path::Path::new(&bed.dir);
    let moved = bed.path("authority.db.moved");
    std::fs::rename(dir.join("authority.db"), &moved).unwrap();
    for f in ["authority.db-wal", "authority.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let intent = serde_json::json!({
        "token_label": config["token_label"],
        "token_serial": config["token_serial"],
        "key_ids": ids,
        // Labels that name no head: the forger hopes no head is checked.
        "head_labels": ["keyward head 0000000000000000", "keyward head 0000000000000000 pending"],
    });
    std::fs::write(
        dir.join("init.intent.toml"),
        toml::to_string(&intent).unwrap(),
    )
    .unwrap();
    let objects_before = bed
        .bed
        .token_objects(util::AUTHORITY_TOKEN, util::AUTHORITY_PIN);
    let run = bed
        .bed
        .run_env(
            &[
                "authority",
                "init",
                "--dir",
                &bed.dir,
                "--token",
                util::AUTHORITY_TOKEN,
                "--name",
                "CN=Intent CA",
            ],
            &[("KEYWARD_PIN", util::AUTHORITY_PIN)],
        )
        .fails(TAMPERED, "already vouches for an authority's state");
    assert!(
        run.stderr.contains("keyward removes and imports nothing")
            && run
                .stderr
                .contains("init.intent.toml asks to remove the keys"),
        "{}",
        run.stderr
    );
    let objects_after = bed
        .bed
        .token_objects(util::AUTHORITY_TOKEN, util::AUTHORITY_PIN);
    assert_eq!(
        util::p11_object_set(&objects_before),
        util::p11_object_set(&objects_after),
        "the token lost objects"
    );
    std::fs::remove_file(dir.join("init.intent.toml")).unwrap();
    std::fs::rename(&moved, dir.join("authority.db")).unwrap();
    bed.authority("log", &["--verify"]).ok();
    bed.add_user("jay", &[]);
}

/// The shadow-index forgery: the table gets a second, forged record for a revoked user (its
/// revocations gone), and two indexes are made to disagree with the table — the bucket index
/// leaves the forgery out (so the checked rows are the genuine ones), the key index leaves the
/// genuine row out — then relabelled through `writable_schema` as ordinary full indexes. A
/// read by key would see the forgery while the check sees the original. Every command must
/// refuse the database, and the CRL must not lose the revocation.
#[test]
fn indexes_made_to_disagree_with_their_table_are_caught() {
    let bed = AuthorityBed::new(&["bob-card"], "CN=Index CA");
    let key = bed.add_user("bob", &[]);
    bed.enroll_local("bob", "bob 1", "bob-card", &key, &[], &[])
        .ok();
    bed.authority("revoke", &["bob", "--reason", "keyCompromise"])
        .ok();
    let genuine = user_record(&bed, "bob");
    let mut forged = genuine.clone();
    forged["state"] = "active".into();
    for c in forged["certs"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("revoked");
    }
    let genuine_hex = hex(&serde_json::to_vec(&genuine).unwrap());
    let forged_hex = hex(&serde_json::to_vec(&forged).unwrap());
    // The body as stored (keyward's own bytes), to leave the genuine row out of the key index.
    let stored: Vec<u8> = bed
        .db()
        .unwrap()
        .query_row(
            "SELECT body FROM records WHERE kind = 'user' AND key = 'bob'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let stored_hex = hex(&stored);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
        genuine
    );
    let _ = genuine_hex;
    bed.tamper_sql(&format!(
        "BEGIN;
         CREATE TABLE r2 (kind TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL, bucket INTEGER NOT NULL, body BLOB NOT NULL);
         INSERT INTO r2 SELECT kind, key, owner, bucket, body FROM records;
         INSERT INTO r2 SELECT kind, key, owner, bucket, x'{forged_hex}' FROM records WHERE kind = 'user' AND key = 'bob';
         DROP TABLE records;
         ALTER TABLE r2 RENAME TO records;
         CREATE INDEX records_bucket ON records (bucket) WHERE body <> x'{forged_hex}';
         CREATE UNIQUE INDEX records_pk ON records (kind, key) WHERE body <> x'{stored_hex}';
         COMMIT;
         PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX records_bucket ON records (bucket)' WHERE name = 'records_bucket';
         UPDATE sqlite_schema SET sql = 'CREATE UNIQUE INDEX records_pk ON records (kind, key)' WHERE name = 'records_pk';
         PRAGMA writable_schema = OFF;"
    ));
    bed.authority("crl", &["-o", "crl.pem"])
        .fails(TAMPERED, "schema is not the one keyward makes");
    bed.bed
        .run(&["authority", "users", "--dir", &bed.dir])
        .fails(TAMPERED, "schema is not the one keyward makes");
    bed.bed
        .run(&["authority", "log", "--dir", &bed.dir, "--verify"])
        .fails(TAMPERED, "schema is not the one keyward makes");
    bed.authority("rollover", &["--archive"])
        .fails(TAMPERED, "schema is not the one keyward makes");
}

/// A trigger that silently drops a new user's record (`RAISE(IGNORE)`): `add-user` must
/// refuse before it prints a temporary key for a user that would never be stored.
#[test]
fn a_trigger_planted_in_the_database_is_caught_before_anything_is_done() {
    let bed = AuthorityBed::new(&[], "CN=Trigger CA");
    bed.add_user("amy", &[]);
    bed.tamper_sql(
        "CREATE TRIGGER drop_carol BEFORE INSERT ON records
         WHEN NEW.kind = 'user' AND NEW.key = 'carol'
         BEGIN SELECT RAISE(IGNORE); END;",
    );
    let run = bed
        .authority("add-user", &["carol"])
        .fails(TAMPERED, "trigger \"drop_carol\"");
    assert!(
        run.stdout.trim().is_empty(),
        "a key was printed: {}",
        run.stdout
    );
    bed.bed
        .run(&["authority", "log", "--dir", &bed.dir])
        .fails(TAMPERED, "trigger \"drop_carol\"");
    bed.tamper_sql("DROP TRIGGER drop_carol;");
    bed.authority("log", &["--verify"]).ok();
    bed.add_user("carol", &[]);
}

/// The lines `authority log` printed (one per entry).
fn log_lines(run: &util::Run) -> Vec<String> {
    run.stdout.lines().map(str::to_string).collect()
}

/// `authority log` without `--verify` checks the chain of what it prints (hashes and signed
/// checkpoints, no PIN): a rewritten, a deleted or an appended entry is still shown, to look
/// into, and the command ends with the tamper error naming the entry and exit status 3.
#[test]
fn plain_log_refuses_a_doctored_history() {
    let bed = AuthorityBed::new(&[], "CN=Plain Log CA");
    bed.add_user("dora", &[]);
    bed.add_user("ed", &[]);
    bed.authority("revoke", &["ed"]).ok();
    let clean = bed.authority("log", &[]).ok();
    let n = log_lines(&clean).len();
    assert!(n >= 4, "{}", clean.stdout);

    // A middle entry rewritten (add-user ed → add-user eve), its hash left as it was.
    bed.tamper_sql("UPDATE audit SET subject = 'eve' WHERE seq = 3");
    let run = bed
        .authority("log", &[])
        .fails(TAMPERED, "audit entry 3 fails verification");
    assert!(run.stdout.contains("eve"), "still shown: {}", run.stdout);
    assert_eq!(log_lines(&run).len(), n);
    bed.bed
        .run(&["--json", "authority", "log", "--dir", &bed.dir])
        .fails(TAMPERED, "audit entry 3 fails verification");
    bed.tamper_sql("UPDATE audit SET subject = 'ed' WHERE seq = 3");
    bed.authority("log", &[]).ok();

    // A middle entry deleted.
    let bed = AuthorityBed::new(&[], "CN=Cut Log CA");
    bed.add_user("dora", &[]);
    bed.add_user("ed", &[]);
    bed.tamper_sql("DELETE FROM audit WHERE seq = 2");
    bed.authority("log", &[])
        .fails(TAMPERED, "audit entry 2 fails verification");

    // An entry appended outside keyward, as a trigger would (a correct hash, no signature).
    let bed = AuthorityBed::new(&[], "CN=Added Log CA");
    bed.add_user("dora", &[]);
    let db = bed.db().unwrap();
    let (seq, prev): (i64, String) = db
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let e = keyward::authority::audit::AuditEntry {
        seq: seq as u64 + 1,
        time: "2026-12-02T00:00:00Z".into(),
        actor: "operator".into(),
        action: "revoke".into(),
        subject: "dora".into(),
        outcome: "ok".into(),
        detail: String::new(),
        prev: prev.clone(),
        hash: String::new(),
    };
    let hash = e.compute_hash().unwrap();
    db.execute(
        "INSERT INTO audit (seq, time, actor, action, subject, outcome, detail, prev, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            e.seq as i64,
            e.time,
            e.actor,
            e.action,
            e.subject,
            e.outcome,
            e.detail,
            prev,
            hash
        ],
    )
    .unwrap();
    drop(db);
    bed.authority("log", &[])
        .fails(TAMPERED, &format!("audit entry {}", seq + 1));
}

/// Text output escapes what a stored field could use to forge a line or drive the terminal
/// (user names cannot hold such characters, so the field is put there with SQL — and the chain
/// then fails too).
#[test]
fn plain_log_escapes_control_characters() {
    let bed = AuthorityBed::new(&[], "CN=Escape Log CA");
    bed.add_user("dora", &[]);
    let n = log_lines(&bed.authority("log", &[]).ok()).len();
    bed.tamper_sql(
        "UPDATE audit SET subject = 'dora' || char(10) || '    9 2026-12-02T00:00:00Z operator forged' || char(27) || '[8m',
                          detail = 'x' || char(13) || char(8238) || 'y' WHERE seq = 2",
    );
    let run = bed
        .authority("log", &[])
        .fails(TAMPERED, "audit entry 2 fails verification");
    assert!(
        !run.stdout.contains('\u{1b}'),
        "no raw ESC: {:?}",
        run.stdout
    );
    assert!(!run.stdout.contains('\r'), "no raw CR: {:?}", run.stdout);
    assert!(
        !run.stdout.contains('\u{202e}'),
        "no raw RLO: {:?}",
        run.stdout
    );
    assert_eq!(log_lines(&run).len(), n, "no extra line: {}", run.stdout);
    assert!(
        run.stdout
            .contains("dora\\n    9 2026-12-02T00:00:00Z operator forged\\u{1b}[8m"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("x\\r\\u{202e}y"), "{}", run.stdout);
}

/// A trigger planted in `authority.db` that silently drops the write of a user record: every
/// command that would issue a temporary key refuses the database (its schema is not keyward's)
/// with exit status 3 before it does anything, so no key is shown that was never recorded.
#[test]
fn a_dropped_user_write_shows_no_temporary_key() {
    const DROP_USERS: &str = "CREATE TRIGGER drop_users BEFORE INSERT ON records
         WHEN NEW.kind = 'user' BEGIN SELECT RAISE(IGNORE); END;";
    let bed = AuthorityBed::new(&[], "CN=Trigger CA");
    bed.add_user("dora", &[]);
    bed.tamper_sql(DROP_USERS);
    let run = bed
        .authority("add-user", &["ed"])
        .fails(TAMPERED, "trigger \"drop_users\"");
    assert!(run.stdout.trim().is_empty(), "no key shown: {}", run.stdout);

    // recover replaces an existing user's record: the same.
    let bed = AuthorityBed::new(&[], "CN=Trigger Recover CA");
    bed.add_user("dora", &[]);
    bed.tamper_sql(DROP_USERS);
    let run = bed
        .authority("recover", &["dora"])
        .fails(TAMPERED, "trigger \"drop_users\"");
    assert!(run.stdout.trim().is_empty(), "no key shown: {}", run.stdout);

    // add-users: refused before its first batch.
    let bed = AuthorityBed::new(&[], "CN=Trigger Bulk CA");
    bed.tamper_sql(DROP_USERS);
    let csv = bed.file("users.csv", b"frank,\ngrace,\n");
    let out = bed.path("keys").to_string_lossy().into_owned();
    let run = bed
        .authority("add-users", &["--from", &csv, "--out", &out])
        .fails(TAMPERED, "trigger \"drop_users\"");
    assert!(!run.stdout.contains("added"), "{}", run.stdout);
    assert!(
        std::fs::read_dir(&out).map_or(true, |d| d.count() == 0),
        "key files were written"
    );
}
