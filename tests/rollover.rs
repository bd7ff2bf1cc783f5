//! `authority rollover --archive` on SoftHSM2 with the real binary: a new archive key on the
//! authority's token, every archived key re-wrapped under it; stopped between batches it is
//! resumed by running it again, `authority process` refusing meanwhile; afterwards the old key
//! is gone, and a recovered user still gets the archived key back (it unwraps under the new key).

mod util;

use util::{AuthorityBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

fn config(bed: &AuthorityBed) -> serde_json::Value {
    serde_json::from_slice(&bed.state_file("authority.toml")).expect("the configuration record")
}

/// `CKA_ID`s of the secret keys on the authority's token.
fn secret_key_ids(bed: &AuthorityBed) -> Vec<String> {
    bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN)
        .iter()
        .filter(|o| o.header.starts_with("Secret Key Object"))
        .map(|o| o.get("ID").to_string())
        .collect()
}

fn archive_blobs(bed: &AuthorityBed) -> Vec<Vec<u8>> {
    let db = bed.db().unwrap();
    let mut stmt = db
        .prepare("SELECT body FROM records WHERE kind = 'archive' ORDER BY key")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn archive_rollover_resumes_and_old_keys_still_recover() {
    let bed = AuthorityBed::new(
        &["alice-card", "bob-card", "alice-card-2"],
        "CN=Rollover Authority,O=Example",
    );
    for (user, keyset, card) in [
        ("alice", "Alice 1", "alice-card"),
        ("bob", "Bob 1", "bob-card"),
    ] {
        let key = bed.add_user(user, &[]);
        bed.enroll_local(user, keyset, card, &key, &[], &[]).ok();
    }
    let old_id = config(&bed)["archive_key_id"].as_str().unwrap().to_string();
    assert_eq!(secret_key_ids(&bed), vec![old_id.clone()]);
    let blobs = archive_blobs(&bed);
    assert_eq!(blobs.len(), 2);

    // Stopped after the first batch (one key per batch here): one key re-wrapped, recorded.
    bed.authority_env(
        "rollover",
        &["--archive"],
        &[
            ("KEYWARD_ROLLOVER_BATCH", "1"),
            ("KEYWARD_FAULT", "rollover-batch-2"),
        ],
    )
    .fails(1, "injected fault");
    let half = archive_blobs(&bed);
    assert_eq!(half.iter().zip(&blobs).filter(|(a, b)| a != b).count(), 1);
    assert_eq!(config(&bed)["archive_key_id"], old_id.as_str());
    assert_eq!(secret_key_ids(&bed).len(), 2, "old and new key meanwhile");
    // Meanwhile the archive is under two keys: process refuses, with nothing changed.
    let key = bed.add_user("carol", &[]);
    bed.request("carol", "Carol 1", "alice-card-2", &key, "c.req")
        .ok();
    let users = bed.users();
    bed.process("c.req", "c.reply")
        .fails(1, "archive key rollover started");
    assert_eq!(bed.users(), users);
    assert!(!bed.path("c.reply").exists());

    // Resumed: finished, every blob re-wrapped, the old key gone, the log verifies.
    let run = bed
        .authority_env(
            "rollover",
            &["--archive"],
            &[("KEYWARD_ROLLOVER_BATCH", "1")],
        )
        .ok();
    assert!(
        run.stdout
            .contains("finished the archive key rollover: 2 archived keys"),
        "{}",
        run.stdout
    );
    let new_id = config(&bed)["archive_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(secret_key_ids(&bed), vec![new_id.clone()]);
    let after = archive_blobs(&bed);
    assert!(after.iter().zip(&blobs).all(|(a, b)| a != b));
    bed.authority("log", &["--verify"]).ok();
    let log = bed.authority("log", &[]).ok().stdout;
    assert!(log.contains("rollover"), "{log}");

    // The archived keys still come back: Alice recovers onto a new card and gets hers.
    let key = bed
        .authority("recover", &["alice"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let other_home = bed.path("home-2").to_string_lossy().into_owned();
    bed.bed
        .run_env(
            &[
                "--home",
                &other_home,
                "enroll",
                "--user",
                "alice",
                "--keyset",
                "Alice 2",
                "--token",
                "alice-card-2",
                "--authority",
                &bed.dir,
            ],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                ("KEYWARD_TEMP_KEY", &key),
            ],
        )
        .ok();
    assert_eq!(bed.user("alice")["archived_keys"], 2);

    // A second rollover starts afresh.
    bed.authority("rollover", &["--archive"]).ok();
    assert_ne!(config(&bed)["archive_key_id"], new_id.as_str());
    assert_eq!(secret_key_ids(&bed).len(), 1);
}
