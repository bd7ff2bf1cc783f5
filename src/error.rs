//! The crate-wide error: one variant per layer, each already a sentence with a next step.

use crate::home::ConfigError;
use crate::secrets::SecretError;
use crate::token::{CallFailure, TokenError, UriError};

/// Any keyward failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the PKCS#11 adapter.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Reading a secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Configuration and home directory.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// From the keyset layer.
    #[error(transparent)]
    Keyset(#[from] crate::keyset::KeysetError),
    /// From the authority.
    #[error(transparent)]
    Authority(#[from] crate::authority::AuthorityError),
    /// From enrollment.
    #[error(transparent)]
    Enroll(crate::enroll::EnrollError),
    /// Sending and reading messages.
    #[error(transparent)]
    Message(#[from] crate::message::MessageError),
    /// Keeping or checking against CRLs.
    #[error(transparent)]
    Revocation(#[from] crate::revocation::RevocationError),
    /// A malformed PKCS#11 URI.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// The command line asks for something impossible (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("cannot {action} {}: {reason}", .path.display())]
    Io {
        /// "read", "write", "create".
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// The PKCS#11 call behind this error, if any (for `-v`).
    pub fn call(&self) -> Option<&CallFailure> {
        match self {
            Error::Token(t) => t.call(),
            Error::Keyset(crate::keyset::KeysetError::Token(t)) => t.call(),
            Error::Authority(crate::authority::AuthorityError::Token(t)) => t.call(),
            Error::Enroll(crate::enroll::EnrollError::Token(t)) => t.call(),
            Error::Message(crate::message::MessageError::Keyset(
                crate::keyset::KeysetError::Token(t),
            )) => t.call(),
            _ => None,
        }
    }

    /// The process exit status for this error: 2 for usage errors, 3 for a tampered authority state, an untrusted signer, a forged CRL or a revoked certificate, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Authority(crate::authority::AuthorityError::Tampered { .. }) => 3,
            Error::Revocation(e) if e.found_bad() => 3,
            Error::Message(crate::message::MessageError::Untrusted { .. }) => 3,
            _ => 1,
        }
    }
}
