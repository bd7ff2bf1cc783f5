//! The keyset registry, `$KEYWARD_HOME/keysets.toml`: keyset names ↔ tokens and key ids.
//!
//! Written atomically (temp file, fsync, rename) under an exclusive lock; a file that does not
//! parse is reported with its line and column and never overwritten; unknown fields are kept.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::harden::Hardening;
use crate::home::{parse_toml, ConfigError};
use crate::token::TokenIdentity;

/// The registry schema this keyward writes.
pub const SCHEMA: u32 = 1;

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The file does not parse (line and column inside).
    #[error("keyset registry {0}")]
    Parse(#[from] ConfigError),
    /// Written by a newer keyward.
    #[error("keyset registry {} has schema {found}, newer than this keyward's {SCHEMA}; upgrade keyward", .path.display())]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: u32,
    },
    /// Reading, locking or writing failed.
    #[error("cannot {action} keyset registry {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The registry (or its journal) cannot be encoded as TOML.
    #[error("cannot encode keyset registry {}: {source}", .path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::ser::Error,
    },
    /// keyward's home directory cannot be made private.
    #[error("cannot create the directory of keyset registry {}: {source}", .path.display())]
    Home {
        /// The registry's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::fsguard::Unsafe,
    },
    /// A completed enrollment or renewal whose token part is done could not be put in the
    /// registry.
    #[error("cannot record the completed enrollment in keyset registry {}: {source}; the keys and certificates are on the token, and the next keyward command that opens the registry (for instance `keyward keyset list`) records keyset {keyset:?} as enrolled", .path.display())]
    NotRecorded {
        /// The file.
        path: PathBuf,
        /// The keyset.
        keyset: String,
        /// Why.
        #[source]
        source: Box<RegistryError>,
    },
    /// No keyset has that name.
    #[error("no keyset named {name:?}; known keysets: {}; run `keyward keyset list`", if .known.is_empty() { "none".to_string() } else { .known.join(", ") })]
    NotFound {
        /// The name asked for.
        name: String,
        /// The names in the registry.
        known: Vec<String>,
    },
    /// The name is taken.
    #[error("a keyset named {existing:?} already exists; choose another name (names are compared ignoring case)")]
    Exists {
        /// The existing name.
        existing: String,
    },
}

/// Security level of a keyset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// One login per command.
    Standard,
    /// The password for every private-key operation (`CKA_ALWAYS_AUTHENTICATE`).
    High,
}

/// Key algorithm of a keyset's signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// RSA 2048 (default).
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// ECDSA P-256.
    P256,
}

/// Where a keyset is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeysetState {
    /// Keys made locally, not enrolled with an authority.
    Local,
    /// An enrollment request was made; waiting for the authority's reply.
    Pending,
    /// Enrolled: certificates issued.
    Active,
    /// Superseded after recovery; kept for its old keys.
    Retired,
}

macro_rules! lowercase_display {
    ($($t:ty => { $($v:ident = $s:literal),* }),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $(Self::$v => $s),* })
            }
        }
    )*};
}

lowercase_display!(
    Security => { Standard = "standard", High = "high" },
    KeyAlgorithm => { Rsa2048 = "rsa2048", Rsa3072 = "rsa3072", P256 = "p256" },
    KeysetState => { Local = "local", Pending = "pending", Active = "active", Retired = "retired" }
);

/// One keyset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeysetRecord {
    /// The name as typed.
    pub name: String,
    /// The ≤32-byte label derived from the name, used in object labels.
    pub label: String,
    /// Life-cycle state.
    pub state: KeysetState,
    /// Security level.
    pub security: Security,
    /// Signing key algorithm.
    pub key_type: KeyAlgorithm,
    /// The token's label.
    pub token_label: String,
    /// The token's serial number.
    pub token_serial: String,
    /// The token's manufacturer (not in records written before keyward recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_manufacturer: Option<String>,
    /// The token's model (not in records written before keyward recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_model: Option<String>,
    /// `CKA_ID` of the signing key pair, hex.
    pub signing_id: String,
    /// The signing public key, SubjectPublicKeyInfo PEM.
    pub signing_public_key: String,
    /// When it was created, RFC 3339.
    pub created: String,
    /// Password hardening, when the token PIN is derived from the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardening: Option<Hardening>,
    /// Enrollment with an authority, once requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
    /// Set when the keyset was adopted from keys already on the token (`keyset adopt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<Adoption>,
    /// Fields written by a newer keyward, kept as they are.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// A keyset made from keys and certificates that were already on the token (provisioned by
/// the card's own tools): keyward made none of them and destroys none of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Adoption {
    /// When it was adopted, RFC 3339.
    pub adopted: String,
    /// The signing key's certificate on the token, PEM, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<String>,
    /// The decryption key and its certificate, if the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption_key: Option<EncryptionKey>,
    /// Fields written by a newer keyward, kept as they are.
    #[serde(flatten)]
    pub extra: toml::Table,
}

impl KeysetRecord {
    /// The token this keyset's keys are on: label, serial, and manufacturer and model when
    /// recorded (RFC 7512's token attributes together; serials alone repeat across tokens).
    pub fn token(&self) -> TokenIdentity {
        TokenIdentity {
            label: self.token_label.clone(),
            serial: self.token_serial.clone(),
            manufacturer: self.token_manufacturer.clone(),
            model: self.token_model.clone(),
        }
    }

    /// Records `token` as this keyset's token.
    pub fn set_token(&mut self, token: &TokenIdentity) {
        self.token_label = token.label.clone();
        self.token_serial = token.serial.clone();
        self.token_manufacturer = token.manufacturer.clone();
        self.token_model = token.model.clone();
    }
}

/// A keyset's enrollment with an authority.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Enrollment {
    /// The user name at the authority.
    pub user: String,
    /// The authority's CA certificate, PEM (trusted from the request on).
    pub authority_ca: String,
    /// The request's nonce, hex.
    pub nonce: String,
    /// `CKA_ID` of the transport key while the request is pending, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_id: Option<String>,
    /// The signing certificate, PEM, once enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_certificate: Option<String>,
    /// Encryption keys on the token (current and archived), once enrolled.
    #[serde(
        default,
        rename = "encryption_key",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub encryption_keys: Vec<EncryptionKey>,
    /// How the encryption keys reached the token (`rfc5649`: unwrapped inside it; `import`:
    /// created with `C_CreateObject`), once enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// A renewal requested (`enroll --renew -o`) and not completed yet: the keyset stays
    /// active with its current keys meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<PendingRenewal>,
    /// Signing certificates replaced by renewals, oldest first (their keys stay on the token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PastSigning>,
    /// Fields written by a newer keyward, kept as they are.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// A renewal waiting for the authority's reply: the new signing key and transport key are
/// on the token already.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingRenewal {
    /// The renewal request's nonce, hex.
    pub nonce: String,
    /// `CKA_ID` of the new signing key pair, hex.
    pub signing_id: String,
    /// The new signing public key, SubjectPublicKeyInfo PEM.
    pub signing_public_key: String,
    /// `CKA_ID` of the renewal's transport key, hex.
    pub transport_id: String,
    /// When requested, RFC 3339.
    pub requested: String,
}

/// A signing certificate a renewal replaced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PastSigning {
    /// `CKA_ID` of its key pair, hex.
    pub signing_id: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// When it was replaced, RFC 3339.
    pub superseded: String,
}

/// One encryption key of a keyset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EncryptionKey {
    /// `CKA_ID`, hex.
    pub id: String,
    /// Its certificate's serial, hex.
    pub cert_serial: String,
    /// Its certificate, PEM.
    pub certificate: String,
    /// The newest one (others encrypt to it).
    pub current: bool,
    /// Fields written by a newer keyward, kept as they are.
    #[serde(flatten)]
    pub extra: toml::Table,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct RegistryFile {
    schema: u32,
    #[serde(default, rename = "keyset")]
    keysets: Vec<KeysetRecord>,
    #[serde(flatten)]
    extra: toml::Table,
}

/// The registry as loaded from disk.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    file: RegistryFile,
}

/// An exclusive lock on the registry; released on drop.
#[derive(Debug)]
pub struct RegistryLock {
    _file: File,
}

impl Registry {
    /// The registry file in `home`.
    pub fn file_in(home: &Path) -> PathBuf {
        home.join("keysets.toml")
    }

    /// Reads the registry (no lock: writers replace it atomically). Missing means empty.
    pub fn load(home: &Path) -> Result<Registry, RegistryError> {
        let path = Self::file_in(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Registry {
                    path,
                    file: RegistryFile {
                        schema: SCHEMA,
                        ..Default::default()
                    },
                })
            }
            Err(e) => return Err(io("read", &path, e)),
        };
        Self::parse(&path, &text)
    }

    /// Parses the text of the registry file at `path` (the path is only for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Registry, RegistryError> {
        let file: RegistryFile = parse_toml(path, text)?;
        if file.schema > SCHEMA {
            return Err(RegistryError::NewerSchema {
                path: path.to_path_buf(),
                found: file.schema,
            });
        }
        Ok(Registry {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The text [`Registry::save`] writes.
    pub fn render(&self) -> Result<String, RegistryError> {
        let mut file = self.file.clone();
        file.schema = SCHEMA;
        let body = toml::to_string_pretty(&file).map_err(|source| RegistryError::Encode {
            path: self.path.clone(),
            source,
        })?;
        Ok(format!("# keyward keyset registry (schema {SCHEMA}). Written by keyward; edit with care.\n{body}"))
    }

    /// Takes the exclusive lock (waiting for other keyward processes), then reads the registry.
    pub fn lock(home: &Path) -> Result<(RegistryLock, Registry), RegistryError> {
        if !home.exists() {
            // KEYWARD_HOME holds the registry: private from the start, whatever the umask.
            crate::fsguard::create_private_dir(home).map_err(|source| RegistryError::Home {
                path: Self::file_in(home),
                source,
            })?;
        }
        let lock_path = home.join("keysets.toml.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("lock", &lock_path, e))?;
        file.lock().map_err(|e| io("lock", &lock_path, e))?;
        let registry = Self::load(home)?;
        Ok((RegistryLock { _file: file }, registry))
    }

    /// Writes the registry atomically. Needs the lock.
    pub fn save(&self, lock: &RegistryLock) -> Result<(), RegistryError> {
        self.prepare_save(lock)?.commit()
    }

    /// The first half of [`Registry::save`]: writes and syncs the new text to a temporary file
    /// beside the registry, so that what is left — [`PreparedSave::commit`], a rename — can
    /// hardly fail. For a change that must be durable together with a last step on a token:
    /// prepare, take the step, commit. Dropped without a commit, it changes nothing.
    pub fn prepare_save(&self, _lock: &RegistryLock) -> Result<PreparedSave, RegistryError> {
        if std::env::var_os("KEYWARD_FAULT").is_some_and(|v| v == "registry-save") {
            return Err(RegistryError::Io {
                action: "write",
                path: self.path.clone(),
                source: std::io::Error::other("injected fault (KEYWARD_FAULT=registry-save)"),
            });
        }
        let text = self.render()?;
        let tmp =
            write_beside(&self.path, text.as_bytes()).map_err(|e| io("write", &self.path, e))?;
        Ok(PreparedSave {
            tmp,
            path: self.path.clone(),
        })
    }

    /// The keyward home the registry is in.
    pub fn home(&self) -> PathBuf {
        parent_dir(&self.path).to_path_buf()
    }

    /// Every keyset, in the order they were added.
    pub fn keysets(&self) -> &[KeysetRecord] {
        &self.file.keysets
    }

    /// The keyset called `name` (compared ignoring case, as names are unique that way).
    pub fn get(&self, name: &str) -> Result<&KeysetRecord, RegistryError> {
        let i = self.position(name).ok_or_else(|| self.not_found(name))?;
        Ok(&self.file.keysets[i])
    }

    /// The keyset called `name`, for changing it.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut KeysetRecord, RegistryError> {
        let i = self.position(name).ok_or_else(|| self.not_found(name))?;
        Ok(&mut self.file.keysets[i])
    }

    /// Where the keyset called `name` is: the exact name, else the one equal ignoring case.
    fn position(&self, name: &str) -> Option<usize> {
        let keysets = &self.file.keysets;
        keysets.iter().position(|k| k.name == name).or_else(|| {
            let wanted = name.to_lowercase();
            keysets.iter().position(|k| k.name.to_lowercase() == wanted)
        })
    }

    /// Fails when a keyset with this name (ignoring case) or this derived label exists.
    pub fn check_free(&self, name: &str, label: &str) -> Result<(), RegistryError> {
        match self
            .file
            .keysets
            .iter()
            .find(|k| k.name.to_lowercase() == name.to_lowercase() || k.label == label)
        {
            Some(k) => Err(RegistryError::Exists {
                existing: k.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Adds a keyset (the name must be free).
    pub fn add(&mut self, record: KeysetRecord) -> Result<(), RegistryError> {
        self.check_free(&record.name, &record.label)?;
        if let Some(other) = crate::names::confusable_with(
            &record.name,
            self.file.keysets.iter().map(|k| k.name.as_str()),
        ) {
            log::warn!(
                "keyset name {:?} looks like the existing keyset {other:?} (confusable characters); make sure you name the one you mean",
                record.name
            );
        }
        self.file.keysets.push(record);
        Ok(())
    }

    /// Removes a keyset and returns it.
    pub fn remove(&mut self, name: &str) -> Result<KeysetRecord, RegistryError> {
        let pos = self.position(name).ok_or_else(|| self.not_found(name))?;
        Ok(self.file.keysets.remove(pos))
    }

    /// The other keysets on this token.
    pub fn sharing_token(&self, token: &TokenIdentity, except: &str) -> Vec<&KeysetRecord> {
        self.file
            .keysets
            .iter()
            .filter(|k| {
                k.token().same_token(token)
                    && k.name.to_lowercase() != except.to_lowercase()
                    && k.state != KeysetState::Retired
            })
            .collect()
    }

    fn not_found(&self, name: &str) -> RegistryError {
        RegistryError::NotFound {
            name: name.to_string(),
            known: self
                .file
                .keysets
                .iter()
                .map(|k| format!("{:?}", k.name))
                .collect(),
        }
    }
}

/// Whether `path` names something that exists and is neither a regular file nor a directory
/// (`/dev/null`, a FIFO, a terminal), following symbolic links. Such an output is written in
/// place: a rename over it would replace the device with a file.
pub fn is_special_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Opens the device or pipe `path` for writing, as it is (no create, no truncate).
pub fn open_in_place(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().write(true).open(path)
}

/// Writes `bytes` into the device or pipe `path`.
fn write_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = open_in_place(path)?;
    f.write_all(bytes)?;
    f.flush()
}

/// Replaces `path` with `bytes` through a temp file and a rename (never a half-written file),
/// without fsync: for outputs such as signatures, which can be made again. A device or pipe
/// (`-o /dev/null`) is written in place.
pub fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if is_special_file(path) {
        return write_in_place(path, bytes);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".keyward-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename, fsync dir.
/// A device or pipe (`-o /dev/null`) is written in place instead.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if is_special_file(path) {
        return write_in_place(path, bytes);
    }
    persist(write_beside(path, bytes)?, path)
}

/// A bare file name has the empty path as its parent: that is the current directory.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `bytes` in a synced temporary file in `path`'s directory.
/// Its name starts with `.keyward-NAME.` (NAME: `path`'s file name); such files a killed
/// earlier write of the same path left are removed first, so a retry leaves none behind.
fn write_beside(path: &Path, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let prefix = format!(
        ".keyward-{}.",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    remove_leftovers(dir, &prefix);
    let mut tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

/// Removes the files in `dir` whose names start with `prefix` (temporary files of an earlier
/// write that was killed before its rename).
pub fn remove_leftovers(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                log::warn!(
                    "could not remove the leftover {}: {err}",
                    e.path().display()
                );
            }
        }
    }
}

/// Renames `tmp` to `path` and syncs the directory.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(parent_dir(path))?.sync_all()
}

/// A registry written by [`Registry::prepare_save`], not yet in its place.
pub struct PreparedSave {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl PreparedSave {
    /// Puts the new registry in place (a rename): that is the commit. The directory is then
    /// synced; when that fails the new registry is in place all the same (every reader sees
    /// it), so the change stands and the failure is reported as a warning — undoing the change
    /// after it became visible would leave the registry naming what is gone.
    pub fn commit(self) -> Result<(), RegistryError> {
        self.tmp
            .persist(&self.path)
            .map_err(|e| io("write", &self.path, e.error))?;
        if let Err(e) = File::open(parent_dir(&self.path)).and_then(|d| d.sync_all()) {
            log::warn!(
                "the keyset registry {} was written, but syncing its directory failed ({e}): the change stands, but may be lost if the system stops before it syncs again",
                self.path.display()
            );
        }
        Ok(())
    }
}

fn io(action: &'static str, path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Io {
        action,
        path: path.to_path_buf(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> KeysetRecord {
        KeysetRecord {
            name: name.to_string(),
            label: name.to_string(),
            state: KeysetState::Local,
            security: Security::Standard,
            key_type: KeyAlgorithm::Rsa2048,
            token_label: "t".into(),
            token_serial: "s".into(),
            token_manufacturer: None,
            token_model: None,
            signing_id: "01".into(),
            signing_public_key: "PEM".into(),
            created: "2026-01-01T00:00:00Z".into(),
            hardening: None,
            enrollment: None,
            adopted: None,
            extra: toml::Table::new(),
        }
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let home = tempfile::tempdir().unwrap();
        let (lock, mut reg) = Registry::lock(home.path()).unwrap();
        reg.add(record("Alice")).unwrap();
        reg.save(&lock).unwrap();
        drop(lock);
        let path = Registry::file_in(home.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("schema = 1", "schema = 1\nfuture_top = \"x\"")
            .replace("name = \"Alice\"", "name = \"Alice\"\nfuture_field = 7");
        std::fs::write(&path, text).unwrap();
        let (lock, reg) = Registry::lock(home.path()).unwrap();
        reg.save(&lock).unwrap();
        let again = std::fs::read_to_string(&path).unwrap();
        assert!(again.contains("future_top = \"x\""), "{again}");
        assert!(again.contains("future_field = 7"), "{again}");
    }

    #[test]
    fn unknown_fields_in_nested_tables_are_kept_too() {
        let home = tempfile::tempdir().unwrap();
        let path = Registry::file_in(home.path());
        let text = "schema = 1\n\n[[keyset]]\nname = \"Bob\"\nlabel = \"Bob\"\n\
            state = \"active\"\nsecurity = \"standard\"\nkey_type = \"rsa2048\"\n\
            token_label = \"t\"\ntoken_serial = \"s\"\nsigning_id = \"01\"\n\
            signing_public_key = \"PEM\"\ncreated = \"2026-01-01T00:00:00Z\"\n\n\
            [keyset.hardening]\nalgorithm = \"argon2id\"\nsalt = \"00\"\nm_kib = 19456\n\
            t = 2\np = 1\npin_len = 26\nalphabet = \"base32\"\nfuture_hardening = \"h\"\n\n\
            [keyset.enrollment]\nuser = \"bob\"\nauthority_ca = \"\"\nnonce = \"00\"\n\
            future_enrollment = [1, 2]\n\n\
            [[keyset.enrollment.encryption_key]]\nid = \"03\"\ncert_serial = \"AB\"\n\
            certificate = \"\"\ncurrent = true\nfuture_key = { x = 1 }\n";
        std::fs::write(&path, text).unwrap();
        let (lock, mut reg) = Registry::lock(home.path()).unwrap();
        reg.add(record("Alice")).unwrap();
        reg.save(&lock).unwrap();
        drop(lock);
        let again = std::fs::read_to_string(&path).unwrap();
        for kept in ["future_hardening", "future_enrollment", "future_key"] {
            assert!(again.contains(kept), "{kept} lost:\n{again}");
        }
        let reg = Registry::load(home.path()).unwrap();
        let bob = reg.get("Bob").unwrap();
        assert_eq!(bob.hardening.as_ref().unwrap().extra.len(), 1);
        assert_eq!(
            bob.hardening.as_ref().unwrap().extra["future_hardening"].as_str(),
            Some("h")
        );
        let e = bob.enrollment.as_ref().unwrap();
        assert_eq!(
            e.extra["future_enrollment"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            e.encryption_keys[0].extra["future_key"]["x"].as_integer(),
            Some(1)
        );
    }

    #[test]
    fn token_identity_is_recorded_and_old_entries_still_load() {
        let home = tempfile::tempdir().unwrap();
        let (lock, mut reg) = Registry::lock(home.path()).unwrap();
        let mut nss = record("Nss");
        nss.set_token(&TokenIdentity {
            label: "NSS Certificate DB".into(),
            serial: "0000000000000000".into(),
            manufacturer: Some("Mozilla Foundation".into()),
            model: Some("NSS 3".into()),
        });
        reg.add(nss).unwrap();
        reg.add(record("Old")).unwrap();
        reg.save(&lock).unwrap();
        drop(lock);
        let text = std::fs::read_to_string(Registry::file_in(home.path())).unwrap();
        assert!(
            text.contains("token_manufacturer = \"Mozilla Foundation\""),
            "{text}"
        );
        assert_eq!(text.matches("token_model").count(), 1, "{text}");
        let reg = Registry::load(home.path()).unwrap();
        assert_eq!(reg.get("Old").unwrap().token().manufacturer, None);
        let generic = TokenIdentity {
            label: "NSS Generic Crypto Services".into(),
            serial: "0000000000000000".into(),
            manufacturer: Some("Mozilla Foundation".into()),
            model: Some("NSS 3".into()),
        };
        assert!(reg.sharing_token(&generic, "").is_empty());
        let db = reg.get("Nss").unwrap().token();
        assert_eq!(reg.sharing_token(&db, "").len(), 1);
    }

    #[test]
    fn names_are_unique_ignoring_case() {
        let mut reg = Registry::load(tempfile::tempdir().unwrap().path()).unwrap();
        reg.add(record("Alice")).unwrap();
        assert_eq!(reg.get("ALICE").unwrap().name, "Alice");
        assert_eq!(reg.get_mut("alice").unwrap().name, "Alice");
        assert!(matches!(
            reg.add(record("alice")),
            Err(RegistryError::Exists { .. })
        ));
    }

    #[test]
    fn a_broken_file_is_reported_with_its_line_and_kept() {
        let home = tempfile::tempdir().unwrap();
        let path = Registry::file_in(home.path());
        std::fs::write(&path, "schema = 1\n[[keyset]\nname = 1\n").unwrap();
        let err = Registry::lock(home.path()).unwrap_err().to_string();
        assert!(err.contains("keysets.toml:2:"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "schema = 1\n[[keyset]\nname = 1\n"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(Registry::file_in(home.path()), "schema = 9\n").unwrap();
        assert!(matches!(
            Registry::load(home.path()),
            Err(RegistryError::NewerSchema { found: 9, .. })
        ));
    }
}
