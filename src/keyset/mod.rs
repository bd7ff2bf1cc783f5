//! Keysets: named sets of keys on one token, recorded in the keyset registry.

pub mod adopt;
pub mod create;
pub mod csr;
pub mod harden;
pub mod journal;
pub mod name;
pub mod ops;
pub mod registry;

pub use adopt::{adopt, AdoptRequest};
pub use create::{create, CreateRequest};
pub use harden::Hardening;
pub use name::{KeysetName, NameError};
pub use ops::{change_password, keyset_token, remove, sign, token_pin, KeysetSession};
pub use registry::{KeyAlgorithm, KeysetRecord, KeysetState, Registry, RegistryError, Security};

use crate::token::TokenError;

/// Errors of the keyset layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysetError {
    /// From the token.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// From the registry.
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// A bad name.
    #[error("{0}")]
    Name(#[from] NameError),
    /// Keys and signatures.
    #[error("{0}")]
    Key(#[from] crate::pki::KeyError),
    /// PKCS#10.
    #[error("{0}")]
    Csr(#[from] csr::CsrError),
    /// Password hardening.
    #[error("{0}")]
    Harden(#[from] harden::HardenError),
    /// The keyset's token is not present.
    #[error("the token of keyset {keyset:?} (label {label:?}, serial {serial}) is not present (removed?); insert it and run the command again")]
    TokenMissing {
        /// The keyset.
        keyset: String,
        /// Its token's label.
        label: String,
        /// Its token's serial.
        serial: String,
    },
    /// A token with the right label but another serial: a different card.
    #[error("token {label:?} has serial {found}, but keyset {keyset:?} lives on serial {expected}: the card was swapped; insert the right card")]
    CardSwapped {
        /// The keyset.
        keyset: String,
        /// The label.
        label: String,
        /// The serial in the registry.
        expected: String,
        /// The serial of the present token.
        found: String,
    },
    /// The keyset's key is not on its token.
    #[error("the {what} of keyset {keyset:?} (id {id}) is not on token {label:?}; it was removed or the token was re-initialised")]
    KeyMissing {
        /// The keyset.
        keyset: String,
        /// Which key.
        what: &'static str,
        /// Its id, hex.
        id: String,
        /// The token label.
        label: String,
    },
    /// The key type and security level do not go together.
    #[error("{0}")]
    Unsupported(String),
}
