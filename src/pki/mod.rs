//! PKI: X.509 certificates and CRLs, CMS and S/MIME encodings — shared by the authority,
//! enrollment and messages, which all import them from here. Signing keys stay on tokens:
//! what signs takes a [`x509::TbsSigner`] or a CMS signer. Public keys and the signatures
//! they check ([`key`]) live here too; the layer imports nothing above it (only the token
//! layer's plain [`crate::token::RawPublicKey`]).

pub mod cms;
pub mod key;
pub mod smime;
pub mod x509;

pub use key::{KeyError, PublicKey};

/// Why a signer (a key on a token) could not sign: the signer's own error, kept as the
/// source of [`x509::X509Error::Signer`] and [`cms::CmsError::Signer`] so that `-v` finds the
/// PKCS#11 call behind it by walking the chain.
pub type SignError = Box<dyn std::error::Error + Send + Sync + 'static>;
