//! The authority's state directory: `authority.toml`, `users.toml`, `ca.pem`, `archive/`,
//! `issued/`, `audit.log`, all written atomically under `authority.lock`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::audit::AuditLog;
use super::tempkey::TempKeyRecord;
use super::AuthorityError;
use crate::home::parse_toml;
use crate::keyset::registry::write_atomic;
use crate::token::OaepHash;

/// The state schema this keyward writes.
pub const SCHEMA: u32 = 1;

/// `authority.toml`: who the authority is and where its keys are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorityConfig {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The CA's subject, as given to `authority init --name`.
    pub name: String,
    /// The authority token's label.
    pub token_label: String,
    /// The authority token's serial.
    pub token_serial: String,
    /// `CKA_ID` of the CA signing key, hex.
    pub ca_key_id: String,
    /// `CKA_ID` of the exchange key (decrypts temporary keys), hex.
    pub exchange_key_id: String,
    /// `CKA_ID` of the AES archive key, hex.
    pub archive_key_id: String,
    /// RSA-OAEP hash the authority's token decrypts with.
    pub exchange_oaep: OaepHash,
    /// `authority init --allow-import`: keys may be delivered by import (`C_CreateObject`) to
    /// user tokens that cannot unwrap them. Absent: no.
    #[serde(default)]
    pub allow_import: bool,
    /// The authority's token wraps with `CKM_AES_CBC_PAD` (probed at init): it can deliver to
    /// tokens that unwrap only that way. Absent: no.
    #[serde(default)]
    pub wraps_cbc_pad: bool,
    /// The last CRL number issued.
    #[serde(default)]
    pub crl_number: u64,
    /// Audit log head: sequence number.
    #[serde(default)]
    pub log_seq: u64,
    /// Audit log head: hash.
    #[serde(default)]
    pub log_hash: String,
    /// When created, RFC 3339.
    pub created: String,
    /// Fields from a newer keyward, kept.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// Where a user is in the enrollment life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Added; has a temporary key; not enrolled yet.
    Pending,
    /// Enrolled, certificates valid.
    Active,
    /// Recovered: old certificates revoked, a new temporary key issued.
    Recovering,
    /// Revoked: no enrollment possible.
    Revoked,
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// The user's signing certificate.
    Signing,
    /// The user's encryption certificate.
    Encryption,
}

/// A revocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    /// When, RFC 3339.
    pub at: String,
    /// RFC 5280 reason name.
    pub reason: String,
}

/// A certificate the authority issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IssuedCert {
    /// Serial number, hex.
    pub serial: String,
    /// Signing or encryption.
    pub kind: CertKind,
    /// The keyset it was issued for.
    pub keyset: String,
    /// Issued at, RFC 3339.
    pub issued: String,
    /// Expires at, RFC 3339.
    pub not_after: String,
    /// Set once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// An archived encryption key: wrapped under the archive key in `archive/USER/SERIAL.kwp`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchivedKey {
    /// Serial of the encryption certificate, hex.
    pub cert_serial: String,
    /// Archived at, RFC 3339.
    pub archived: String,
}

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user name.
    pub name: String,
    /// E-mail address, put in certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Life-cycle state.
    pub state: UserState,
    /// Added at, RFC 3339.
    pub created: String,
    /// The outstanding temporary key, if any (hash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_key: Option<TempKeyRecord>,
    /// Keysets enrolled, oldest first.
    #[serde(default)]
    pub keysets: Vec<String>,
    /// Certificates issued, oldest first.
    #[serde(default)]
    pub certs: Vec<IssuedCert>,
    /// Archived encryption keys, oldest first.
    #[serde(default)]
    pub archive: Vec<ArchivedKey>,
    /// Fields from a newer keyward, kept.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// `users.toml`: the schema and the users (public so the fuzz target parses what the
/// authority parses).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UsersFile {
    schema: u32,
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
    #[serde(flatten)]
    extra: toml::Table,
}

/// An authority directory, opened under its lock (or read-only).
#[derive(Debug)]
pub struct AuthorityDir {
    dir: PathBuf,
    /// `authority.toml`.
    pub config: AuthorityConfig,
    users: UsersFile,
    _lock: Option<File>,
}

impl AuthorityDir {
    /// Path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock (waiting for other keyward processes) and reads the state.
    pub fn open_locked(dir: &Path) -> Result<AuthorityDir, AuthorityError> {
        // Not an authority: say so, and leave no lock file in someone else's directory.
        if !dir.join("authority.toml").exists() {
            return Err(AuthorityError::NotAnAuthority {
                dir: dir.to_path_buf(),
            });
        }
        let lock = lock_dir(dir)?;
        let mut a = Self::open_read(dir)?;
        // Every change is logged: refuse before acting if the log cannot take an entry.
        a.log().check_appendable()?;
        a._lock = Some(lock);
        Ok(a)
    }

    /// Reads the state without the lock (writers replace files atomically).
    pub fn open_read(dir: &Path) -> Result<AuthorityDir, AuthorityError> {
        let cfg_path = dir.join("authority.toml");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AuthorityError::NotAnAuthority {
                    dir: dir.to_path_buf(),
                }
            } else {
                io("read", &cfg_path, &e)
            }
        })?;
        let config: AuthorityConfig = parse_toml(&cfg_path, &text)?;
        if config.schema > SCHEMA {
            return Err(AuthorityError::NewerSchema {
                path: cfg_path,
                found: config.schema,
            });
        }
        let users_path = dir.join("users.toml");
        let users: UsersFile = match std::fs::read_to_string(&users_path) {
            Ok(t) => parse_toml(&users_path, &t)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile {
                schema: SCHEMA,
                ..Default::default()
            },
            Err(e) => return Err(io("read", &users_path, &e)),
        };
        if users.schema > SCHEMA {
            return Err(AuthorityError::NewerSchema {
                path: users_path,
                found: users.schema,
            });
        }
        Ok(AuthorityDir {
            dir: dir.to_path_buf(),
            config,
            users,
            _lock: None,
        })
    }

    /// A new, empty authority directory under its lock (nothing written yet).
    pub fn create_locked(
        dir: &Path,
        config: AuthorityConfig,
    ) -> Result<AuthorityDir, AuthorityError> {
        if dir.join("authority.toml").exists() {
            return Err(AuthorityError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, &e))?;
        let lock = lock_dir(dir)?;
        if dir.join("authority.toml").exists() {
            return Err(AuthorityError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        Ok(AuthorityDir {
            dir: dir.to_path_buf(),
            config,
            users: UsersFile {
                schema: SCHEMA,
                ..Default::default()
            },
            _lock: Some(lock),
        })
    }

    /// Every user.
    pub fn users(&self) -> &[UserRecord] {
        &self.users.users
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<&UserRecord, AuthorityError> {
        self.users
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| AuthorityError::UnknownUser {
                user: name.to_string(),
            })
    }

    /// One user, to change.
    pub fn user_mut(&mut self, name: &str) -> Result<&mut UserRecord, AuthorityError> {
        self.users
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| AuthorityError::UnknownUser {
                user: name.to_string(),
            })
    }

    /// Adds a user (the name must be new).
    pub fn add_user(&mut self, user: UserRecord) -> Result<(), AuthorityError> {
        if self.users.users.iter().any(|u| u.name == user.name) {
            return Err(AuthorityError::UserExists { user: user.name });
        }
        self.users.users.push(user);
        Ok(())
    }

    /// Writes `users.toml` atomically.
    pub fn save_users(&self) -> Result<(), AuthorityError> {
        self.fault("users-save")?;
        let mut file = self.users.clone();
        file.schema = SCHEMA;
        let body =
            toml::to_string_pretty(&file).map_err(|e| AuthorityError::Encode(e.to_string()))?;
        let path = self.path("users.toml");
        write_atomic(
            &path,
            format!("# keyward authority users (schema {SCHEMA})\n{body}").as_bytes(),
        )
        .map_err(|e| io("write", &path, &e))
    }

    /// Writes `authority.toml` atomically.
    pub fn save_config(&self) -> Result<(), AuthorityError> {
        let mut cfg = self.config.clone();
        cfg.schema = SCHEMA;
        let body =
            toml::to_string_pretty(&cfg).map_err(|e| AuthorityError::Encode(e.to_string()))?;
        let path = self.path("authority.toml");
        write_atomic(
            &path,
            format!("# keyward authority (schema {SCHEMA})\n{body}").as_bytes(),
        )
        .map_err(|e| io("write", &path, &e))
    }

    /// Writes a file in the directory atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, AuthorityError> {
        let path = self.path(name);
        write_atomic(&path, bytes).map_err(|e| io("write", &path, &e))?;
        Ok(path)
    }

    /// Reads a file of the directory.
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, AuthorityError> {
        let path = self.path(name);
        std::fs::read(&path).map_err(|e| io("read", &path, &e))
    }

    /// The audit log.
    pub fn log(&self) -> AuditLog {
        AuditLog::open(&self.path("audit.log"))
    }

    /// Appends an audit entry (never a secret) and records the new head in `authority.toml`.
    pub fn audit(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), AuthorityError> {
        let who = operator(actor);
        let (seq, hash) = self.log().append(&who, action, subject, outcome, detail)?;
        self.config.log_seq = seq;
        self.config.log_hash = hash;
        self.save_config()
    }

    /// Test hook: `KEYWARD_FAULT=<point>` makes the named step fail (used by the fault tests).
    pub fn fault(&self, point: &str) -> Result<(), AuthorityError> {
        if std::env::var("KEYWARD_FAULT").is_ok_and(|v| v == point) {
            return Err(AuthorityError::Io {
                action: "write",
                path: self.dir.clone(),
                reason: format!("injected fault (KEYWARD_FAULT={point})"),
            });
        }
        Ok(())
    }
}

/// Who is acting: the operating-system user running keyward, as `operator:NAME`.
fn operator(role: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        // No login name (a service or container): the process's user id still says who.
        .or_else(|| {
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| format!("uid{}", m.uid()))
        })
        .unwrap_or_else(|| "unknown".to_string());
    format!("{role}:{user}")
}

fn lock_dir(dir: &Path) -> Result<File, AuthorityError> {
    let path = dir.join("authority.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io("lock", &path, &e))?;
    file.lock().map_err(|e| io("lock", &path, &e))?;
    Ok(file)
}

/// An I/O error with its file.
pub fn io(action: &'static str, path: &Path, e: &std::io::Error) -> AuthorityError {
    AuthorityError::Io {
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Now, RFC 3339 (seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
