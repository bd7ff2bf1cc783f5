//! A throw-away PostgreSQL cluster per test (`testbeds/postgres.sh`): its own temp dir, a
//! Unix socket there, stopped when the guard drops (a failing test too). Clusters left by a
//! test process that was killed are stopped when the next one starts.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One running cluster with database `keyward`.
pub struct PgBed {
    pub dir: tempfile::TempDir,
    /// `postgresql:///keyward?host=…&user=keyward` (no password).
    pub url: String,
    /// The password file (0600).
    pub password_file: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testbeds/postgres.sh")
}

/// The newest `…/bin/PROGRAM` of Debian's PostgreSQL, or a panic saying how to install it.
pub fn pg_tool(program: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(program))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|p| p.exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's {program} is missing: run `bash testbeds/setup.sh` (apt-get install postgresql)")
    })
}

impl PgBed {
    /// Starts a cluster (after stopping stale ones).
    pub fn start() -> PgBed {
        pg_tool("initdb");
        let _ = Command::new("bash").arg(script()).arg("reap").status();
        let dir = tempfile::Builder::new()
            .prefix("keyward-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(std::process::id().to_string())
            .output()
            .expect("run testbeds/postgres.sh");
        assert!(
            out.status.success(),
            "testbeds/postgres.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PgBed {
            password_file: dir.path().join("password"),
            dir,
            url,
        }
    }

    /// Restarts the server (open sessions are cut).
    pub fn restart(&self) {
        let ok = Command::new("bash")
            .arg(script())
            .arg("restart")
            .arg(self.dir.path())
            .status()
            .expect("run testbeds/postgres.sh");
        assert!(ok.success(), "testbeds/postgres.sh restart failed");
    }

    /// Runs `psql` (or another client tool) against the database; returns stdout.
    pub fn client(&self, program: &str, args: &[&str]) -> String {
        let password = std::fs::read_to_string(&self.password_file).expect("password");
        let out = Command::new(pg_tool(program))
            .args(args)
            .env("PGPASSWORD", password.trim())
            .output()
            .expect("run a PostgreSQL client");
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `psql -c SQL` (tuples only, unaligned).
    pub fn sql(&self, sql: &str) -> String {
        self.client(
            "psql",
            &["-qtA", "-v", "ON_ERROR_STOP=1", &self.url, "-c", sql],
        )
    }
}

impl Drop for PgBed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
