//! The enrollment protocol both sides import: the request and reply files (a TOML body
//! followed by a `[signature]` table that signs every byte before it), their signature checks
//! ([`verify_request`] at the authority, [`verify_reply`] at the user), and the markers of the
//! authority's certificate bundle. Documented in `docs/formats.md`.
//!
//! ```text
//! # keyward enrollment request
//! format = "keyward-enrollment-request"
//! version = 1
//! user = "alice"
//! ...
//! [signature]
//! algorithm = "sha256WithRSAEncryption"
//! value = "base64…"
//! ```

use std::path::Path;

use base64ct::{Base64, Encoding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use der::{DecodePem, Encode};
use x509_cert::request::CertReq;

use super::delivery::Delivery;
use crate::home::{parse_toml, ConfigError};
use crate::keyset::{KeyAlgorithm, Security};
use crate::pki::key::KeyError;
use crate::pki::x509::{self, X509Error};
use crate::pki::PublicKey;
use crate::token::OaepHash;

/// The format version this keyward reads and writes.
pub const VERSION: u32 = 1;
/// `format` of a request.
pub const REQUEST_FORMAT: &str = "keyward-enrollment-request";
/// `format` of a reply.
pub const REPLY_FORMAT: &str = "keyward-enrollment-reply";
const SIGNATURE_HEADER: &str = "\n[signature]\n";
/// The largest request or reply keyward reads. A real one is a few KiB (a reply with a long
/// history of archived keys some tens); anything this big is not one, and arrives by mail.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The signature algorithm the authority signs replies with (its CA key).
pub const REPLY_SIGNATURE_ALGORITHM: &str = "sha256WithRSAEncryption";
/// The marker `authority cert` writes after the certificates to say which RSA-OAEP hash its
/// exchange key takes.
pub const OAEP_MARKER: &str = "# keyward-exchange-oaep:";

/// Errors reading a request or reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not TOML, or not the expected fields (file:line:column inside).
    #[error("{0}")]
    Parse(#[from] ConfigError),
    /// No `[signature]` table at the end.
    #[error("{}: no [signature] table at the end; the file is truncated or not a keyward {what}", .path.display())]
    Unsigned {
        /// The file.
        path: std::path::PathBuf,
        /// "request" or "reply".
        what: &'static str,
    },
    /// The `format` field is wrong.
    #[error("{}: format is {found:?}, expected {expected:?}; did you pass the request where the reply goes (or the other way round)?", .path.display())]
    WrongFormat {
        /// The file.
        path: std::path::PathBuf,
        /// What it says.
        found: String,
        /// What it should say.
        expected: &'static str,
    },
    /// Written by a newer keyward.
    #[error("{}: version {found} is newer than this keyward's {VERSION}; upgrade keyward", .path.display())]
    NewerVersion {
        /// The file.
        path: std::path::PathBuf,
        /// Its version.
        found: u32,
    },
    /// The file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("cannot read {}: not UTF-8 text (byte {at}); is it a keyward {what}?", .path.display())]
    NotText {
        /// The file.
        path: std::path::PathBuf,
        /// "request" or "reply".
        what: &'static str,
        /// The offset of the first byte that is not UTF-8.
        at: usize,
    },
    /// Larger than any request or reply.
    #[error("{}: {size} bytes is too large for a keyward {what} (at most {MAX_FILE_BYTES}); is it the right file?", .path.display())]
    TooLarge {
        /// The file.
        path: std::path::PathBuf,
        /// "request" or "reply".
        what: &'static str,
        /// Its size.
        size: u64,
    },
    /// A base64 field does not decode.
    #[error("{}: field {field} is not valid base64", .path.display())]
    Base64 {
        /// The file.
        path: std::path::PathBuf,
        /// The field.
        field: &'static str,
    },
    /// Encoding failed.
    #[error("cannot encode the {0}: {1}")]
    Encode(&'static str, #[source] toml::ser::Error),
    /// Signing the file failed (on the token: the source names the PKCS#11 call).
    #[error("cannot sign the {what}: {source}")]
    Sign {
        /// "request" or "reply".
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A signature in the file does not verify: checked and found bad (exit status 3).
    #[error("{}: {what} refused: {why}; nothing was changed — do not use this {what}, get it again from its sender", .path.display())]
    BadSignature {
        /// The file.
        path: std::path::PathBuf,
        /// "request" or "reply".
        what: &'static str,
        /// Which signature, and what that means.
        why: &'static str,
        /// The verification's error.
        #[source]
        source: KeyError,
    },
    /// A reply signed by another authority than the one the request was made for: checked
    /// and found bad (exit status 3).
    #[error("{}: reply refused: it names another authority than the one the request was made for; nothing was changed — ask your authority for the reply to this request", .path.display())]
    OtherAuthority {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A certificate or key inside the file is unusable.
    #[error("{}: {what} refused: {why}; nothing was changed — the {what} is damaged, get it again from its sender", .path.display())]
    Content {
        /// The file.
        path: std::path::PathBuf,
        /// "request" or "reply".
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A certificate inside the file does not parse.
    #[error("{0}")]
    X509(#[from] X509Error),
    /// A public key inside the file does not parse.
    #[error("{0}")]
    Key(#[from] KeyError),
}

impl WireError {
    /// Whether a check found the file bad (a signature that does not verify, a reply of
    /// another authority): exit status 3.
    pub fn found_bad(&self) -> bool {
        matches!(
            self,
            WireError::BadSignature { .. } | WireError::OtherAuthority { .. }
        )
    }
}

/// The signature table at the end of a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignatureTable {
    /// `sha256WithRSAEncryption` or `ecdsa-with-SHA256`.
    pub algorithm: String,
    /// The signature over every byte before `[signature]`, base64.
    pub value: String,
}

#[derive(Deserialize)]
struct FormatOnly {
    format: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SignatureOnly {
    signature: SignatureTable,
}

/// A signed file split into its body bytes, parsed body and signature.
#[derive(Debug)]
pub struct Signed<T> {
    /// The exact signed bytes.
    pub signed_bytes: Vec<u8>,
    /// The parsed body.
    pub body: T,
    /// The signature bytes.
    pub signature: Vec<u8>,
    /// The signature algorithm named in the file.
    pub algorithm: String,
}

/// An enrollment request: made by the user's keyward, signed by the new signing key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestBody {
    /// [`REQUEST_FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The user name the authority knows.
    pub user: String,
    /// The keyset name chosen by the user.
    pub keyset: String,
    /// Security level.
    pub security: Security,
    /// Signing key algorithm.
    pub key_type: KeyAlgorithm,
    /// When made, RFC 3339.
    pub created: String,
    /// Random, hex: binds the reply and the encrypted temporary key to this request.
    pub nonce: String,
    /// PKCS#10 request for the signing key (proof of possession), PEM.
    pub csr: String,
    /// The transport public key (SPKI PEM) the encryption keys are wrapped to.
    pub transport_public_key: String,
    /// RSA-OAEP hashes the user's token can unwrap with, best first.
    pub transport_oaep: Vec<OaepHash>,
    /// RSA-OAEP hash used for `encrypted_temp_key`.
    pub temp_key_oaep: OaepHash,
    /// `user NUL nonce NUL temporary-key`, RSA-OAEP-encrypted to the authority's exchange key, base64.
    pub encrypted_temp_key: String,
    /// How the user's token can receive its encryption keys, best first (probed). Absent in
    /// requests from before deliveries were recorded: `["rfc5649"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receives: Vec<Delivery>,
    /// A renewal (`enroll --renew`): the keyset's current signing certificate, PEM. The
    /// request is then signed by that certificate's key (the CSR still by the new key), and
    /// carries no temporary key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews: Option<String>,
    /// With a renewal: revoke the superseded certificates (reason superseded) instead of only
    /// marking them superseded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoke_old: bool,
}

/// One encryption key in a reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplyKey {
    /// Its certificate, PEM.
    pub certificate: String,
    /// The private key (PKCS#8) wrapped under the reply's AES key, base64: RFC 5649, or for
    /// the `aes-cbc-pad` delivery the 16-byte IV followed by the `CKM_AES_CBC_PAD` ciphertext.
    pub wrapped_key: String,
    /// The newest key (the one others encrypt to from now on).
    pub current: bool,
}

/// An enrollment reply: made by the authority, signed by its CA key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplyBody {
    /// [`REPLY_FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The user.
    pub user: String,
    /// The keyset.
    pub keyset: String,
    /// The request's nonce.
    pub request_nonce: String,
    /// When made, RFC 3339.
    pub created: String,
    /// The CA certificate, PEM.
    pub ca_certificate: String,
    /// The signing certificate, PEM.
    pub signing_certificate: String,
    /// RSA-OAEP hash of `wrapped_aes_key`.
    pub oaep: OaepHash,
    /// The AES-256 key wrapped to the request's transport key, base64.
    pub wrapped_aes_key: String,
    /// How the keys are delivered. Absent in replies from before deliveries were recorded:
    /// `rfc5649`, unwrapped in the token (by SoftHSM's `CKM_AES_KEY_WRAP_PAD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Every encryption key: the archived history and the new one.
    #[serde(rename = "encryption_key")]
    pub encryption_keys: Vec<ReplyKey>,
}

/// Signs the bytes of a file body; the error keeps its cause.
pub type SignFn<'a> =
    dyn FnMut(&[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> + 'a;

/// Serialises a body and appends its signature.
pub fn seal<T: Serialize>(
    title: &str,
    body: &T,
    algorithm: &str,
    sign: &mut SignFn<'_>,
) -> Result<Vec<u8>, WireError> {
    let text = toml::to_string_pretty(body).map_err(|e| WireError::Encode("body", e))?;
    let mut bytes = format!("# {title}\n{text}").into_bytes();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    let what = if title.contains("reply") {
        "reply"
    } else {
        "request"
    };
    let signature = sign(&bytes).map_err(|source| WireError::Sign { what, source })?;
    let table = toml::to_string(&SignatureOnly {
        signature: SignatureTable {
            algorithm: algorithm.to_string(),
            value: Base64::encode_string(&signature),
        },
    })
    .map_err(|e| WireError::Encode("signature", e))?;
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(table.as_bytes());
    Ok(bytes)
}

/// Reads a request or reply file (`what`), refusing one larger than [`MAX_FILE_BYTES`]
/// before reading it, and one that is not UTF-8.
pub fn read(path: &Path, what: &'static str) -> Result<String, WireError> {
    use std::io::Read;
    let failed = |source: std::io::Error| WireError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    // One byte more than the limit tells an over-long file (or a growing one) apart.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    let size = bytes.len() as u64;
    if size > MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(size, |m| m.len().max(size));
        return Err(WireError::TooLarge {
            path: path.to_path_buf(),
            what,
            size,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| WireError::NotText {
        path: path.to_path_buf(),
        what,
        at: e.utf8_error().valid_up_to(),
    })?;
    Ok(text)
}

/// Splits and parses a signed file (the signature is checked by the caller, who knows the key).
pub fn open<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    what: &'static str,
) -> Result<Signed<T>, WireError> {
    let cut = text
        .rfind(SIGNATURE_HEADER)
        .ok_or_else(|| WireError::Unsigned {
            path: path.to_path_buf(),
            what,
        })?;
    let signed = &text[..cut];
    let sig: SignatureOnly = parse_toml(path, &text[cut..]).map_err(|e| shift_line(e, signed))?;
    // The format first: a reply passed as a request (or the other way round) is named as such,
    // not reported as a missing field.
    let header: FormatOnly = parse_toml(path, signed)?;
    let expected = match what {
        "request" => Some(REQUEST_FORMAT),
        "reply" => Some(REPLY_FORMAT),
        _ => None,
    };
    if let (Some(found), Some(expected)) = (header.format, expected) {
        if found != expected {
            return Err(WireError::WrongFormat {
                path: path.to_path_buf(),
                found,
                expected,
            });
        }
    }
    let body: T = parse_toml(path, signed)?;
    let signature =
        Base64::decode_vec(sig.signature.value.trim()).map_err(|_| WireError::Base64 {
            path: path.to_path_buf(),
            field: "signature.value",
        })?;
    Ok(Signed {
        signed_bytes: signed.as_bytes().to_vec(),
        body,
        signature,
        algorithm: sig.signature.algorithm,
    })
}

/// Checks `format` and `version`.
pub fn check_header(
    path: &Path,
    format: &str,
    version: u32,
    expected: &'static str,
) -> Result<(), WireError> {
    if format != expected {
        return Err(WireError::WrongFormat {
            path: path.to_path_buf(),
            found: format.to_string(),
            expected,
        });
    }
    if version > VERSION {
        return Err(WireError::NewerVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    Ok(())
}

/// A request that parsed and whose signatures verified.
pub struct VerifiedRequest {
    /// The body.
    pub body: RequestBody,
    /// The signing key from the PKCS#10 request.
    pub signing_key: PublicKey,
    /// The SPKI DER of the signing key.
    pub signing_spki: Vec<u8>,
    /// The transport key.
    pub transport: PublicKey,
}

/// Reads a request file and checks it ([`verify_request`]).
pub fn read_request(path: &Path) -> Result<VerifiedRequest, WireError> {
    let text = read(path, "request")?;
    verify_request(path, &text)
}

/// Parses a request and checks both its signatures: the PKCS#10 self-signature (proof of
/// possession of the new signing key) and the signature over the whole request, made by that
/// key, or for a renewal by the key of the certificate it renews (whether that certificate is
/// the authority's own, current one is the authority's check).
pub fn verify_request(path: &Path, text: &str) -> Result<VerifiedRequest, WireError> {
    let content = |why: String| WireError::Content {
        path: path.to_path_buf(),
        what: "request",
        why,
    };
    let bad = |why: &'static str, source: KeyError| WireError::BadSignature {
        path: path.to_path_buf(),
        what: "request",
        why,
        source,
    };
    let signed: Signed<RequestBody> = open(path, text, "request")?;
    check_header(
        path,
        &signed.body.format,
        signed.body.version,
        REQUEST_FORMAT,
    )?;
    let csr = CertReq::from_pem(signed.body.csr.as_bytes())
        .map_err(|e| content(format!("its PKCS#10 request does not parse: {e}")))?;
    let spki = csr
        .info
        .public_key
        .to_der()
        .map_err(|e| content(format!("its PKCS#10 key does not encode: {e}")))?;
    let key = PublicKey::from_spki_der(&spki)?;
    key.check_strength()
        .map_err(|e| content(format!("its PKCS#10 key {e}")))?;
    let info = csr
        .info
        .to_der()
        .map_err(|e| content(format!("its PKCS#10 request does not encode: {e}")))?;
    key.verify(&info, csr.signature.raw_bytes()).map_err(|e| {
        bad(
            "the PKCS#10 request's self-signature does not verify (no proof of possession)",
            e,
        )
    })?;
    if let Some(current) = &signed.body.renews {
        let cert = x509::certs_from_pem(current)?
            .into_iter()
            .next()
            .ok_or_else(|| content("the renewal names no current certificate".into()))?;
        let renewing = PublicKey::from_spki_der(&x509::spki_der_of(&cert))?;
        renewing
            .verify(&signed.signed_bytes, &signed.signature)
            .map_err(|e| bad("the renewal's signature does not verify with the key of the certificate it renews: it was changed after signing, or signed by another key", e))?;
    } else {
        key.verify(&signed.signed_bytes, &signed.signature)
            .map_err(|e| bad("the request's signature does not verify with the key in its PKCS#10 request: it was changed after signing, or signed by another key", e))?;
    }
    let transport = PublicKey::from_pem(&signed.body.transport_public_key)?;
    if transport.rsa_parts().is_none() {
        return Err(content("the transport key must be RSA".into()));
    }
    transport
        .check_strength()
        .map_err(|e| content(format!("its transport key {e}")))?;
    Ok(VerifiedRequest {
        body: signed.body,
        signing_key: key,
        signing_spki: spki,
        transport,
    })
}

/// Reads a reply file: parsed, its format and version checked, its signature not yet (that
/// needs the authority the request was made for: [`verify_reply`]).
pub fn read_reply(path: &Path) -> Result<Signed<ReplyBody>, WireError> {
    let text = read(path, "reply")?;
    let signed: Signed<ReplyBody> = open(path, &text, "reply")?;
    check_header(path, &signed.body.format, signed.body.version, REPLY_FORMAT)?;
    Ok(signed)
}

/// Checks a reply against the CA certificate (PEM) trusted when the request was made: the
/// reply names that CA and is signed by its key. Returns the CA certificate.
pub fn verify_reply(
    path: &Path,
    signed: &Signed<ReplyBody>,
    trusted_ca_pem: &str,
) -> Result<x509_cert::Certificate, WireError> {
    let trust = x509::certs_from_pem(trusted_ca_pem)?;
    if trust.is_empty() {
        return Err(WireError::Content {
            path: path.to_path_buf(),
            what: "reply",
            why: "the registry holds no authority certificate for its request".into(),
        });
    }
    let in_reply = x509::certs_from_pem(&signed.body.ca_certificate)?;
    // The CA the request was made for, or, after its CA key rolled over, the CA a link
    // certificate (in the keyset's trust or the reply) leads to from it.
    let trusted = in_reply
        .first()
        .filter(|c| crate::authority::chain::is_trusted_ca(c, &trust, &in_reply[1..]))
        .cloned()
        .ok_or_else(|| WireError::OtherAuthority {
            path: path.to_path_buf(),
        })?;
    let key = PublicKey::from_spki_der(&x509::spki_der_of(&trusted))?;
    key.verify(&signed.signed_bytes, &signed.signature)
        .map_err(|source| WireError::BadSignature {
            path: path.to_path_buf(),
            what: "reply",
            why: "its signature does not verify with the authority's CA key: it was changed or forged",
            source,
        })?;
    Ok(trusted)
}

/// Decodes a base64 field.
pub fn b64(path: &Path, field: &'static str, value: &str) -> Result<Vec<u8>, WireError> {
    Base64::decode_vec(value.trim()).map_err(|_| WireError::Base64 {
        path: path.to_path_buf(),
        field,
    })
}

/// Encodes bytes as base64.
pub fn to_b64(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

fn shift_line(e: ConfigError, before: &str) -> ConfigError {
    match e {
        ConfigError::Parse {
            path,
            line,
            column,
            message,
        } => ConfigError::Parse {
            path,
            line: line + before.matches('\n').count(),
            column,
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_or_binary_file_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 10]).unwrap();
        let e = read(&big, "request").unwrap_err().to_string();
        assert!(e.contains("too large for a keyward request"), "{e}");
        assert!(e.contains(&(MAX_FILE_BYTES + 10).to_string()), "{e}");
        let edge = dir.path().join("edge.toml");
        std::fs::write(&edge, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert_eq!(read(&edge, "reply").unwrap().len() as u64, MAX_FILE_BYTES);
        let binary = dir.path().join("binary.toml");
        std::fs::write(&binary, [b'a', 0xff, 0xfe, 0x00]).unwrap();
        let e = read(&binary, "reply").unwrap_err().to_string();
        assert!(
            e.contains("not UTF-8 text (byte 1); is it a keyward reply?"),
            "{e}"
        );
        // Too large wins over not UTF-8.
        std::fs::write(&binary, vec![0xff; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = read(&binary, "reply").unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
        let e = read(&dir.path().join("missing.toml"), "reply").unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Body {
        format: String,
        version: u32,
        user: String,
    }

    fn sample() -> Vec<u8> {
        let body = Body {
            format: REQUEST_FORMAT.into(),
            version: 1,
            user: "alice".into(),
        };
        seal("test request", &body, "alg", &mut |b: &[u8]| {
            Ok(b.iter().rev().copied().collect())
        })
        .unwrap()
    }

    #[test]
    fn seal_then_open_gives_the_signed_bytes_back() {
        let bytes = sample();
        let text = String::from_utf8(bytes).unwrap();
        let s: Signed<Body> = open(Path::new("r"), &text, "request").unwrap();
        assert_eq!(s.body.user, "alice");
        let expected: Vec<u8> = s.signed_bytes.iter().rev().copied().collect();
        assert_eq!(s.signature, expected);
        assert_eq!(s.algorithm, "alg");
    }

    #[test]
    fn truncated_file_is_unsigned() {
        let text = String::from_utf8(sample()).unwrap();
        let cut = &text[..text.find("[signature]").unwrap() - 1];
        assert!(matches!(
            open::<Body>(Path::new("r"), cut, "request"),
            Err(WireError::Unsigned { .. })
        ));
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let text = String::from_utf8(sample())
            .unwrap()
            .replace("user = \"alice\"", "user = = \"alice\"");
        let err = open::<Body>(Path::new("req.toml"), &text, "request")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("req.toml:"), "{err}");
    }
}
