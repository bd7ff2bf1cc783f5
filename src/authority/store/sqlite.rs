//! The embedded store: one SQLite file, `authority.db`, in the authority's directory.
//!
//! WAL journal, `synchronous=FULL` (a committed command survives a power cut), one
//! `BEGIN IMMEDIATE` transaction per command (SQLite's write lock: a second writer waits).
//! The schema is in `docs/formats.md`; [`SCHEMA_SQL`] creates it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{AuditRow, Row, Store, StoreError};
use crate::authority::audit::AuditEntry;

/// The database's file name in the authority's directory.
pub const DB_FILE: &str = "authority.db";

/// The schema version [`SCHEMA_SQL`] creates.
pub const SCHEMA_VERSION: u32 = 2;

/// The tables (also what `docs/formats.md` documents).
pub const SCHEMA_SQL: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    owner  TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    body   BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_bucket ON records (bucket);
CREATE TABLE buckets (bucket INTEGER PRIMARY KEY, digest BLOB NOT NULL);
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev      TEXT NOT NULL,
    hash      TEXT NOT NULL,
    root      TEXT,
    signature BLOB
);
";

/// The SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens an existing database (read-write, or read-only for the listing commands).
    pub fn open(path: &Path, writable: bool) -> Result<SqliteStore, StoreError> {
        let flags = if writable {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(|e| err(path, "open", &e))?;
        let s = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        s.configure()?;
        Ok(s)
    }

    /// Creates a new database with the schema, `bucket_count` empty buckets and `schema`
    /// recorded; nothing else.
    pub fn create(path: &Path, bucket_count: u16) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(path, "create", &e))?;
        let mut s = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        s.configure()?;
        s.begin()?;
        s.conn
            .execute_batch(SCHEMA_SQL)
            .map_err(|e| err(path, "create the schema in", &e))?;
        s.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(|e| err(path, "write", &e))?;
        {
            let mut stmt = s
                .conn
                .prepare("INSERT INTO buckets (bucket, digest) VALUES (?1, ?2)")
                .map_err(|e| err(path, "write", &e))?;
            for b in 0..bucket_count {
                stmt.execute(params![b, [0u8; 32].as_slice()])
                    .map_err(|e| err(path, "write", &e))?;
            }
        }
        s.commit()?;
        Ok(s)
    }

    /// Moves everything in the write-ahead log of the database at `path` (no connection
    /// open) into the database file and closes it, checking each step: afterwards the file
    /// alone holds the database, so it can be renamed on its own. (Closing the last
    /// connection does this too, but any failure there goes unreported.)
    pub fn checkpoint_file(path: &Path) -> Result<(), StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(path, "open", &e))?;
        // SQLite's own words, with the system's reason when it has one (ENOSPC, EIO).
        let fail = |action: &'static str, e: rusqlite::Error| {
            let mut out = err(path, action, &e);
            if let Some(cause) = system_cause(&conn, &e) {
                out.reason = format!("{} ({cause})", out.reason);
            }
            out
        };
        // The mode the file itself records (a switch whose header write or journal removal
        // failed can leave the old one).
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| fail("read the journal mode of", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError {
                location: path.display().to_string(),
                action: "configure",
                reason: format!(
                    "it is in journal mode {mode:?} instead of WAL: a write to it failed (is the disk full or failing?); nothing was put in place"
                ),
            });
        }
        let (busy, log, done): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| fail("checkpoint", e))?;
        if busy != 0 || log != done {
            return Err(StoreError {
                location: path.display().to_string(),
                action: "checkpoint",
                reason: format!("{done} of {log} log frames copied (busy: {busy})"),
            });
        }
        conn.close().map_err(|(_, e)| err(path, "close", &e))?;
        // A log left empty (its removal at close failed) holds nothing; it goes too.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = std::path::PathBuf::from(side);
            match std::fs::metadata(&side) {
                Ok(m) if suffix == "-wal" && m.len() > 0 => {
                    return Err(StoreError {
                        location: side.display().to_string(),
                        action: "checkpoint",
                        reason: "the write-ahead log is not empty after the checkpoint".into(),
                    })
                }
                Ok(_) => std::fs::remove_file(&side).map_err(|e| StoreError {
                    location: side.display().to_string(),
                    action: "remove",
                    reason: e.to_string(),
                })?,
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn configure(&self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(Duration::from_secs(600))
            .map_err(self.e("configure"))?;
        // WAL: readers never block the writer; FULL: a commit is on disk when it returns.
        // SQLite answers with the mode it is in: a switch that failed (say, the old journal
        // could not be removed) leaves the old one, which is refused here.
        let readonly = self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false);
        match self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
            // A read-only connection cannot switch modes; the file is WAL already.
            _ if readonly => {}
            Ok(mode) => {
                return Err(StoreError {
                    location: self.path.display().to_string(),
                    action: "configure",
                    reason: format!("it stays in journal mode {mode:?} instead of WAL"),
                })
            }
            Err(e) => return Err(self.e("configure")(e)),
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(self.e("configure"))
    }

    /// A failure of this connection, with the system's reason when SQLite's is only its own
    /// category ("disk I/O error", "unable to open database file"): ENOSPC and EIO named.
    fn e(&self, action: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| {
            let mut out = err(&self.path, action, &e);
            if let Some(cause) = system_cause(&self.conn, &e) {
                out.reason = format!("{} ({cause})", out.reason);
            }
            out
        }
    }
}

/// Every schema object as (type, name, SQL with its whitespace collapsed).
fn schema_objects(
    conn: &Connection,
) -> rusqlite::Result<std::collections::BTreeSet<(String, String, String)>> {
    let mut stmt = conn.prepare("SELECT type, name, sql FROM sqlite_schema")?;
    let rows = stmt.query_map([], |r| {
        let sql: Option<String> = r.get(2)?;
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            sql.unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ))
    })?;
    rows.collect()
}

/// The system error behind a file-system failure SQLite reports in its own words, if any.
fn system_cause(conn: &Connection, e: &rusqlite::Error) -> Option<std::io::Error> {
    use rusqlite::ErrorCode;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return None;
    };
    if !matches!(
        f.code,
        ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
    ) {
        return None;
    }
    // SAFETY: `handle` is this open connection's own pointer, used on this thread for one
    // call that only reads the errno SQLite saved from its last failed system call.
    #[allow(unsafe_code)]
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    (errno != 0).then(|| std::io::Error::from_raw_os_error(errno))
}

fn err(path: &Path, action: &'static str, e: &rusqlite::Error) -> StoreError {
    StoreError {
        location: path.display().to_string(),
        action,
        reason: e.to_string(),
    }
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        kind: r.get(0)?,
        key: r.get(1)?,
        owner: r.get(2)?,
        bucket: r.get(3)?,
        // TEXT or BLOB alike: an edit made with another tool may change the column's type.
        body: r
            .get_ref(4)?
            .as_bytes_or_null()?
            .unwrap_or_default()
            .to_vec(),
    })
}

fn audit_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        entry: AuditEntry {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            time: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            subject: r.get(4)?,
            outcome: r.get(5)?,
            detail: r.get(6)?,
            prev: r.get(7)?,
            hash: r.get(8)?,
        },
        root: r.get(9)?,
        signature: r.get(10)?,
    })
}

const ROW_COLS: &str = "kind, key, owner, bucket, body";
const AUDIT_COLS: &str =
    "seq, time, actor, action, subject, outcome, detail, prev, hash, root, signature";

impl Store for SqliteStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.e("lock"))
    }

    fn begin_read(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(self.e("read"))
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").map_err(self.e("commit"))
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(self.e("roll back"))
    }

    fn bucket_rows(&self, bucket: u16) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLS} FROM records WHERE bucket = ?1 ORDER BY kind, key"
            ))
            .map_err(self.e("read"))?;
        let rows = stmt
            .query_map(params![bucket], row_of)
            .map_err(self.e("read"))?;
        rows.collect::<Result<_, _>>().map_err(self.e("read"))
    }

    fn count_rows(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .map_err(self.e("read"))
    }

    fn schema_differences(&self) -> Result<Vec<String>, StoreError> {
        let expected = Connection::open_in_memory()
            .and_then(|c| c.execute_batch(SCHEMA_SQL).map(|()| c))
            .and_then(|c| schema_objects(&c))
            .map_err(|e| err(&self.path, "compare the schema of", &e))?;
        let actual = schema_objects(&self.conn).map_err(self.e("read the schema of"))?;
        let mut out: Vec<String> = actual
            .difference(&expected)
            .map(|(kind, name, _)| format!("{kind} {name:?}"))
            .collect();
        out.extend(
            expected
                .difference(&actual)
                .filter(|(_, name, _)| !actual.iter().any(|(_, n, _)| n == name))
                .map(|(kind, name, _)| format!("{kind} {name:?} (missing)")),
        );
        out.dedup();
        Ok(out)
    }

    fn put_row(&mut self, row: &Row) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO records (kind, key, owner, bucket, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![row.kind, row.key, row.owner, row.bucket, row.body])
            })
            .map(|_| ())
            .map_err(self.e("write"))
    }

    fn digests(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT digest FROM buckets ORDER BY bucket")
            .map_err(self.e("read"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(self.e("read"))?;
        let mut out = Vec::new();
        for d in rows {
            let d = d.map_err(self.e("read"))?;
            // A digest of the wrong length cannot match anything: keep it visible as zeros
            // with a flipped first byte, so the root check names the state as changed.
            out.push(<[u8; 32]>::try_from(d.as_slice()).unwrap_or([0xff; 32]));
        }
        Ok(out)
    }

    fn put_digest(&mut self, bucket: u16, digest: &[u8; 32]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE buckets SET digest = ?2 WHERE bucket = ?1")
            .and_then(|mut s| s.execute(params![bucket, digest.as_slice()]))
            .map(|_| ())
            .map_err(self.e("write"))
    }

    fn audit_append(&mut self, row: &AuditRow) -> Result<(), StoreError> {
        let e = &row.entry;
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    i64::try_from(e.seq).unwrap_or(i64::MAX), e.time, e.actor, e.action, e.subject, e.outcome, e.detail, e.prev,
                    e.hash, row.root, row.signature
                ])
            })
            .map(|_| ())
            .map_err(self.e("append to the audit log in"))
    }

    fn audit_last(&self) -> Result<Option<AuditRow>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1"
            ))
            .and_then(|mut s| s.query_row([], audit_of).optional())
            .map_err(self.e("read the audit log in"))
    }

    fn audit_all(&self) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq"))
            .map_err(self.e("read the audit log in"))?;
        let rows = stmt
            .query_map([], audit_of)
            .map_err(self.e("read the audit log in"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.e("read the audit log in"))
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.e("read"))
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        // Called once the command has committed, just before the connection closes: a
        // transaction still open holds nothing to keep (closing would roll it back too).
        self.rollback()?;
        let (busy, log, done): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(self.e("checkpoint"))?;
        if busy != 0 || log != done {
            return Err(StoreError {
                location: self.path.display().to_string(),
                action: "checkpoint",
                reason: format!("{done} of {log} log frames copied (busy: {busy})"),
            });
        }
        Ok(())
    }
}
