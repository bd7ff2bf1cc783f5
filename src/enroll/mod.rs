//! Enrollment: the request a user's keyward sends, the reply the authority returns, and the
//! client side that makes one and completes the other.

pub mod client;
pub mod delivery;
pub mod renew;
pub mod wire;

use std::path::PathBuf;

use crate::keyset::KeysetError;
use crate::pki::x509::X509Error;
use crate::token::TokenError;

/// Errors of the client side of enrollment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// From the token.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// From the keyset layer.
    #[error("{0}")]
    Keyset(#[from] KeysetError),
    /// Request and reply files.
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    /// Certificates.
    #[error("{0}")]
    X509(#[from] X509Error),
    /// The authority certificate file is not the CA and exchange certificates.
    #[error("the authority certificate file holds {count} certificates; expected the CA and the exchange certificate from `keyward authority cert`")]
    AuthorityBundle {
        /// Certificates found.
        count: usize,
    },
    /// The authority's exchange certificate has a key the temporary key cannot be encrypted to.
    #[error("the authority's exchange key is not RSA; get the authority's certificates again with `keyward authority cert`")]
    ExchangeKeyNotRsa,
    /// Encrypting the temporary key to the authority's exchange key failed.
    #[error("cannot encrypt the temporary key to the authority's exchange key: {0}")]
    EncryptTempKey(#[source] rsa::Error),
    /// The reply fails a check (the sentence names which).
    #[error("reply refused: {0}; nothing was changed")]
    BadReply(&'static str),
    /// The reply's transport key does not unwrap on this token.
    #[error(
        "reply refused: its transport key does not unwrap on this token ({0}); nothing was changed"
    )]
    TransportKey(#[source] TokenError),
    /// No pending request matches the reply.
    #[error("no pending enrollment request matches this reply (keyset {keyset:?}); was it made for another keyward home, or completed already?")]
    NoPendingRequest {
        /// The keyset the reply names.
        keyset: String,
    },
    /// The keyset's token lacks the transport key: another token.
    #[error("the token present for keyset {keyset:?} does not hold its enrollment transport key: this reply must be completed on the token the request was made on")]
    WrongToken {
        /// The keyset.
        keyset: String,
    },
    /// The token cannot receive keys in any way the authority makes (checked before any key
    /// is generated), or cannot do what a reply's delivery needs (nothing changed).
    #[error("token {token:?} cannot receive the encryption key: {why}; nothing was changed")]
    CannotReceive {
        /// The token's label.
        token: String,
        /// What it lacks, and what to do.
        why: String,
    },
    /// Reading or writing a file.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

macro_rules! keyset_from {
    ($($t:ty),*) => {$(
        impl From<$t> for EnrollError {
            fn from(e: $t) -> Self {
                EnrollError::Keyset(e.into())
            }
        }
    )*};
}
keyset_from!(
    crate::keyset::RegistryError,
    crate::pki::key::KeyError,
    crate::keyset::csr::CsrError
);
