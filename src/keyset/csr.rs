//! PKCS#10 certification requests signed on the token.

use std::str::FromStr;

use der::asn1::BitString;
use der::{Decode, Encode, EncodePem};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use crate::pki::key::PublicKey;

/// Errors building a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The subject does not parse.
    #[error("subject {subject:?} is not a distinguished name ({source}); write it like \"CN=Alice Smith,O=Example\"")]
    Subject {
        /// What was given.
        subject: String,
        /// The parser's error.
        source: der::Error,
    },
    /// DER encoding failed.
    #[error("cannot encode the request: {0}")]
    Encode(#[source] der::Error),
    /// The public key cannot be encoded.
    #[error("cannot encode the request: {0}")]
    Key(#[source] crate::pki::key::KeyError),
}

/// Parses an RFC 4514 subject such as `CN=Alice,O=Example`.
pub fn parse_subject(subject: &str) -> Result<Name, CsrError> {
    Name::from_str(subject).map_err(|source| CsrError::Subject {
        subject: subject.to_string(),
        source,
    })
}

/// The part of a request that gets signed, DER.
pub fn request_info(subject: &Name, key: &PublicKey) -> Result<(CertReqInfo, Vec<u8>), CsrError> {
    let spki_der = key.to_der().map_err(CsrError::Key)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: subject.clone(),
        public_key: SubjectPublicKeyInfoOwned::from_der(&spki_der).map_err(enc)?,
        attributes: Default::default(),
    };
    let der = info.to_der().map_err(enc)?;
    Ok((info, der))
}

/// The complete request as PEM, from the info and the signature over its DER.
pub fn finish(info: CertReqInfo, key: &PublicKey, signature: &[u8]) -> Result<String, CsrError> {
    let req = CertReq {
        info,
        algorithm: key.signature_algorithm(),
        signature: BitString::from_bytes(signature).map_err(enc)?,
    };
    req.to_pem(der::pem::LineEnding::LF).map_err(enc)
}

fn enc(e: der::Error) -> CsrError {
    CsrError::Encode(e)
}
