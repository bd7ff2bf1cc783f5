//! Messages: `send` signs with the keyset's token key and encrypts to every recipient (and the
//! sender); `read` decrypts the content key on the token and verifies the signer's chain.

pub mod content;
pub mod read;
pub mod send;
pub mod stream;

use crate::keyset::KeysetError;
use crate::pki::x509::X509Error;
use crate::pki::{cms, smime};

pub use read::{read, ReadOptions, ReadOutcome};
pub use send::{send, SendOptions};

/// Errors of sending and reading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// CMS encoding, decoding and signatures.
    #[error("{0}")]
    Cms(#[from] cms::CmsError),
    /// S/MIME, PEM or DER framing.
    #[error("{0}")]
    Smime(#[from] smime::SmimeError),
    /// Certificates and CRLs.
    #[error("{0}")]
    X509(#[from] X509Error),
    /// The keyset and its token.
    #[error("{0}")]
    Keyset(#[from] KeysetError),
    /// The keyset is not enrolled.
    #[error(
        "keyset {0:?} is not enrolled (no certificates); enroll it with `keyward enroll` first"
    )]
    NotEnrolled(String),
    /// A recipient is unusable.
    #[error("recipient {who}: {why}")]
    Recipient {
        /// The recipient as given.
        who: String,
        /// What is wrong.
        why: String,
    },
    /// A recipient's certificate does not check (expired, key does not decode).
    #[error("recipient {who}: {source}")]
    RecipientCertificate {
        /// The recipient as given.
        who: String,
        /// The certificate's or key's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The content cannot be sent as asked.
    #[error("{0}")]
    Content(String),
    /// Reading the input or writing the output failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The signer is not trusted.
    #[error("the message's signer {signer} {why}; the content was not written")]
    Untrusted {
        /// Who signed.
        signer: String,
        /// Why not trusted.
        why: String,
    },
}

impl From<crate::token::TokenError> for MessageError {
    fn from(e: crate::token::TokenError) -> Self {
        MessageError::Keyset(e.into())
    }
}

/// A certificate's holder for messages: `CN <email>`.
pub fn describe(cert: &x509_cert::Certificate) -> String {
    let cn = crate::pki::x509::common_name(cert).unwrap_or_else(|| "(no name)".into());
    match crate::pki::x509::email_of(cert) {
        // A mailbox certificate's commonName is the address itself.
        Some(e) if e == cn => e,
        Some(e) => format!("{cn} <{e}>"),
        None => cn,
    }
}

/// The keys a keyset reads mail with and the CA its senders are checked against by default:
/// an enrolled keyset's encryption keys and authority, or an adopted keyset's decryption key
/// (no authority: the reader names the CA).
pub(crate) fn decryption_keys_of(
    record: &crate::keyset::KeysetRecord,
) -> Result<(&[crate::keyset::registry::EncryptionKey], Option<&str>), MessageError> {
    if let Some(adopted) = &record.adopted {
        let key = adopted.decryption_key.as_ref().ok_or_else(|| {
            MessageError::Keyset(crate::keyset::KeysetError::Unsupported(format!(
                "keyset {:?} was adopted from a token without a decryption key, so it cannot read mail",
                record.name
            )))
        })?;
        return Ok((std::slice::from_ref(key), None));
    }
    let e = enrollment_of(record)?;
    Ok((&e.encryption_keys, Some(&e.authority_ca)))
}

/// A keyset's enrollment, which sending and reading need (its certificates and keys).
pub(crate) fn enrollment_of(
    record: &crate::keyset::KeysetRecord,
) -> Result<&crate::keyset::registry::Enrollment, MessageError> {
    record
        .enrollment
        .as_ref()
        .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))
}
