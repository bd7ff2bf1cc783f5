//! Where the authority keeps its state: one [`Store`] trait, so the same schema can live in the
//! embedded SQLite file ([`sqlite::SqliteStore`], the default) or in PostgreSQL
//! ([`postgres::PgStore`], shared by several nodes).
//!
//! A store knows nothing of users or certificates: it keeps *records* (a kind, a key, the user
//! who owns them, a body), the per-bucket digests that bind records to the state root, and the
//! audit chain. Everything one command changes goes into one transaction
//! ([`Store::begin`] … [`Store::commit`]); the integrity layer above (`state.rs`) decides what
//! is written and checks everything that is read.

pub mod postgres;
pub mod sqlite;

/// One record of the authority's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What it is: `config`, `user`, `issued`, `archive`, `reply`, `legacy`.
    pub kind: String,
    /// Its key within the kind (a user name, a certificate serial).
    pub key: String,
    /// The user it belongs to (empty for the authority's own records); picks the bucket.
    pub owner: String,
    /// The bucket it is counted in (see `state::bucket_of`).
    pub bucket: u16,
    /// Its contents (JSON, PEM or bytes).
    pub body: Vec<u8>,
}

/// One audit entry as stored: the chained fields, and on a command's last entry the state
/// root it left and the checkpoint signature made on the authority's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The entry (seq, time, actor, action, subject, outcome, detail, prev, hash).
    pub entry: super::audit::AuditEntry,
    /// Hex state root after the command (checkpoints only).
    pub root: Option<String>,
    /// Signature over the checkpoint (checkpoints only).
    pub signature: Option<Vec<u8>>,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("the authority's database {location}: cannot {action}: {reason}")]
pub struct StoreError {
    /// The database (a path or a connection name).
    pub location: String,
    /// What was being done.
    pub action: &'static str,
    /// Why (the database's own message).
    pub reason: String,
}

/// The authority's storage: records, bucket digests, audit chain, in transactions.
pub trait Store {
    /// Starts the command's transaction, taking the store's write lock.
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Starts a read-only snapshot (the listing commands see one consistent state).
    fn begin_read(&mut self) -> Result<(), StoreError>;
    /// Makes everything since [`Store::begin`] durable, all at once.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Drops everything since [`Store::begin`].
    fn rollback(&mut self) -> Result<(), StoreError>;
    /// The records of one bucket.
    fn bucket_rows(&self, bucket: u16) -> Result<Vec<Row>, StoreError>;
    /// How many records there are.
    fn count_rows(&self) -> Result<usize, StoreError>;
    /// The schema objects (tables, indexes, triggers, views) that differ from the ones keyward
    /// creates, named: a trigger that rewrites or drops a write, a view standing in for a table,
    /// an index that disagrees with its table. Empty when the schema is keyward's.
    fn schema_differences(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// Inserts or replaces a record.
    fn put_row(&mut self, row: &Row) -> Result<(), StoreError>;
    /// Every bucket digest, in bucket order.
    fn digests(&self) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Replaces one bucket digest.
    fn put_digest(&mut self, bucket: u16, digest: &[u8; 32]) -> Result<(), StoreError>;
    /// Appends an audit entry.
    fn audit_append(&mut self, row: &AuditRow) -> Result<(), StoreError>;
    /// The newest audit entry.
    fn audit_last(&self) -> Result<Option<AuditRow>, StoreError>;
    /// Every audit entry, oldest first.
    fn audit_all(&self) -> Result<Vec<AuditRow>, StoreError>;
    /// A schema value (`schema`).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// The audit entries from `seq` on, oldest first (a node catching up with the others).
    fn audit_since(&self, seq: u64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self
            .audit_all()?
            .into_iter()
            .filter(|r| r.entry.seq >= seq)
            .collect())
    }
    /// Whether other nodes, each with its own copy of the authority token, change this store
    /// too: the token's head is then a lower bound, not the state's exact head (`state.rs`).
    fn shared(&self) -> bool {
        false
    }
    /// Moves what the store keeps beside its file into it (SQLite's write-ahead log), checked
    /// on this connection so that a failure names its cause (a close does it silently).
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
