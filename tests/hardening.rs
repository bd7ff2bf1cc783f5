//! The authority's directory and keyward's secrets against someone sharing the machine:
//! directories made private whatever the umask, a shared (group- or world-writable) directory
//! refused, symbolic links inside it never followed, secret files readable by others warned
//! about, core dumps off while secrets are in memory; and hostile names refused. Every refusal
//! changes nothing.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use util::{AuthorityBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

/// Everything that makes up the authority's state: its records, its log and its files.
fn state(bed: &AuthorityBed) -> (Vec<u8>, Vec<u8>, std::collections::BTreeSet<String>) {
    (
        bed.state_file("users.toml"),
        bed.state_file("audit.log"),
        bed.state_files(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// keyward under `umask 000`, through sh (the umask is inherited across exec).
fn with_umask_0(bed: &AuthorityBed, args: &[&str], env: &[(&str, &str)]) -> util::Run {
    let cmd = bed.keyward();
    let program = cmd.get_program().to_owned();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    for (k, v) in env {
        sh.env(k, v);
    }
    sh.stdin(std::process::Stdio::null());
    let out = sh.output().expect("sh");
    util::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn directories_are_private_whatever_the_umask() {
    let bed = AuthorityBed::new(&["card"], "CN=Hardening CA");
    assert_eq!(
        mode(Path::new(&bed.dir)),
        0o700,
        "authority init made a directory others can read"
    );
    // A second authority under umask 000 (on its own token): still 0700.
    bed.init_token("auth2", AUTHORITY_PIN);
    let dir2 = bed.path("auth2-dir");
    let dir2s = dir2.to_string_lossy().into_owned();
    with_umask_0(
        &bed,
        &["authority", "init", "--dir", &dir2s, "--token", "auth2"],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
    )
    .ok();
    assert_eq!(mode(&dir2), 0o700);
    // KEYWARD_HOME made by keyward under umask 000: 0700.
    let home = bed.path("new-home/keyward");
    let homes = home.to_string_lossy().into_owned();
    with_umask_0(
        &bed,
        &[
            "--home", &homes, "keyset", "create", "ks", "--token", "card",
        ],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    assert_eq!(mode(&home), 0o700, "KEYWARD_HOME made readable by others");
}

#[test]
fn a_shared_authority_directory_is_refused_and_left_alone() {
    let bed = AuthorityBed::new(&[], "CN=Hardening CA");
    bed.add_user("ann", &[]);
    let before = state(&bed);
    for m in [0o770, 0o777, 0o702] {
        std::fs::set_permissions(&bed.dir, std::fs::Permissions::from_mode(m)).unwrap();
        bed.authority("add-user", &["ben"])
            .fails(1, "writable by its group or others");
        bed.run(&["authority", "users", "--dir", &bed.dir])
            .fails(1, "chmod 700");
        assert_eq!(
            mode(Path::new(&bed.dir)),
            m,
            "keyward changed the mode itself"
        );
        std::fs::set_permissions(&bed.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(state(&bed), before);
    }
    // Readable by the group but not writable: allowed (the state is vouched for by the token).
    std::fs::set_permissions(&bed.dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    bed.run(&["authority", "users", "--dir", &bed.dir]).ok();
}

#[test]
fn symbolic_links_in_the_authority_directory_are_never_followed() {
    let bed = AuthorityBed::new(&[], "CN=Hardening CA");
    bed.add_user("ann", &[]);
    let dir = Path::new(&bed.dir);
    // The lock file pointed at a file elsewhere (keyward would create or lock it).
    let victim = bed.path("victim.txt");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::remove_file(dir.join("authority.lock")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("authority.lock")).unwrap();
    let before = state(&bed);
    bed.authority("add-user", &["ben"])
        .fails(1, "symbolic link");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(state(&bed), before);
    std::fs::remove_file(dir.join("authority.lock")).unwrap();
    // The database replaced by a link to a copy elsewhere.
    let elsewhere = bed.path("copy.db");
    std::fs::copy(dir.join("authority.db"), &elsewhere).unwrap();
    std::fs::rename(dir.join("authority.db"), bed.path("real.db")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("authority.db")).unwrap();
    bed.authority("add-user", &["ben"])
        .fails(1, "symbolic link");
    bed.run(&["authority", "users", "--dir", &bed.dir])
        .fails(1, "symbolic link");
    std::fs::remove_file(dir.join("authority.db")).unwrap();
    std::fs::rename(bed.path("real.db"), dir.join("authority.db")).unwrap();
    // The directory itself a link.
    let link = bed.path("auth-link");
    std::os::unix::fs::symlink(&bed.dir, &link).unwrap();
    bed.run(&["authority", "users", "--dir", &link.to_string_lossy()])
        .fails(1, "symbolic link");
    // Put back, everything works and nothing changed.
    let after = bed.users();
    assert_eq!(after.as_array().unwrap().len(), 1);
    bed.run(&["authority", "log", "--dir", &bed.dir, "--verify"])
        .ok();
}

#[test]
fn secret_files_readable_by_others_are_warned_about() {
    let bed = AuthorityBed::new(&[], "CN=Hardening CA");
    let pin = bed.secret_file("authority.pin", AUTHORITY_PIN);
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = [
        "authority",
        "add-user",
        "--dir",
        &bed.dir,
        "ann",
        "--pin-file",
    ];
    let mut a: Vec<&str> = args.to_vec();
    let pins = pin.to_string_lossy().into_owned();
    a.push(&pins);
    let run = bed.run(&a).ok();
    assert!(
        run.stderr.contains("is readable by others"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut b: Vec<&str> = vec![
        "authority",
        "add-user",
        "--dir",
        &bed.dir,
        "ben",
        "--pin-file",
    ];
    b.push(&pins);
    let run = bed.run(&b).ok();
    assert!(!run.stderr.contains("readable by others"), "{}", run.stderr);
}

#[test]
fn core_dumps_are_off_while_a_secret_is_awaited() {
    let bed = AuthorityBed::new(&[], "CN=Hardening CA");
    // A PIN file that is a FIFO: keyward waits on it with the hardening already in place.
    let fifo = bed.path("pin.fifo");
    let st = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(st.success());
    let child = bed
        .keyward()
        .args([
            "authority",
            "add-user",
            "--dir",
            &bed.dir,
            "ann",
            "--pin-file",
        ])
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("keyward");
    let limits_path = format!("/proc/{}/limits", child.id());
    let mut limits = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        limits = std::fs::read_to_string(&limits_path).unwrap_or_default();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or("");
        if core.split_whitespace().nth(4) == Some("0") {
            break;
        }
    }
    std::fs::write(&fifo, format!("{AUTHORITY_PIN}\n")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect(&limits);
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
}

#[test]
fn hostile_names_are_refused_and_change_nothing() {
    let bed = AuthorityBed::new(&[], "CN=Hardening CA");
    bed.add_user("alice", &[]);
    let before = state(&bed);
    for (args, needle) in [
        (vec!["."], "must not start"),
        (vec![".."], "must not start"),
        (vec!["-rf"], "must not start"),
        (vec!["a/b"], "must be 1-64"),
        (vec!["../../etc"], "must be 1-64"),
        (vec!["a\u{1b}[2Jb"], "must be 1-64"),
        (vec!["ALICE"], "only in case"),
        (vec!["Alice"], "only in case"),
        (vec!["ann", "--email", "ann@localhost"], "two labels"),
        (
            vec!["ann", "--email", "ann..x@example.org"],
            "not an e-mail address",
        ),
        (
            vec!["ann", "--email", "\"q\"@example.org"],
            "not an e-mail address",
        ),
        (
            vec!["ann", "--email", "ann@[192.0.2.1]"],
            "not an e-mail address",
        ),
    ] {
        // Options first, then `--`, so that "-rf" reaches keyward as a name, not an option.
        let mut full = vec!["authority", "add-user", "--dir", &bed.dir];
        full.extend(args[1..].iter().copied());
        full.extend(["--", args[0]]);
        bed.run_env(&full, &[("KEYWARD_PIN", AUTHORITY_PIN)])
            .fails(1, needle);
        assert_eq!(state(&bed), before, "{args:?} changed the state");
    }
    // A distinguished name with a control character, and a second authority on a token that
    // holds one: refused before anything is made.
    let objects = bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN).len();
    let d = bed.path("second").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "authority",
            "init",
            "--dir",
            &d,
            "--token",
            AUTHORITY_TOKEN,
            "--name",
            "CN=Evil\u{7}CA",
        ],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
    )
    .fails(1, "control character");
    bed.run_env(
        &["authority", "init", "--dir", &d, "--token", AUTHORITY_TOKEN],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
    )
    .fails(1, "already holds an authority");
    assert!(!Path::new(&d).exists(), "a refused init left its directory");
    assert_eq!(
        bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN).len(),
        objects
    );
    // With --force it is made.
    bed.run_env(
        &[
            "authority",
            "init",
            "--dir",
            &d,
            "--token",
            AUTHORITY_TOKEN,
            "--force",
        ],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
    )
    .ok();
}

#[test]
fn a_keyset_name_confusable_with_another_is_warned_about() {
    let bed = AuthorityBed::new(&["card"], "CN=Hardening CA");
    bed.create_keyset("alice", "card", USER_PIN, &[]).ok();
    bed.create_keyset("ALICE", "card", USER_PIN, &[])
        .fails(1, "already exists");
    let run = bed.create_keyset("\u{430}lice", "card", USER_PIN, &[]).ok();
    assert!(
        run.stderr
            .contains("looks like the existing keyset \"alice\""),
        "{}",
        run.stderr
    );
    let run = bed.create_keyset("bob", "card", USER_PIN, &[]).ok();
    assert!(!run.stderr.contains("looks like"), "{}", run.stderr);
}
