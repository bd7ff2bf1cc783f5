//! The crate-wide error: one variant per layer, each already a sentence with a next step.

use crate::home::ConfigError;
use crate::secrets::SecretError;
use crate::token::{CallFailure, TokenError, UriError};

/// Any keyward failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the PKCS#11 adapter.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// Reading a secret.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// Configuration and home directory.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// From the keyset layer.
    #[error("{0}")]
    Keyset(#[from] crate::keyset::KeysetError),
    /// From the authority.
    #[error("{0}")]
    Authority(#[from] crate::authority::AuthorityError),
    /// From enrollment.
    #[error("{0}")]
    Enroll(#[source] crate::enroll::EnrollError),
    /// Sending and reading messages.
    #[error("{0}")]
    Message(#[from] crate::message::MessageError),
    /// Keeping or checking against CRLs.
    #[error("{0}")]
    Revocation(#[from] crate::revocation::RevocationError),
    /// EST: `authority serve` and `enroll --server`.
    #[error("{0}")]
    Est(#[from] crate::est::EstError),
    /// A malformed PKCS#11 URI.
    #[error("{0}")]
    Uri(#[from] UriError),
    /// `keyset trust`: a CA bundle the keyset does not take.
    #[error("{0}")]
    Trust(#[from] crate::authority::chain::TrustError),
    /// The command line asks for something impossible (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written, with the `io::Error` as source.
    #[error("{0}")]
    File(#[from] IoError),
    /// A step after the authority recorded an enrollment failed: the cause is kept as the
    /// source, and the message says what is kept and how to finish.
    #[error("cannot {action} {}: {source}; {next}", .path.display())]
    Unfinished {
        /// What could not be done.
        action: &'static str,
        /// The file kept to finish with.
        path: std::path::PathBuf,
        /// How to finish.
        next: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A file could not be read or written (the reason as text; new code uses `File`).
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

/// A file that could not be read or written, with the `io::Error` kept as its source: the one
/// I/O error type new code uses (`Error::File`; the layers' older `Io { reason }` variants
/// keep the text only).
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", .path.display())]
pub struct IoError {
    /// "read", "write", "create".
    pub action: &'static str,
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// `action` on `path` failed with `source`.
    pub fn new(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        IoError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The errors of a chain, outermost first.
pub fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

impl Error {
    /// The PKCS#11 call behind this error, if any (for `-v`): found by walking the chain of
    /// sources to the token layer's error, however deep it is.
    pub fn call(&self) -> Option<&CallFailure> {
        chain(self).find_map(|e| e.downcast_ref::<TokenError>().and_then(TokenError::call))
    }

    /// The process exit status for this error: 2 for usage errors, 3 when something was
    /// checked and found bad (a signature that does not verify, a revoked or untrusted signer,
    /// a tampered authority state), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if matches!(self, Error::Usage(_)) {
            return 2;
        }
        if chain(self).any(found_bad) {
            return 3;
        }
        1
    }

    /// The message's advice: what follows its last "; " (keyward's messages say what
    /// happened, then what to do), if it has one.
    pub fn hint(&self) -> Option<String> {
        let text = self.to_string();
        text.rsplit_once("; ").map(|(_, hint)| hint.to_string())
    }
}

/// Whether one error of a chain is a check that found something bad (exit status 3).
fn found_bad(e: &(dyn std::error::Error + 'static)) -> bool {
    use crate::authority::AuthorityError;
    use crate::message::MessageError;
    use crate::pki::cms::CmsError;
    use crate::pki::key::KeyError;
    e.downcast_ref::<crate::revocation::RevocationError>()
        .is_some_and(|r| r.found_bad())
        || e.downcast_ref::<crate::authority::chain::TrustError>()
            .is_some_and(|t| t.found_bad())
        || e.downcast_ref::<crate::enroll::wire::WireError>()
            .is_some_and(|w| w.found_bad())
        // A certificate or CRL whose issuer's signature does not verify.
        || matches!(
            e.downcast_ref::<crate::pki::x509::X509Error>(),
            Some(crate::pki::x509::X509Error::BadSignature(_))
        )
        || matches!(
        e.downcast_ref::<AuthorityError>(),
        Some(AuthorityError::Tampered { .. })
    ) || matches!(e.downcast_ref::<KeyError>(), Some(KeyError::BadSignature))
        // An untrusted signer was checked and found bad, unless there was nothing to check
        // against (an adopted keyset without an authority and no --ca: an error, exit 1).
        || matches!(
            e.downcast_ref::<MessageError>(),
            Some(MessageError::Untrusted { why, .. }) if !why.starts_with("cannot be checked")
        )
        || matches!(
            e.downcast_ref::<CmsError>(),
            Some(CmsError::BadSignature | CmsError::DigestMismatch | CmsError::ContentTypeMismatch)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{PinRole, TriesLeft};

    fn wrong_pin() -> TokenError {
        TokenError::WrongPin {
            label: "card".into(),
            role: PinRole::User,
            tries: TriesLeft::Unknown,
            call: CallFailure::named("C_Login", 0xa0),
        }
    }

    #[test]
    fn the_call_is_found_however_deep_it_is() {
        use crate::enroll::EnrollError;
        use crate::keyset::KeysetError;
        use crate::message::MessageError;
        let deep = [
            Error::Token(wrong_pin()),
            Error::Keyset(KeysetError::Token(wrong_pin())),
            Error::Enroll(EnrollError::Keyset(KeysetError::Token(wrong_pin()))),
            Error::Message(MessageError::Keyset(KeysetError::Token(wrong_pin()))),
            // The CA signer (certificates, CRLs) and the CMS signer (messages) keep the
            // token's error as their source.
            Error::Authority(crate::authority::AuthorityError::X509(
                crate::pki::x509::X509Error::Signer {
                    source: Box::new(wrong_pin()),
                },
            )),
            Error::Message(MessageError::Cms(crate::pki::cms::CmsError::Signer {
                source: Box::new(KeysetError::Token(wrong_pin())),
            })),
        ];
        for e in deep {
            let call = e.call().unwrap_or_else(|| panic!("no call in {e:?}"));
            assert_eq!(call.to_string(), "C_Login: CKR_PIN_INCORRECT (0xa0)");
            assert_eq!(e.exit_code(), 1);
        }
    }

    #[test]
    fn checked_and_found_bad_is_exit_status_3_at_any_depth() {
        use crate::authority::AuthorityError;
        use crate::enroll::EnrollError;
        use crate::keyset::KeysetError;
        use crate::pki::KeyError;
        let tampered = || AuthorityError::Tampered {
            what: "a record".into(),
        };
        assert_eq!(Error::Authority(tampered()).exit_code(), 3);
        assert_eq!(
            Error::Keyset(KeysetError::Key(KeyError::BadSignature)).exit_code(),
            3
        );
        assert_eq!(
            Error::Enroll(EnrollError::Keyset(KeysetError::Key(
                KeyError::BadSignature
            )))
            .exit_code(),
            3
        );
        let bad_reply = crate::enroll::wire::WireError::BadSignature {
            path: "r".into(),
            what: "reply",
            why: "its signature does not verify",
            source: KeyError::BadSignature,
        };
        assert_eq!(Error::Enroll(EnrollError::Wire(bad_reply)).exit_code(), 3);
        let bad_cert = crate::pki::x509::X509Error::BadSignature("certificate");
        assert_eq!(
            Error::Authority(AuthorityError::X509(bad_cert)).exit_code(),
            3
        );
        // A request file that is not there was not checked: exit status 1.
        let missing = crate::enroll::wire::read_request(std::path::Path::new("/nonexistent/r"))
            .err()
            .unwrap();
        assert_eq!(
            Error::Authority(AuthorityError::Wire(missing)).exit_code(),
            1
        );
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        let io = IoError::new(
            "read",
            std::path::Path::new("f"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        let e = Error::from(io);
        assert_eq!(e.exit_code(), 1);
        assert!(chain(&e).any(|c| c.downcast_ref::<std::io::Error>().is_some()));
    }
}
