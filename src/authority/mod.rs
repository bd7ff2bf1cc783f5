//! The enrollment authority: users, temporary keys, certificates, key archive and recovery,
//! revocation, CRL and audit log. State lives in a [`store::Store`] (SQLite in the authority's
//! directory), vouched for by the authority's token; keys live on that token.

pub mod approvals;
pub mod audit;
pub mod bulk;
pub mod chain;
pub mod crl;
pub mod init;
pub mod legacy;
pub mod migrate;
pub mod operators;
pub mod policy;
pub mod process;
pub mod records;
pub mod renew;
pub mod rollover;
pub mod rollover_ca;
pub mod signer;
pub mod state;
pub mod store;
pub mod tempkey;
pub mod tokenstate;
pub mod users;

use std::path::PathBuf;

pub use records::UserRecord;
pub use state::{AuthorityDir, UserState};

use crate::home::ConfigError;
use crate::token::TokenError;

/// Errors of the authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// From the token.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// A state file does not parse.
    #[error("authority state {0}")]
    Parse(#[from] ConfigError),
    /// Certificates and CRLs.
    #[error("{0}")]
    X509(#[from] crate::pki::x509::X509Error),
    /// The audit log.
    #[error("{0}")]
    Audit(#[from] audit::AuditError),
    /// Temporary keys.
    #[error("{0}")]
    TempKey(#[from] tempkey::TempKeyError),
    /// Request and reply files.
    #[error("{0}")]
    Wire(#[from] crate::enroll::wire::WireError),
    /// Keys and signatures.
    #[error("{0}")]
    Key(#[from] crate::pki::key::KeyError),
    /// The directory holds no authority.
    #[error("{} is not an authority directory (no authority.db); create one with `keyward authority init --dir DIR --token URI`", .dir.display())]
    NotAnAuthority {
        /// The directory.
        dir: PathBuf,
    },
    /// A schema-1 (TOML) authority directory.
    #[error("{} holds an authority in the old TOML format; convert it once with `keyward authority migrate --dir {}`", .dir.display(), .dir.display())]
    NeedsMigration {
        /// The directory.
        dir: PathBuf,
    },
    /// `authority migrate` a second time.
    #[error("{} was migrated already (it holds authority.db); there is nothing to convert", .dir.display())]
    AlreadyMigrated {
        /// The directory.
        dir: PathBuf,
    },
    /// The state or the audit log was changed outside keyward.
    #[error("the authority's state was changed outside keyward: {what}; nothing was done — keep a copy of the directory, investigate, and restore it from a trusted backup")]
    Tampered {
        /// What does not verify.
        what: String,
    },
    /// A committed enrollment whose reply file could not be written.
    #[error("the enrollment of user {user:?} is recorded, but its reply could not be written to {}: {source}; write it again with `keyward authority reply --dir DIR {user} -o REPLY`", .reply.display())]
    ReplyNotWritten {
        /// The user.
        user: String,
        /// Where it was to go.
        reply: PathBuf,
        /// Why not.
        #[source]
        source: Box<AuthorityError>,
    },
    /// The database.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// `authority init` on an existing authority.
    #[error("{} already holds an authority; choose another --dir", .dir.display())]
    AlreadyExists {
        /// The directory.
        dir: PathBuf,
    },
    /// A newer keyward wrote the state.
    #[error("{} has schema {found}, newer than this keyward's; upgrade keyward", .path.display())]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: u32,
    },
    /// Reading or writing state failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory or file the authority will not trust (others can write to it, or it is a
    /// symbolic link).
    #[error("cannot use {0}")]
    Unsafe(#[from] crate::fsguard::Unsafe),
    /// Encoding state failed (the EST node's text; the rest of the authority uses `Serialize`).
    #[error("cannot encode the authority state: {0}")]
    Encode(String),
    /// A record of the authority's state could not be encoded.
    #[error("cannot encode the authority state ({what}): {source}; this is a bug in keyward, please report it")]
    Serialize {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error (JSON or TOML).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A key id in the authority's state is not hex.
    #[error("the authority's {what} id {id:?} is not hex; the state is damaged — restore the directory from a trusted backup")]
    BadKeyId {
        /// Which key.
        what: &'static str,
        /// The stored id.
        id: String,
    },
    /// A time in the authority's state does not parse.
    #[error("the authority's state holds the time {value:?}, which does not parse: {source}; the state is damaged — restore the directory from a trusted backup")]
    BadTime {
        /// The stored text.
        value: String,
        /// The parser's error.
        #[source]
        source: humantime::TimestampError,
    },
    /// A key the authority's state names is not on the token present.
    #[error("the authority's {what} is missing from its token; insert the authority's own token (check with `keyward token list`)")]
    KeyMissing {
        /// Which key ("CA key", "exchange key", "archive key", "CA public key").
        what: String,
    },
    /// A name the authority builds for a certificate does not parse.
    #[error("request refused: {0}")]
    Name(#[source] crate::keyset::csr::CsrError),
    /// No such user.
    #[error(
        "no user {user:?} at this authority; add one with `keyward authority add-user --dir DIR {user}`"
    )]
    UnknownUser {
        /// The user.
        user: String,
    },
    /// The user exists.
    #[error("user {user:?} already exists; use `keyward authority recover --dir DIR {user}` to issue a new temporary key")]
    UserExists {
        /// The user.
        user: String,
    },
    /// The user is not in a state that allows the action.
    #[error("user {user:?} is {state}; {hint}")]
    UserState {
        /// The user.
        user: String,
        /// The state.
        state: String,
        /// What to do.
        hint: String,
    },
    /// A TLS client certificate that is not the user's current signing certificate.
    #[error("certificate {serial} of user {user:?} {why}; renew with the current signing certificate, or have the authority recover the user")]
    CertNotCurrent {
        /// The user.
        user: String,
        /// The certificate's serial, hex.
        serial: String,
        /// Why (was revoked, was renewed already, …).
        why: String,
    },
    /// A wrong temporary key.
    #[error("wrong temporary key for user {user:?}: {tries_left} {} left before it is locked; check it with the authority", if *.tries_left == 1 { "try" } else { "tries" })]
    WrongTempKey {
        /// The user.
        user: String,
        /// Tries left.
        tries_left: u32,
    },
    /// Too many wrong temporary keys.
    #[error("the temporary key of user {user:?} is locked after too many wrong tries; the authority must issue a new one (`keyward authority recover --dir DIR {user}`)")]
    TempKeyLocked {
        /// The user.
        user: String,
    },
    /// The temporary key expired.
    #[error("the temporary key of user {user:?} expired at {at}; the authority must issue a new one (`keyward authority recover --dir DIR {user}`)")]
    TempKeyExpired {
        /// The user.
        user: String,
        /// When.
        at: String,
    },
    /// The temporary key was used already.
    #[error("the temporary key of user {user:?} was already used; a temporary key works once — ask the authority for a new one")]
    TempKeySpent {
        /// The user.
        user: String,
    },
    /// The request is not acceptable: a refusal whose sentence is the whole information (a
    /// policy check, a value shown back). Lower-level failures have their own variants.
    #[error("request refused: {0}")]
    BadRequest(String),
    /// The authority's token is missing or swapped.
    #[error("the authority's token {label:?} (serial {serial}) is not present; insert it")]
    TokenMissing {
        /// Label.
        label: String,
        /// Serial.
        serial: String,
    },
}

impl AuthorityError {
    /// A record that could not be encoded (`what` names it).
    pub fn serialize(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        AuthorityError::Serialize {
            what,
            source: Box::new(source),
        }
    }
}
