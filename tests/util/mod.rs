//! The test bed: a throw-away SoftHSM2 token directory per test, the real `keyward` binary,
//! and the real interop peers. Nothing is mocked; a missing tool fails the test with how to
//! install it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod beds;
pub mod modules;
pub mod pg;

pub const SO_PIN: &str = "so-secret-1";
pub const USER_PIN: &str = "user-secret-1";

/// One test's SoftHSM2 and keyward home.
pub struct TestBed {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub home: PathBuf,
    /// keyward reaches SoftHSM through the shim (the shim pass; see [`TestBed::keyward`]).
    pub via_shim: bool,
}

/// The SoftHSM2 module, or a panic saying how to install it.
pub fn module() -> PathBuf {
    for p in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("SoftHSM2 is not installed: run `bash testbeds/setup.sh` (apt-get install softhsm2)");
}

/// Whether this run sends keyward through the shim (`KEYWARD_TEST_VIA_SHIM=1`).
pub fn via_shim() -> bool {
    std::env::var("KEYWARD_TEST_VIA_SHIM").is_ok_and(|v| v == "1")
}

/// The module keyward is given in this run: the shim in the shim pass, else SoftHSM2.
pub fn keyward_module() -> PathBuf {
    if via_shim() {
        shim_module()
    } else {
        module()
    }
}

/// Panics with an install hint when `program` is not on PATH.
pub fn require_tool(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run `bash testbeds/setup.sh` (apt-get install {package})"
    );
}

/// The result of running a program.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit status 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts the exit status and that stderr has exactly one `keyward: error:` line containing `needle`.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        if code == 1 {
            let lines: Vec<&str> = self
                .stderr
                .lines()
                .filter(|l| l.starts_with("keyward: error:"))
                .collect();
            assert_eq!(lines.len(), 1, "want one error line:\n{}", self.stderr);
        }
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

impl TestBed {
    /// A fresh token directory and home.
    pub fn new() -> TestBed {
        module();
        let dir = tempfile::Builder::new()
            .prefix("keyward-test")
            .tempdir()
            .expect("temp dir");
        let tokens = dir.path().join("tokens");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&tokens).expect("tokens dir");
        std::fs::create_dir_all(&home).expect("home dir");
        let template = include_str!("../../testbeds/softhsm2.conf.in");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            template.replace("@TOKENDIR@", &tokens.to_string_lossy()),
        )
        .expect("conf");
        TestBed {
            dir,
            conf,
            home,
            via_shim: via_shim(),
        }
    }

    /// This bed without the shim pass's module: for tests of how keyward finds its module
    /// (flags, environment, config.toml, the module's own configuration).
    pub fn native(mut self) -> TestBed {
        self.via_shim = false;
        self
    }

    /// A path inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a secret file and returns its path.
    pub fn secret_file(&self, name: &str, value: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, format!("{value}\n")).expect("secret file");
        p
    }

    /// A `keyward` command with this bed's SoftHSM and home, and no inherited KEYWARD_* variables.
    ///
    /// With `KEYWARD_TEST_VIA_SHIM=1` in the test's environment (the second pass of
    /// `testbeds/test-all.sh`), keyward reaches SoftHSM through the PKCS#11 shim with no fault
    /// configured (`KEYWARD_MODULE`; a test's own `--module` or `KEYWARD_MODULE` still wins):
    /// the whole suite then proves the shim forwards faithfully.
    pub fn keyward(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KEYWARD_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .env("KEYWARD_HOME", &self.home)
            .stdin(Stdio::null());
        if self.via_shim {
            cmd.env("KEYWARD_MODULE", shim_module())
                .env("KEYWARD_SHIM_MODULE", module());
        }
        cmd
    }

    /// Runs keyward with `args` and extra environment.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.keyward();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run keyward"))
    }

    /// Runs keyward with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Another program (pkcs11-tool, p11tool, softhsm2-util, openssl) with this bed's SoftHSM.
    pub fn tool(&self, program: &str, package: &str) -> Command {
        require_tool(program, package);
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", &self.conf).stdin(Stdio::null());
        cmd
    }

    /// `openssl ARGS -engine pkcs11` against the bed's module (OpenSSL's PKCS#11 engine
    /// reaches the bed's tokens through `PKCS11_MODULE_PATH`).
    pub fn openssl_engine(&self, args: &[&str]) -> Run {
        let found = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
            .iter()
            .any(|arch| Path::new(&format!("/usr/lib/{arch}/engines-3/pkcs11.so")).exists());
        assert!(
            found,
            "OpenSSL's PKCS#11 engine is missing: run `bash testbeds/setup.sh` (apt-get install libengine-pkcs11-openssl)"
        );
        let out = self
            .tool("openssl", "openssl")
            .args(args)
            .args(["-engine", "pkcs11"])
            .env("PKCS11_MODULE_PATH", module())
            .output()
            .expect("run openssl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs another program with args.
    pub fn run_tool(&self, program: &str, package: &str, args: &[&str]) -> Run {
        Run::from(
            self.tool(program, package)
                .args(args)
                .output()
                .expect("run tool"),
        )
    }

    /// Initialises a token with keyward (SO PIN [`SO_PIN`], user PIN `user_pin`); returns its serial.
    pub fn init_token(&self, label: &str, user_pin: &str) -> String {
        let run = self
            .run_env(
                &["--json", "token", "init", "--free", "--label", label],
                &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", user_pin)],
            )
            .ok();
        run.json()["token"]["serial"]
            .as_str()
            .expect("serial")
            .to_string()
    }

    /// Every file under the token directory with its bytes, to prove a failed command changed nothing.
    pub fn token_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        snapshot(&self.path("tokens"), &mut out);
        out.sort();
        out
    }
}

fn snapshot(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            snapshot(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
}

impl TestBed {
    /// `pkcs11-tool --login` with `pin` on the token labelled `label`, listing its objects:
    /// exit 0 proves the PIN works for OpenSC too. pkcs11-tool matches the label as a prefix:
    /// use labels that are not prefixes of one another.
    pub fn pkcs11_tool_login(&self, label: &str, pin: &str) -> Run {
        let module = module();
        let module = module.to_string_lossy();
        self.run_tool(
            "pkcs11-tool",
            "opensc",
            &[
                "--module",
                &module,
                "--token-label",
                label,
                "--login",
                "--pin",
                pin,
                "-O",
            ],
        )
    }

    /// Like [`TestBed::run_env`], but fails the test if keyward has not exited after `secs`
    /// seconds (a prompt that hangs instead of erroring).
    pub fn run_env_timeout(&self, args: &[&str], env: &[(&str, &str)], secs: u64) -> Run {
        let mut cmd = self.keyward();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn keyward");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while child.try_wait().expect("wait keyward").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect keyward");
                panic!(
                    "keyward {args:?} hung for {secs}s\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Run::from(child.wait_with_output().expect("collect keyward"))
    }

    /// Writes `$KEYWARD_HOME/config.toml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.home.join("config.toml"), text).expect("config.toml");
    }
}

impl Run {
    /// Asserts a non-zero exit and that stdout or stderr contains `needle` (for other programs,
    /// whose errors do not follow keyward's one-line format).
    #[track_caller]
    pub fn refused(self, needle: &str) -> Run {
        assert_ne!(
            self.code, 0,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.contains(needle) || self.stderr.contains(needle),
            "output lacks {needle:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

// ---- keyset helpers (appended for tests/keyset_*.rs) ---------------------------------------

/// One object in `pkcs11-tool -O` output: its header line ("Private Key Object; RSA") and its
/// indented `key: value` fields (label, ID, Usage, Access, …).
#[derive(Debug, Clone)]
pub struct P11Object {
    pub header: String,
    pub fields: std::collections::BTreeMap<String, String>,
}

impl P11Object {
    /// A field's value, or "" when absent.
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    /// The comma-separated items of a field ("Usage", "Access").
    pub fn items(&self, key: &str) -> Vec<String> {
        self.get(key)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn is_private_key(&self) -> bool {
        self.header.starts_with("Private Key Object")
    }

    pub fn is_public_key(&self) -> bool {
        self.header.starts_with("Public Key Object")
    }
}

/// Parses `pkcs11-tool -O` output.
pub fn parse_pkcs11_tool_objects(stdout: &str) -> Vec<P11Object> {
    let mut out: Vec<P11Object> = Vec::new();
    let mut in_data = false;
    for line in stdout.lines() {
        // Data objects (the authority's state head) are not keys: skipped whole, so their
        // fields are not taken for the key listed before them.
        if line.starts_with("Data object") {
            in_data = true;
            continue;
        }
        if line.contains(" Object;") && !line.starts_with(' ') {
            in_data = false;
            out.push(P11Object {
                header: line.trim().to_string(),
                fields: Default::default(),
            });
        } else if let (false, Some(obj), Some((k, v))) =
            (in_data, out.last_mut(), line.split_once(':'))
        {
            if line.starts_with(' ') {
                obj.fields
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    out
}

impl TestBed {
    /// The objects `pkcs11-tool -O --login` shows on the token labelled `label` (asserts success).
    pub fn token_objects(&self, label: &str, pin: &str) -> Vec<P11Object> {
        let run = self.pkcs11_tool_login(label, pin).ok();
        parse_pkcs11_tool_objects(&run.stdout)
    }

    /// `keyward keyset create NAME --token TOKEN EXTRA…` with `KEYWARD_PIN` = `pin`.
    pub fn create_keyset(&self, name: &str, token: &str, pin: &str, extra: &[&str]) -> Run {
        let mut args = vec!["keyset", "create", name, "--token", token];
        args.extend_from_slice(extra);
        self.run_env(&args, &[("KEYWARD_PIN", pin)])
    }

    /// `keyward --json keyset show NAME` (asserts success).
    pub fn keyset_json(&self, name: &str) -> serde_json::Value {
        self.run(&["--json", "keyset", "show", name]).ok().json()
    }

    /// The keyset registry's text, or `None` when there is no registry yet.
    pub fn registry_text(&self) -> Option<String> {
        std::fs::read_to_string(self.home.join("keysets.toml")).ok()
    }

    /// Writes `bytes` to a file in the test's directory and returns its path as a string.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write test file");
        p.to_string_lossy().into_owned()
    }
}

// ---- authority and enrollment helpers (appended for tests/authority_cli.rs, tests/enroll_flow.rs) ----

/// The authority's token label (not a prefix of any card label the tests use).
pub const AUTHORITY_TOKEN: &str = "authority";
/// The authority token's user PIN.
pub const AUTHORITY_PIN: &str = "authority-pin-1";

/// A test bed with an authority: its token and the users' cards initialised (user PIN
/// [`USER_PIN`]), `authority init` run, and `authority cert` saved.
pub struct AuthorityBed {
    pub bed: TestBed,
    /// The authority's state directory.
    pub dir: String,
    /// `authority cert` output: CA + exchange certificate + OAEP marker.
    pub bundle: String,
    /// The CA certificate alone, PEM (for `openssl -CAfile`).
    pub ca: String,
}

impl std::ops::Deref for AuthorityBed {
    type Target = TestBed;
    fn deref(&self) -> &TestBed {
        &self.bed
    }
}

/// The PEM blocks (`-----BEGIN …` to `-----END …-----`) in `text`.
pub fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END ") {
            out.extend(cur.take());
        }
    }
    out
}

/// Relative paths of every file under `dir` (directories themselves left out).
pub fn files_under(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut all = Vec::new();
    snapshot(dir, &mut all);
    all.into_iter()
        .map(|(p, _)| {
            p.strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// (header, label, ID) of every object, to compare a token's contents before and after.
pub fn p11_object_set(
    objects: &[P11Object],
) -> std::collections::BTreeSet<(String, String, String)> {
    objects
        .iter()
        .map(|o| {
            (
                o.header.clone(),
                o.get("label").to_string(),
                o.get("ID").to_string(),
            )
        })
        .collect()
}

impl AuthorityBed {
    /// A bed with the authority token and `cards`, and an authority named `name` in `auth/`.
    pub fn new(cards: &[&str], name: &str) -> AuthorityBed {
        let bed = TestBed::new();
        bed.init_token(AUTHORITY_TOKEN, AUTHORITY_PIN);
        for card in cards {
            bed.init_token(card, USER_PIN);
        }
        let dir = bed.path("auth").to_string_lossy().into_owned();
        bed.run_env(
            &[
                "authority",
                "init",
                "--dir",
                &dir,
                "--token",
                AUTHORITY_TOKEN,
                "--name",
                name,
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .ok();
        let cert = bed.run(&["authority", "cert", "--dir", &dir]).ok();
        let bundle = bed.file("authority-cert.pem", cert.stdout.as_bytes());
        let first = pem_blocks(&cert.stdout)
            .into_iter()
            .next()
            .expect("a CA certificate in `authority cert`");
        let ca = bed.file("ca-only.pem", first.as_bytes());
        AuthorityBed {
            bed,
            dir,
            bundle,
            ca,
        }
    }

    /// `keyward authority SUB --dir DIR ARGS…` with the authority's PIN and `env`.
    pub fn authority_env(&self, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec!["authority", sub, "--dir", &self.dir];
        all.extend_from_slice(args);
        let mut vars = vec![("KEYWARD_PIN", AUTHORITY_PIN)];
        vars.extend_from_slice(env);
        self.bed.run_env(&all, &vars)
    }

    /// `keyward authority SUB --dir DIR ARGS…` with the authority's PIN.
    pub fn authority(&self, sub: &str, args: &[&str]) -> Run {
        self.authority_env(sub, args, &[])
    }

    /// `authority add-user USER EXTRA…`; returns the temporary key it prints (asserts success).
    pub fn add_user(&self, user: &str, extra: &[&str]) -> String {
        let mut args = vec![user];
        args.extend_from_slice(extra);
        let run = self.authority("add-user", &args).ok();
        run.stdout.trim().to_string()
    }

    /// `enroll --user USER --keyset KEYSET --token CARD --authority-cert BUNDLE -o OUT` with
    /// [`USER_PIN`] and `temp_key`; OUT is a file in the bed's directory.
    pub fn request(&self, user: &str, keyset: &str, card: &str, temp_key: &str, out: &str) -> Run {
        let out = self.bed.path(out);
        let out = out.to_string_lossy();
        self.bed.run_env(
            &[
                "enroll",
                "--user",
                user,
                "--keyset",
                keyset,
                "--token",
                card,
                "--authority-cert",
                &self.bundle,
                "-o",
                &out,
            ],
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", temp_key)],
        )
    }

    /// `enroll … --authority DIR EXTRA…` (request, process and complete in one), with
    /// [`USER_PIN`], the authority's PIN and `temp_key`; `env` may override any of them.
    pub fn enroll_local(
        &self,
        user: &str,
        keyset: &str,
        card: &str,
        temp_key: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let mut vars = vec![
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ("KEYWARD_TEMP_KEY", temp_key),
        ];
        vars.extend_from_slice(env);
        let mut args = vec![
            "enroll",
            "--user",
            user,
            "--keyset",
            keyset,
            "--token",
            card,
            "--authority",
            &self.dir,
        ];
        args.extend_from_slice(extra);
        self.bed.run_env(&args, &vars)
    }

    /// `authority process --dir DIR REQUEST -o REPLY` (files in the bed's directory) with `env`.
    pub fn process_env(&self, request: &str, reply: &str, env: &[(&str, &str)]) -> Run {
        let request = self.bed.path(request);
        let reply = self.bed.path(reply);
        self.authority_env(
            "process",
            &[&request.to_string_lossy(), "-o", &reply.to_string_lossy()],
            env,
        )
    }

    /// `authority process --dir DIR REQUEST -o REPLY` (files in the bed's directory).
    pub fn process(&self, request: &str, reply: &str) -> Run {
        self.process_env(request, reply, &[])
    }

    /// `enroll --complete REPLY` (a file in the bed's directory) with `pin` and `env`.
    pub fn complete_env(&self, reply: &str, pin: &str, env: &[(&str, &str)]) -> Run {
        let reply = self.bed.path(reply);
        let mut vars = vec![("KEYWARD_PIN", pin)];
        vars.extend_from_slice(env);
        self.bed
            .run_env(&["enroll", "--complete", &reply.to_string_lossy()], &vars)
    }

    /// `authority users --json`.
    pub fn users(&self) -> serde_json::Value {
        self.bed
            .run(&["--json", "authority", "users", "--dir", &self.dir])
            .ok()
            .json()["users"]
            .clone()
    }

    /// One user from `authority users --json`.
    pub fn user(&self, name: &str) -> serde_json::Value {
        self.users()
            .as_array()
            .expect("users array")
            .iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("no user {name} in `authority users`"))
            .clone()
    }

    /// A view of the authority's state by the names of the old TOML directory, read from its
    /// database: `users.toml` is every user record (one JSON line each, by name), `audit.log`
    /// every audit entry (one line each, by seq: a log that only grew starts with the old
    /// one), `authority.toml` the configuration record; other names are files. Empty when
    /// absent.
    pub fn state_file(&self, name: &str) -> Vec<u8> {
        let lines = |sql: &str| -> Vec<u8> {
            let Some(db) = self.db() else {
                return Vec::new();
            };
            let mut stmt = db.prepare(sql).expect("the authority's schema");
            let rows = stmt
                .query_map([], |r| {
                    let v = r.get_ref(0)?;
                    Ok(match v {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            t.to_vec()
                        }
                        other => format!("{other:?}").into_bytes(),
                    })
                })
                .expect("query");
            let mut out = Vec::new();
            for r in rows {
                out.extend(r.expect("row"));
                out.push(b'\n');
            }
            out
        };
        match name {
            "users.toml" => lines("SELECT body FROM records WHERE kind = 'user' ORDER BY key"),
            "authority.toml" => lines("SELECT body FROM records WHERE kind = 'config'"),
            "audit.log" => lines(
                "SELECT json_object('seq', seq, 'time', time, 'actor', actor, 'action', action,
                 'subject', subject, 'outcome', outcome, 'detail', detail, 'prev', prev,
                 'hash', hash) FROM audit ORDER BY seq",
            ),
            _ => std::fs::read(Path::new(&self.dir).join(name)).unwrap_or_default(),
        }
    }

    /// The authority's database, opened directly (as someone with write access to the
    /// directory would), or `None` before `authority init`.
    pub fn db(&self) -> Option<rusqlite::Connection> {
        let path = Path::new(&self.dir).join("authority.db");
        path.exists()
            .then(|| rusqlite::Connection::open(&path).expect("open authority.db"))
    }

    /// Runs SQL on the authority's database outside keyward (a tampering test's edit).
    pub fn tamper_sql(&self, sql: &str) {
        self.db()
            .expect("an authority database")
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every file of the authority's directory (relative paths; SQLite's `-wal`/`-shm`
    /// companions left out), with the records the old directory kept as files named as
    /// they were: `issued/SERIAL.pem` and `archive/USER/SERIAL.kwp`.
    pub fn state_files(&self) -> std::collections::BTreeSet<String> {
        let mut files: std::collections::BTreeSet<String> = files_under(Path::new(&self.dir))
            .into_iter()
            .filter(|f| !f.ends_with("-wal") && !f.ends_with("-shm"))
            .collect();
        if let Some(db) = self.db() {
            let mut stmt = db
                .prepare("SELECT kind, key, owner FROM records WHERE kind IN ('issued', 'archive')")
                .expect("the authority's schema");
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .expect("query");
            for r in rows {
                let (kind, key, owner) = r.expect("row");
                files.insert(if kind == "issued" {
                    format!("issued/{key}.pem")
                } else {
                    format!("archive/{owner}/{key}.kwp")
                });
            }
        }
        files
    }

    /// `keyward keyset remove NAME --destroy-keys --yes` with the user PIN; must succeed.
    pub fn remove_keyset(&self, name: &str) {
        self.bed
            .run_env(
                &["keyset", "remove", name, "--destroy-keys", "--yes"],
                &[("KEYWARD_PIN", USER_PIN)],
            )
            .ok();
    }

    /// `keyward --json keyset list` as (name, state) pairs.
    pub fn keyset_states(&self) -> Vec<(String, String)> {
        let run = self.bed.run(&["--json", "keyset", "list"]).ok();
        run.json()["keysets"]
            .as_array()
            .expect("keyset list: keysets array")
            .iter()
            .map(|k| {
                (
                    k["name"].as_str().unwrap_or_default().to_string(),
                    k["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

// ---- PKCS#11 shim helpers (appended for tests/lockout.rs) ------------------------------------

/// The fault-injecting PKCS#11 shim (`shim/`, built next to the keyward binary by
/// `cargo build --workspace`), or a panic saying how to build it.
pub fn shim_module() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_keyward"));
    let so = exe.parent().expect("target directory").join(format!(
        "{}keyward_p11shim{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let how = "run `cargo build --workspace` (testbeds/test-all.sh does) before `cargo test`";
    assert!(
        so.is_file(),
        "the PKCS#11 shim {} is not built: {how}",
        so.display()
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("shim/src/lib.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(edited)) = (modified(&so), modified(&source)) {
        assert!(
            built >= edited,
            "the PKCS#11 shim {} is older than {}: {how}",
            so.display(),
            source.display()
        );
    }
    so
}

/// What the shim wrote to `KEYWARD_SHIM_COUNT_FILE`.
#[derive(Debug, Default)]
pub struct ShimCounts {
    /// Calls made (from `C_Initialize` = 1).
    pub total: u64,
    /// Calls per PKCS#11 function.
    pub per_function: std::collections::BTreeMap<String, u64>,
    /// Every call in order (index 0 is call 1).
    pub calls: Vec<String>,
    /// The call indexes where a fault was answered.
    pub faults: Vec<u64>,
}

impl ShimCounts {
    /// Reads a count file (panics when it is missing).
    pub fn read(path: &Path) -> ShimCounts {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("no shim count file {}: {e}", path.display()));
        let mut out = ShimCounts::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["total", n] => out.total = n.parse().expect("total"),
                ["fn", name, n] => {
                    out.per_function
                        .insert(name.to_string(), n.parse().expect("count"));
                }
                ["call", _, name] => out.calls.push(name.to_string()),
                ["fault", at, _] => out.faults.push(at.parse().expect("fault index")),
                _ => panic!("unexpected line in the shim count file: {line:?}"),
            }
        }
        out
    }

    /// How often `function` was called.
    pub fn of(&self, function: &str) -> u64 {
        self.per_function.get(function).copied().unwrap_or(0)
    }
}

/// The shim's wrong-PIN count for the token `serial` in a `KEYWARD_SHIM_STATE` file.
pub fn shim_pin_failures(state: &Path, serial: &str) -> u32 {
    let text = std::fs::read_to_string(state).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == serial)
        .map(|(_, n)| n.parse().expect("count in the shim state file"))
        .unwrap_or(0)
}

impl TestBed {
    /// Runs keyward through the shim (`--module SHIM`, wrapping this bed's SoftHSM) with `env`
    /// (`KEYWARD_SHIM_*` and secrets).
    pub fn run_shim(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let shim = shim_module();
        let real = module();
        let mut cmd = self.keyward();
        cmd.arg("--module")
            .arg(&shim)
            .args(args)
            .env("KEYWARD_SHIM_MODULE", &real);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run keyward"))
    }
}

/// The JSON Schema of every command's `--json` output.
pub const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/keyward.schema.json");

/// Validates `docs` (label, document) against the schema with python3-jsonschema; returns
/// the failures.
pub fn schema_errors(docs: &[(String, serde_json::Value)]) -> Vec<String> {
    let check = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit("python3-jsonschema is missing: apt-get install python3-jsonschema (testbeds/setup.sh)")
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for label, doc in json.load(sys.stdin):
    for e in v.iter_errors(doc):
        print(f"{label}: {e.message[:400]} at {list(e.absolute_path)}")
"#;
    let mut child = Command::new("python3")
        .args(["-c", check, SCHEMA_FILE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3 python3-jsonschema)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(docs).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the schema check did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until a started `keyward authority serve` writes its `--ready-file` and returns the
/// address in it; panics with the node's log when it exits first or takes over 2 minutes.
pub fn wait_until_serving(child: &mut std::process::Child, ready: &Path, log: &Path) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            return text.trim().to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "authority serve exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "authority serve did not get ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
