//! The authority's state, vouched for by its token.
//!
//! Records live in a [`Store`] (SQLite by default). Each record falls in one of [`BUCKETS`]
//! buckets, chosen by the user who owns it, so one user's records are read and checked
//! together. A bucket's digest is the SHA-256 of its records' leaf hashes; the *state root* is
//! the SHA-256 of all bucket digests. Every command ends with one *checkpoint*: its audit
//! entries are chained (each `prev` is the hash of the one before), and the last carries the
//! new root and a signature made with the CA key on the authority's token over
//! `(seq, entry hash, root)`. The token also keeps that head in a private data object, written
//! as *pending* before the database commits and promoted after, so a copy of an older state
//! (or a head rewritten outside keyward) no longer matches.
//!
//! What a command reads is checked: opening checks the head against the token and the root
//! against the bucket digests (a constant amount of work), and every bucket read is recomputed
//! from its records. A record changed outside keyward is refused, named by its owner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::audit::AuditEntry;
use super::store::postgres::{PgStore, StoreFile, STORE_FILE};
use super::store::sqlite::{SqliteStore, DB_FILE};
use super::store::{AuditRow, Row, Store};
use super::AuthorityError;
use crate::pki::PublicKey;
use crate::token::keys::hex;
use crate::token::{Module, TokenSession};

pub use super::records::{
    ArchivedKey, AuthorityConfig, CertKind, IssuedCert, Revocation, UserRecord, UserState, SCHEMA,
};

/// How many buckets the state is split into.
pub const BUCKETS: u16 = 4096;
/// The `prev` of the first audit entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Record kinds.
pub mod kind {
    /// The authority's configuration (one record, owner "").
    pub const CONFIG: &str = "config";
    /// A user ([`super::UserRecord`] as JSON).
    pub const USER: &str = "user";
    /// An issued certificate, PEM, keyed by serial.
    pub const ISSUED: &str = "issued";
    /// An archived encryption key wrapped under the archive key, keyed by certificate serial.
    pub const ARCHIVE: &str = "archive";
    /// The last reply made for a user, keyed by user.
    pub const REPLY: &str = "reply";
    /// Files of a migrated schema-1 directory, kept as they were.
    pub const LEGACY: &str = "legacy";
    /// An operator (`operators::OperatorRecord`), keyed by name, owner "".
    pub const OPERATOR: &str = "operator";
    /// The approval policy (`policy::Policy`), one record, owner "".
    pub const POLICY: &str = "policy";
    /// An approval request (`approvals::Request`), keyed by id, owner "".
    pub const REQUEST: &str = "request";
}

/// The bucket of a record owned by `owner`.
pub fn bucket_of(owner: &str) -> u16 {
    let h = Sha256::digest(owner.as_bytes());
    u16::from_be_bytes([h[0], h[1]]) % BUCKETS
}

fn leaf(row: &Row) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keyward-record-v1\0");
    for part in [
        row.kind.as_bytes(),
        row.key.as_bytes(),
        row.owner.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update((row.body.len() as u64).to_be_bytes());
    h.update(&row.body);
    h.finalize().into()
}

/// The digest of a bucket holding `rows` (all zeros when empty).
pub fn bucket_digest<'a>(rows: impl IntoIterator<Item = &'a Row>) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut any = false;
    for r in rows {
        any = true;
        h.update(leaf(r));
    }
    if any {
        h.finalize().into()
    } else {
        [0; 32]
    }
}

/// The state root over every bucket digest.
pub fn root_of(digests: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keyward-state-v1\0");
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_bytes(seq: u64, hash: &str, root: &str) -> Vec<u8> {
    format!("keyward-checkpoint-v1\n{seq}\n{hash}\n{root}\n").into_bytes()
}

/// The head the token keeps: the last entry's seq and hash and the root.
fn head_value(seq: u64, hash: &str, root: &str) -> String {
    format!("{seq} {hash} {root}")
}

/// Refuses when the token vouches for an authority's state that `own` (the head label of the
/// state a command is about to remove or replace) does not cover: another authority's head, or
/// `own` past its first entry (only a command killed right after its first commit leaves its
/// own head at entry 1 with no database in place). `why` says what was about to happen, for
/// the message. What `authority init` (undoing an interrupted init) and `migrate` check
/// before they remove or replace anything an authority may use.
pub fn refuse_vouched_state(
    session: &TokenSession,
    own: &str,
    why: &str,
) -> Result<(), AuthorityError> {
    let heads = session.data_objects_with_prefix("keyward head ")?;
    for (label, value) in heads.iter().filter(|(l, _)| !l.ends_with(" pending")) {
        let seq = std::str::from_utf8(value)
            .ok()
            .and_then(parse_head)
            .map_or(u64::MAX, |h| h.seq);
        if label == own && seq <= 1 {
            continue;
        }
        return Err(tampered(&format!(
            "{why}, but token {:?} already vouches for an authority's state (its data object {label:?}, audit entry {seq}); keyward removes and imports nothing there. If this directory's authority.db was moved or lost, restore it from a backup (keyward checks it against the token)",
            session.token.label()
        )));
    }
    Ok(())
}

/// Labels of the two data objects on the authority's token: the head and the pending head.
pub fn head_labels(config: &AuthorityConfig) -> (String, String) {
    let id: String = config.authority_id().chars().take(16).collect();
    (
        format!("keyward head {id}"),
        format!("keyward head {id} pending"),
    )
}

/// One audit entry waiting for the command's commit.
#[derive(Debug, Clone)]
struct PendingEntry {
    actor: String,
    action: String,
    subject: String,
    outcome: String,
    detail: String,
}

/// An authority directory with its state open: read-write under its lock (every change then
/// commits with [`AuthorityDir::commit`]) or read-only.
pub struct AuthorityDir {
    dir: PathBuf,
    /// The configuration.
    pub config: AuthorityConfig,
    store: Box<dyn Store>,
    last: Option<AuditRow>,
    digests: Vec<[u8; 32]>,
    buckets: HashMap<u16, BTreeMap<(String, String), Row>>,
    users: BTreeMap<String, UserRecord>,
    dirty_users: BTreeSet<String>,
    dirty_rows: BTreeSet<(String, String)>,
    entries: Vec<PendingEntry>,
    actor: Option<String>,
    config_dirty: bool,
    checkpoint_key: Option<String>,
    vouched: bool,
    writable: bool,
    _lock: Option<File>,
}

impl std::fmt::Debug for AuthorityDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityDir")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Drop for AuthorityDir {
    fn drop(&mut self) {
        if self.writable {
            let _ = self.store.rollback();
        }
    }
}

impl AuthorityDir {
    /// Moves the store's write-ahead log into its file, checked (before the directory is
    /// closed and its file renamed into place).
    pub fn checkpoint_store(&mut self) -> Result<(), AuthorityError> {
        Ok(self.store.checkpoint()?)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Opens the state for a change: takes the lock (waiting for other keyward processes),
    /// removes temporary files a killed command left, starts the transaction and reads the
    /// configuration. Nothing read is trusted until [`AuthorityDir::vouch`].
    pub fn open_locked(dir: &Path) -> Result<AuthorityDir, AuthorityError> {
        check_is_authority(dir)?;
        let lock = lock_dir(dir)?;
        clean_temp_files(dir);
        let mut store = open_store(dir, true)?;
        store.begin()?;
        let mut a = Self::from_store(dir, store, true)?;
        a._lock = Some(lock);
        Ok(a)
    }

    /// Opens the state read-only (listing, log, cert): checks the root and the last
    /// checkpoint's signature against the CA key the state names; no token, no PIN.
    pub fn open_read(dir: &Path) -> Result<AuthorityDir, AuthorityError> {
        check_is_authority(dir)?;
        let mut store = open_store(dir, false)?;
        store.begin_read()?;
        let mut a = Self::from_store(dir, store, false)?;
        a.check_root()?;
        a.load_config()?;
        let ca = a.ca_public_key()?;
        a.check_last_signature(&ca)?;
        a.vouched = true;
        Ok(a)
    }

    /// Opens the state read-only without checking it: only to show the audit log of a state
    /// that fails its checks, so that it can be investigated.
    pub fn open_unchecked(dir: &Path) -> Result<AuthorityDir, AuthorityError> {
        check_is_authority(dir)?;
        let mut store = open_store(dir, false)?;
        store.begin_read()?;
        Self::from_store(dir, store, false)
    }

    /// A new authority's state in `store` (already created, empty), to be committed once.
    pub fn create(
        dir: &Path,
        store: Box<dyn Store>,
        config: AuthorityConfig,
        lock: Option<File>,
    ) -> Result<AuthorityDir, AuthorityError> {
        let mut a = AuthorityDir {
            dir: dir.to_path_buf(),
            config,
            store,
            last: None,
            digests: vec![[0; 32]; usize::from(BUCKETS)],
            buckets: HashMap::new(),
            users: BTreeMap::new(),
            dirty_users: BTreeSet::new(),
            dirty_rows: BTreeSet::new(),
            entries: Vec::new(),
            actor: None,
            config_dirty: true,
            checkpoint_key: None,
            vouched: true,
            writable: true,
            _lock: lock,
        };
        a.store.begin()?;
        a.buckets.insert(bucket_of(""), BTreeMap::new());
        Ok(a)
    }

    /// A shared store (its transaction begun) opened for a node joining it: nothing read is
    /// trusted until [`AuthorityDir::verify_log_with_token`] and [`AuthorityDir::vouch`].
    pub fn from_shared_store(
        dir: &Path,
        store: Box<dyn Store>,
    ) -> Result<AuthorityDir, AuthorityError> {
        Self::from_store(dir, store, true)
    }

    /// A node joining with a token that holds no head for this authority (an HSM whose
    /// cluster copies keys but not data objects): after
    /// [`AuthorityDir::verify_log_with_token`] checked the whole log, its last checkpoint
    /// becomes the token's head.
    pub fn seed_head_if_missing(&self, session: &TokenSession) -> Result<(), AuthorityError> {
        let (label, _) = head_labels(&self.config);
        if read_head(session, &label)?.is_some() {
            return Ok(());
        }
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| tampered("the audit log is empty: the state has no checkpoint"))?;
        let root = last.root.clone().unwrap_or_default();
        session.write_data_object(
            &label,
            head_value(last.entry.seq, &last.entry.hash, &root).as_bytes(),
        )?;
        Ok(())
    }

    /// Verifies the whole audit chain and every checkpoint with the CA key on `session`'s
    /// token (a node joining checks everything once).
    pub fn verify_log_with_token(&self, session: &TokenSession) -> Result<u64, AuthorityError> {
        let ca = self.token_ca_key(session)?;
        let (seq, _) = verify_chain(&self.store.audit_all()?, &ca)?;
        Ok(seq)
    }

    fn from_store(
        dir: &Path,
        store: Box<dyn Store>,
        writable: bool,
    ) -> Result<AuthorityDir, AuthorityError> {
        let schema = store.meta("schema")?;
        let found: u32 = schema.as_deref().unwrap_or("0").parse().unwrap_or(u32::MAX);
        if found > super::store::sqlite::SCHEMA_VERSION {
            return Err(AuthorityError::NewerSchema {
                path: dir.join(DB_FILE),
                found,
            });
        }
        let last = store.audit_last()?;
        // The configuration, unchecked: it names the token that will vouch for it.
        let row = store
            .bucket_rows(bucket_of(""))?
            .into_iter()
            .find(|r| r.kind == kind::CONFIG)
            .ok_or_else(|| tampered("the authority's configuration record is missing"))?;
        let config: AuthorityConfig = serde_json::from_slice(&row.body)
            .map_err(|e| tampered(&format!("the configuration record does not parse: {e}")))?;
        Ok(AuthorityDir {
            dir: dir.to_path_buf(),
            config,
            store,
            last,
            digests: Vec::new(),
            buckets: HashMap::new(),
            users: BTreeMap::new(),
            dirty_users: BTreeSet::new(),
            dirty_rows: BTreeSet::new(),
            entries: Vec::new(),
            actor: None,
            config_dirty: false,
            checkpoint_key: None,
            vouched: false,
            writable,
            _lock: None,
        })
    }

    /// Checks the state against the authority's token (logged in): the head the token keeps
    /// must be the state's last checkpoint (or the pending one a crash left, which is then
    /// promoted), and the bucket digests must give that checkpoint's root.
    pub fn vouch(&mut self, session: &TokenSession) -> Result<(), AuthorityError> {
        if self.store.shared() {
            return self.vouch_shared(session);
        }
        let last = self
            .last
            .clone()
            .ok_or_else(|| tampered("the audit log is empty: the state has no checkpoint"))?;
        let root = last.root.clone().ok_or_else(|| {
            tampered(&format!(
                "audit entry {} is the last but carries no checkpoint",
                last.entry.seq
            ))
        })?;
        let expected = head_value(last.entry.seq, &last.entry.hash, &root);
        let (label, pending_label) = head_labels(&self.config);
        let current = read_head(session, &label)?;
        let pending = read_head(session, &pending_label)?;
        let is_expected = |head: &Option<String>| head.as_deref() == Some(expected.as_str());
        if !is_expected(&current) && is_expected(&pending) {
            // A command committed and was stopped before it could promote its head.
            session.write_data_object(&label, expected.as_bytes())?;
        } else if !is_expected(&current) {
            return Err(match current {
                None => tampered(
                    "the authority's token holds no state head for this authority: the state was not made on this token, or its head was removed",
                ),
                Some(token_head) => {
                    let token_seq: u64 = token_head
                        .split(' ')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if last.entry.seq < token_seq {
                        tampered(&format!(
                            "the state was rolled back: it ends at audit entry {}, but the authority's token vouches for entry {token_seq}",
                            last.entry.seq
                        ))
                    } else {
                        tampered(&format!(
                            "the state's last checkpoint (audit entry {}) is not the one the authority's token vouches for (entry {token_seq}): the audit log or the state was rewritten",
                            last.entry.seq
                        ))
                    }
                }
            });
        }
        check_entry_hash(&last.entry)?;
        self.check_root()?;
        self.load_config()?;
        self.vouched = true;
        Ok(())
    }

    /// [`AuthorityDir::vouch`] for a store other nodes change too (PostgreSQL): the head on
    /// this node's token is a lower bound. The state must extend it: the entry the head names
    /// is in the log with the same hash, every entry after it chains to it, every checkpoint
    /// after it is signed by the CA key on this token, and the last one is a checkpoint whose
    /// root the bucket digests give. Then the head advances to the state's last checkpoint. A
    /// state older than the head (rolled back) or not extending it (rewritten) is refused.
    fn vouch_shared(&mut self, session: &TokenSession) -> Result<(), AuthorityError> {
        let last = self
            .last
            .clone()
            .ok_or_else(|| tampered("the audit log is empty: the state has no checkpoint"))?;
        let (label, pending_label) = head_labels(&self.config);
        let Some(head) = read_head(session, &label)?.as_deref().and_then(parse_head) else {
            return Err(tampered(
                "the authority's token holds no state head for this authority: the state was not made on this token, or its head was removed",
            ));
        };
        // A pending head the database holds too (a commit whose promotion was cut short) is
        // a newer bound; one it does not hold (a commit that failed, or that another node's
        // commit of the same number replaced) says nothing.
        let mut bound = head.clone();
        if let Some(p) = read_head(session, &pending_label)?
            .as_deref()
            .and_then(parse_head)
        {
            if p.seq > bound.seq && p.seq <= last.entry.seq {
                let at = self.store.audit_since(p.seq)?;
                if at
                    .first()
                    .is_some_and(|r| r.entry.seq == p.seq && r.entry.hash == p.hash)
                {
                    bound = p;
                }
            }
        }
        if last.entry.seq < bound.seq {
            return Err(tampered(&format!(
                "the state was rolled back: it ends at audit entry {}, but this node's authority token has seen entry {}",
                last.entry.seq, bound.seq
            )));
        }
        let ca = self.token_ca_key(session)?;
        let rows = self.store.audit_since(bound.seq)?;
        check_extends(&rows, &bound, &ca)?;
        self.check_root()?;
        self.load_config()?;
        let newest = rows.last().map(|r| &r.entry).unwrap_or(&last.entry);
        if newest.seq > bound.seq || bound.seq != head.seq {
            let root = rows.last().and_then(|r| r.root.clone()).unwrap_or_default();
            session.write_data_object(
                &label,
                head_value(newest.seq, &newest.hash, &root).as_bytes(),
            )?;
        }
        self.last = rows.last().cloned().or(Some(last));
        self.vouched = true;
        Ok(())
    }

    /// The CA's public key as this node's token holds it (not as the state says).
    fn token_ca_key(&self, session: &TokenSession) -> Result<PublicKey, AuthorityError> {
        let id = key_id("CA key", &self.config.ca_key_id)?;
        let raw = session
            .public_key(&id)?
            .ok_or_else(|| key_missing("CA public key"))?;
        Ok(PublicKey::from_raw(&raw)?)
    }

    /// Reads the bucket digests and checks they give the last checkpoint's root; when not,
    /// finds which records or digests were changed.
    fn check_root(&mut self) -> Result<(), AuthorityError> {
        self.digests = self.store.digests()?;
        if self.digests.len() != usize::from(BUCKETS) {
            return Err(tampered("the bucket digests were changed outside keyward"));
        }
        let root = hex(&root_of(&self.digests));
        let (seq, last_root) = self
            .last
            .as_ref()
            .map(|l| (l.entry.seq, l.root.clone()))
            .ok_or_else(|| tampered("the audit log is empty: the state has no checkpoint"))?;
        if last_root.as_deref() == Some(root.as_str()) {
            return Ok(());
        }
        // Slow path, only when something is wrong: name the records.
        self.verify_all()?;
        Err(tampered(&format!(
            "the bucket digests do not give the root of the last checkpoint (audit entry {seq}): they were changed outside keyward"
        )))
    }

    fn load_config(&mut self) -> Result<(), AuthorityError> {
        let row = self
            .get(kind::CONFIG, "authority", "")?
            .ok_or_else(|| tampered("the authority's configuration record is missing"))?;
        self.config = serde_json::from_slice(&row.body)
            .map_err(|e| tampered(&format!("the configuration record does not parse: {e}")))?;
        Ok(())
    }

    /// Recomputes every bucket from its records (linear, one bucket in memory at a time):
    /// refuses naming the records of the first bucket that does not match its digest.
    pub fn verify_all(&mut self) -> Result<usize, AuthorityError> {
        self.verify_all_keeping(|_| false).map(|(n, _)| n)
    }

    /// [`AuthorityDir::verify_all`], keeping the checked records `keep` picks: what a listing
    /// uses must be the very rows that were checked, never a second read, which a database
    /// whose indexes were made to disagree with its table could answer differently.
    fn verify_all_keeping(
        &mut self,
        keep: impl Fn(&Row) -> bool,
    ) -> Result<(usize, Vec<Row>), AuthorityError> {
        if self.digests.is_empty() {
            self.digests = self.store.digests()?;
        }
        let mut n = 0;
        let mut kept = Vec::new();
        for (b, d) in self.digests.clone().iter().enumerate() {
            let b = u16::try_from(b).unwrap_or(u16::MAX);
            let rows = self.store.bucket_rows(b)?;
            if let Some(stray) = rows.iter().find(|r| bucket_of(&r.owner) != r.bucket) {
                return Err(changed_records(std::slice::from_ref(stray)));
            }
            if bucket_digest(&rows) != *d {
                return Err(changed_records(&rows));
            }
            n += rows.len();
            kept.extend(rows.into_iter().filter(|r| keep(r)));
        }
        // Records filed under no bucket at all.
        if self.store.count_rows()? != n {
            return Err(tampered("records were filed outside their buckets"));
        }
        Ok((n, kept))
    }

    /// The key that signed the last checkpoint: the current CA's, or, when the last entry
    /// is the CA rollover that made it current, the previous CA's.
    fn ca_public_key(&self) -> Result<PublicKey, AuthorityError> {
        let rolled = self
            .last
            .as_ref()
            .is_some_and(|l| new_ca_key_named(&l.entry).is_some());
        match self.config.previous_cas.last() {
            Some(p) if rolled => ca_key_of(&p.cert_pem),
            _ => ca_key_of(&self.config.ca_pem),
        }
    }

    /// Checks the last checkpoint's signature with `ca`.
    fn check_last_signature(&self, ca: &PublicKey) -> Result<(), AuthorityError> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| tampered("the audit log is empty: the state has no checkpoint"))?;
        check_entry_hash(&last.entry)?;
        check_checkpoint(ca, last)
    }

    fn load_bucket(&mut self, b: u16) -> Result<(), AuthorityError> {
        if self.buckets.contains_key(&b) {
            return Ok(());
        }
        let rows = self.store.bucket_rows(b)?;
        let digest = bucket_digest(&rows);
        if self.digests.get(usize::from(b)) != Some(&digest) {
            return Err(changed_records(&rows));
        }
        let map = rows
            .into_iter()
            .map(|r| ((r.kind.clone(), r.key.clone()), r))
            .collect();
        self.buckets.insert(b, map);
        Ok(())
    }

    /// A record, checked.
    pub fn get(
        &mut self,
        kind: &str,
        key: &str,
        owner: &str,
    ) -> Result<Option<&Row>, AuthorityError> {
        let b = bucket_of(owner);
        self.load_bucket(b)?;
        Ok(self
            .buckets
            .get(&b)
            .and_then(|m| m.get(&(kind.to_string(), key.to_string())))
            .filter(|r| r.owner == owner))
    }

    /// Adds or replaces a record (written at [`AuthorityDir::commit`]).
    pub fn put(
        &mut self,
        kind: &str,
        key: &str,
        owner: &str,
        body: Vec<u8>,
    ) -> Result<(), AuthorityError> {
        let b = bucket_of(owner);
        self.load_bucket(b)?;
        let k = (kind.to_string(), key.to_string());
        self.buckets.entry(b).or_default().insert(
            k.clone(),
            Row {
                kind: kind.to_string(),
                key: key.to_string(),
                owner: owner.to_string(),
                bucket: b,
                body,
            },
        );
        self.dirty_rows.insert(k);
        Ok(())
    }

    /// Every user, checked (linear: every bucket is recomputed).
    pub fn all_users(&mut self) -> Result<Vec<UserRecord>, AuthorityError> {
        let (_, mut rows) = self.verify_all_keeping(|r| r.kind == kind::USER)?;
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows.iter().map(parse_user).collect()
    }

    /// One user, checked.
    pub fn user(&mut self, name: &str) -> Result<&UserRecord, AuthorityError> {
        self.load_user(name)?;
        self.users
            .get(name)
            .ok_or_else(|| AuthorityError::UnknownUser {
                user: name.to_string(),
            })
    }

    /// One user, to change.
    pub fn user_mut(&mut self, name: &str) -> Result<&mut UserRecord, AuthorityError> {
        self.load_user(name)?;
        self.dirty_users.insert(name.to_string());
        self.users
            .get_mut(name)
            .ok_or_else(|| AuthorityError::UnknownUser {
                user: name.to_string(),
            })
    }

    fn load_user(&mut self, name: &str) -> Result<(), AuthorityError> {
        if self.users.contains_key(name) {
            return Ok(());
        }
        if let Some(row) = self.get(kind::USER, name, name)? {
            let user = parse_user(row)?;
            self.users.insert(name.to_string(), user);
        }
        Ok(())
    }

    /// Adds a user (the name must be new).
    pub fn add_user(&mut self, user: UserRecord) -> Result<(), AuthorityError> {
        self.load_user(&user.name)?;
        if self.users.contains_key(&user.name) {
            return Err(AuthorityError::UserExists { user: user.name });
        }
        self.dirty_users.insert(user.name.clone());
        self.users.insert(user.name.clone(), user);
        Ok(())
    }

    /// Has this command's checkpoint signed with the CA key `key_id` (hex) instead of the one
    /// the configuration names: `authority rollover --ca`, whose checkpoint the old key signs.
    pub fn sign_checkpoint_with(&mut self, key_id: &str) {
        self.checkpoint_key = Some(key_id.to_string());
    }

    /// Marks the configuration changed (the CRL number).
    pub fn config_changed(&mut self) {
        self.config_dirty = true;
    }

    /// Names who acts in the audit entries that follow (`operator:NAME`); without it they
    /// name `operator:authority`, the holder of the authority token's PIN.
    pub fn set_actor(&mut self, actor: Option<String>) {
        self.actor = actor;
    }

    /// The records of `kind` the authority itself owns (owner ""), checked, with the
    /// command's own changes: operators, the policy, approval requests.
    pub fn authority_records(&mut self, kind: &str) -> Result<Vec<Row>, AuthorityError> {
        let b = bucket_of("");
        self.load_bucket(b)?;
        Ok(self
            .buckets
            .get(&b)
            .map(|m| {
                m.values()
                    .filter(|r| r.kind == kind && r.owner.is_empty())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Records an audit entry, written with the command's commit (never a secret).
    pub fn audit(&mut self, actor: &str, action: &str, subject: &str, outcome: &str, detail: &str) {
        self.entries.push(PendingEntry {
            actor: self.actor.clone().unwrap_or_else(|| operator(actor)),
            action: action.to_string(),
            subject: subject.to_string(),
            outcome: outcome.to_string(),
            detail: detail.to_string(),
        });
    }

    /// Commits the command: writes the changed records and bucket digests, appends the audit
    /// entries with a checkpoint signed by the CA key on `session`, sets the token's pending
    /// head, commits the database, then promotes the head. All or nothing: a failure before
    /// the database commit leaves the state as it was.
    pub fn commit(
        &mut self,
        module: &Module,
        session: &mut TokenSession,
        pin: &secrecy::SecretString,
    ) -> Result<(), AuthorityError> {
        if !self.vouched || !self.writable {
            return Err(tampered(
                "the state was not checked against the token before a change",
            ));
        }
        if self.entries.is_empty() {
            self.store.rollback()?;
            return Ok(());
        }
        self.fault("users-save")?;
        // Users and configuration into their records.
        for name in std::mem::take(&mut self.dirty_users) {
            let body = serde_json::to_vec(&self.users[&name])
                .map_err(|e| AuthorityError::serialize("user record", e))?;
            self.put(kind::USER, &name, &name, body)?;
        }
        if self.config_dirty {
            let body = serde_json::to_vec(&self.config)
                .map_err(|e| AuthorityError::serialize("configuration", e))?;
            self.put(kind::CONFIG, "authority", "", body)?;
        }
        // Changed rows and their buckets' digests.
        let mut touched = BTreeSet::new();
        for (b, rows) in &self.buckets {
            for (k, row) in rows {
                if self.dirty_rows.contains(k) {
                    self.store.put_row(row)?;
                    touched.insert(*b);
                }
            }
        }
        for b in touched {
            let d = bucket_digest(self.buckets[&b].values());
            self.store.put_digest(b, &d)?;
            self.digests[usize::from(b)] = d;
        }
        let root = hex(&root_of(&self.digests));
        // Audit entries, chained; the last one is the checkpoint.
        let (mut seq, mut prev) = self.last.as_ref().map_or((0, GENESIS.to_string()), |l| {
            (l.entry.seq, l.entry.hash.clone())
        });
        let entries = std::mem::take(&mut self.entries);
        let count = entries.len();
        let mut last_row = None;
        for (i, p) in entries.into_iter().enumerate() {
            seq += 1;
            let mut entry = AuditEntry {
                seq,
                time: now_rfc3339(),
                actor: p.actor,
                action: p.action,
                subject: p.subject,
                outcome: p.outcome,
                detail: p.detail,
                prev: prev.clone(),
                hash: String::new(),
            };
            entry.hash = entry.compute_hash()?;
            prev = entry.hash.clone();
            let mut row = AuditRow {
                entry,
                root: None,
                signature: None,
            };
            if i + 1 == count {
                row.root = Some(root.clone());
                row.signature =
                    Some(self.sign_checkpoint(module, session, pin, seq, &prev, &root)?);
            }
            self.store.audit_append(&row)?;
            last_row = Some(row);
        }
        let head = head_value(seq, &prev, &root);
        let (label, pending_label) = head_labels(&self.config);
        session.write_data_object(&pending_label, head.as_bytes())?;
        // Fault points on either side of the commit: the token's pending head is ahead of
        // the database (before) or the database ahead of the token's head (after).
        self.fault("db-commit")?;
        self.store.commit()?;
        // Recorded. Promoting the head can fail now without harm: the token's pending head is
        // this state, and the next command promotes it. So the command still succeeds (and
        // shows what it made, such as a temporary key).
        let promoted = self.fault("head-promote").and_then(|()| {
            session
                .write_data_object(&label, head.as_bytes())
                .map_err(AuthorityError::from)
        });
        if let Err(e) = promoted {
            log::warn!("the change is recorded; the token's head will be updated by the next command ({e})");
        }
        self.last = last_row;
        self.dirty_rows.clear();
        self.config_dirty = false;
        self.checkpoint_key = None;
        // Committed: what follows cannot undo it, so a failure to start the next transaction
        // (the database gone right after the commit) does not fail this command. It leaves
        // the state unvouched, so a later change in the same run is refused, not made outside
        // a transaction.
        if let Err(e) = self.begin_after_commit(session) {
            log::warn!("the change is recorded; the next transaction could not start ({e})");
            self.vouched = false;
        }
        Ok(())
    }

    /// Takes the lock again after a commit, and on a shared store checks again what the other
    /// nodes may have committed since, against this node's token.
    fn begin_after_commit(&mut self, session: &TokenSession) -> Result<(), AuthorityError> {
        self.store.begin()?;
        if self.store.shared() {
            self.reload_shared(Some(session))?;
        }
        Ok(())
    }

    /// Drops what is cached of a shared store and checks its state again: against the
    /// token's head when a session is at hand, else the last checkpoint's signature with the
    /// CA key and the root.
    fn reload_shared(&mut self, session: Option<&TokenSession>) -> Result<(), AuthorityError> {
        self.buckets.clear();
        self.users.clear();
        self.last = self.store.audit_last()?;
        self.digests = self.store.digests()?;
        match session {
            Some(session) => self.vouch_shared(session),
            None => {
                let ca = self.ca_public_key()?;
                self.check_last_signature(&ca)?;
                self.check_root()
            }
        }
    }

    /// Drops every change not committed (records, users, audit entries) and starts afresh
    /// from what the store holds, so that a failure can still be recorded after a failed
    /// commit.
    pub fn discard_changes(&mut self) -> Result<(), AuthorityError> {
        self.store.rollback()?;
        self.buckets.clear();
        self.users.clear();
        self.dirty_users.clear();
        self.dirty_rows.clear();
        self.entries.clear();
        self.config_dirty = false;
        self.store.begin()?;
        if self.store.shared() {
            return self.reload_shared(None);
        }
        self.last = self.store.audit_last()?;
        self.digests = self.store.digests()?;
        Ok(())
    }

    fn sign_checkpoint(
        &self,
        module: &Module,
        session: &mut TokenSession,
        pin: &secrecy::SecretString,
        seq: u64,
        hash: &str,
        root: &str,
    ) -> Result<Vec<u8>, AuthorityError> {
        let id = key_id(
            "checkpoint key",
            self.checkpoint_key
                .as_deref()
                .unwrap_or(&self.config.ca_key_id),
        )?;
        let key = session
            .find_private_key(&id)?
            .ok_or_else(|| key_missing("CA key"))?;
        let bytes = checkpoint_bytes(seq, hash, root);
        Ok(session.sign(module, &key, &mut bytes.as_slice(), pin)?)
    }

    /// Every audit entry, oldest first.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>, AuthorityError> {
        Ok(self.store.audit_all()?)
    }

    /// The number of the last audit entry.
    pub fn last_seq(&self) -> u64 {
        self.last.as_ref().map_or(0, |l| l.entry.seq)
    }

    /// The CA certificate (first of the configuration's bundle).
    pub fn ca_certificate(&self) -> Result<x509_cert::Certificate, AuthorityError> {
        crate::pki::x509::certs_from_pem(&self.config.ca_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| tampered("the configuration holds no CA certificate"))
    }

    /// Every CA certificate of the authority, the current one first, then earlier generations,
    /// newest first.
    pub fn ca_certificates(&self) -> Result<Vec<x509_cert::Certificate>, AuthorityError> {
        let mut out = vec![self.ca_certificate()?];
        for p in self.config.previous_cas.iter().rev() {
            out.extend(
                crate::pki::x509::certs_from_pem(&p.cert_pem)?
                    .into_iter()
                    .take(1),
            );
        }
        Ok(out)
    }

    /// Test hook: `KEYWARD_FAULT=<point>` makes the named step fail (used by the fault tests).
    pub fn fault(&self, point: &str) -> Result<(), AuthorityError> {
        fault(&self.dir, point)
    }
}

/// Test hook: `KEYWARD_FAULT=<point>` makes the named step fail, once per process (so that
/// the failure itself can still be recorded); with `KEYWARD_FAULT_KILL=1` the process stops
/// there at once instead, as if killed (no clean-up runs).
pub fn fault(dir: &Path, point: &str) -> Result<(), AuthorityError> {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("KEYWARD_FAULT").is_ok_and(|v| v == point)
        && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        if std::env::var_os("KEYWARD_FAULT_KILL").is_some_and(|v| v == "1") {
            std::process::exit(137);
        }
        return Err(AuthorityError::Io {
            action: "write",
            path: dir.to_path_buf(),
            source: std::io::Error::other(format!("injected fault (KEYWARD_FAULT={point})")),
        });
    }
    Ok(())
}

/// Verifies the whole audit chain of `rows` and every checkpoint's signature with `ca`, an
/// authority that never rolled its CA key over; returns the number of entries and the last
/// checkpoint's root.
pub fn verify_chain(rows: &[AuditRow], ca: &PublicKey) -> Result<(u64, String), AuthorityError> {
    let c = verify_chain_across(rows, ca, &[])?;
    Ok((c.entries, c.root))
}

/// The audit action and subject of the entry that records a CA key rollover; its detail names
/// the new key as [`NEW_CA_KEY`] followed by the SHA-256 of its SubjectPublicKeyInfo (hex).
pub const CA_ROLLOVER: (&str, &str) = ("rollover", "ca");
/// See [`CA_ROLLOVER`].
pub const NEW_CA_KEY: &str = "new CA key sha256:";

/// The SHA-256 of a SubjectPublicKeyInfo (hex): how the audit log names a CA key.
pub fn key_fingerprint(ca: &PublicKey) -> Result<String, AuthorityError> {
    Ok(hex(&Sha256::digest(ca.to_der()?)))
}

/// The fingerprint of the new CA key a CA rollover entry names.
pub fn new_ca_key_named(e: &AuditEntry) -> Option<&str> {
    if (e.action.as_str(), e.subject.as_str()) != CA_ROLLOVER || e.outcome != "ok" {
        return None;
    }
    let at = e.detail.find(NEW_CA_KEY)? + NEW_CA_KEY.len();
    e.detail.get(at..at + 64)
}

/// What [`verify_chain_across`] found.
#[derive(Debug)]
pub struct ChainCheck {
    /// The number of entries.
    pub entries: u64,
    /// The last checkpoint's root.
    pub root: String,
    /// The fingerprints of the CA keys that signed checkpoints, in the order they took over.
    pub keys: Vec<String>,
}

/// Verifies the whole audit chain of `rows` and every checkpoint's signature, starting with
/// the key `first` (the first CA's): a checkpoint on a CA rollover entry, signed by the key
/// in force, hands over to the key the entry names, which must be one of `known` (the
/// authority's CA certificates' keys); every later checkpoint must verify with it. A
/// checkpoint signed by any key the chain did not hand over to is refused.
pub fn verify_chain_across(
    rows: &[AuditRow],
    first: &PublicKey,
    known: &[PublicKey],
) -> Result<ChainCheck, AuthorityError> {
    let mut ca = first.clone();
    let mut keys = vec![key_fingerprint(first)?];
    let mut prev = GENESIS.to_string();
    let mut root = None;
    for (i, row) in rows.iter().enumerate() {
        let e = &row.entry;
        let want = i as u64 + 1;
        if e.seq != want {
            return Err(log_broken(want, "entries are missing or out of order"));
        }
        if e.prev != prev {
            return Err(log_broken(
                e.seq,
                "it does not chain to the entry before it",
            ));
        }
        if e.compute_hash()? != e.hash {
            return Err(log_broken(e.seq, "its contents do not match its hash"));
        }
        if row.root.is_some() || row.signature.is_some() {
            check_checkpoint(&ca, row)?;
            root = row.root.clone();
        }
        if let Some(fpr) = new_ca_key_named(e) {
            if row.signature.is_none() {
                return Err(log_broken(
                    e.seq,
                    "it records a CA key rollover but carries no checkpoint signed by the key it replaces",
                ));
            }
            let mut next = None;
            for k in known {
                if key_fingerprint(k)? == fpr {
                    next = Some(k.clone());
                }
            }
            ca = next.ok_or_else(|| {
                log_broken(
                    e.seq,
                    &format!("it hands over to CA key sha256:{fpr}, which none of the authority's CA certificates holds"),
                )
            })?;
            keys.push(fpr.to_string());
        }
        prev = e.hash.clone();
    }
    let last = rows
        .last()
        .ok_or_else(|| tampered("the audit log is empty: the state has no checkpoint"))?;
    if last.signature.is_none() {
        return Err(log_broken(
            last.entry.seq,
            "the last entry carries no signed checkpoint: entries were appended outside keyward",
        ));
    }
    Ok(ChainCheck {
        entries: last.entry.seq,
        root: root.unwrap_or_default(),
        keys,
    })
}

fn check_checkpoint(ca: &PublicKey, row: &AuditRow) -> Result<(), AuthorityError> {
    let (Some(root), Some(sig)) = (&row.root, &row.signature) else {
        return Err(log_broken(row.entry.seq, "its checkpoint is incomplete"));
    };
    let bytes = checkpoint_bytes(row.entry.seq, &row.entry.hash, root);
    ca.verify(&bytes, sig).map_err(|_| {
        log_broken(
            row.entry.seq,
            "its checkpoint signature does not verify with the CA key in force at that point of the log: the log was rewritten outside keyward",
        )
    })
}

/// A token head: the last entry's seq and hash and the root.
#[derive(Debug, Clone)]
struct Head {
    seq: u64,
    hash: String,
    root: String,
}

fn parse_head(text: &str) -> Option<Head> {
    let mut parts = text.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let hash = parts.next()?.to_string();
    let root = parts.next()?.to_string();
    Some(Head { seq, hash, root })
}

/// Checks that `rows` (the log from `head.seq` on) extend `head`: the first is the entry the
/// head names (same hash and root), each after it chains to the one before with a hash that
/// matches its contents, every checkpoint verifies with `ca`, and the last is a checkpoint.
fn check_extends(rows: &[AuditRow], head: &Head, ca: &PublicKey) -> Result<(), AuthorityError> {
    let first = rows.first().ok_or_else(|| {
        tampered(&format!(
            "the state was rolled back: audit entry {} that this node's authority token has seen is gone",
            head.seq
        ))
    })?;
    if first.entry.seq != head.seq
        || first.entry.hash != head.hash
        || first.root.as_deref() != Some(head.root.as_str())
    {
        return Err(tampered(&format!(
            "audit entry {} is not the one this node's authority token has seen: the audit log or the state was rewritten (or restored from another authority)",
            head.seq
        )));
    }
    let mut prev = &first.entry;
    for row in &rows[1..] {
        let e = &row.entry;
        if e.seq != prev.seq + 1 {
            return Err(log_broken(
                prev.seq + 1,
                "entries are missing or out of order",
            ));
        }
        if e.prev != prev.hash {
            return Err(log_broken(
                e.seq,
                "it does not chain to the entry before it",
            ));
        }
        check_entry_hash(e)?;
        if row.root.is_some() || row.signature.is_some() {
            check_checkpoint(ca, row)?;
        }
        prev = e;
    }
    let last = rows.last().unwrap_or(first);
    if last.signature.is_none() {
        return Err(log_broken(
            last.entry.seq,
            "the last entry carries no signed checkpoint: entries were appended outside keyward",
        ));
    }
    if rows.len() > 1 {
        check_checkpoint(ca, last)?;
    }
    Ok(())
}

fn check_entry_hash(e: &AuditEntry) -> Result<(), AuthorityError> {
    if e.compute_hash()? != e.hash {
        return Err(log_broken(e.seq, "its contents do not match its hash"));
    }
    Ok(())
}

/// The CA's public key from a PEM bundle whose first certificate is the CA's.
pub fn ca_key_of(pem: &str) -> Result<PublicKey, AuthorityError> {
    use der::Encode;
    let ca = crate::pki::x509::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| AuthorityError::BadRequest("no CA certificate in the bundle".into()))?;
    let spki = ca
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|source| crate::pki::x509::X509Error::Encode {
            what: "CA public key",
            source,
        })?;
    Ok(PublicKey::from_spki_der(&spki)?)
}

fn parse_user(row: &Row) -> Result<UserRecord, AuthorityError> {
    serde_json::from_slice(&row.body).map_err(|e| {
        tampered(&format!(
            "the record of user {:?} does not parse: {e}",
            row.key
        ))
    })
}

fn read_head(session: &TokenSession, label: &str) -> Result<Option<String>, AuthorityError> {
    Ok(session
        .read_data_object(label)?
        .and_then(|v| String::from_utf8(v).ok()))
}

/// A record or the log changed outside keyward.
pub fn tampered(what: &str) -> AuthorityError {
    AuthorityError::Tampered {
        what: what.to_string(),
    }
}

fn log_broken(seq: u64, why: &str) -> AuthorityError {
    tampered(&format!("audit entry {seq} fails verification: {why}"))
}

fn changed_records(rows: &[Row]) -> AuthorityError {
    let mut names: Vec<String> = rows
        .iter()
        .map(|r| match r.kind.as_str() {
            kind::USER => format!("user {:?}", r.key),
            kind::CONFIG => "the authority's configuration".to_string(),
            k => format!("{k} record {} of {:?}", r.key, r.owner),
        })
        .collect();
    names.truncate(6);
    if names.is_empty() {
        return tampered("records were deleted outside keyward");
    }
    tampered(&format!(
        "these records do not match the digest that vouches for them: {}",
        names.join(", ")
    ))
}

/// Refuses a directory that holds no authority (before any PIN is asked for).
pub fn check_is_authority(dir: &Path) -> Result<(), AuthorityError> {
    if dir.join(DB_FILE).exists() || dir.join(STORE_FILE).exists() {
        return check_dir_is_safe(dir);
    }
    if dir.join("authority.toml").exists() {
        return Err(AuthorityError::NeedsMigration {
            dir: dir.to_path_buf(),
        });
    }
    if let Some(token) = super::init::interrupted(dir) {
        return Err(AuthorityError::BadRequest(format!(
            "{} holds no authority yet: an `authority init` there was interrupted before it committed, and token {token:?} may hold keys it made; run `keyward authority init --dir {} --token {token}` again, which removes them and creates the authority",
            dir.display(),
            dir.display()
        )));
    }
    Err(AuthorityError::NotAnAuthority {
        dir: dir.to_path_buf(),
    })
}

/// Refuses an authority directory others can write to, or whose files are symbolic links or
/// directories (see [`crate::fsguard`]).
pub fn check_dir_is_safe(dir: &Path) -> Result<(), AuthorityError> {
    let unsafe_dir = AuthorityError::Unsafe;
    crate::fsguard::check_private_dir(dir).map_err(unsafe_dir)?;
    for name in [
        DB_FILE,
        "authority.db-wal",
        "authority.db-shm",
        "authority.db-journal",
        "authority.lock",
        "ca.pem",
        STORE_FILE,
    ] {
        crate::fsguard::check_plain_file(dir, name).map_err(unsafe_dir)?;
    }
    Ok(())
}

/// Opens the directory's store: the PostgreSQL database its `store.toml` names, else its
/// SQLite file (read-only unless `writable`).
/// Refuses a database whose schema is not keyward's (see [`Store::schema_differences`]).
pub fn open_store(dir: &Path, writable: bool) -> Result<Box<dyn Store>, AuthorityError> {
    let store: Box<dyn Store> = match StoreFile::read(dir)? {
        Some(file) => Box::new(PgStore::open(&file.location)?),
        None => Box::new(SqliteStore::open(&dir.join(DB_FILE), writable)?),
    };
    let odd = store.schema_differences()?;
    if !odd.is_empty() {
        return Err(tampered(&format!(
            "the database's schema is not the one keyward makes ({}): a trigger, view or index added or changed outside keyward can rewrite or hide records",
            odd.join(", ")
        )));
    }
    Ok(store)
}

/// Removes `.keyward-*` temporary files a killed command left in `dir`.
pub fn clean_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".keyward-")
            || name.ends_with(".db.init")
            || name.ends_with(".db.init-wal")
            || name.ends_with(".db.init-shm")
        {
            if let Err(err) = std::fs::remove_file(e.path()) {
                log::warn!(
                    "could not remove the leftover {}: {err}",
                    e.path().display()
                );
            }
        }
    }
}

/// Who is acting when no operator was named: the holder of the authority token's PIN, as
/// `operator:authority` (an operator acting on their own token is `operator:NAME`, set with
/// [`AuthorityDir::set_actor`]).
fn operator(role: &str) -> String {
    format!("{role}:authority")
}

/// Takes the directory's lock file (serialises commands, token heads included).
pub fn lock_dir(dir: &Path) -> Result<File, AuthorityError> {
    let path = dir.join("authority.lock");
    let file = crate::fsguard::open_nofollow(&path).map_err(|e| io("lock", &path, e))?;
    file.lock().map_err(|e| io("lock", &path, e))?;
    Ok(file)
}

/// An I/O error with its file: the `io::Error` itself when given, a copy (kind and text) when
/// borrowed.
pub fn io(action: &'static str, path: &Path, e: impl IoCause) -> AuthorityError {
    AuthorityError::Io {
        action,
        path: path.to_path_buf(),
        source: e.into_io(),
    }
}

/// An `io::Error` for [`io`]: kept when owned, copied (kind and text) when borrowed.
pub trait IoCause {
    /// The error to keep as the source.
    fn into_io(self) -> std::io::Error;
}

impl IoCause for std::io::Error {
    fn into_io(self) -> std::io::Error {
        self
    }
}

impl IoCause for &std::io::Error {
    fn into_io(self) -> std::io::Error {
        std::io::Error::new(self.kind(), self.to_string())
    }
}

/// The key id (hex, as the state stores it) of the authority's `what`.
pub fn key_id(what: &'static str, id: &str) -> Result<Vec<u8>, AuthorityError> {
    match crate::token::keys::unhex(id) {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err(AuthorityError::BadKeyId {
            what,
            id: id.to_string(),
        }),
    }
}

/// The authority's `what` is not on the token present.
pub fn key_missing(what: impl Into<String>) -> AuthorityError {
    AuthorityError::KeyMissing { what: what.into() }
}

/// Now, RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
