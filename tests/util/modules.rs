//! Test beds for every PKCS#11 module keyward is tested on: SoftHSM2, kryoptic, NSS softokn,
//! opencryptoki's soft token and tpm2-pkcs11 over swtpm. Each bed is made and stopped by its
//! script, `testbeds/<module>.sh up DIR` / `down DIR` (the interface is described in
//! `testbeds/lib.sh`), so the test suite and a person at a shell stand modules up the same way.
//! Nothing is mocked; a missing part fails the test with the command that installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Run;

/// A PKCS#11 module of the module matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    Softhsm,
    Kryoptic,
    Nss,
    Opencryptoki,
    Tpm2,
}

impl Module {
    /// Every module, in the order the matrix shows them.
    pub const ALL: [Module; 5] = [
        Module::Softhsm,
        Module::Kryoptic,
        Module::Nss,
        Module::Opencryptoki,
        Module::Tpm2,
    ];

    /// The name used in `KEYWARD_TEST_MODULES`, test names and `testbeds/<name>.sh`.
    pub fn name(self) -> &'static str {
        match self {
            Module::Softhsm => "softhsm",
            Module::Kryoptic => "kryoptic",
            Module::Nss => "nss",
            Module::Opencryptoki => "opencryptoki",
            Module::Tpm2 => "tpm2",
        }
    }

    /// The module named `name`, if any.
    pub fn from_name(name: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The modules `KEYWARD_TEST_MODULES` selects (comma- or space-separated; default all).
    /// An unknown name fails the test: a typo must not quietly test less.
    pub fn selected() -> Vec<Module> {
        let Ok(list) = std::env::var("KEYWARD_TEST_MODULES") else {
            return Module::ALL.to_vec();
        };
        list.split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| {
                Module::from_name(s).unwrap_or_else(|| {
                    panic!(
                        "KEYWARD_TEST_MODULES names {s:?}: use softhsm, kryoptic, nss, opencryptoki, tpm2"
                    )
                })
            })
            .collect()
    }

    /// Whether `KEYWARD_TEST_MODULES` selects this module.
    pub fn is_selected(self) -> bool {
        Module::selected().contains(&self)
    }
}

/// How a bed offers its tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BedTokens {
    /// Free slots: keyward initialises as many tokens as it needs (`token init --free`).
    Free,
    /// The one token the bed made (NSS's database, opencryptoki's soft token), by label.
    One(String),
}

/// One module's throw-away bed: the directory `up` filled, the variables it printed, and the
/// tokens and PINs to use. Dropping it runs `down` (stops what `up` started).
pub struct ModuleBed {
    pub module: Module,
    pub dir: tempfile::TempDir,
    /// The `export` lines of `up`, parsed.
    pub env: Vec<(String, String)>,
    pub tokens: BedTokens,
    pub pin: String,
    pub so_pin: String,
    pub home: PathBuf,
}

/// Variables a bed sets: removed from the test's own environment before a bed's are applied.
const BED_VARIABLES: [&str; 8] = [
    "SOFTHSM2_CONF",
    "KRYOPTIC_CONF",
    "TPM2_PKCS11_TCTI",
    "TPM2TOOLS_TCTI",
    "TPM2_PKCS11_STORE",
    "TPM2_PKCS11_LOG_LEVEL",
    "P11_KIT_CONFIG",
    "RUST_LOG",
];

/// The repository's `testbeds/` folder.
pub fn testbeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testbeds")
}

impl ModuleBed {
    /// Runs `testbeds/<module>.sh up DIR` in a fresh directory (under `KEYWARD_TEST_BEDS` when
    /// set, so `testbeds/test-all.sh` can stop whatever a killed test left running).
    pub fn up(module: Module) -> ModuleBed {
        let mut builder = tempfile::Builder::new();
        let prefix = format!("{}-", module.name());
        builder.prefix(&prefix);
        let dir = match std::env::var_os("KEYWARD_TEST_BEDS") {
            Some(root) => {
                std::fs::create_dir_all(&root).expect("KEYWARD_TEST_BEDS directory");
                builder.tempdir_in(root)
            }
            None => builder.tempdir(),
        }
        .expect("bed directory");
        let script = testbeds_dir().join(format!("{}.sh", module.name()));
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        // From here on `down` runs on drop, also when `up` failed half way.
        let mut bed = ModuleBed {
            module,
            dir,
            env: Vec::new(),
            tokens: BedTokens::Free,
            pin: String::new(),
            so_pin: String::new(),
            home: PathBuf::new(),
        };
        assert!(
            out.status.success(),
            "`{} up` failed (is the module installed? run `KEYWARD_TEST_MODULES={} bash testbeds/setup.sh`):\n{}",
            script.display(),
            module.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        bed.env = parse_exports(&String::from_utf8_lossy(&out.stdout));
        let var = |name: &str| {
            bed.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("`{} up` printed no {name}", script.display()))
        };
        bed.tokens = match var("KEYWARD_BED_INIT").as_str() {
            "free" => BedTokens::Free,
            "none" => BedTokens::One(var("KEYWARD_BED_TOKEN")),
            other => panic!("`{} up`: KEYWARD_BED_INIT={other:?}", script.display()),
        };
        bed.pin = var("KEYWARD_BED_PIN");
        bed.so_pin = var("KEYWARD_BED_SO_PIN");
        bed.home = PathBuf::from(var("KEYWARD_HOME"));
        bed
    }

    /// The value `up` printed for `name`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A path inside the bed's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `keyward` command with this bed's module, variables and home, and no inherited
    /// KEYWARD_* or module variables.
    pub fn keyward(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        self.apply_env(&mut cmd);
        cmd
    }

    /// Another program with this bed's variables (pkcs11-tool, openssl, …).
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        self.apply_env(&mut cmd);
        cmd
    }

    fn apply_env(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("KEYWARD_") || BED_VARIABLES.contains(&k.as_str()) {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            if !k.starts_with("KEYWARD_BED_") {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null());
    }

    /// Runs keyward with `args` and extra environment; a command still running after
    /// `timeout` is killed and reported as exit -2 ("timed out").
    pub fn run_env_timeout(&self, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
        let mut cmd = self.keyward();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = run_with_timeout(cmd, timeout);
        self.settle();
        run
    }

    /// `testbeds/<module>.sh settle DIR` when the bed asks for it (`KEYWARD_BED_SETTLE=1`):
    /// what a resource manager would do between two processes (tpm2.sh says why).
    pub fn settle(&self) {
        if self.var("KEYWARD_BED_SETTLE") != Some("1") {
            return;
        }
        let script = testbeds_dir().join(format!("{}.sh", self.module.name()));
        let mut cmd = self.tool("bash");
        cmd.arg(&script).arg("settle").arg(self.dir.path());
        let run = run_with_timeout(cmd, Duration::from_secs(60));
        assert_eq!(
            run.code,
            0,
            "`{} settle` failed:\n{}",
            script.display(),
            run.stderr
        );
    }
}

impl Drop for ModuleBed {
    fn drop(&mut self) {
        let script = testbeds_dir().join(format!("{}.sh", self.module.name()));
        let status = Command::new("bash")
            .arg(&script)
            .arg("down")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: `{} down {}` failed ({status:?}); stop its daemons by hand",
                script.display(),
                self.dir.path().display()
            );
        }
    }
}

/// Runs `cmd`, killing it after `timeout` (then exit -2 and "timed out after …" in stderr).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Run {
    let stdout = tempfile::tempfile().expect("stdout file");
    let stderr = tempfile::tempfile().expect("stderr file");
    cmd.stdout(stdout.try_clone().expect("stdout file"))
        .stderr(stderr.try_clone().expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut s = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut s).expect("read output");
        String::from_utf8_lossy(&s).into_owned()
    };
    let mut run = Run {
        code: status.map(|s| s.code().unwrap_or(-1)).unwrap_or(-2),
        stdout: read(stdout),
        stderr: read(stderr),
    };
    if status.is_none() {
        run.stderr
            .push_str(&format!("timed out after {}s\n", timeout.as_secs()));
    }
    run
}

/// Parses `export NAME=VALUE` lines whose values are quoted as bash's `printf %q` quotes them
/// (backslash escapes and '…' strings; no `$'…'`).
pub fn parse_exports(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((name, quoted)) = rest.split_once('=') else {
            continue;
        };
        let mut value = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '\'' => value.extend(chars.by_ref().take_while(|&c| c != '\'')),
                c => value.push(c),
            }
        }
        out.push((name.to_string(), value));
    }
    out
}
