//! keyward: keysets on PKCS#11 tokens, from provisioning to enrollment, use, recovery and
//! re-enrollment.
//!
//! Layers, top to bottom: [`cli`] → (keysets, authority, messages) → [`token`] → the module.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod authority;
pub mod cli;
pub mod enroll;
pub mod error;
pub mod est;
pub mod fsguard;
pub mod home;
pub mod keyset;
pub mod message;
pub mod names;
pub mod pki;
pub mod revocation;
pub mod secrets;
pub mod token;

pub use error::Error;
pub use home::{Config, ConfigError};
pub use secrets::{SecretError, SecretSource};
pub use token::{Module, Pkcs11Uri, TokenError};
