//! Bulk provisioning with the real binary on SoftHSM2: `authority add-users` (one 0600 file per
//! user or a CSV for a mail merge) — bad input refused with nothing changed, `--dry-run`
//! changing nothing, a second run skipping what exists, a run stopped between batches resumed
//! without a lost or duplicated key; and a key from the bulk run enrolls.

mod util;

use std::os::unix::fs::PermissionsExt;

use util::{AuthorityBed, USER_PIN};

fn p(bed: &AuthorityBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

fn names(bed: &AuthorityBed) -> Vec<String> {
    bed.users()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn add_users_files_dry_run_idempotent_and_refusals() {
    let bed = AuthorityBed::new(&["alice-card"], "CN=Bulk Authority,O=Example");
    bed.add_user("existing", &[]);
    let out = p(&bed, "keys");

    // Bad input: refused naming the line, nothing changed, no output directory.
    for (file, text, needle) in [
        (
            "bad-name.csv",
            "user,email\nalice,alice@example.org\nbad name,\n",
            "bad-name.csv:3: user name \"bad name\"",
        ),
        (
            "bad-mail.csv",
            "alice,not-an-address\n",
            "is not an e-mail address",
        ),
        (
            "twice.csv",
            "alice,\nbob,\nalice,\n",
            "user \"alice\" appears twice",
        ),
    ] {
        let csv = bed.file(file, text.as_bytes());
        bed.authority("add-users", &["--from", &csv, "--out", &out])
            .fails(1, needle);
        assert_eq!(names(&bed), vec!["existing"]);
        assert!(!bed.path("keys").exists());
    }

    let csv = bed.file(
        "users.csv",
        b"user,email\nalice,alice@example.org\nbob,bob@example.org\n# a comment\ncarol,\nexisting,\n",
    );
    // Dry run: says what it would do, changes nothing, asks for no PIN.
    let run = bed
        .bed
        .run(&[
            "authority",
            "add-users",
            "--dir",
            &bed.dir,
            "--from",
            &csv,
            "--out",
            &out,
            "--dry-run",
        ])
        .ok();
    assert!(
        run.stdout.contains("would add 3 users; 1 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(names(&bed), vec!["existing"]);
    assert!(!bed.path("keys").exists());

    let run = bed
        .authority("add-users", &["--from", &csv, "--out", &out])
        .ok();
    assert!(
        run.stdout.contains("added 3 users; 1 skipped"),
        "{}",
        run.stdout
    );
    assert_eq!(names(&bed), vec!["alice", "bob", "carol", "existing"]);
    assert_eq!(mode(&bed.path("keys")), 0o700);
    let mut keys = Vec::new();
    for u in ["alice", "bob", "carol"] {
        let f = bed.path(&format!("keys/{u}.tempkey"));
        assert_eq!(mode(&f), 0o600, "{}", f.display());
        keys.push(std::fs::read_to_string(&f).unwrap());
    }
    assert!(!bed.path("keys/existing.tempkey").exists());
    assert_eq!(bed.user("alice")["email"], "alice@example.org");
    assert_eq!(bed.user("alice")["state"], "pending");
    let log = bed.authority("log", &[]).ok().stdout;
    assert_eq!(log.matches("bulk (add-users)").count(), 3, "{log}");
    bed.authority("log", &["--verify"]).ok();

    // Again: everything skipped, said so, the files untouched.
    let run = bed
        .authority("add-users", &["--from", &csv, "--out", &out])
        .ok();
    assert!(
        run.stdout.contains("added 0 users; 4 skipped"),
        "{}",
        run.stdout
    );
    for (u, k) in ["alice", "bob", "carol"].iter().zip(&keys) {
        assert_eq!(
            &std::fs::read_to_string(bed.path(&format!("keys/{u}.tempkey"))).unwrap(),
            k
        );
    }

    // A key from the file enrolls.
    bed.bed
        .run_env(
            &[
                "enroll",
                "--user",
                "alice",
                "--keyset",
                "Alice 1",
                "--token",
                "alice-card",
                "--authority",
                &bed.dir,
                "--temp-key-file",
                &p(&bed, "keys/alice.tempkey"),
            ],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", util::AUTHORITY_PIN),
            ],
        )
        .ok();
    assert_eq!(bed.user("alice")["state"], "active");
}

#[test]
fn add_users_csv_resumes_after_a_stop_between_batches() {
    let bed = AuthorityBed::new(&[], "CN=Bulk Authority,O=Example");
    let csv = bed.file("users.csv", b"u1,u1@example.org\nu2,\nu3,\nu4,\nu5,\n");
    let out = p(&bed, "merge");
    let args = [
        "--from",
        csv.as_str(),
        "--out",
        out.as_str(),
        "--format",
        "csv",
    ];
    // Batches of two; the second batch's commit fails: the first stands, its rows too.
    bed.authority_env(
        "add-users",
        &args,
        &[
            ("KEYWARD_BULK_BATCH", "2"),
            ("KEYWARD_FAULT", "bulk-batch-2"),
        ],
    )
    .fails(1, "injected fault");
    assert_eq!(names(&bed), vec!["u1", "u2"]);
    let merge = bed.path("merge/temporary-keys.csv");
    assert_eq!(mode(&merge), 0o600);
    let first = std::fs::read_to_string(&merge).unwrap();
    assert_eq!(
        first.lines().count(),
        5,
        "header + 4 rows written before the commit:\n{first}"
    );

    // Resumed: the two stale rows dropped, u3..u5 issued, u1 and u2 skipped with their rows kept.
    let run = bed
        .authority_env("add-users", &args, &[("KEYWARD_BULK_BATCH", "2")])
        .ok();
    assert!(
        run.stdout.contains("added 3 users; 2 skipped"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("dropped 2 rows"), "{}", run.stdout);
    assert_eq!(names(&bed), vec!["u1", "u2", "u3", "u4", "u5"]);
    let text = std::fs::read_to_string(&merge).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "user,email,temporary_key,expires");
    let users: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').next().unwrap())
        .collect();
    assert_eq!(users, vec!["u1", "u2", "u3", "u4", "u5"], "{text}");
    for r in &rows[1..3] {
        assert!(first.contains(r), "u1/u2 keep their rows: {r}");
    }
    assert!(rows[1].starts_with("u1,u1@example.org,"), "{}", rows[1]);
    bed.authority("log", &["--verify"]).ok();
}

/// The labels of the initialised tokens (`token list --json`).
fn labels(bed: &util::TestBed) -> Vec<String> {
    let mut v: Vec<String> = bed.run(&["--json", "token", "list"]).ok().json()["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["token"]["initialized"] == true)
        .map(|s| s["token"]["label"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn provision_tokens_from_a_manifest() {
    let bed = util::TestBed::new();
    bed.secret_file("so.pin", util::SO_PIN);
    let manifest = |name: &str, text: &str| bed.file(name, text.as_bytes());
    let start = labels(&bed);

    // A bad manifest: refused, no token touched.
    let bad = manifest(
        "bad.toml",
        "so_pin_file = \"so.pin\"\npin_out = \"pins\"\n[[token]]\nlabel = \"card-1\"\n[[token]]\nlabel = \"card-1\"\n",
    );
    bed.run(&["token", "provision", "--manifest", &bad])
        .fails(1, "label \"card-1\" appears twice; nothing was changed");
    assert_eq!(labels(&bed), start);

    let good = manifest(
        "tokens.toml",
        "so_pin_file = \"so.pin\"\npin_out = \"pins\"\n[[token]]\nlabel = \"card-1\"\n[[token]]\nlabel = \"card-2\"\n[[token]]\nlabel = \"card-3\"\n",
    );
    let run = bed
        .run(&["token", "provision", "--manifest", &good, "--dry-run"])
        .ok();
    // The summary is the result line, on standard output (PINs are not printed here).
    assert!(
        run.stdout.contains("would initialise 3 tokens"),
        "{}",
        run.stdout
    );
    assert_eq!(labels(&bed), start);
    assert!(!bed.path("pins").exists());

    let run = bed.run(&["token", "provision", "--manifest", &good]).ok();
    assert!(
        run.stdout.contains("initialised 3 tokens"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "the summary and no PIN on standard output: {}",
        run.stdout
    );
    assert_eq!(labels(&bed), vec!["card-1", "card-2", "card-3"]);
    let mut pins = Vec::new();
    for l in ["card-1", "card-2", "card-3"] {
        let f = bed.path(&format!("pins/{l}.pin"));
        assert_eq!(mode(&f), 0o600);
        let pin = std::fs::read_to_string(&f).unwrap().trim().to_string();
        assert_eq!(pin.len(), 12);
        bed.pkcs11_tool_login(l, &pin).ok();
        pins.push(pin);
    }
    assert_ne!(pins[0], pins[1], "one PIN per token");

    // Again: skipped and said so, the PIN files untouched.
    let run = bed.run(&["token", "provision", "--manifest", &good]).ok();
    assert!(
        run.stdout.contains("initialised 0 tokens (-); 3 skipped"),
        "{}",
        run.stdout
    );
    for (l, pin) in ["card-1", "card-2", "card-3"].iter().zip(&pins) {
        let f = bed.path(&format!("pins/{l}.pin"));
        assert_eq!(
            &std::fs::read_to_string(&f).unwrap().trim().to_string(),
            pin
        );
    }

    // PINs printed once instead; one more token added to the same manifest set.
    let print = manifest(
        "print.toml",
        "so_pin_file = \"so.pin\"\npin_out = \"-\"\npin_length = 8\n[[token]]\nlabel = \"card-1\"\n[[token]]\nlabel = \"card-4\"\n",
    );
    let run = bed.run(&["token", "provision", "--manifest", &print]).ok();
    let line = run.stdout.trim();
    let (label, pin) = line.split_once(' ').expect("LABEL PIN");
    assert_eq!(label, "card-4");
    assert_eq!(pin.len(), 8);
    bed.pkcs11_tool_login("card-4", pin).ok();
    assert!(run.stderr.contains("1 skipped"), "{}", run.stderr);
}

/// A planted symbolic link where a temporary key goes is never followed: an `--out` directory
/// others can write to is refused before anything is written, and a link at the temporary name
/// in a private directory is refused naming it; the victim file is unchanged both times, and
/// the same run into a fresh private directory works.
#[test]
fn add_users_refuses_a_shared_out_dir_and_a_planted_link() {
    let bed = AuthorityBed::new(&[], "CN=Bulk Authority,O=Example");
    let csv = bed.file("users.csv", b"user,email\ncarol,carol@example.org\n");
    let victim = bed.file("victim.txt", b"important data\n");

    // A world-writable --out (mode 0777) with the link planted in it.
    let shared = bed.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&victim, shared.join(".carol.tempkey.tmp")).unwrap();
    let run = bed
        .authority("add-users", &["--from", &csv, "--out", &p(&bed, "shared")])
        .fails(1, "is writable by its group or others (mode 0777)");
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important data\n"
    );
    assert!(!shared.join("carol.tempkey").exists());
    assert!(names(&bed).is_empty(), "no user recorded");

    // The --out directory itself a link: refused.
    let private = bed.path("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&private, bed.path("link")).unwrap();
    bed.authority("add-users", &["--from", &csv, "--out", &p(&bed, "link")])
        .fails(1, "is a symbolic link");

    // A private --out with the link at the temporary name: refused naming it, victim unchanged.
    std::os::unix::fs::symlink(&victim, private.join(".carol.tempkey.tmp")).unwrap();
    bed.authority("add-users", &["--from", &csv, "--out", &p(&bed, "private")])
        .fails(1, ".carol.tempkey.tmp: is in the way of a secret file");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important data\n"
    );
    assert!(names(&bed).is_empty(), "no user recorded");

    // The CSV format: a link at temporary-keys.csv is neither read nor appended to.
    std::fs::remove_file(private.join(".carol.tempkey.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, private.join("temporary-keys.csv")).unwrap();
    bed.authority(
        "add-users",
        &[
            "--from",
            &csv,
            "--out",
            &p(&bed, "private"),
            "--format",
            "csv",
        ],
    )
    .fails(1, "temporary-keys.csv: is a symbolic link");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important data\n"
    );
    std::fs::remove_file(private.join("temporary-keys.csv")).unwrap();

    // A leftover temporary file of our own (an interrupted run) is replaced; the run works.
    std::fs::write(private.join(".carol.tempkey.tmp"), b"stale").unwrap();
    bed.authority("add-users", &["--from", &csv, "--out", &p(&bed, "private")])
        .ok();
    let key = private.join("carol.tempkey");
    assert!(!std::fs::symlink_metadata(&key)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&key), 0o600);
    assert!(std::fs::read_to_string(&key).unwrap().trim().len() > 10);
    assert!(!private.join(".carol.tempkey.tmp").exists());
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important data\n"
    );
    assert_eq!(names(&bed), vec!["carol"]);
}

/// `token provision` writes PIN files the same way: a shared `pin_out` directory is refused.
#[test]
fn provision_refuses_a_shared_pin_directory() {
    let bed = util::TestBed::new();
    bed.secret_file("so.pin", util::SO_PIN);
    let start = labels(&bed);
    let pins = bed.path("pins");
    std::fs::create_dir(&pins).unwrap();
    std::fs::set_permissions(&pins, std::fs::Permissions::from_mode(0o777)).unwrap();
    let manifest = bed.file(
        "tokens.toml",
        b"so_pin_file = \"so.pin\"\npin_out = \"pins\"\n[[token]]\nlabel = \"card-1\"\n",
    );
    bed.run(&["token", "provision", "--manifest", &manifest])
        .fails(1, "is writable by its group or others");
    assert_eq!(labels(&bed), start, "no token initialised");
    assert_eq!(std::fs::read_dir(&pins).unwrap().count(), 0);
    // A label that would put its PIN file outside pin_out: refused before any token.
    let escape = bed.file(
        "escape.toml",
        b"so_pin_file = \"so.pin\"\npin_out = \"private\"\n[[token]]\nlabel = \"../card\"\n",
    );
    bed.run(&["token", "provision", "--manifest", &escape])
        .fails(1, "label \"../card\" cannot name a PIN file");
    assert_eq!(labels(&bed), start, "no token initialised");
}
