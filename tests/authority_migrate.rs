//! `keyward authority migrate`: a directory of the TOML format (schema 1: `authority.toml`,
//! `users.toml`, `ca.pem`, `audit.log`) becomes the store once; it refuses a second time, and
//! refuses an old audit log that does not verify. The old directory is written here the way
//! keyward before the store wrote it, around keys made on a real SoftHSM token.

mod util;

use std::path::Path;

use keyward::authority::audit::AuditLog;
use util::AuthorityBed;

/// Turns the bed's authority (made by `authority init` + `add-user pat`) into a schema-1
/// directory: the configuration and user records as TOML, the log as the old hash chain.
fn make_legacy(bed: &AuthorityBed) {
    let config = write_toml_directory(
        bed,
        None,
        &[
            ("init", "CN=Old CA", "made by hand"),
            ("add-user", "pat", "temporary key valid for 72h"),
        ],
    );
    // Before the store, the token kept no state head: the bed's init wrote one, which goes.
    let id: String = config["ca_key_id"]
        .as_str()
        .unwrap()
        .chars()
        .take(16)
        .collect();
    for label in [
        format!("keyward head {id}"),
        format!("keyward head {id} pending"),
    ] {
        delete_data_object(bed, &label);
    }
}

/// Writes the bed's state as a schema-1 directory (`authority.toml`, `users.toml`, `ca.pem`,
/// and `audit.log` with `entries` as (action, subject, detail)), after taking its database
/// away: removed, or moved to `keep`. Returns the configuration record.
fn write_toml_directory(
    bed: &AuthorityBed,
    keep: Option<&Path>,
    entries: &[(&str, &str, &str)],
) -> serde_json::Value {
    let dir = Path::new(&bed.dir);
    let config: serde_json::Value =
        serde_json::from_slice(&bed.state_file("authority.toml")).unwrap();
    let users: Vec<serde_json::Value> = String::from_utf8(bed.state_file("users.toml"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    match keep {
        Some(to) => std::fs::rename(dir.join("authority.db"), to).unwrap(),
        None => std::fs::remove_file(dir.join("authority.db")).unwrap(),
    }
    for f in ["authority.db-wal", "authority.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::write(dir.join("ca.pem"), config["ca_pem"].as_str().unwrap()).unwrap();
    let log = AuditLog::open(&dir.join("audit.log"));
    let mut head = (0, String::new());
    for (action, subject, detail) in entries {
        head = log
            .append("operator:test", action, subject, "ok", detail)
            .unwrap();
    }
    let mut cfg = config.as_object().unwrap().clone();
    cfg.remove("ca_pem");
    cfg.insert("schema".into(), 1.into());
    cfg.insert("log_seq".into(), head.0.into());
    cfg.insert("log_hash".into(), head.1.into());
    std::fs::write(
        dir.join("authority.toml"),
        toml::to_string(&serde_json::Value::Object(cfg)).unwrap(),
    )
    .unwrap();
    let users = serde_json::json!({ "schema": 1, "user": users });
    std::fs::write(dir.join("users.toml"), toml::to_string(&users).unwrap()).unwrap();
    config
}

/// `pkcs11-tool --delete-object --type data --label LABEL` on the authority token (one that
/// is not there is fine).
fn delete_data_object(bed: &AuthorityBed, label: &str) {
    let module = util::module();
    let module = module.to_string_lossy();
    let _ = bed.bed.run_tool(
        "pkcs11-tool",
        "opensc",
        &[
            "--module",
            &module,
            "--token-label",
            util::AUTHORITY_TOKEN,
            "--login",
            "--pin",
            util::AUTHORITY_PIN,
            "--delete-object",
            "--type",
            "data",
            "--label",
            label,
        ],
    );
}

/// Someone who can write the directory but has no PIN moves a migrated (store) authority's
/// database away and writes TOML files in its place, saying what they like (here: a revoked
/// user unrevoked). keyward says the directory holds the old format; `migrate`, run by the PIN
/// holder, must not import it: the token already vouches for this authority's state.
#[test]
fn a_forged_toml_directory_beside_a_vouched_state_is_not_migrated() {
    let bed = AuthorityBed::new(&["pat-card"], "CN=Old CA");
    bed.add_user("pat", &[]);
    let dir = Path::new(&bed.dir);
    let before = std::fs::read(dir.join("authority.db")).unwrap();
    let moved = dir.join("authority.db.moved");
    write_toml_directory(&bed, Some(&moved), &[("init", "CN=Old CA", "forged")]);
    let run = bed
        .authority("migrate", &[])
        .fails(3, "already vouches for an authority's state");
    assert!(
        run.stderr.contains("restore it from a backup"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("authority.db").exists(), "nothing imported");
    // The real database put back: it is the authority again, its state untouched.
    for f in ["authority.toml", "users.toml", "audit.log"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    std::fs::rename(dir.join("authority.db.moved"), dir.join("authority.db")).unwrap();
    assert_eq!(std::fs::read(dir.join("authority.db")).unwrap(), before);
    bed.authority("log", &["--verify"]).ok();
    bed.authority("add-user", &["quinn"]).ok();
}

#[test]
fn a_toml_authority_is_migrated_once_and_then_works() {
    let bed = AuthorityBed::new(&["pat-card"], "CN=Old CA");
    let key = bed.add_user("pat", &[]);
    make_legacy(&bed);
    // Not usable before the migration: every command says what to do.
    bed.bed
        .run(&["authority", "users", "--dir", &bed.dir])
        .fails(1, "authority migrate --dir");
    bed.authority("add-user", &["quinn"])
        .fails(1, "authority migrate --dir");

    // An old log that does not verify is not migrated.
    let log = Path::new(&bed.dir).join("audit.log");
    let good = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, good.replace("made by hand", "made by someone")).unwrap();
    bed.authority("migrate", &[]).fails(1, "fails verification");
    assert!(!Path::new(&bed.dir).join("authority.db").exists());
    std::fs::write(&log, &good).unwrap();

    let run = bed.authority("migrate", &[]).ok();
    assert!(run.stdout.contains("1 users"), "{}", run.stdout);
    assert!(
        run.stdout.contains("old audit log of 2 entries"),
        "{}",
        run.stdout
    );
    assert!(Path::new(&bed.dir)
        .join("pre-migration/users.toml")
        .exists());
    bed.authority("migrate", &[]).fails(1, "migrated already");
    assert_eq!(bed.user("pat")["state"], "pending");
    let verified = bed.authority("log", &["--verify"]).ok();
    assert!(verified.stdout.contains("1 entries"), "{}", verified.stdout);

    // The migrated authority works: pat enrolls with the key issued before the migration.
    bed.enroll_local("pat", "Pat 1", "pat-card", &key, &[], &[])
        .ok();
    assert_eq!(bed.user("pat")["state"], "active");
    bed.authority("log", &["--verify"]).ok();
}
