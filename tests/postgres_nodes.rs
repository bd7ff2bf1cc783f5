//! The authority's state in PostgreSQL, shared by two nodes, each with its own copy of the
//! authority token (with SoftHSM: a copy of the token directory under its own
//! SOFTHSM2_CONF). Real parts only: the `keyward` binary, SoftHSM2, and a throw-away
//! PostgreSQL cluster per test (`testbeds/postgres.sh`, stopped when the test ends).

mod util;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::pg::PgBed;
use util::{Run, TestBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

/// One authority node: its SoftHSM configuration (a copy of the token) and its directory.
struct Node {
    bed: TestBed,
    dir: String,
}

impl Node {
    fn cmd(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = self.bed.keyward();
        cmd.args(["authority", sub, "--dir", &self.dir])
            .args(args)
            .env("KEYWARD_PIN", AUTHORITY_PIN);
        cmd
    }

    fn authority(&self, sub: &str, args: &[&str]) -> Run {
        run_of(self.cmd(sub, args).output().expect("run keyward"))
    }

    fn spawn(&self, sub: &str, args: &[&str]) -> Child {
        self.cmd(sub, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward")
    }

    fn add_user(&self, user: &str) -> String {
        self.authority("add-user", &[user])
            .ok()
            .stdout
            .trim()
            .to_string()
    }
}

/// A cluster, node 1 (made with `authority init --db`) and node 2 (`authority join`), and the
/// bundle users enroll against; the users' card `card` is in node 1's bed.
struct Cluster {
    pg: PgBed,
    one: Node,
    two: Node,
    bundle: String,
}

fn cluster() -> Cluster {
    let pg = PgBed::start();
    let bed = TestBed::new();
    bed.init_token(AUTHORITY_TOKEN, AUTHORITY_PIN);
    bed.init_token("card", USER_PIN);
    let pw = pg.password_file.to_string_lossy().into_owned();
    let dir1 = bed.path("node1").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "authority",
            "init",
            "--dir",
            &dir1,
            "--token",
            AUTHORITY_TOKEN,
            "--name",
            "CN=Shared Authority",
            "--db",
            &pg.url,
            "--db-password-file",
            &pw,
        ],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
    )
    .ok();
    // Node 2: a copy of the token directory (the authority's token and the card) under a
    // SoftHSM configuration of its own.
    let bed2 = TestBed::new();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", bed.path("tokens").display()))
        .arg(bed2.path("tokens"))
        .status()
        .expect("cp");
    assert!(copied.success());
    let dir2 = bed2.path("node2").to_string_lossy().into_owned();
    let joined = bed2
        .run_env(
            &[
                "--json",
                "authority",
                "join",
                "--dir",
                &dir2,
                "--token",
                AUTHORITY_TOKEN,
                "--db",
                &pg.url,
                "--db-password-file",
                &pw,
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .ok();
    let doc = joined.json();
    assert_eq!(doc["command"], "authority join", "{doc}");
    assert_eq!(doc["dir"], dir2.as_str(), "{doc}");
    let invalid = util::schema_errors(&[("authority join".into(), doc)]);
    assert!(invalid.is_empty(), "{invalid:?}");
    let cert = bed.run(&["authority", "cert", "--dir", &dir1]).ok();
    let bundle = bed.file("authority-cert.pem", cert.stdout.as_bytes());
    Cluster {
        pg,
        one: Node { bed, dir: dir1 },
        two: Node {
            bed: bed2,
            dir: dir2,
        },
        bundle,
    }
}

impl Cluster {
    /// A P-256 enrollment request of `user` for `keyset` (on `card`).
    fn request(&self, user: &str, keyset: &str, temp_key: &str) -> String {
        let out = self.one.bed.path(&format!("{keyset}.req"));
        let out = out.to_string_lossy().into_owned();
        self.one
            .bed
            .run_env(
                &[
                    "enroll",
                    "--user",
                    user,
                    "--keyset",
                    keyset,
                    "--token",
                    "card",
                    "--key-type",
                    "p256",
                    "--authority-cert",
                    &self.bundle,
                    "-o",
                    &out,
                ],
                &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", temp_key)],
            )
            .ok();
        out
    }

    fn count(&self, sql: &str) -> usize {
        self.pg.sql(sql).trim().parse().expect("a count")
    }

    /// `log --verify` passes on both nodes.
    fn log_verifies(&self) {
        for node in [&self.one, &self.two] {
            node.bed
                .run(&["authority", "log", "--dir", &node.dir, "--verify"])
                .ok();
        }
    }
}

/// Exit 0, or exit 1 with exactly one error line; returns whether it succeeded.
#[track_caller]
fn clean(what: &str, run: &Run) -> bool {
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("keyward: error:"))
        .count();
    match run.code {
        0 => {
            assert_eq!(
                errors, 0,
                "{what} succeeded with an error line:\n{}",
                run.stderr
            );
            true
        }
        1 => {
            assert_eq!(
                errors, 1,
                "{what} failed without exactly one error line:\n{}",
                run.stderr
            );
            false
        }
        c => panic!(
            "{what} ended with exit {c}:\n{}\n{}",
            run.stdout, run.stderr
        ),
    }
}

fn run_of(out: std::process::Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn wait(child: Child) -> Run {
    run_of(child.wait_with_output().expect("wait for keyward"))
}

#[test]
fn the_whole_story_on_postgres() {
    let c = cluster();
    let key = c.one.add_user("alice");
    let req = c.request("alice", "alice", &key);
    let reply = c.one.bed.path("alice.reply").to_string_lossy().into_owned();
    c.one.authority("process", &[&req, "-o", &reply]).ok();
    c.one
        .bed
        .run_env(
            &["enroll", "--complete", &reply],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
    // Node 2 sees the user node 1 enrolled, and recovers and revokes on the same state.
    let users = c
        .two
        .bed
        .run(&["--json", "authority", "users", "--dir", &c.two.dir])
        .ok()
        .json();
    let alice = &users["users"][0];
    assert_eq!(alice["name"], "alice", "{users}");
    assert_eq!(
        alice["certificates"].as_array().map(Vec::len),
        Some(2),
        "{users}"
    );
    c.two.authority("recover", &["alice"]).ok();
    c.one.add_user("bob");
    c.two.authority("revoke", &["bob"]).ok();
    let crl = c.one.bed.path("one.crl").to_string_lossy().into_owned();
    c.one.authority("crl", &["-o", &crl]).ok();
    c.log_verifies();
    // The state is in the database, not in the directories.
    for node in [&c.one, &c.two] {
        assert!(!std::path::Path::new(&node.dir)
            .join("authority.db")
            .exists());
        let store = std::fs::read_to_string(std::path::Path::new(&node.dir).join("store.toml"))
            .expect("store.toml");
        let password = std::fs::read_to_string(&c.pg.password_file).expect("password");
        assert!(!store.contains(password.trim()), "a password in store.toml");
    }
    assert_eq!(
        c.count("SELECT count(*) FROM audit WHERE action = 'join'"),
        1
    );
    // A second init on the same database is refused before the token changes.
    let before = c.one.bed.token_snapshot();
    let again = c.one.bed.path("again").to_string_lossy().into_owned();
    let pw = c.pg.password_file.to_string_lossy().into_owned();
    c.one
        .bed
        .run_env(
            &[
                "authority",
                "init",
                "--dir",
                &again,
                "--token",
                AUTHORITY_TOKEN,
                "--force",
                "--db",
                &c.pg.url,
                "--db-password-file",
                &pw,
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .fails(1, "holds an authority already");
    assert_eq!(before, c.one.bed.token_snapshot());
    assert!(!std::path::Path::new(&again).join("store.toml").exists());
    // Joining with a token that is not the authority's is refused; nothing is written.
    let node3 = c.two.bed.path("node3").to_string_lossy().into_owned();
    let seq = c.pg.sql("SELECT max(seq) FROM audit");
    c.two
        .bed
        .run_env(
            &[
                "authority",
                "join",
                "--dir",
                &node3,
                "--token",
                "card",
                "--db",
                &c.pg.url,
                "--db-password-file",
                &pw,
            ],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .fails(1, "is not the authority's token");
    assert!(!std::path::Path::new(&node3).exists());
    assert_eq!(seq, c.pg.sql("SELECT max(seq) FROM audit"));
    // A password in the URL is refused.
    c.one
        .bed
        .run_env(
            &[
                "authority",
                "init",
                "--dir",
                &again,
                "--token",
                AUTHORITY_TOKEN,
                "--db",
                "postgresql://keyward:secret@localhost/keyward",
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .fails(1, "--db-password-file");
}

/// How many users enroll in the two-node test.
const USERS: usize = 40;

#[test]
fn two_nodes_process_every_request_at_once_and_each_is_issued_once() {
    let c = cluster();
    let mut requests = Vec::new();
    for i in 0..USERS {
        let user = format!("u{i:02}");
        // Users are added on either node; each makes two requests with its one temporary key.
        let node = if i % 2 == 0 { &c.one } else { &c.two };
        let key = node.add_user(&user);
        let a = c.request(&user, &user, &key);
        let b = c.request(&user, &format!("{user}b"), &key);
        requests.push((i, user, a, b));
    }
    let started = Instant::now();
    // At the same time: request A on one node, and on the other node request B (the same
    // temporary key, another keyset) and request A again; four users at a time (twelve
    // processes). Exactly one of A and B is issued; A again gets A's reply or fails cleanly.
    let mut issued = 0;
    for wave in requests.chunks(4) {
        let mut children = Vec::new();
        for (i, user, a, b) in wave {
            let (first, other) = if i % 2 == 0 {
                ((1, &c.one), (2, &c.two))
            } else {
                ((2, &c.two), (1, &c.one))
            };
            for (tag, (n, node), req) in [("A", first, a), ("B", other, b), ("A", other, a)] {
                let reply = node.bed.path(&format!("{user}.{tag}.{n}.reply"));
                let reply = reply.to_string_lossy().into_owned();
                children.push((
                    format!("{user} request {tag} on node {n}"),
                    (user.clone(), tag),
                    reply.clone(),
                    node.spawn("process", &[req, "-o", &reply]),
                ));
            }
        }
        let mut ok = std::collections::BTreeMap::<(String, &str), Vec<Vec<u8>>>::new();
        for (what, key, reply, child) in children {
            let run = wait(child);
            let entry = ok.entry(key).or_default();
            if clean(&what, &run) {
                entry.push(std::fs::read(&reply).expect("the reply written"));
            }
        }
        for (_, user, _, _) in wave {
            let a = &ok[&(user.clone(), "A")];
            let b = &ok[&(user.clone(), "B")];
            assert!(
                (a.is_empty() && b.len() == 1) || (!a.is_empty() && b.is_empty()),
                "{user}: request A succeeded {} times, request B {} times",
                a.len(),
                b.len()
            );
            assert!(
                a.windows(2).all(|w| w[0] == w[1]),
                "{user}: two different replies to A"
            );
            issued += 1;
        }
    }
    eprintln!(
        "{USERS} users, three `process` each across both nodes at once: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(issued, USERS);
    // One certificate pair per user, no temporary key spent twice, one gapless log.
    let users = c
        .one
        .bed
        .run(&["--json", "authority", "users", "--dir", &c.one.dir])
        .ok()
        .json();
    for u in users["users"].as_array().expect("users") {
        assert_eq!(u["certificates"].as_array().map(Vec::len), Some(2), "{u}");
    }
    assert_eq!(
        c.count("SELECT count(*) FROM audit WHERE action = 'process' AND outcome = 'ok'"),
        USERS
    );
    assert_eq!(
        c.count("SELECT count(*) FROM (SELECT subject FROM audit WHERE action = 'process' AND outcome = 'ok' GROUP BY subject HAVING count(*) > 1) AS twice"),
        0
    );
    assert_eq!(
        c.count("SELECT max(seq) - count(*) FROM audit"),
        0,
        "the audit log has gaps"
    );
    c.log_verifies();
    // CRLs from both nodes at once: every number once.
    crl_numbers_unique(&c);
}

/// Three CRLs from each node at once: six numbers, each once.
fn crl_numbers_unique(c: &Cluster) {
    let mut children = Vec::new();
    for i in 0..3 {
        for (n, node) in [(1, &c.one), (2, &c.two)] {
            let out = node
                .bed
                .path(&format!("{i}.{n}.crl"))
                .to_string_lossy()
                .into_owned();
            children.push((out.clone(), node.spawn("crl", &["-o", &out])));
        }
    }
    let mut numbers = std::collections::BTreeSet::new();
    for (out, child) in children {
        let run = wait(child);
        assert!(clean("crl", &run), "{}", run.stderr);
        let num = c
            .one
            .bed
            .run_tool(
                "openssl",
                "openssl",
                &["crl", "-in", &out, "-noout", "-crlnumber"],
            )
            .ok()
            .stdout;
        assert!(numbers.insert(num.clone()), "CRL number {num} twice");
    }
    assert_eq!(numbers.len(), 6);
}

#[test]
fn postgres_restarted_mid_run_fails_cleanly_and_works_after() {
    let c = cluster();
    // Commands of both nodes waiting on the authority's lock (held here by another session)
    // when the server restarts: each fails with one error line and writes nothing.
    let password = std::fs::read_to_string(&c.pg.password_file).expect("password");
    let mut holder = Command::new(util::pg::pg_tool("psql"))
        .args([
            c.pg.url.as_str(),
            "-c",
            "SELECT pg_advisory_lock(30229394876363364), pg_sleep(120)",
        ])
        .env("PGPASSWORD", password.trim())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    std::thread::sleep(Duration::from_secs(1));
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let node = if i % 2 == 0 { &c.one } else { &c.two };
            (format!("w{i}"), node.spawn("add-user", &[&format!("w{i}")]))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    c.pg.restart();
    let _ = holder.kill();
    let _ = holder.wait();
    for (user, child) in waiting {
        let run = wait(child);
        assert!(!clean(&user, &run), "{user} succeeded past a held lock");
        assert!(
            run.stderr.contains("the authority's database"),
            "{}",
            run.stderr
        );
        assert_eq!(
            c.count(&format!(
                "SELECT count(*) FROM records WHERE kind = 'user' AND key = '{user}'"
            )),
            0
        );
        c.one.add_user(&user);
    }
    // Commands of both nodes running when it restarts: done or not at all.
    let mut children = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &c.one } else { &c.two };
        children.push((
            format!("r{i:02}"),
            node.spawn("add-user", &[&format!("r{i:02}")]),
        ));
        if i == 4 {
            std::thread::sleep(Duration::from_millis(300));
            c.pg.restart();
        }
    }
    let mut failed = Vec::new();
    for (user, child) in children {
        let run = wait(child);
        if !clean(&user, &run) {
            failed.push(user);
        }
    }
    eprintln!("failed while the server restarted: {failed:?}");
    // Nothing half-done: a user is there exactly when its command succeeded.
    for i in 0..12 {
        let user = format!("r{i:02}");
        let there = c.count(&format!(
            "SELECT count(*) FROM records WHERE kind = 'user' AND key = '{user}'"
        ));
        assert_eq!(there, usize::from(!failed.contains(&user)), "{user}");
    }
    // And after: the failed ones again, on the other node, and the log verifies.
    for user in &failed {
        c.two.authority("add-user", &[user]).ok();
    }
    c.one.add_user("after");
    c.log_verifies();
}

#[test]
fn a_row_changed_in_the_database_is_refused_on_both_nodes() {
    let c = cluster();
    c.one.add_user("carol");
    c.two.add_user("dave");
    c.pg.sql("UPDATE records SET body = convert_to(replace(convert_from(body, 'UTF8'), 'carol', 'mallory'), 'UTF8') WHERE kind = 'user' AND key = 'carol'");
    for node in [&c.one, &c.two] {
        node.authority("recover", &["carol"])
            .refused("outside keyward");
        node.bed
            .run(&["authority", "log", "--dir", &node.dir, "--verify"])
            .refused("outside keyward");
    }
    // A bucket digest rewritten to match is caught by the signed root.
    c.pg.sql("UPDATE buckets SET digest = decode(repeat('ab', 32), 'hex') WHERE bucket = 0");
    for node in [&c.one, &c.two] {
        node.authority("add-user", &["erin"])
            .refused("outside keyward");
    }
}

/// A trigger planted in the database (one that silently drops a new user's row) is refused
/// by every command on both nodes before anything is done; dropped, the authority works on.
#[test]
fn a_trigger_planted_in_the_database_is_refused_on_both_nodes() {
    let c = cluster();
    c.one.add_user("carol");
    c.pg.sql(
        "CREATE FUNCTION drop_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER drop_erin BEFORE INSERT ON records FOR EACH ROW
           WHEN (NEW.key = 'erin') EXECUTE FUNCTION drop_row();",
    );
    for node in [&c.one, &c.two] {
        let run = node
            .authority("add-user", &["erin"])
            .refused("trigger drop_erin");
        assert!(
            run.stdout.trim().is_empty(),
            "a key was printed: {}",
            run.stdout
        );
        node.bed
            .run(&["authority", "log", "--dir", &node.dir, "--verify"])
            .refused("trigger drop_erin");
    }
    c.pg.sql("DROP TRIGGER drop_erin ON records; DROP FUNCTION drop_row();");
    c.two.add_user("erin");
    c.log_verifies();
}

#[test]
fn a_database_rolled_back_is_refused_by_a_node_that_saw_newer() {
    let c = cluster();
    c.one.add_user("frank");
    let dump =
        c.pg.client("pg_dump", &["--clean", "--if-exists", &c.pg.url]);
    // Both nodes see newer states than the dump.
    c.one.add_user("grace");
    c.two.add_user("heidi");
    // Restore the older dump.
    let file = c.pg.dir.path().join("old.sql");
    std::fs::write(&file, dump).expect("dump");
    c.pg.client(
        "psql",
        &[
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            &c.pg.url,
            "-f",
            &file.to_string_lossy(),
        ],
    );
    assert_eq!(
        c.count("SELECT count(*) FROM records WHERE kind = 'user' AND key = 'grace'"),
        0
    );
    let before = c.pg.sql("SELECT max(seq) FROM audit");
    for node in [&c.one, &c.two] {
        node.authority("add-user", &["ivan"]).refused("rolled back");
        node.authority("crl", &["-o", &node.bed.path("x.crl").to_string_lossy()])
            .refused("rolled back");
    }
    assert_eq!(
        before,
        c.pg.sql("SELECT max(seq) FROM audit"),
        "a refused command wrote"
    );
    // A node that saw nothing after the dump could not tell (docs/formats.md, several nodes).
}

// ---- Two EST nodes (`authority serve`) over the one PostgreSQL store ----

/// A running `authority serve` of one node, killed on drop (a failing test too).
struct Serving {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts `authority serve` on 127.0.0.1:0 and waits for its ready file.
    fn serve(&self, tag: &str) -> Serving {
        let ready = self.bed.path(&format!("ready-{tag}"));
        let log = self.bed.path(&format!("serve-{tag}.log"));
        let ready_arg = ready.to_string_lossy().into_owned();
        let mut child = self
            .cmd(
                "serve",
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--request-timeout",
                    "30s",
                    "--ready-file",
                    &ready_arg,
                ],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start keyward authority serve");
        let addr = util::wait_until_serving(&mut child, &ready, &log);
        Serving { child, addr, log }
    }
}

/// One EST answer: the HTTP status and the body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// POSTs the base64 CSR in `csr` to `endpoint` of the node at `addr` with curl, trusting only
/// the authority's CA, the user's name and temporary key in a curl config file (never argv).
fn est_post(
    bed: &TestBed,
    ca: &str,
    addr: &str,
    endpoint: &str,
    (user, key): (&str, &str),
    csr: &str,
    tag: &str,
) -> Answer {
    let cfg = bed.file(
        &format!("curl-{tag}.cfg"),
        format!("user = \"{user}:{key}\"\n").as_bytes(),
    );
    let body = bed.path(&format!("curl-{tag}.body"));
    let out = bed
        .tool("curl", "curl")
        .args(["-sS", "--max-time", "150", "--cacert", ca, "-K", &cfg, "-o"])
        .arg(&body)
        .args([
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &format!("@{csr}"),
            &format!("https://{addr}/.well-known/est/{endpoint}"),
        ])
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "{tag}: curl gave no status: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    Answer {
        status,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// An openssl key and PKCS#10 request (`ec` P-256 or `rsa` 2048) with CN `cn`, base64 as EST
/// sends it; returns the body file.
fn openssl_csr(bed: &TestBed, name: &str, kind: &str, cn: &str) -> String {
    let key = bed
        .path(&format!("{name}.key"))
        .to_string_lossy()
        .into_owned();
    let der = bed
        .path(&format!("{name}.csr.der"))
        .to_string_lossy()
        .into_owned();
    let b64 = bed
        .path(&format!("{name}.csr.b64"))
        .to_string_lossy()
        .into_owned();
    let newkey: &[&str] = if kind == "ec" {
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    } else {
        &["-newkey", "rsa:2048"]
    };
    let subj = format!("/CN={cn}");
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(newkey);
    args.extend([
        "-keyout", &key, "-subj", &subj, "-outform", "DER", "-out", &der,
    ]);
    bed.run_tool("openssl", "openssl", &args).ok();
    bed.run_tool("openssl", "openssl", &["base64", "-in", &der, "-out", &b64])
        .ok();
    b64
}

/// The serials of the certificates in a base64 certs-only PKCS#7.
fn serials_of_certs_only(b64: &[u8]) -> Vec<String> {
    let der = keyward::est::wire::decode_body(b64).expect("base64 answer");
    keyward::est::wire::certs_of(&der)
        .expect("a certs-only PKCS#7")
        .iter()
        .map(|c| hex(c.tbs_certificate.serial_number.as_bytes()))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How many users enroll over EST across the two nodes.
const EST_USERS: usize = 40;
/// How many users enroll with keyward's own client, each from two hosts (one per node) at once.
const KEYWARD_USERS: usize = 2;
/// How many users enroll at once (each with two clients, one per node: 2× this many curls).
const EST_AT_ONCE: usize = 8;

/// What the two clients of one user got, one per node: (simpleenroll, serverkeygen) each.
struct UserRun {
    user: String,
    /// Per client (node 1's, node 2's): the statuses and the successful bodies.
    clients: [(Answer, Answer); 2],
}

#[test]
fn two_est_nodes_enroll_every_user_once_with_each_key_tried_on_both() {
    util::require_tool("curl", "curl");
    let c = cluster();
    // The users, added on node 1 in one command (their temporary keys in files).
    let users: Vec<String> = (0..EST_USERS).map(|i| format!("e{i:02}")).collect();
    // And KEYWARD_USERS users enrolling with keyward's own client (`enroll --server`), each
    // from two hosts at once (a SoftHSM and a home of their own), one per node.
    let kusers: Vec<String> = (0..KEYWARD_USERS).map(|i| format!("k{i}")).collect();
    let csv: String = users
        .iter()
        .chain(&kusers)
        .map(|u| format!("{u},{u}@example.org\n"))
        .collect();
    let csv = c.one.bed.file("users.csv", csv.as_bytes());
    let keys_dir = c.one.bed.path("keys").to_string_lossy().into_owned();
    c.one
        .authority("add-users", &["--from", &csv, "--out", &keys_dir])
        .ok();
    let key_of = |u: &str| {
        std::fs::read_to_string(c.one.bed.path(&format!("keys/{u}.tempkey")))
            .expect("a temporary key file")
            .trim()
            .to_string()
    };
    // Each user's two clients: another P-256 signing key each (so at most one can bind the
    // enrollment) and another RSA transport key each (node 1's clients share one, node 2's
    // another: a transport key only names where the key goes).
    let transports = [
        openssl_csr(&c.one.bed, "transport1", "rsa", "t1"),
        openssl_csr(&c.one.bed, "transport2", "rsa", "t2"),
    ];
    let mut work = Vec::new();
    for u in &users {
        let sig = [1, 2]
            .map(|n| openssl_csr(&c.one.bed, &format!("{u}-{n}"), "ec", &format!("{u}-n{n}")));
        work.push((u.clone(), key_of(u), sig));
    }
    let hosts: Vec<[TestBed; 2]> = kusers
        .iter()
        .map(|_| {
            [0, 1].map(|_| {
                let host = TestBed::new();
                host.init_token("card", USER_PIN);
                host
            })
        })
        .collect();
    let nodes = [c.one.serve("est1"), c.two.serve("est2")];
    let started = Instant::now();
    let keyward_clients: Vec<(String, [Child; 2])> = kusers
        .iter()
        .zip(&hosts)
        .map(|(u, pair)| {
            let key = key_of(u);
            let mut n = 0;
            let children = pair.each_ref().map(|host| {
                let url = format!("https://{}", nodes[n].addr);
                n += 1;
                host.keyward()
                    .args([
                        "enroll",
                        "--user",
                        u,
                        "--keyset",
                        u,
                        "--token",
                        "card",
                        "--authority-cert",
                        &c.bundle,
                        "--server",
                        &url,
                    ])
                    .env("KEYWARD_PIN", USER_PIN)
                    .env("KEYWARD_TEMP_KEY", &key)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("keyward enroll --server")
            });
            (u.clone(), children)
        })
        .collect();
    // Both clients of a user at the same time, each on its own node: simpleenroll, then
    // serverkeygen whatever simpleenroll answered (the temporary key is tried on both nodes for
    // both steps). EST_AT_ONCE users at a time.
    let mut runs: Vec<UserRun> = Vec::new();
    for wave in work.chunks(EST_AT_ONCE) {
        let wave_runs = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|(user, key, sig)| {
                    let clients = [0usize, 1].map(|n| {
                        let (bed, addr) = (&c.one.bed, nodes[n].addr.clone());
                        let (ca, transport) = (c.bundle.clone(), transports[n].clone());
                        let (user, key, sig) = (user.clone(), key.clone(), sig[n].clone());
                        scope.spawn(move || {
                            let tag = format!("{user}-{}", n + 1);
                            let cred = (user.as_str(), key.as_str());
                            let enrolled = est_post(
                                bed,
                                &ca,
                                &addr,
                                "simpleenroll",
                                cred,
                                &sig,
                                &format!("{tag}-se"),
                            );
                            let keygen = est_post(
                                bed,
                                &ca,
                                &addr,
                                "serverkeygen",
                                cred,
                                &transport,
                                &format!("{tag}-kg"),
                            );
                            (enrolled, keygen)
                        })
                    });
                    (user.clone(), clients)
                })
                .collect();
            handles
                .into_iter()
                .map(|(user, [a, b])| UserRun {
                    user,
                    clients: [a.join().expect("client 1"), b.join().expect("client 2")],
                })
                .collect::<Vec<_>>()
        });
        runs.extend(wave_runs);
    }
    // keyward's clients: on exactly one host per user the enrollment succeeded, the other
    // got one clean error line.
    for (u, [a, b]) in keyward_clients {
        let ok = [wait(a), wait(b)]
            .iter()
            .enumerate()
            .filter(|(n, run)| clean(&format!("{u}'s keyward client on node {}", n + 1), run))
            .count();
        assert_eq!(ok, 1, "{u}: {ok} keyward clients enrolled");
    }
    let took = started.elapsed();
    eprintln!(
        "{EST_USERS} users over EST, two clients each (one per node) at once, {EST_AT_ONCE} users at a time: {:.1}s",
        took.as_secs_f64()
    );
    // Every client got an answer or a clean refusal; per user exactly one signing and one
    // encryption certificate went out.
    let mut sent: std::collections::BTreeMap<String, (String, String)> = Default::default();
    for r in &runs {
        let mut signing = Vec::new();
        let mut encryption = Vec::new();
        for (n, (se, kg)) in r.clients.iter().enumerate() {
            for (what, a) in [("simpleenroll", se), ("serverkeygen", kg)] {
                assert!(
                    matches!(a.status, 200 | 401 | 409),
                    "{} on node {}: {what} answered {}: {}",
                    r.user,
                    n + 1,
                    a.status,
                    String::from_utf8_lossy(&a.body)
                );
            }
            if se.status == 200 {
                signing.extend(serials_of_certs_only(&se.body));
            }
            if kg.status == 200 {
                let text = String::from_utf8_lossy(&kg.body);
                let (_key, certs) =
                    keyward::est::wire::split_serverkeygen(&text).expect("a serverkeygen answer");
                let certs = keyward::est::wire::certs_of(&certs).expect("certs-only");
                encryption.extend(
                    certs
                        .iter()
                        .map(|c| hex(c.tbs_certificate.serial_number.as_bytes())),
                );
            }
        }
        assert_eq!(
            signing.len(),
            1,
            "{}: signing certificates {signing:?}",
            r.user
        );
        assert_eq!(
            encryption.len(),
            1,
            "{}: encryption certificates {encryption:?}",
            r.user
        );
        sent.insert(r.user.clone(), (signing[0].clone(), encryption[0].clone()));
    }
    // The store holds exactly what the clients got: one pair per user, every serial once.
    assert_eq!(
        c.count("SELECT count(*) FROM records WHERE kind = 'issued'"),
        2 * (EST_USERS + KEYWARD_USERS),
        "issued: one pair per user"
    );
    assert_eq!(
        c.count("SELECT count(*) FROM audit WHERE action = 'process' AND detail LIKE 'EST enrollment%' AND outcome = 'ok'"),
        EST_USERS
    );
    assert_eq!(
        c.count("SELECT count(*) FROM (SELECT subject FROM audit WHERE action = 'process' AND detail LIKE 'EST enrollment%' AND outcome = 'ok' GROUP BY subject HAVING count(*) > 1) AS twice"),
        0,
        "a temporary key spent twice"
    );
    assert_eq!(
        c.count("SELECT max(seq) - count(*) FROM audit"),
        0,
        "the audit log has gaps"
    );
    // The nodes stop (each holds keyward's SoftHSM lock on its copy of the token while it
    // serves); then both verify the one log, and list what the clients got.
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .collect();
    drop(nodes);
    for log in &logs {
        assert!(!log.contains("panicked"), "a node panicked:\n{log}");
    }
    c.log_verifies();
    let listed = c
        .two
        .bed
        .run(&["--json", "authority", "users", "--dir", &c.two.dir])
        .ok()
        .json();
    let listed = listed["users"].as_array().expect("users");
    assert_eq!(listed.len(), EST_USERS + KEYWARD_USERS);
    for u in listed {
        let name = u["name"].as_str().expect("a name");
        if kusers.iter().any(|k| k == name) {
            assert_eq!(u["certificates"].as_array().map(Vec::len), Some(2), "{u}");
            continue;
        }
        assert_eq!(u["state"], "active", "{u}");
        let mut got: Vec<String> = u["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .map(|c| c["serial"].as_str().expect("a serial").to_lowercase())
            .collect();
        got.sort();
        let (s, e) = &sent[name];
        let mut want = vec![s.to_lowercase(), e.to_lowercase()];
        want.sort();
        assert_eq!(got, want, "{name}: the store and the clients disagree");
    }
    // CRLs from both nodes at once: every number once.
    crl_numbers_unique(&c);
}
