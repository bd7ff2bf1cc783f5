//! The shared store: the same schema as [`super::sqlite`] in a PostgreSQL database, so that
//! several authority nodes (each with its own copy of the authority token) keep one state.
//!
//! Every change runs in one transaction that first takes a cluster-wide advisory lock
//! (`pg_advisory_xact_lock`), held until it commits or rolls back: the commands of all nodes
//! are serialised as SQLite serialises the commands of one host, so a temporary key is spent
//! once, the audit chain stays one chain and CRL numbers stay unique. The listing commands
//! read one `REPEATABLE READ` snapshot and take no lock.
//!
//! The client is `postgres`, the synchronous wrapper of `tokio-postgres`: the authority's code
//! is synchronous (one command, one transaction), so it needs no runtime of its own.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::{Client, NoTls};
use secrecy::{ExposeSecret, SecretString};

use super::{AuditRow, Row, Store, StoreError};
use crate::authority::audit::AuditEntry;

/// The schema version [`SCHEMA_SQL`] creates (the same as SQLite's).
pub const SCHEMA_VERSION: u32 = super::sqlite::SCHEMA_VERSION;

/// The advisory lock every writing transaction takes (`keyward` in ASCII).
const LOCK_KEY: i64 = 0x006b_6579_7761_7264;

/// The tables: SQLite's, in PostgreSQL's types.
pub const SCHEMA_SQL: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    owner  TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    body   BYTEA NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX records_bucket ON records (bucket);
CREATE TABLE buckets (bucket INTEGER PRIMARY KEY, digest BYTEA NOT NULL);
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev      TEXT NOT NULL,
    hash      TEXT NOT NULL,
    root      TEXT,
    signature BYTEA
);
";

/// Where the database is: a connection URL or key=value string without a password, and the
/// file the password is read from (when the server asks for one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PgLocation {
    /// `postgres://user@host/db`, `postgresql:///db?host=/run/postgresql`, or `host=… dbname=…`.
    pub url: String,
    /// A file holding the password (its first line), readable only by its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl PgLocation {
    /// Checks the URL parses and carries no password (a password in a URL ends up in argv,
    /// shell history and the directory's configuration).
    pub fn check(&self) -> Result<(), StoreError> {
        let config = self.parse()?;
        if config.get_password().is_some() {
            return Err(self.error(
                "use",
                "the URL carries a password; remove it and put the password in a file named with --db-password-file".into(),
            ));
        }
        Ok(())
    }

    fn parse(&self) -> Result<postgres::Config, StoreError> {
        self.url
            .parse::<postgres::Config>()
            .map_err(|e| self.error("parse the URL of", describe(&e)))
    }

    /// The URL for messages.
    pub fn display(&self) -> String {
        self.url.clone()
    }

    fn error(&self, action: &'static str, reason: String) -> StoreError {
        StoreError {
            location: self.display(),
            action,
            reason,
        }
    }

    fn password(&self) -> Result<Option<SecretString>, StoreError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            self.error(
                "read the password of",
                format!("{}: {e}; check --db-password-file", path.display()),
            )
        })?;
        let text = zeroize::Zeroizing::new(text);
        let line = text.lines().next().unwrap_or("").to_string();
        Ok(Some(SecretString::from(line)))
    }

    fn connect(&self) -> Result<Client, StoreError> {
        self.check()?;
        let mut config = self.parse()?;
        if let Some(pw) = self.password()? {
            config.password(pw.expose_secret().as_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("keyward");
        config.connect(NoTls).map_err(|e| {
            self.error(
                "connect",
                format!(
                    "{}; check that the server runs and the URL and password are right",
                    describe(&e)
                ),
            )
        })
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    client: RefCell<Client>,
    location: PgLocation,
    in_tx: bool,
    /// The sequence number and hash of the last audit row this transaction appended: what a
    /// commit whose answer was lost looks for to learn whether it committed.
    appended: Option<(i64, String)>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.location.url)
            .finish()
    }
}

/// The database's own message (the client's `Display` alone often says only "db error").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

impl PgStore {
    /// Connects to a database that holds an authority.
    pub fn open(location: &PgLocation) -> Result<PgStore, StoreError> {
        let client = location.connect()?;
        Ok(PgStore {
            client: RefCell::new(client),
            location: location.clone(),
            in_tx: false,
            appended: None,
        })
    }

    /// Whether the database holds keyward's tables already.
    pub fn has_schema(&self) -> Result<bool, StoreError> {
        let row = self
            .client
            .borrow_mut()
            .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
            .map_err(self.e("read"))?;
        Ok(row.get(0))
    }

    /// Creates the schema in an empty database, `bucket_count` empty buckets and `schema`
    /// recorded, in a transaction left open: the first [`Store::commit`] (the new authority's
    /// first checkpoint) makes the schema and the state exist together.
    pub fn create(location: &PgLocation, bucket_count: u16) -> Result<PgStore, StoreError> {
        let mut s = PgStore::open(location)?;
        s.begin()?;
        if s.has_schema()? {
            let _ = s.rollback();
            return Err(s.location.error(
                "create an authority in",
                "it holds an authority already; add this node to it with `keyward authority join`, or give an empty database".into(),
            ));
        }
        {
            let mut c = s.client.borrow_mut();
            c.batch_execute(SCHEMA_SQL)
                .map_err(|e| location.error("create the schema in", describe(&e)))?;
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', $1)",
                &[&SCHEMA_VERSION.to_string()],
            )
            .map_err(|e| location.error("write", describe(&e)))?;
            let zero = vec![0u8; 32];
            let stmt = c
                .prepare("INSERT INTO buckets (bucket, digest) VALUES ($1, $2)")
                .map_err(|e| location.error("write", describe(&e)))?;
            for b in 0..bucket_count {
                c.execute(&stmt, &[&i32::from(b), &zero])
                    .map_err(|e| location.error("write", describe(&e)))?;
            }
        }
        Ok(s)
    }

    /// Learns, on a new connection, whether a transaction whose COMMIT lost its answer
    /// committed: it did exactly when the audit row it appended is there. Committed: `Ok`, and
    /// the new connection replaces the lost one. Not committed, or not known: the error.
    fn settle_lost_commit(
        &mut self,
        appended: Option<(i64, String)>,
        lost: postgres::Error,
    ) -> Result<(), StoreError> {
        let not_committed = |detail: &str| {
            self.location
                .error("commit", format!("{}; {detail}", describe(&lost)))
        };
        let Some((seq, hash)) = appended else {
            return Err(not_committed("the transaction wrote no audit entry"));
        };
        let mut client = match self.location.connect() {
            Ok(c) => c,
            Err(e) => {
                return Err(self.location.error(
                    "commit",
                    format!(
                        "{}; whether the change was committed is not known ({e}); `keyward authority log` shows it once the database is back",
                        describe(&lost)
                    ),
                ))
            }
        };
        let found = client
            .query_opt("SELECT hash FROM audit WHERE seq = $1", &[&seq])
            .map_err(self.e("read the audit log in"))?
            .map(|r| r.get::<_, String>(0));
        *self.client.borrow_mut() = client;
        if found.as_deref() == Some(hash.as_str()) {
            log::info!("the connection was lost during COMMIT, and the change is in the database");
            return Ok(());
        }
        Err(not_committed("the change was not committed"))
    }

    fn e(&self, action: &'static str) -> impl Fn(postgres::Error) -> StoreError + '_ {
        move |e| self.location.error(action, describe(&e))
    }
}

fn row_of(r: &postgres::Row) -> Row {
    Row {
        kind: r.get(0),
        key: r.get(1),
        owner: r.get(2),
        bucket: u16::try_from(r.get::<_, i32>(3)).unwrap_or(u16::MAX),
        body: r.get(4),
    }
}

fn audit_of(r: &postgres::Row) -> AuditRow {
    AuditRow {
        entry: AuditEntry {
            seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            time: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            subject: r.get(4),
            outcome: r.get(5),
            detail: r.get(6),
            prev: r.get(7),
            hash: r.get(8),
        },
        root: r.get(9),
        signature: r.get(10),
    }
}

const ROW_COLS: &str = "kind, key, owner, bucket, body";
const AUDIT_COLS: &str =
    "seq, time, actor, action, subject, outcome, detail, prev, hash, root, signature";

impl Store for PgStore {
    fn begin(&mut self) -> Result<(), StoreError> {
        if self.in_tx {
            return Ok(());
        }
        // READ COMMITTED after the lock: every statement sees what the other nodes committed
        // before this one got the lock, and none of them writes until it is released.
        self.client
            .borrow_mut()
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({LOCK_KEY})"
            ))
            .map_err(self.e("lock"))?;
        self.in_tx = true;
        Ok(())
    }

    fn begin_read(&mut self) -> Result<(), StoreError> {
        self.client
            .borrow_mut()
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(self.e("read"))?;
        self.in_tx = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.in_tx = false;
        let appended = self.appended.take();
        let result = self.client.borrow_mut().batch_execute("COMMIT");
        match result {
            Ok(()) => Ok(()),
            // The server answered: it did not commit.
            Err(e) if e.as_db_error().is_some() => Err(self.e("commit")(e)),
            // The connection went while committing: the transaction may have committed or not.
            Err(e) => self.settle_lost_commit(appended, e),
        }
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.appended = None;
        if !self.in_tx {
            return Ok(());
        }
        self.in_tx = false;
        let mut c = self.client.borrow_mut();
        if c.is_closed() {
            return Ok(());
        }
        c.batch_execute("ROLLBACK").map_err(self.e("roll back"))
    }

    fn bucket_rows(&self, bucket: u16) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                &format!(
                    "SELECT {ROW_COLS} FROM records WHERE bucket = $1 ORDER BY kind COLLATE \"C\", key COLLATE \"C\""
                ),
                &[&i32::from(bucket)],
            )
            .map_err(self.e("read"))?;
        Ok(rows.iter().map(row_of).collect())
    }

    fn schema_differences(&self) -> Result<Vec<String>, StoreError> {
        // What keyward never makes in its schema: triggers, rules, views, row-level policies.
        let rows = self
            .client
            .borrow_mut()
            .query(
                "SELECT 'trigger ' || quote_ident(t.tgname::text)
                   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE NOT t.tgisinternal AND n.nspname = current_schema()
                 UNION ALL
                 SELECT 'rule ' || quote_ident(rulename::text) FROM pg_rules
                  WHERE schemaname = current_schema()
                 UNION ALL
                 SELECT 'view ' || quote_ident(viewname::text) FROM pg_views
                  WHERE schemaname = current_schema()
                 UNION ALL
                 SELECT 'policy ' || quote_ident(policyname::text) FROM pg_policies
                  WHERE schemaname = current_schema()
                 ORDER BY 1",
                &[],
            )
            .map_err(self.e("read the schema of"))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn count_rows(&self) -> Result<usize, StoreError> {
        let row = self
            .client
            .borrow_mut()
            .query_one("SELECT count(*) FROM records", &[])
            .map_err(self.e("read"))?;
        Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX))
    }

    fn put_row(&mut self, row: &Row) -> Result<(), StoreError> {
        self.client
            .borrow_mut()
            .execute(
                "INSERT INTO records (kind, key, owner, bucket, body) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kind, key) DO UPDATE
                 SET owner = EXCLUDED.owner, bucket = EXCLUDED.bucket, body = EXCLUDED.body",
                &[
                    &row.kind,
                    &row.key,
                    &row.owner,
                    &i32::from(row.bucket),
                    &row.body,
                ],
            )
            .map(|_| ())
            .map_err(self.e("write"))
    }

    fn digests(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let rows = self
            .client
            .borrow_mut()
            .query("SELECT digest FROM buckets ORDER BY bucket", &[])
            .map_err(self.e("read"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let d: Vec<u8> = r.get(0);
                // As in SQLite: a digest of the wrong length is kept visible as a mismatch.
                <[u8; 32]>::try_from(d.as_slice()).unwrap_or([0xff; 32])
            })
            .collect())
    }

    fn put_digest(&mut self, bucket: u16, digest: &[u8; 32]) -> Result<(), StoreError> {
        self.client
            .borrow_mut()
            .execute(
                "UPDATE buckets SET digest = $2 WHERE bucket = $1",
                &[&i32::from(bucket), &digest.as_slice()],
            )
            .map(|_| ())
            .map_err(self.e("write"))
    }

    fn audit_append(&mut self, row: &AuditRow) -> Result<(), StoreError> {
        let e = &row.entry;
        self.client
            .borrow_mut()
            .execute(
                &format!(
                    "INSERT INTO audit ({AUDIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                &[
                    &i64::try_from(e.seq).unwrap_or(i64::MAX),
                    &e.time,
                    &e.actor,
                    &e.action,
                    &e.subject,
                    &e.outcome,
                    &e.detail,
                    &e.prev,
                    &e.hash,
                    &row.root,
                    &row.signature,
                ],
            )
            .map_err(self.e("append to the audit log in"))?;
        self.appended = Some((i64::try_from(e.seq).unwrap_or(i64::MAX), e.hash.clone()));
        Ok(())
    }

    fn audit_last(&self) -> Result<Option<AuditRow>, StoreError> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                &format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1"),
                &[],
            )
            .map_err(self.e("read the audit log in"))?;
        Ok(rows.first().map(audit_of))
    }

    fn audit_all(&self) -> Result<Vec<AuditRow>, StoreError> {
        self.audit_since(0)
    }

    fn audit_since(&self, seq: u64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                &format!("SELECT {AUDIT_COLS} FROM audit WHERE seq >= $1 ORDER BY seq"),
                &[&i64::try_from(seq).unwrap_or(i64::MAX)],
            )
            .map_err(self.e("read the audit log in"))?;
        Ok(rows.iter().map(audit_of).collect())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .client
            .borrow_mut()
            .query("SELECT value FROM meta WHERE key = $1", &[&key])
            .map_err(self.e("read"))?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn shared(&self) -> bool {
        true
    }
}

/// The file in an authority directory that says its state is in PostgreSQL.
pub const STORE_FILE: &str = "store.toml";

/// What [`STORE_FILE`] holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoreFile {
    /// `postgres`.
    pub backend: String,
    /// The database.
    #[serde(flatten)]
    pub location: PgLocation,
}

impl StoreFile {
    /// Reads the directory's store file, if it has one.
    pub fn read(dir: &Path) -> Result<Option<StoreFile>, StoreError> {
        let path = dir.join(STORE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError {
                    location: path.display().to_string(),
                    action: "read",
                    reason: e.to_string(),
                })
            }
        };
        let file: StoreFile = toml::from_str(&text).map_err(|e| StoreError {
            location: path.display().to_string(),
            action: "read",
            reason: format!("it does not parse: {e}"),
        })?;
        if file.backend != "postgres" {
            return Err(StoreError {
                location: path.display().to_string(),
                action: "use",
                reason: format!(
                    "it names the store {:?}, which this keyward does not know",
                    file.backend
                ),
            });
        }
        Ok(Some(file))
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
