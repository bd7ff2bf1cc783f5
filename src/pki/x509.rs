//! X.509 for the authority: the self-signed CA certificate, user and authority-exchange
//! certificates, CRLs, PEM/DER encodings, and the checks (issuer signature, validity,
//! revocation) that `openssl verify` makes too.
//!
//! The private keys live on tokens, so everything that signs takes a [`TbsSigner`]: this
//! module builds the to-be-signed DER, the signer signs it on the token, and the result is
//! checked against the issuer's public key before it is returned. Supported signatures:
//! sha256WithRSAEncryption (RSA PKCS#1 v1.5) and ecdsa-with-SHA256 on P-256.
//!
//! Key identifiers are RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
//! subjectPublicKey bits (the RFC 5280 SHA-1 method, with SHA-256).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, Uint, UtcTime};
use der::flagset::FlagSet;
use der::oid::db::{rfc4519, rfc5280, rfc5912};
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::pem::LineEnding;
use der::{Any, DateTime, Decode, Encode, EncodePem, Tag, Tagged};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::DistributionPointName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CertificatePolicies, CrlDistributionPoints, CrlNumber, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// Signs DER bytes on a token; returns the signature as X.509 carries it (PKCS#1 v1.5 for RSA, DER ECDSA for EC).
///
/// The signer hashes the bytes itself (e.g. `CKM_SHA256_RSA_PKCS`, `CKM_ECDSA_SHA256`, or
/// SHA-256 then `CKM_ECDSA`); a raw `r || s` ECDSA signature converts with [`ecdsa_raw_to_der`].
pub trait TbsSigner {
    /// The signature algorithm, as it goes into the certificate (see [`rsa_sha256_algorithm`], [`ecdsa_p256_sha256_algorithm`]).
    fn algorithm(&self) -> AlgorithmIdentifierOwned;
    /// Signs `tbs_der` with the issuer's private key; the error says what the token refused.
    fn sign_tbs(&mut self, tbs_der: &[u8]) -> Result<Vec<u8>, super::SignError>;
}

/// What went wrong building, reading or checking a certificate or CRL.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// A structure could not be DER-encoded.
    #[error("could not encode the {what}: {source}; this is a bug in keyward, please report it")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
    /// DER or PEM input could not be parsed.
    #[error(
        "could not parse the {what}: {source}; check that the file really is a {what} (PEM or DER)"
    )]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error.
        source: der::Error,
    },
    /// A PEM text has no block of the wanted kind.
    #[error("no {0} found in the text; give a PEM file with a -----BEGIN {0}----- block")]
    NoPemBlock(&'static str),
    /// A serial number is zero, empty or too long.
    #[error("invalid serial number ({0}); use a positive number of at most 20 bytes, e.g. from random_serial")]
    InvalidSerial(&'static str),
    /// A time cannot be written into a certificate or CRL.
    #[error(
        "cannot use the time {0} in a certificate or CRL; choose a date between 1970 and 9999"
    )]
    InvalidTime(String),
    /// The end of a validity or update period is not after its start.
    #[error("the period from {start} to {end} is empty; choose an end after the start")]
    EmptyPeriod {
        /// Start of the period.
        start: String,
        /// End of the period.
        end: String,
    },
    /// The email address is not a plain ASCII address.
    #[error("invalid email address {0:?}; use a plain ASCII address such as alice@example.org")]
    InvalidEmail(String),
    /// Neither a subject name nor an email address was given.
    #[error("the certificate would name nobody (empty subject, no email); give a subject such as CN=alice or an email address")]
    EmptySubject,
    /// `self_signed_ca` was asked for a profile other than `Ca`.
    #[error("a self-signed certificate must use the CA profile; use issue() for other profiles")]
    NotCaProfile,
    /// The public key is not a SubjectPublicKeyInfo this module can use.
    #[error(
        "unusable public key ({0}); use an RSA or P-256 key exported as a DER SubjectPublicKeyInfo"
    )]
    InvalidPublicKey(&'static str),
    /// The public key's algorithm is neither RSA nor EC.
    #[error("unusable public key (key algorithm {0} is neither RSA nor EC); use an RSA or P-256 key exported as a DER SubjectPublicKeyInfo")]
    KeyAlgorithm(ObjectIdentifier),
    /// The public key does not decode.
    #[error("unusable public key ({source}); use an RSA or P-256 key exported as a DER SubjectPublicKeyInfo")]
    BadPublicKey {
        /// The decoder's error.
        source: super::SignError,
    },
    /// The signature algorithm is not one this module supports.
    #[error("unsupported signature algorithm {0}; use RSA PKCS#1 v1.5 with SHA-256 or ECDSA P-256 with SHA-256")]
    UnsupportedAlgorithm(String),
    /// The signer's algorithm does not fit the issuer's key type.
    #[error("the signer's algorithm {algorithm} does not fit the issuer's {key} key; sign with the key of the issuing certificate")]
    AlgorithmKeyMismatch {
        /// The signer's algorithm OID.
        algorithm: String,
        /// The issuer key's type.
        key: &'static str,
    },
    /// The issuing certificate may not sign certificates or CRLs.
    #[error("the issuer certificate {0} is not a CA that may sign certificates and CRLs; issue with the authority's CA certificate")]
    IssuerNotCa(String),
    /// The token refused to sign; the token's error is the source.
    #[error(
        "the token could not sign: {source}; check that the token is present and logged in, then retry"
    )]
    Signer {
        /// The signer's error (the token layer's, with the PKCS#11 call).
        source: super::SignError,
    },
    /// The token signed, but what it returned is not a signature of the expected form.
    #[error("the token returned a {len}-byte signature that is not {form}; check that the token holds the issuer's key and supports its mechanism")]
    MalformedSignature {
        /// The form expected.
        form: String,
        /// The length returned.
        len: usize,
    },
    /// The token signed, but not with the issuer certificate's key.
    #[error("the token's signature does not verify with the issuer certificate's key; check that the token holds the key of this CA certificate")]
    SignerKeyMismatch,
    /// The operating system's random generator failed.
    #[error("could not get random bytes from the operating system ({0}); check the system's entropy source and retry")]
    Random(getrandom::Error),
    /// A certificate's or CRL's issuer name is not the issuer certificate's subject.
    #[error("issued by {issuer:?}, not by {subject:?}; use the certificate of the authority that issued it")]
    IssuerMismatch {
        /// The issuer name in the checked certificate or CRL.
        issuer: String,
        /// The subject of the presumed issuer certificate.
        subject: String,
    },
    /// A signature does not verify.
    #[error("the signature on the {0} does not verify with the issuer's key; it was altered or issued by another authority, do not trust it")]
    BadSignature(&'static str),
    /// The certificate has expired.
    #[error("the certificate expired at {not_after} (checked at {at}); ask the authority for a new certificate")]
    Expired {
        /// End of validity.
        not_after: String,
        /// The time checked.
        at: String,
    },
    /// The certificate is not valid yet.
    #[error("the certificate is not valid before {not_before} (checked at {at}); check the system clock or wait until then")]
    NotYetValid {
        /// Start of validity.
        not_before: String,
        /// The time checked.
        at: String,
    },
    /// An `authority init` policy option is not usable.
    #[error("{0}")]
    InvalidPolicy(String),
    /// A revocation reason name is unknown.
    #[error("unknown revocation reason {0:?}; use one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation")]
    UnknownReason(String),
}

/// What a certificate is for; decides basicConstraints, keyUsage and extendedKeyUsage.
///
/// The user profiles follow the CA/Browser Forum S/MIME Baseline Requirements, mailbox-validated
/// **strict** generation (SMBR 7.1.2.3): emailProtection only, no dataEncipherment, the
/// reserved policy OID [`SMIME_MAILBOX_STRICT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertProfile {
    /// The authority's CA: CA:true, keyCertSign + cRLSign.
    Ca,
    /// The authority's key that decrypts temporary keys: CA:false, keyEncipherment.
    ///
    /// No extendedKeyUsage and no subjectAltName, on purpose: it is not a mailbox certificate
    /// (no mailbox stands behind it, it is never sent to mail clients), and an
    /// emailProtection EKU would make S/MIME clients take it for one. It is linted as an
    /// RFC 5280 end-entity certificate, not against the S/MIME BR.
    AuthorityExchange,
    /// A user's signing key: digitalSignature + nonRepudiation, emailProtection.
    UserSigning,
    /// A user's encryption key: keyEncipherment, emailProtection.
    UserEncryption,
    /// An EST node's TLS key (`authority serve`): digitalSignature, serverAuth; its names go
    /// in the subjectAltName ([`issue_tls_server`]).
    TlsServer,
}

/// The CA/B Forum reserved policy OID of a mailbox-validated strict S/MIME certificate.
pub const SMIME_MAILBOX_STRICT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.140.1.5.1.3");

/// The longest validity of a mailbox-validated strict S/MIME certificate (SMBR 6.3.2: 825 days).
pub const SMIME_MAX_VALIDITY: Duration = Duration::from_secs(825 * 86_400);

/// What an authority puts in every certificate it issues besides the key usages: its own
/// policy OID (`authority init --policy-oid`), where its CRL is published
/// (`--crl-url`, cRLDistributionPoints) and where its CA certificate is
/// (`--aia-url`, authorityInformationAccess caIssuers). The default adds none of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuingPolicy {
    /// The organisation's certificate policy, next to the BR's reserved one.
    pub policy_oid: Option<ObjectIdentifier>,
    /// The CRL's URL (`http:` for relying parties; `file:` for a local directory).
    pub crl_url: Option<String>,
    /// The CA certificate's URL.
    pub aia_url: Option<String>,
}

impl IssuingPolicy {
    /// Checks and collects the `authority init` options; the error names the bad one.
    pub fn new(
        policy_oid: Option<&str>,
        crl_url: Option<&str>,
        aia_url: Option<&str>,
    ) -> Result<Self, X509Error> {
        let policy_oid = policy_oid
            .map(|s| {
                ObjectIdentifier::new(s).map_err(|_| X509Error::InvalidPolicy(format!(
                    "{s:?} is not an object identifier; write it in dotted form, e.g. 1.3.6.1.4.1.99999.1"
                )))
            })
            .transpose()?;
        if policy_oid == Some(SMIME_MAILBOX_STRICT) {
            return Err(X509Error::InvalidPolicy(
                "2.23.140.1.5.1.3 is the CA/B Forum's reserved OID, which keyward adds itself; give your organisation's own OID".into(),
            ));
        }
        for (what, url) in [("--crl-url", crl_url), ("--aia-url", aia_url)] {
            if let Some(u) = url {
                check_url(what, u)?;
            }
        }
        Ok(IssuingPolicy {
            policy_oid,
            crl_url: crl_url.map(str::to_owned),
            aia_url: aia_url.map(str::to_owned),
        })
    }
}

fn check_url(what: &str, u: &str) -> Result<(), X509Error> {
    let scheme_ok = ["http://", "file:/"].iter().any(|p| u.starts_with(p));
    if !scheme_ok
        || !u.is_ascii()
        || u.chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(X509Error::InvalidPolicy(format!(
            "{what} {u:?} is not an http:// or file:/ URL without spaces; write e.g. http://pki.example.org/ca.crl"
        )));
    }
    Ok(())
}

/// What goes into a new certificate besides the issuer.
#[derive(Debug, Clone)]
pub struct CertParams<'a> {
    /// Subject name (may be empty only when `email` is given).
    pub subject: &'a Name,
    /// Subject public key, DER SubjectPublicKeyInfo (RSA or P-256).
    pub spki_der: &'a [u8],
    /// Serial number, big-endian unsigned, positive, at most 20 bytes.
    pub serial: &'a [u8],
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Key usages and constraints.
    pub profile: CertProfile,
    /// Email address for the subjectAltName rfc822Name.
    pub email: Option<&'a str>,
}

/// One revoked certificate in a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial number of the revoked certificate (big-endian unsigned).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: SystemTime,
    /// Why, when known (`Unspecified` writes no reasonCode, as RFC 5280 advises).
    pub reason: Option<CrlReason>,
}

/// RFC 5280 revocation reasons keyward uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrlReason {
    /// unspecified (0).
    Unspecified,
    /// keyCompromise (1).
    KeyCompromise,
    /// affiliationChanged (3).
    AffiliationChanged,
    /// superseded (4).
    Superseded,
    /// cessationOfOperation (5).
    CessationOfOperation,
    /// certificateHold (6): on hold while a token is lost (`authority token --state lost`),
    /// not a reason an operator gives to `revoke`, so not in [`CrlReason::ALL`].
    CertificateHold,
}

impl CrlReason {
    /// Every reason, in RFC 5280 order.
    pub const ALL: [CrlReason; 5] = [
        CrlReason::Unspecified,
        CrlReason::KeyCompromise,
        CrlReason::AffiliationChanged,
        CrlReason::Superseded,
        CrlReason::CessationOfOperation,
    ];

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrlReason::Unspecified => "unspecified",
            CrlReason::KeyCompromise => "keyCompromise",
            CrlReason::AffiliationChanged => "affiliationChanged",
            CrlReason::Superseded => "superseded",
            CrlReason::CessationOfOperation => "cessationOfOperation",
            CrlReason::CertificateHold => "certificateHold",
        }
    }

    fn to_pkix(self) -> x509_cert::ext::pkix::CrlReason {
        use x509_cert::ext::pkix::CrlReason as R;
        match self {
            CrlReason::Unspecified => R::Unspecified,
            CrlReason::KeyCompromise => R::KeyCompromise,
            CrlReason::AffiliationChanged => R::AffiliationChanged,
            CrlReason::Superseded => R::Superseded,
            CrlReason::CessationOfOperation => R::CessationOfOperation,
            CrlReason::CertificateHold => R::CertificateHold,
        }
    }

    fn from_pkix(r: x509_cert::ext::pkix::CrlReason) -> Option<Self> {
        use x509_cert::ext::pkix::CrlReason as R;
        Some(match r {
            R::Unspecified => CrlReason::Unspecified,
            R::KeyCompromise => CrlReason::KeyCompromise,
            R::AffiliationChanged => CrlReason::AffiliationChanged,
            R::Superseded => CrlReason::Superseded,
            R::CessationOfOperation => CrlReason::CessationOfOperation,
            R::CertificateHold => CrlReason::CertificateHold,
            _ => return None,
        })
    }
}

impl fmt::Display for CrlReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CrlReason {
    type Err = X509Error;

    /// Accepts the RFC 5280 names in any case, with or without `-`/`_` (`key-compromise`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        CrlReason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(&norm))
            .ok_or_else(|| X509Error::UnknownReason(s.to_owned()))
    }
}

/// The AlgorithmIdentifier of sha256WithRSAEncryption (RSA PKCS#1 v1.5 with SHA-256).
pub fn rsa_sha256_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        parameters: Some(Any::null()),
    }
}

/// The AlgorithmIdentifier of ecdsa-with-SHA256.
pub fn ecdsa_p256_sha256_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: rfc5912::ECDSA_WITH_SHA_256,
        parameters: None,
    }
}

/// Converts a raw P-256 ECDSA signature (`r || s`, 64 bytes, as PKCS#11 returns it) to DER.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, X509Error> {
    let sig =
        p256::ecdsa::Signature::from_slice(raw).map_err(|_| X509Error::MalformedSignature {
            form: "a P-256 ECDSA signature (r || s, 64 bytes)".into(),
            len: raw.len(),
        })?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// 16 random bytes, top bit cleared, non-zero first byte: a positive 127-bit serial number.
pub fn random_serial() -> Result<Vec<u8>, X509Error> {
    let mut serial = vec![0u8; 16];
    loop {
        getrandom::getrandom(&mut serial).map_err(X509Error::Random)?;
        serial[0] &= 0x7f;
        if serial[0] != 0 {
            return Ok(serial);
        }
    }
}

/// Builds and signs a self-signed CA certificate (`p.profile` must be [`CertProfile::Ca`]).
pub fn self_signed_ca(
    p: &CertParams,
    signer: &mut dyn TbsSigner,
) -> Result<Certificate, X509Error> {
    if p.profile != CertProfile::Ca {
        return Err(X509Error::NotCaProfile);
    }
    let spki = parse_spki(p.spki_der)?;
    let ski = key_identifier(&spki);
    let tbs = build_tbs(
        p,
        spki.clone(),
        p.subject.clone(),
        &ski,
        signer.algorithm(),
        &IssuingPolicy::default(),
    )?;
    sign_certificate(tbs, &spki, signer)
}

/// Builds a certificate for `p` issued by `issuer` and signs it with the issuer's key
/// through `signer`, with no authority policy (see [`issue_with_policy`]).
pub fn issue(
    issuer: &Certificate,
    p: &CertParams,
    signer: &mut dyn TbsSigner,
) -> Result<Certificate, X509Error> {
    issue_with_policy(issuer, p, &IssuingPolicy::default(), signer)
}

/// Builds a certificate for `p` issued by `issuer`, with the authority's `policy` (policy
/// OID, CRL distribution point, AIA), and signs it through `signer`.
pub fn issue_with_policy(
    issuer: &Certificate,
    p: &CertParams,
    policy: &IssuingPolicy,
    signer: &mut dyn TbsSigner,
) -> Result<Certificate, X509Error> {
    require_ca(issuer, KeyUsages::KeyCertSign)?;
    let issuer_spki = &issuer.tbs_certificate.subject_public_key_info;
    let spki = parse_spki(p.spki_der)?;
    let tbs = build_tbs(
        p,
        spki,
        issuer.tbs_certificate.subject.clone(),
        &issuer_key_identifier(issuer),
        signer.algorithm(),
        policy,
    )?;
    sign_certificate(tbs, issuer_spki, signer)
}

/// A TLS server certificate ([`CertProfile::TlsServer`]) for `names` (DNS names and IP
/// addresses, in its subjectAltName), issued by `issuer` through `signer`.
pub fn issue_tls_server(
    issuer: &Certificate,
    p: &CertParams,
    names: Vec<GeneralName>,
    signer: &mut dyn TbsSigner,
) -> Result<Certificate, X509Error> {
    require_ca(issuer, KeyUsages::KeyCertSign)?;
    let issuer_spki = &issuer.tbs_certificate.subject_public_key_info;
    let spki = parse_spki(p.spki_der)?;
    let mut tbs = build_tbs(
        p,
        spki,
        issuer.tbs_certificate.subject.clone(),
        &issuer_key_identifier(issuer),
        signer.algorithm(),
        &IssuingPolicy::default(),
    )?;
    if let Some(exts) = tbs.extensions.as_mut() {
        exts.push(extension(&SubjectAltName(names), false)?);
    }
    sign_certificate(tbs, issuer_spki, signer)
}

/// Builds a v2 CRL listing `revoked`, issued by `issuer`, and signs it through `signer`.
pub fn crl(
    issuer: &Certificate,
    revoked: &[RevokedEntry],
    crl_number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
    signer: &mut dyn TbsSigner,
) -> Result<CertificateList, X509Error> {
    require_ca(issuer, KeyUsages::CRLSign)?;
    check_period(this_update, next_update)?;
    let issuer_spki = &issuer.tbs_certificate.subject_public_key_info;
    let algorithm = signer.algorithm();
    check_algorithm_fits(&algorithm, issuer_spki)?;

    let mut entries = Vec::with_capacity(revoked.len());
    for r in revoked {
        let crl_entry_extensions = match r.reason {
            None | Some(CrlReason::Unspecified) => None,
            Some(reason) => Some(vec![extension(&reason.to_pkix(), false)?]),
        };
        entries.push(RevokedCert {
            serial_number: serial_number(&r.serial)?,
            revocation_date: to_time(r.revoked_at)?,
            crl_entry_extensions,
        });
    }
    let number = Uint::new(&crl_number.to_be_bytes()).map_err(encode_err("CRL number"))?;
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(octets(&issuer_key_identifier(issuer))?),
        ..Default::default()
    };
    let tbs = TbsCertList {
        version: Version::V2,
        signature: algorithm.clone(),
        issuer: issuer.tbs_certificate.subject.clone(),
        this_update: to_time(this_update)?,
        next_update: Some(to_time(next_update)?),
        revoked_certificates: if entries.is_empty() {
            None
        } else {
            Some(entries)
        },
        crl_extensions: Some(vec![
            extension(&aki, false)?,
            extension(&CrlNumber(number), false)?,
        ]),
    };
    let tbs_der = tbs.to_der().map_err(encode_err("CRL"))?;
    let signature = sign_checked(&tbs_der, &algorithm, issuer_spki, signer)?;
    Ok(CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: algorithm,
        signature,
    })
}

/// The certificate as PEM (`-----BEGIN CERTIFICATE-----`, LF line endings).
pub fn cert_to_pem(c: &Certificate) -> Result<String, X509Error> {
    c.to_pem(LineEnding::LF).map_err(encode_err("certificate"))
}

/// Every certificate in a PEM text (a bundle may hold several; other blocks are skipped).
pub fn certs_from_pem(text: &str) -> Result<Vec<Certificate>, X509Error> {
    pem_blocks(text, "CERTIFICATE")?
        .iter()
        .map(|der| cert_from_der(der))
        .collect()
}

/// The certificate as DER.
pub fn cert_to_der(c: &Certificate) -> Result<Vec<u8>, X509Error> {
    c.to_der().map_err(encode_err("certificate"))
}

/// Parses one DER certificate.
pub fn cert_from_der(der: &[u8]) -> Result<Certificate, X509Error> {
    Certificate::from_der(der).map_err(decode_err("certificate"))
}

/// The CRL as PEM (`-----BEGIN X509 CRL-----`, LF line endings).
pub fn crl_to_pem(c: &CertificateList) -> Result<String, X509Error> {
    let der = crl_to_der(c)?;
    der::pem::encode_string("X509 CRL", LineEnding::LF, &der).map_err(|e| X509Error::Encode {
        what: "CRL",
        source: e.into(),
    })
}

/// The CRL as DER.
pub fn crl_to_der(c: &CertificateList) -> Result<Vec<u8>, X509Error> {
    c.to_der().map_err(encode_err("CRL"))
}

/// Parses the first CRL in a PEM text.
pub fn crl_from_pem(text: &str) -> Result<CertificateList, X509Error> {
    let blocks = pem_blocks(text, "X509 CRL")?;
    crl_from_der(&blocks[0])
}

/// Parses one DER CRL.
pub fn crl_from_der(der: &[u8]) -> Result<CertificateList, X509Error> {
    CertificateList::from_der(der).map_err(decode_err("CRL"))
}

/// Checks that `issuer`'s subject is `cert`'s issuer and that `issuer`'s key signed `cert`.
///
/// The signature is checked over the re-encoded TBS, which is the original for any DER certificate.
pub fn verify_issued_by(cert: &Certificate, issuer: &Certificate) -> Result<(), X509Error> {
    check_issuer_name(&cert.tbs_certificate.issuer, issuer)?;
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(X509Error::BadSignature("certificate"));
    }
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(encode_err("certificate"))?;
    match check_signature(
        &issuer.tbs_certificate.subject_public_key_info,
        &cert.signature_algorithm,
        &tbs,
        &cert.signature,
    )? {
        SigCheck::Valid => Ok(()),
        SigCheck::Invalid | SigCheck::Malformed => Err(X509Error::BadSignature("certificate")),
    }
}

/// Checks that `issuer`'s subject issued `crl` and that `issuer`'s key signed it.
pub fn verify_crl(crl: &CertificateList, issuer: &Certificate) -> Result<(), X509Error> {
    check_issuer_name(&crl.tbs_cert_list.issuer, issuer)?;
    if crl.signature_algorithm != crl.tbs_cert_list.signature {
        return Err(X509Error::BadSignature("CRL"));
    }
    let tbs = crl.tbs_cert_list.to_der().map_err(encode_err("CRL"))?;
    match check_signature(
        &issuer.tbs_certificate.subject_public_key_info,
        &crl.signature_algorithm,
        &tbs,
        &crl.signature,
    )? {
        SigCheck::Valid => Ok(()),
        SigCheck::Invalid | SigCheck::Malformed => Err(X509Error::BadSignature("CRL")),
    }
}

/// Whether the CRL lists `serial` (leading zero bytes ignored); check it with [`verify_crl`] first.
pub fn is_revoked(crl: &CertificateList, serial: &[u8]) -> bool {
    revocation(crl, serial).is_some()
}

/// When and why the CRL revoked `serial`, if it lists it.
pub fn revocation(crl: &CertificateList, serial: &[u8]) -> Option<(SystemTime, Option<CrlReason>)> {
    let wanted = strip_zeros(serial);
    let entry = crl
        .tbs_cert_list
        .revoked_certificates
        .as_deref()?
        .iter()
        .find(|e| strip_zeros(e.serial_number.as_bytes()) == wanted)?;
    let reason = entry
        .crl_entry_extensions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|e| e.extn_id == x509_cert::ext::pkix::CrlReason::OID)
        .and_then(|e| x509_cert::ext::pkix::CrlReason::from_der(e.extn_value.as_bytes()).ok())
        .and_then(CrlReason::from_pkix);
    Some((entry.revocation_date.to_system_time(), reason))
}

/// Checks that `at` lies within the certificate's validity; the error gives the dates.
pub fn check_validity(cert: &Certificate, at: SystemTime) -> Result<(), X509Error> {
    let v = &cert.tbs_certificate.validity;
    if at < v.not_before.to_system_time() {
        return Err(X509Error::NotYetValid {
            not_before: v.not_before.to_string(),
            at: fmt_system_time(at),
        });
    }
    if at > v.not_after.to_system_time() {
        return Err(X509Error::Expired {
            not_after: v.not_after.to_string(),
            at: fmt_system_time(at),
        });
    }
    Ok(())
}

/// The first rfc822Name of the subjectAltName.
pub fn email_of(cert: &Certificate) -> Option<String> {
    let (_, san) = cert.tbs_certificate.get::<SubjectAltName>().ok()??;
    san.0.into_iter().find_map(|n| match n {
        GeneralName::Rfc822Name(s) => Some(s.to_string()),
        _ => None,
    })
}

/// The subject's (most specific) commonName.
pub fn common_name(cert: &Certificate) -> Option<String> {
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .rev()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == rfc4519::CN)
        .and_then(|atv| directory_string(&atv.value))
}

/// The certificate's SubjectPublicKeyInfo as DER.
pub fn spki_der_of(cert: &Certificate) -> Vec<u8> {
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap_or_default()
}

/// The serial number in upper-case hex without a sign byte, as `openssl x509 -serial` shows it.
pub fn serial_hex(cert: &Certificate) -> String {
    let bytes = strip_zeros(cert.tbs_certificate.serial_number.as_bytes());
    if bytes.is_empty() {
        return "00".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The certificate's subject key identifier (the extension's value, else computed from the key).
pub fn key_id_of(cert: &Certificate) -> Vec<u8> {
    issuer_key_identifier(cert)
}

// ---------------------------------------------------------------------------------------
// Internals

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "P-256",
        }
    }
}

enum SigCheck {
    Valid,
    Invalid,
    Malformed,
}

fn encode_err(what: &'static str) -> impl FnOnce(der::Error) -> X509Error {
    move |source| X509Error::Encode { what, source }
}

fn decode_err(what: &'static str) -> impl FnOnce(der::Error) -> X509Error {
    move |source| X509Error::Decode { what, source }
}

fn octets(bytes: &[u8]) -> Result<OctetString, X509Error> {
    OctetString::new(bytes).map_err(encode_err("extension"))
}

fn extension<T: AssociatedOid + Encode>(value: &T, critical: bool) -> Result<Extension, X509Error> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: octets(&value.to_der().map_err(encode_err("extension"))?)?,
    })
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn serial_number(serial: &[u8]) -> Result<SerialNumber, X509Error> {
    if strip_zeros(serial).is_empty() {
        return Err(X509Error::InvalidSerial("it is zero or empty"));
    }
    SerialNumber::new(serial).map_err(|_| X509Error::InvalidSerial("it is longer than 20 bytes"))
}

fn fmt_system_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => match DateTime::from_unix_duration(Duration::from_secs(d.as_secs())) {
            Ok(dt) => dt.to_string(),
            Err(_) => format!("{} s after 1970", d.as_secs()),
        },
        Err(_) => "a time before 1970".to_owned(),
    }
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5, and RFC 5652 11.3 for
/// CMS signingTime), whole seconds.
pub fn to_time(t: SystemTime) -> Result<Time, X509Error> {
    let invalid = || X509Error::InvalidTime(fmt_system_time(t));
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| invalid())?;
    let dt =
        DateTime::from_unix_duration(Duration::from_secs(d.as_secs())).map_err(|_| invalid())?;
    if dt.year() <= UtcTime::MAX_YEAR {
        Ok(Time::UtcTime(
            UtcTime::from_date_time(dt).map_err(|_| invalid())?,
        ))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

fn check_period(start: SystemTime, end: SystemTime) -> Result<(), X509Error> {
    if end <= start {
        return Err(X509Error::EmptyPeriod {
            start: fmt_system_time(start),
            end: fmt_system_time(end),
        });
    }
    Ok(())
}

fn parse_spki(der: &[u8]) -> Result<SubjectPublicKeyInfoOwned, X509Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(der)
        .map_err(|e| X509Error::BadPublicKey { source: e.into() })?;
    key_kind(&spki)?;
    Ok(spki)
}

fn key_kind(spki: &SubjectPublicKeyInfoOwned) -> Result<KeyKind, X509Error> {
    let alg = &spki.algorithm;
    if alg.oid == rfc5912::RSA_ENCRYPTION {
        return Ok(KeyKind::Rsa);
    }
    if alg.oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve == Some(rfc5912::SECP_256_R_1) {
            return Ok(KeyKind::P256);
        }
        return Err(X509Error::InvalidPublicKey(
            "an EC key on a curve other than P-256",
        ));
    }
    Err(X509Error::KeyAlgorithm(alg.oid))
}

fn signature_kind(alg: &AlgorithmIdentifierOwned) -> Result<KeyKind, X509Error> {
    let null_or_absent = match &alg.parameters {
        None => true,
        Some(p) => p.tag() == Tag::Null && p.value().is_empty(),
    };
    if alg.oid == rfc5912::SHA_256_WITH_RSA_ENCRYPTION && null_or_absent {
        Ok(KeyKind::Rsa)
    } else if alg.oid == rfc5912::ECDSA_WITH_SHA_256 && alg.parameters.is_none() {
        Ok(KeyKind::P256)
    } else {
        Err(X509Error::UnsupportedAlgorithm(alg.oid.to_string()))
    }
}

/// Refuses, before the token is asked, an algorithm the issuer's key cannot make.
fn check_algorithm_fits(
    alg: &AlgorithmIdentifierOwned,
    issuer_spki: &SubjectPublicKeyInfoOwned,
) -> Result<(), X509Error> {
    let sig = signature_kind(alg)?;
    let key = key_kind(issuer_spki)?;
    if sig != key {
        return Err(X509Error::AlgorithmKeyMismatch {
            algorithm: alg.oid.to_string(),
            key: key.name(),
        });
    }
    Ok(())
}

fn check_signature(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    signature: &BitString,
) -> Result<SigCheck, X509Error> {
    check_algorithm_fits(alg, spki)?;
    let Some(sig) = signature.as_bytes() else {
        return Ok(SigCheck::Malformed);
    };
    let spki_der = spki
        .to_der()
        .map_err(|e| X509Error::BadPublicKey { source: e.into() })?;
    let key = super::key::PublicKey::from_spki_der(&spki_der)
        .map_err(|e| X509Error::BadPublicKey { source: e.into() })?;
    if !key.is_signature_well_formed(sig) {
        return Ok(SigCheck::Malformed);
    }
    let valid = key.verify(msg, sig).is_ok();
    Ok(if valid {
        SigCheck::Valid
    } else {
        SigCheck::Invalid
    })
}

/// Signs on the token, then checks the signature with the issuer's public key.
fn sign_checked(
    tbs_der: &[u8],
    alg: &AlgorithmIdentifierOwned,
    issuer_spki: &SubjectPublicKeyInfoOwned,
    signer: &mut dyn TbsSigner,
) -> Result<BitString, X509Error> {
    let sig = signer
        .sign_tbs(tbs_der)
        .map_err(|source| X509Error::Signer { source })?;
    let bits = BitString::from_bytes(&sig).map_err(encode_err("signature"))?;
    match check_signature(issuer_spki, alg, tbs_der, &bits)? {
        SigCheck::Valid => Ok(bits),
        SigCheck::Invalid => Err(X509Error::SignerKeyMismatch),
        SigCheck::Malformed => Err(X509Error::MalformedSignature {
            form: format!(
                "a {} signature as X.509 carries it",
                signature_kind(alg)?.name()
            ),
            len: sig.len(),
        }),
    }
}

fn sign_certificate(
    tbs: TbsCertificate,
    issuer_spki: &SubjectPublicKeyInfoOwned,
    signer: &mut dyn TbsSigner,
) -> Result<Certificate, X509Error> {
    check_algorithm_fits(&tbs.signature, issuer_spki)?;
    let tbs_der = tbs.to_der().map_err(encode_err("certificate"))?;
    let signature = sign_checked(&tbs_der, &tbs.signature, issuer_spki, signer)?;
    Ok(Certificate {
        signature_algorithm: tbs.signature.clone(),
        tbs_certificate: tbs,
        signature,
    })
}

/// RFC 7093 method 1: leftmost 160 bits of SHA-256 over the subjectPublicKey bits.
fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha256::digest(spki.subject_public_key.raw_bytes())[..20].to_vec()
}

fn issuer_key_identifier(issuer: &Certificate) -> Vec<u8> {
    match issuer.tbs_certificate.get::<SubjectKeyIdentifier>() {
        Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
        _ => key_identifier(&issuer.tbs_certificate.subject_public_key_info),
    }
}

fn require_ca(issuer: &Certificate, usage: KeyUsages) -> Result<(), X509Error> {
    let tbs = &issuer.tbs_certificate;
    let is_ca = matches!(tbs.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca);
    let usage_ok = match tbs.get::<KeyUsage>() {
        Ok(Some((_, ku))) => ku.0.contains(usage),
        Ok(None) => true,
        Err(_) => false,
    };
    if is_ca && usage_ok {
        Ok(())
    } else {
        Err(X509Error::IssuerNotCa(tbs.subject.to_string()))
    }
}

fn check_issuer_name(name: &Name, issuer: &Certificate) -> Result<(), X509Error> {
    let subject = &issuer.tbs_certificate.subject;
    if name != subject {
        return Err(X509Error::IssuerMismatch {
            issuer: name.to_string(),
            subject: subject.to_string(),
        });
    }
    Ok(())
}

fn directory_string(value: &Any) -> Option<String> {
    use der::asn1::{PrintableStringRef, TeletexStringRef, Utf8StringRef};
    match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value).ok().map(|s| s.to_string()),
        Tag::PrintableString => PrintableStringRef::try_from(value)
            .ok()
            .map(|s| s.to_string()),
        Tag::Ia5String => der::asn1::Ia5StringRef::try_from(value)
            .ok()
            .map(|s| s.to_string()),
        Tag::TeletexString => TeletexStringRef::try_from(value)
            .ok()
            .map(|s| s.to_string()),
        _ => None,
    }
}

fn build_tbs(
    p: &CertParams,
    spki: SubjectPublicKeyInfoOwned,
    issuer: Name,
    issuer_key_id: &[u8],
    algorithm: AlgorithmIdentifierOwned,
    policy: &IssuingPolicy,
) -> Result<TbsCertificate, X509Error> {
    check_period(p.not_before, p.not_after)?;
    let email = match p.email {
        Some(e) => {
            let ok = e.is_ascii()
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
                && !e
                    .chars()
                    .any(|c| c.is_ascii_whitespace() || c.is_ascii_control());
            if !ok {
                return Err(X509Error::InvalidEmail(e.to_owned()));
            }
            Some(Ia5String::new(e).map_err(|_| X509Error::InvalidEmail(e.to_owned()))?)
        }
        None => None,
    };
    if p.subject.is_empty() && email.is_none() {
        return Err(X509Error::EmptySubject);
    }

    let (ca, usages, eku) = profile_usages(p.profile);

    let mut extensions: Extensions = vec![
        extension(
            &BasicConstraints {
                ca,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&KeyUsage(usages), true)?,
    ];
    if !eku.is_empty() {
        extensions.push(extension(&ExtendedKeyUsage(eku.to_vec()), false)?);
    }
    extensions.push(extension(
        &SubjectKeyIdentifier(octets(&key_identifier(&spki))?),
        false,
    )?);
    extensions.push(extension(
        &AuthorityKeyIdentifier {
            key_identifier: Some(octets(issuer_key_id)?),
            ..Default::default()
        },
        false,
    )?);
    let mailbox = email.is_some();
    if let Some(email) = email {
        // RFC 5280 4.2.1.6: critical when the subject name is empty.
        extensions.push(extension(
            &SubjectAltName(vec![GeneralName::Rfc822Name(email)]),
            p.subject.is_empty(),
        )?);
    }
    extensions.extend(policy_extensions(p.profile, mailbox, policy)?);

    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: serial_number(p.serial)?,
        signature: algorithm,
        issuer,
        validity: Validity {
            not_before: to_time(p.not_before)?,
            not_after: to_time(p.not_after)?,
        },
        subject: p.subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    })
}

/// basicConstraints cA, keyUsage and extendedKeyUsage of a profile (SMBR 7.1.2.3 strict for
/// the user profiles: emailProtection only; signing without keyEncipherment, encryption
/// with keyEncipherment only).
fn profile_usages(profile: CertProfile) -> (bool, FlagSet<KeyUsages>, &'static [ObjectIdentifier]) {
    match profile {
        CertProfile::Ca => (true, KeyUsages::KeyCertSign | KeyUsages::CRLSign, &[]),
        CertProfile::AuthorityExchange => (false, KeyUsages::KeyEncipherment.into(), &[]),
        CertProfile::UserSigning => (
            false,
            KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
            &[rfc5280::ID_KP_EMAIL_PROTECTION],
        ),
        CertProfile::UserEncryption => (
            false,
            KeyUsages::KeyEncipherment.into(),
            &[rfc5280::ID_KP_EMAIL_PROTECTION],
        ),
        CertProfile::TlsServer => (
            false,
            KeyUsages::DigitalSignature.into(),
            &[rfc5280::ID_KP_SERVER_AUTH],
        ),
    }
}

/// certificatePolicies, cRLDistributionPoints and authorityInformationAccess of an issued
/// (not self-signed) certificate. A user certificate that names a mailbox carries the BR's
/// reserved OID; one without a mailbox address is no S/MIME certificate in the BR's sense
/// (SMBR 1.1: an S/MIME certificate has the emailProtection EKU *and* a mailbox address in
/// its subjectAltName), so it claims no BR profile.
fn policy_extensions(
    profile: CertProfile,
    mailbox: bool,
    policy: &IssuingPolicy,
) -> Result<Vec<Extension>, X509Error> {
    let mut out = Vec::new();
    let mut oids = Vec::new();
    if mailbox
        && matches!(
            profile,
            CertProfile::UserSigning | CertProfile::UserEncryption
        )
    {
        oids.push(SMIME_MAILBOX_STRICT);
    }
    if profile != CertProfile::Ca {
        oids.extend(policy.policy_oid);
    }
    if !oids.is_empty() {
        let policies = oids
            .into_iter()
            .map(|policy_identifier| PolicyInformation {
                policy_identifier,
                policy_qualifiers: None,
            })
            .collect();
        out.push(extension(&CertificatePolicies(policies), false)?);
    }
    if profile == CertProfile::Ca {
        return Ok(out);
    }
    if let Some(url) = &policy.crl_url {
        let point = DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![uri(url)?])),
            reasons: None,
            crl_issuer: None,
        };
        out.push(extension(&CrlDistributionPoints(vec![point]), false)?);
    }
    if let Some(url) = &policy.aia_url {
        let access = AccessDescription {
            access_method: rfc5280::ID_AD_CA_ISSUERS,
            access_location: uri(url)?,
        };
        out.push(extension(&AuthorityInfoAccessSyntax(vec![access]), false)?);
    }
    Ok(out)
}

fn uri(url: &str) -> Result<GeneralName, X509Error> {
    Ia5String::new(url)
        .map(GeneralName::UniformResourceIdentifier)
        .map_err(|_| X509Error::InvalidPolicy(format!("{url:?} is not an ASCII URL")))
}

/// The subject of a user certificate (SMBR 7.1.4.2, mailbox-validated): commonName = the
/// mailbox address, an allowed source; empty (the subjectAltName then critical) when the
/// address is longer than the 64 characters a commonName may hold. Without an address the
/// user name is the commonName: such a certificate names no mailbox, so it is outside the
/// S/MIME BR (SMBR 1.1) and does not claim their policy ([`policy_extensions`]); mail
/// clients cannot match it to an address. Give users an e-mail address.
pub fn user_subject(user: &str, email: Option<&str>) -> Result<Name, X509Error> {
    use der::asn1::{SetOfVec, Utf8StringRef};
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
    let cn = match email {
        Some(e) if e.chars().count() > 64 => return Ok(RdnSequence(Vec::new())),
        Some(e) => e,
        None => user,
    };
    let value = Any::encode_from(&Utf8StringRef::new(cn).map_err(encode_err("subject"))?)
        .map_err(encode_err("subject"))?;
    let atv = AttributeTypeAndValue {
        oid: rfc4519::CN,
        value,
    };
    let rdn = SetOfVec::try_from(vec![atv]).map_err(encode_err("subject"))?;
    Ok(RdnSequence(vec![RelativeDistinguishedName(rdn)]))
}

/// The URLs of a certificate's cRLDistributionPoints (fullName URIs), first first.
pub fn crl_urls_of(cert: &Certificate) -> Vec<String> {
    let Ok(Some((_, points))) = cert.tbs_certificate.get::<CrlDistributionPoints>() else {
        return Vec::new();
    };
    points
        .0
        .into_iter()
        .filter_map(|p| match p.distribution_point {
            Some(DistributionPointName::FullName(names)) => Some(names),
            _ => None,
        })
        .flatten()
        .filter_map(|n| match n {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// The CRL's number (its cRLNumber extension), when it has one that fits in 64 bits.
pub fn crl_number_of(crl: &CertificateList) -> Option<u64> {
    let ext = crl
        .tbs_cert_list
        .crl_extensions
        .as_deref()?
        .iter()
        .find(|e| e.extn_id == CrlNumber::OID)?;
    let n = CrlNumber::from_der(ext.extn_value.as_bytes()).ok()?;
    let bytes = strip_zeros(n.0.as_bytes());
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Base64 bodies of every `-----BEGIN {label}-----` block, decoded.
fn pem_blocks(text: &str, label: &'static str) -> Result<Vec<Vec<u8>>, X509Error> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let what = if label == "CERTIFICATE" {
        "certificate"
    } else {
        "CRL"
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let block = &rest[start..];
        let stop = block.find(&end).ok_or(X509Error::Decode {
            what,
            source: der::Error::from(der::pem::Error::PostEncapsulationBoundary),
        })? + end.len();
        let (found, der) =
            der::pem::decode_vec(&block.as_bytes()[..stop]).map_err(|e| X509Error::Decode {
                what,
                source: e.into(),
            })?;
        debug_assert_eq!(found, label);
        out.push(der);
        rest = &block[stop..];
    }
    if out.is_empty() {
        return Err(X509Error::NoPemBlock(label));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::signature::SignatureEncoding;
    use std::process::Command;
    use std::sync::OnceLock;

    const DAY: Duration = Duration::from_secs(86_400);

    /// Software stand-in for a token key.
    enum TestSigner {
        Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
        P256(p256::ecdsa::SigningKey),
    }

    impl TbsSigner for TestSigner {
        fn algorithm(&self) -> AlgorithmIdentifierOwned {
            match self {
                TestSigner::Rsa(_) => rsa_sha256_algorithm(),
                TestSigner::P256(_) => ecdsa_p256_sha256_algorithm(),
            }
        }
        fn sign_tbs(&mut self, tbs_der: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
            Ok(match self {
                TestSigner::Rsa(k) => k.sign(tbs_der).to_vec(),
                TestSigner::P256(k) => {
                    let sig: p256::ecdsa::Signature = k.sign(tbs_der);
                    sig.to_der().as_bytes().to_vec()
                }
            })
        }
    }

    /// A signer whose token fails or answers with the given bytes; counts calls.
    struct FixedSigner {
        alg: AlgorithmIdentifierOwned,
        answer: Result<Vec<u8>, String>,
        calls: usize,
    }

    impl TbsSigner for FixedSigner {
        fn algorithm(&self) -> AlgorithmIdentifierOwned {
            self.alg.clone()
        }
        fn sign_tbs(&mut self, _tbs_der: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
            self.calls += 1;
            self.answer.clone().map_err(Into::into)
        }
    }

    /// Two software RSA keys (the CA's; a user's, which also plays the wrong or other key).
    fn rsa_keys() -> &'static [rsa::RsaPrivateKey; 2] {
        static KEYS: OnceLock<[rsa::RsaPrivateKey; 2]> = OnceLock::new();
        // RSA key generation is slow in debug builds: make the keys in parallel.
        KEYS.get_or_init(|| {
            let gen = || {
                std::thread::spawn(|| {
                    rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap()
                })
            };
            [gen(), gen()].map(|t| t.join().unwrap())
        })
    }

    fn rsa_signer(i: usize) -> (TestSigner, Vec<u8>) {
        let key = rsa_keys()[i].clone();
        let spki = key.to_public_key().to_public_key_der().unwrap().into_vec();
        (
            TestSigner::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(key))),
            spki,
        )
    }

    fn p256_signer() -> (TestSigner, Vec<u8>) {
        let key = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
        let spki = key.verifying_key().to_public_key_der().unwrap().into_vec();
        (TestSigner::P256(key), spki)
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn params<'a>(
        subject: &'a Name,
        spki_der: &'a [u8],
        serial: &'a [u8],
        profile: CertProfile,
        email: Option<&'a str>,
    ) -> CertParams<'a> {
        CertParams {
            subject,
            spki_der,
            serial,
            not_before: now() - Duration::from_secs(60),
            not_after: now() + 365 * DAY,
            profile,
            email,
        }
    }

    fn make_ca(signer: &mut TestSigner, spki: &[u8], cn: &str) -> Certificate {
        let subject = name(&format!("CN={cn},O=keyward test"));
        let serial = random_serial().unwrap();
        self_signed_ca(
            &params(&subject, spki, &serial, CertProfile::Ca, None),
            signer,
        )
        .unwrap()
    }

    fn ext<T: for<'a> Decode<'a> + AssociatedOid>(c: &Certificate) -> (bool, T) {
        c.tbs_certificate
            .get::<T>()
            .unwrap()
            .expect("extension present")
    }

    fn rsa_ca() -> (TestSigner, Certificate) {
        let (mut signer, spki) = rsa_signer(0);
        let ca = make_ca(&mut signer, &spki, "Test CA");
        (signer, ca)
    }

    fn issue_user(
        ca: &Certificate,
        signer: &mut dyn TbsSigner,
        profile: CertProfile,
        email: Option<&str>,
    ) -> Certificate {
        let (_, spki) = rsa_signer(1);
        let serial = random_serial().unwrap();
        let subject = name("CN=alice,O=keyward test");
        issue(
            ca,
            &params(&subject, &spki, &serial, profile, email),
            signer,
        )
        .unwrap()
    }

    #[test]
    fn random_serials_are_positive_16_bytes_and_differ() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a[0] != 0 && a[0] & 0x80 == 0);
        assert_ne!(a, b);
        assert_eq!(serial_number(&a).unwrap().as_bytes(), &a[..]);
    }

    #[test]
    fn ca_certificate_has_the_ca_profile() {
        let (_, ca) = rsa_ca();
        let tbs = &ca.tbs_certificate;
        assert_eq!(tbs.version, Version::V3);
        assert_eq!(tbs.issuer, tbs.subject);
        let (crit, bc) = ext::<BasicConstraints>(&ca);
        assert!(crit && bc.ca && bc.path_len_constraint.is_none());
        let (crit, ku) = ext::<KeyUsage>(&ca);
        assert!(crit && ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        let (_, ski) = ext::<SubjectKeyIdentifier>(&ca);
        let (_, aki) = ext::<AuthorityKeyIdentifier>(&ca);
        assert_eq!(ski.0.as_bytes().len(), 20);
        assert_eq!(aki.key_identifier.unwrap(), ski.0);
        assert!(tbs.get::<ExtendedKeyUsage>().unwrap().is_none());
        verify_issued_by(&ca, &ca).unwrap();
        assert_eq!(common_name(&ca).as_deref(), Some("Test CA"));
        assert_eq!(email_of(&ca), None);
        assert_eq!(key_id_of(&ca), ski.0.as_bytes());
    }

    #[test]
    fn the_issuing_policy_puts_policies_cdp_and_aia_in_issued_certificates_only() {
        let (mut signer, ca) = rsa_ca();
        let (_, spki) = rsa_signer(1);
        let policy = IssuingPolicy::new(
            Some("1.3.6.1.4.1.99999.7"),
            Some("http://pki.example.org/ca.crl"),
            Some("http://pki.example.org/ca.crt"),
        )
        .unwrap();
        let org = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.7");
        let subject = user_subject("alice", Some("alice@example.org")).unwrap();
        for profile in [
            CertProfile::AuthorityExchange,
            CertProfile::UserSigning,
            CertProfile::UserEncryption,
        ] {
            let serial = random_serial().unwrap();
            let p = params(&subject, &spki, &serial, profile, Some("alice@example.org"));
            let c = issue_with_policy(&ca, &p, &policy, &mut signer).unwrap();
            let (crit, policies) = ext::<CertificatePolicies>(&c);
            assert!(!crit);
            let oids: Vec<_> = policies.0.iter().map(|p| p.policy_identifier).collect();
            if profile == CertProfile::AuthorityExchange {
                assert_eq!(oids, vec![org]);
            } else {
                assert_eq!(oids, vec![SMIME_MAILBOX_STRICT, org]);
            }
            assert_eq!(
                crl_urls_of(&c),
                vec!["http://pki.example.org/ca.crl".to_string()]
            );
            let (_, aia) = ext::<AuthorityInfoAccessSyntax>(&c);
            assert_eq!(aia.0[0].access_method, rfc5280::ID_AD_CA_ISSUERS);
        }
        // Without a policy: the BR OID on user certificates only, no CDP, no AIA.
        let serial = random_serial().unwrap();
        let p = params(
            &subject,
            &spki,
            &serial,
            CertProfile::UserSigning,
            Some("alice@example.org"),
        );
        let c = issue(&ca, &p, &mut signer).unwrap();
        let (_, policies) = ext::<CertificatePolicies>(&c);
        assert_eq!(policies.0.len(), 1);
        assert!(crl_urls_of(&c).is_empty());
        assert!(c
            .tbs_certificate
            .get::<AuthorityInfoAccessSyntax>()
            .unwrap()
            .is_none());
        assert!(ca
            .tbs_certificate
            .get::<CertificatePolicies>()
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_issuing_options_are_refused() {
        for (oid, crl, aia) in [
            (Some("not.an.oid"), None, None),
            (Some("2.23.140.1.5.1.3"), None, None),
            (None, Some("ldap://x/y"), None),
            (None, Some("http://a b/c"), None),
            (None, None, Some("https://x/y")),
        ] {
            assert!(
                matches!(
                    IssuingPolicy::new(oid, crl, aia),
                    Err(X509Error::InvalidPolicy(_))
                ),
                "{oid:?} {crl:?} {aia:?}"
            );
        }
        assert!(IssuingPolicy::new(None, Some("file:///srv/ca.crl"), None).is_ok());
    }

    #[test]
    fn the_user_subject_is_the_mailbox_or_empty_when_it_cannot_be_a_common_name() {
        let n = user_subject("alice", Some("alice@example.org")).unwrap();
        assert_eq!(n.to_string(), "CN=alice@example.org");
        let long = format!("{}@example.org", "a".repeat(60));
        assert!(user_subject("alice", Some(&long)).unwrap().is_empty());
        assert_eq!(user_subject("alice", None).unwrap().to_string(), "CN=alice");
        // An empty subject makes the SAN critical (RFC 5280 4.2.1.6).
        let (mut signer, ca) = rsa_ca();
        let (_, spki) = rsa_signer(1);
        let empty = user_subject("alice", Some(&long)).unwrap();
        let serial = random_serial().unwrap();
        let c = issue(
            &ca,
            &params(
                &empty,
                &spki,
                &serial,
                CertProfile::UserSigning,
                Some(&long),
            ),
            &mut signer,
        )
        .unwrap();
        assert!(ext::<SubjectAltName>(&c).0);
    }

    #[test]
    fn the_crl_number_reads_back() {
        let (mut signer, ca) = rsa_ca();
        let crl = crl(&ca, &[], 300, now(), now() + DAY, &mut signer).unwrap();
        assert_eq!(crl_number_of(&crl), Some(300));
    }

    #[test]
    fn each_profile_gets_its_extensions() {
        let (mut signer, ca) = rsa_ca();
        let ca_ski = key_id_of(&ca);
        let email = "alice@example.org";
        for profile in [
            CertProfile::AuthorityExchange,
            CertProfile::UserSigning,
            CertProfile::UserEncryption,
            CertProfile::Ca,
        ] {
            let c = issue_user(&ca, &mut signer, profile, Some(email));
            verify_issued_by(&c, &ca).unwrap();
            assert_eq!(c.tbs_certificate.issuer, ca.tbs_certificate.subject);
            assert_eq!(c.signature_algorithm, rsa_sha256_algorithm());
            let (crit, bc) = ext::<BasicConstraints>(&c);
            assert!(crit);
            assert_eq!(bc.ca, profile == CertProfile::Ca);
            let (crit, ku) = ext::<KeyUsage>(&c);
            assert!(crit);
            let (_, aki) = ext::<AuthorityKeyIdentifier>(&c);
            assert_eq!(aki.key_identifier.unwrap().as_bytes(), &ca_ski[..]);
            let (_, ski) = ext::<SubjectKeyIdentifier>(&c);
            assert_ne!(ski.0.as_bytes(), &ca_ski[..]);
            let eku = c
                .tbs_certificate
                .get::<ExtendedKeyUsage>()
                .unwrap()
                .map(|(_, e)| e.0);
            let (crit, _) = ext::<SubjectAltName>(&c);
            assert!(!crit, "SAN is not critical with a subject name");
            assert_eq!(email_of(&c).as_deref(), Some(email));
            assert_eq!(common_name(&c).as_deref(), Some("alice"));
            match profile {
                CertProfile::Ca => assert!(ku.key_cert_sign() && ku.crl_sign() && eku.is_none()),
                CertProfile::AuthorityExchange => {
                    assert_eq!(ku.0, KeyUsages::KeyEncipherment);
                    assert!(eku.is_none());
                }
                CertProfile::UserSigning => {
                    assert_eq!(
                        ku.0,
                        KeyUsages::DigitalSignature | KeyUsages::NonRepudiation
                    );
                    // SMBR strict: emailProtection only, no clientAuth.
                    assert_eq!(eku.unwrap(), vec![rfc5280::ID_KP_EMAIL_PROTECTION]);
                }
                CertProfile::UserEncryption => {
                    // SMBR strict: keyEncipherment only, no dataEncipherment.
                    assert_eq!(ku.0, KeyUsages::KeyEncipherment);
                    assert_eq!(eku.unwrap(), vec![rfc5280::ID_KP_EMAIL_PROTECTION]);
                }
                CertProfile::TlsServer => {
                    assert_eq!(ku.0, FlagSet::from(KeyUsages::DigitalSignature));
                    assert_eq!(eku.unwrap(), vec![rfc5280::ID_KP_SERVER_AUTH]);
                }
            }
        }
    }

    #[test]
    fn no_email_means_no_san_and_empty_subject_needs_email() {
        let (mut signer, ca) = rsa_ca();
        let c = issue_user(&ca, &mut signer, CertProfile::UserSigning, None);
        assert!(c.tbs_certificate.get::<SubjectAltName>().unwrap().is_none());
        assert_eq!(email_of(&c), None);
        // No mailbox: no S/MIME certificate in the BR's sense, so not their policy OID.
        assert!(c
            .tbs_certificate
            .get::<CertificatePolicies>()
            .unwrap()
            .is_none());

        let (_, spki) = rsa_signer(1);
        let serial = random_serial().unwrap();
        let empty = Name::default();
        let p = params(&empty, &spki, &serial, CertProfile::UserSigning, None);
        assert!(matches!(
            issue(&ca, &p, &mut signer),
            Err(X509Error::EmptySubject)
        ));
        let p = params(
            &empty,
            &spki,
            &serial,
            CertProfile::UserSigning,
            Some("bob@example.org"),
        );
        let c = issue(&ca, &p, &mut signer).unwrap();
        let (crit, _) = ext::<SubjectAltName>(&c);
        assert!(crit, "SAN is critical when the subject is empty");
        assert_eq!(common_name(&c), None);
        for bad in ["no-at-sign", "ü@example.org", "a b@example.org", "@x", "a@"] {
            let p = params(&empty, &spki, &serial, CertProfile::UserSigning, Some(bad));
            assert!(
                matches!(issue(&ca, &p, &mut signer), Err(X509Error::InvalidEmail(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn p256_ca_issues_and_verifies() {
        let (mut signer, spki) = p256_signer();
        let ca = make_ca(&mut signer, &spki, "EC CA");
        assert_eq!(ca.signature_algorithm, ecdsa_p256_sha256_algorithm());
        verify_issued_by(&ca, &ca).unwrap();
        // An RSA user key under the EC CA, and an EC user key.
        let rsa_user = issue_user(&ca, &mut signer, CertProfile::UserEncryption, None);
        verify_issued_by(&rsa_user, &ca).unwrap();
        let (_, ec_spki) = p256_signer();
        let serial = random_serial().unwrap();
        let subject = name("CN=bob");
        let p = params(&subject, &ec_spki, &serial, CertProfile::UserSigning, None);
        let ec_user = issue(&ca, &p, &mut signer).unwrap();
        verify_issued_by(&ec_user, &ca).unwrap();
        assert_eq!(spki_der_of(&ec_user), ec_spki);
    }

    #[test]
    fn pem_and_der_round_trip() {
        let (mut signer, ca) = rsa_ca();
        let user = issue_user(&ca, &mut signer, CertProfile::UserSigning, Some("a@b.c"));
        let pem = cert_to_pem(&ca).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(certs_from_pem(&pem).unwrap(), vec![ca.clone()]);
        let der = cert_to_der(&user).unwrap();
        assert_eq!(cert_from_der(&der).unwrap(), user);

        // A bundle with text around, another kind of block and CRLF line endings.
        let bundle = format!(
            "subject=CN=alice\n{}\n-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n{}",
            cert_to_pem(&user).unwrap(),
            pem.replace('\n', "\r\n")
        );
        assert_eq!(
            certs_from_pem(&bundle).unwrap(),
            vec![user.clone(), ca.clone()]
        );

        for text in [
            "",
            "\n",
            "hello",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
        ] {
            let err = certs_from_pem(text).unwrap_err();
            assert!(matches!(err, X509Error::NoPemBlock("CERTIFICATE")), "{err}");
            assert!(err.to_string().contains("BEGIN CERTIFICATE"));
        }
        let truncated = &pem[..pem.len() - 30];
        assert!(matches!(
            certs_from_pem(truncated),
            Err(X509Error::Decode { .. })
        ));
        assert!(matches!(
            cert_from_der(&der[..der.len() - 1]),
            Err(X509Error::Decode { .. })
        ));
        assert_eq!(serial_hex(&user).len(), 32);
    }

    #[test]
    fn tampered_or_foreign_certificates_fail() {
        let (mut signer, ca) = rsa_ca();
        let user = issue_user(&ca, &mut signer, CertProfile::UserSigning, Some("a@b.c"));

        // Changed subject.
        let mut t = user.clone();
        t.tbs_certificate.subject = name("CN=mallory");
        assert!(matches!(
            verify_issued_by(&t, &ca),
            Err(X509Error::BadSignature("certificate"))
        ));
        // Flipped signature bit.
        let mut t = user.clone();
        let mut sig = t.signature.raw_bytes().to_vec();
        sig[10] ^= 1;
        t.signature = BitString::from_bytes(&sig).unwrap();
        assert!(verify_issued_by(&t, &ca).is_err());
        // Truncated signature.
        let mut t = user.clone();
        t.signature = BitString::from_bytes(&sig[..5]).unwrap();
        assert!(verify_issued_by(&t, &ca).is_err());

        // Another CA with another name.
        let (mut other_signer, other_spki) = rsa_signer(1);
        let other = make_ca(&mut other_signer, &other_spki, "Other CA");
        let err = verify_issued_by(&user, &other).unwrap_err();
        assert!(matches!(err, X509Error::IssuerMismatch { .. }), "{err}");
        assert!(err.to_string().contains("Other CA"));
        // Another CA with the same name but another key.
        let impostor = make_ca(&mut other_signer, &other_spki, "Test CA");
        assert!(matches!(
            verify_issued_by(&user, &impostor),
            Err(X509Error::BadSignature(_))
        ));
        // An EC CA with the same name: the algorithm does not fit its key.
        let (mut ec_signer, ec_spki) = p256_signer();
        let ec_impostor = make_ca(&mut ec_signer, &ec_spki, "Test CA");
        assert!(verify_issued_by(&user, &ec_impostor).is_err());
    }

    #[test]
    fn signer_problems_are_caught() {
        let (_, ca) = rsa_ca();
        let (_, spki) = rsa_signer(1);
        let serial = random_serial().unwrap();
        let subject = name("CN=alice");
        let p = params(&subject, &spki, &serial, CertProfile::UserSigning, None);

        // The token holds another key than the CA certificate's.
        let (mut wrong, _) = rsa_signer(1);
        assert!(matches!(
            issue(&ca, &p, &mut wrong),
            Err(X509Error::SignerKeyMismatch)
        ));
        // The token fails.
        let mut failing = FixedSigner {
            alg: rsa_sha256_algorithm(),
            answer: Err("CKR_USER_NOT_LOGGED_IN".into()),
            calls: 0,
        };
        let err = issue(&ca, &p, &mut failing).unwrap_err();
        assert!(err.to_string().contains("CKR_USER_NOT_LOGGED_IN"), "{err}");
        let cause = std::error::Error::source(&err).expect("the token's error is kept");
        assert_eq!(cause.to_string(), "CKR_USER_NOT_LOGGED_IN");
        // An EC algorithm for an RSA CA is refused before the token is asked.
        let mut ec = FixedSigner {
            alg: ecdsa_p256_sha256_algorithm(),
            answer: Ok(vec![1; 64]),
            calls: 0,
        };
        assert!(matches!(
            issue(&ca, &p, &mut ec),
            Err(X509Error::AlgorithmKeyMismatch { .. })
        ));
        assert_eq!(ec.calls, 0);
        // An unsupported algorithm (RSA-PSS) likewise.
        let mut pss = FixedSigner {
            alg: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_RSASSA_PSS,
                parameters: None,
            },
            answer: Ok(vec![1; 256]),
            calls: 0,
        };
        assert!(matches!(
            issue(&ca, &p, &mut pss),
            Err(X509Error::UnsupportedAlgorithm(_))
        ));
        assert_eq!(pss.calls, 0);

        // A raw r||s ECDSA signature is malformed; ecdsa_raw_to_der fixes it.
        let (TestSigner::P256(key), ec_spki) = p256_signer() else {
            unreachable!()
        };
        let ec_ca_subject = name("CN=EC CA");
        let p_ca = params(&ec_ca_subject, &ec_spki, &serial, CertProfile::Ca, None);
        struct Raw(p256::ecdsa::SigningKey, bool);
        impl TbsSigner for Raw {
            fn algorithm(&self) -> AlgorithmIdentifierOwned {
                ecdsa_p256_sha256_algorithm()
            }
            fn sign_tbs(&mut self, tbs: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
                let sig: p256::ecdsa::Signature = self.0.sign(tbs);
                let raw = sig.to_bytes().to_vec();
                if self.1 {
                    ecdsa_raw_to_der(&raw).map_err(Into::into)
                } else {
                    Ok(raw)
                }
            }
        }
        let err = self_signed_ca(&p_ca, &mut Raw(key.clone(), false)).unwrap_err();
        assert!(
            matches!(err, X509Error::MalformedSignature { len: 64, .. }),
            "{err}"
        );
        let ec_ca = self_signed_ca(&p_ca, &mut Raw(key, true)).unwrap();
        verify_issued_by(&ec_ca, &ec_ca).unwrap();
        assert!(ecdsa_raw_to_der(&[0; 10]).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let (mut signer, ca) = rsa_ca();
        let (_, spki) = rsa_signer(1);
        let subject = name("CN=alice");
        for (serial, ok) in [
            (vec![], false),
            (vec![0, 0], false),
            (vec![1], true),
            (vec![0xff; 20], false), // 21 bytes once the sign byte is added
            (vec![0x7f; 20], true),
            (vec![0x7f; 21], false),
        ] {
            let p = params(&subject, &spki, &serial, CertProfile::UserSigning, None);
            let r = issue(&ca, &p, &mut signer);
            assert_eq!(r.is_ok(), ok, "serial {serial:02x?}: {r:?}");
            if !ok {
                assert!(matches!(r, Err(X509Error::InvalidSerial(_))));
            }
        }
        let serial = [5u8];
        let mut p = params(&subject, &spki, &serial, CertProfile::UserSigning, None);
        p.not_after = p.not_before;
        assert!(matches!(
            issue(&ca, &p, &mut signer),
            Err(X509Error::EmptyPeriod { .. })
        ));
        let p = params(
            &subject,
            b"not a key",
            &serial,
            CertProfile::UserSigning,
            None,
        );
        assert!(matches!(
            issue(&ca, &p, &mut signer),
            Err(X509Error::BadPublicKey { .. })
        ));
        // self_signed_ca wants the CA profile; issue wants a CA issuer.
        let p = params(&subject, &spki, &serial, CertProfile::UserSigning, None);
        assert!(matches!(
            self_signed_ca(&p, &mut signer),
            Err(X509Error::NotCaProfile)
        ));
        let user = issue(&ca, &p, &mut signer).unwrap();
        assert!(matches!(
            issue(&user, &p, &mut signer),
            Err(X509Error::IssuerNotCa(_))
        ));
        let now = now();
        assert!(matches!(
            crl(&user, &[], 1, now, now + DAY, &mut signer),
            Err(X509Error::IssuerNotCa(_))
        ));
    }

    #[test]
    fn times_use_utctime_before_2050_and_generalizedtime_after() {
        let y2049 = UNIX_EPOCH + Duration::from_secs(2_524_607_999); // 2049-12-31T23:59:59Z
        let y2050 = y2049 + Duration::from_secs(1);
        assert!(matches!(to_time(y2049).unwrap(), Time::UtcTime(_)));
        assert!(matches!(to_time(y2050).unwrap(), Time::GeneralTime(_)));
        assert_eq!(to_time(y2050).unwrap().to_string(), "2050-01-01T00:00:00Z");
        assert!(to_time(UNIX_EPOCH - Duration::from_secs(1)).is_err());

        let (mut signer, ca) = rsa_ca();
        let (_, spki) = rsa_signer(1);
        let subject = name("CN=long");
        let serial = [9u8];
        let mut p = params(&subject, &spki, &serial, CertProfile::UserSigning, None);
        p.not_after = y2050 + 10 * 365 * DAY;
        let c = issue(&ca, &p, &mut signer).unwrap();
        let v = c.tbs_certificate.validity;
        assert!(matches!(v.not_before, Time::UtcTime(_)));
        assert!(matches!(v.not_after, Time::GeneralTime(_)));
        verify_issued_by(&c, &ca).unwrap();
    }

    #[test]
    fn validity_is_checked_with_dates_in_the_message() {
        let (mut signer, ca) = rsa_ca();
        let (_, spki) = rsa_signer(1);
        let subject = name("CN=alice");
        let serial = [7u8];
        let start = UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01
        let mut p = params(&subject, &spki, &serial, CertProfile::UserSigning, None);
        p.not_before = start;
        p.not_after = start + 30 * DAY;
        let c = issue(&ca, &p, &mut signer).unwrap();
        check_validity(&c, start).unwrap();
        check_validity(&c, start + DAY).unwrap();
        check_validity(&c, start + 30 * DAY).unwrap();
        let err = check_validity(&c, start - Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, X509Error::NotYetValid { .. }));
        assert!(err.to_string().contains("2030-01-01T00:00:00Z"), "{err}");
        assert!(err.to_string().contains("2029-12-31T23:59:59Z"), "{err}");
        let err = check_validity(&c, start + 31 * DAY).unwrap_err();
        assert!(matches!(err, X509Error::Expired { .. }));
        assert!(err.to_string().contains("2030-01-31T00:00:00Z"), "{err}");
    }

    #[test]
    fn crl_with_two_entries_verifies_and_lists_them() {
        let (mut signer, ca) = rsa_ca();
        let a = issue_user(&ca, &mut signer, CertProfile::UserSigning, None);
        let b = issue_user(&ca, &mut signer, CertProfile::UserEncryption, None);
        let c = issue_user(&ca, &mut signer, CertProfile::UserEncryption, None);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let revoked = [
            RevokedEntry {
                serial: a.tbs_certificate.serial_number.as_bytes().to_vec(),
                revoked_at: t,
                reason: Some(CrlReason::KeyCompromise),
            },
            RevokedEntry {
                serial: b.tbs_certificate.serial_number.as_bytes().to_vec(),
                revoked_at: t,
                reason: Some(CrlReason::Unspecified),
            },
        ];
        let list = crl(&ca, &revoked, 42, t, t + 7 * DAY, &mut signer).unwrap();
        verify_crl(&list, &ca).unwrap();
        let tbs = &list.tbs_cert_list;
        assert_eq!(tbs.version, Version::V2);
        assert_eq!(tbs.issuer, ca.tbs_certificate.subject);
        assert!(matches!(tbs.this_update, Time::UtcTime(_)));
        assert_eq!(tbs.next_update.unwrap().to_system_time(), t + 7 * DAY);
        let exts = tbs.crl_extensions.as_deref().unwrap();
        let number = exts.iter().find(|e| e.extn_id == CrlNumber::OID).unwrap();
        assert_eq!(
            CrlNumber::from_der(number.extn_value.as_bytes())
                .unwrap()
                .0
                .as_bytes(),
            &[42]
        );
        let aki = exts
            .iter()
            .find(|e| e.extn_id == AuthorityKeyIdentifier::OID)
            .unwrap();
        let aki = AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes()).unwrap();
        assert_eq!(aki.key_identifier.unwrap().as_bytes(), &key_id_of(&ca)[..]);

        assert!(is_revoked(
            &list,
            a.tbs_certificate.serial_number.as_bytes()
        ));
        assert!(is_revoked(
            &list,
            b.tbs_certificate.serial_number.as_bytes()
        ));
        assert!(!is_revoked(
            &list,
            c.tbs_certificate.serial_number.as_bytes()
        ));
        let mut padded = vec![0, 0];
        padded.extend_from_slice(a.tbs_certificate.serial_number.as_bytes());
        assert!(is_revoked(&list, &padded));
        assert_eq!(
            revocation(&list, &padded),
            Some((t, Some(CrlReason::KeyCompromise)))
        );
        // Unspecified writes no reasonCode.
        let entry_b = &tbs.revoked_certificates.as_ref().unwrap()[1];
        assert!(entry_b.crl_entry_extensions.is_none());
        assert_eq!(
            revocation(&list, b.tbs_certificate.serial_number.as_bytes()),
            Some((t, None))
        );

        // PEM/DER round trip.
        let pem = crl_to_pem(&list).unwrap();
        assert!(pem.starts_with("-----BEGIN X509 CRL-----\n"));
        assert_eq!(crl_from_pem(&pem).unwrap(), list);
        assert_eq!(crl_from_der(&crl_to_der(&list).unwrap()).unwrap(), list);
        assert!(matches!(
            crl_from_pem(&cert_to_pem(&ca).unwrap()),
            Err(X509Error::NoPemBlock("X509 CRL"))
        ));

        // Tampered: an entry removed.
        let mut t2 = list.clone();
        t2.tbs_cert_list
            .revoked_certificates
            .as_mut()
            .unwrap()
            .pop();
        assert!(matches!(
            verify_crl(&t2, &ca),
            Err(X509Error::BadSignature("CRL"))
        ));
        // Another issuer.
        let (mut other_signer, other_spki) = rsa_signer(1);
        let other = make_ca(&mut other_signer, &other_spki, "Other CA");
        assert!(matches!(
            verify_crl(&list, &other),
            Err(X509Error::IssuerMismatch { .. })
        ));

        // An empty CRL has no revokedCertificates field.
        let empty = crl(&ca, &[], 43, t, t + DAY, &mut signer).unwrap();
        verify_crl(&empty, &ca).unwrap();
        assert!(empty.tbs_cert_list.revoked_certificates.is_none());
        assert!(!is_revoked(&empty, &[1]));
        assert!(matches!(
            crl(&ca, &[], 44, t, t, &mut signer),
            Err(X509Error::EmptyPeriod { .. })
        ));
    }

    #[test]
    fn crl_reasons_parse_and_display() {
        for r in CrlReason::ALL {
            assert_eq!(r.to_string().parse::<CrlReason>().unwrap(), r);
        }
        assert_eq!(CrlReason::KeyCompromise.to_string(), "keyCompromise");
        for s in [
            "key-compromise",
            "KEY_COMPROMISE",
            "keycompromise",
            "keyCompromise",
        ] {
            assert_eq!(s.parse::<CrlReason>().unwrap(), CrlReason::KeyCompromise);
        }
        assert_eq!(
            "cessation-of-operation".parse::<CrlReason>().unwrap(),
            CrlReason::CessationOfOperation
        );
        let err = "stolen".parse::<CrlReason>().unwrap_err();
        assert!(err.to_string().contains("keyCompromise"), "{err}");
    }

    // ---- interop with the real openssl ----

    fn openssl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}); apt-get install openssl"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn openssl_interop(mut signer: TestSigner, ca_spki: &[u8]) {
        let ca = make_ca(&mut signer, ca_spki, "Interop CA");
        let signing = issue_user(
            &ca,
            &mut signer,
            CertProfile::UserSigning,
            Some("alice@example.org"),
        );
        let encryption = issue_user(
            &ca,
            &mut signer,
            CertProfile::UserEncryption,
            Some("alice@example.org"),
        );
        let exchange = issue_user(&ca, &mut signer, CertProfile::AuthorityExchange, None);
        let now = now();
        let revoked = [RevokedEntry {
            serial: signing.tbs_certificate.serial_number.as_bytes().to_vec(),
            revoked_at: now - Duration::from_secs(30),
            reason: Some(CrlReason::KeyCompromise),
        }];
        let list = crl(
            &ca,
            &revoked,
            1,
            now - Duration::from_secs(30),
            now + DAY,
            &mut signer,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |f: &str, s: String| std::fs::write(dir.path().join(f), s).unwrap();
        write("ca.pem", cert_to_pem(&ca).unwrap());
        write("sign.pem", cert_to_pem(&signing).unwrap());
        write("enc.pem", cert_to_pem(&encryption).unwrap());
        write("kx.pem", cert_to_pem(&exchange).unwrap());
        write("crl.pem", crl_to_pem(&list).unwrap());
        let d = dir.path();

        for (cert, purpose) in [
            ("sign.pem", Some("smimesign")),
            ("enc.pem", Some("smimeencrypt")),
            ("kx.pem", None),
            ("ca.pem", None),
        ] {
            let (ok, out) = openssl(d, &["verify", "-CAfile", "ca.pem", cert]);
            assert!(ok && out.contains(": OK"), "{cert}: {out}");
            if let Some(purpose) = purpose {
                let (ok, out) = openssl(
                    d,
                    &["verify", "-purpose", purpose, "-CAfile", "ca.pem", cert],
                );
                assert!(ok, "{cert} for {purpose}: {out}");
            }
        }
        let (ok, out) = openssl(
            d,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                "sign.pem",
            ],
        );
        assert!(!ok && out.contains("certificate revoked"), "{out}");
        let (ok, out) = openssl(
            d,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                "enc.pem",
            ],
        );
        assert!(ok, "{out}");
        let (ok, out) = openssl(d, &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"]);
        assert!(ok && out.contains("verify OK"), "{out}");
        let (ok, out) = openssl(d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
        assert!(ok, "{out}");
        for want in [
            "Version 2",
            "X509v3 CRL Number: \n                1",
            "X509v3 Authority Key Identifier",
            "Key Compromise",
            "CN = Interop CA",
        ] {
            assert!(out.contains(want), "CRL text lacks {want:?}:\n{out}");
        }

        let (ok, out) = openssl(
            d,
            &[
                "x509",
                "-in",
                "sign.pem",
                "-noout",
                "-ext",
                "keyUsage,extendedKeyUsage,subjectAltName",
            ],
        );
        assert!(ok, "{out}");
        for want in [
            "X509v3 Key Usage: critical",
            "Digital Signature, Non Repudiation",
            "X509v3 Extended Key Usage: \n    E-mail Protection\n",
            "email:alice@example.org",
        ] {
            assert!(out.contains(want), "signing cert lacks {want:?}:\n{out}");
        }
        let (ok, out) = openssl(
            d,
            &[
                "x509",
                "-in",
                "enc.pem",
                "-noout",
                "-ext",
                "keyUsage,extendedKeyUsage,subjectAltName,basicConstraints",
            ],
        );
        assert!(ok, "{out}");
        for want in [
            "X509v3 Key Usage: critical\n    Key Encipherment\n",
            "E-mail Protection",
            "email:alice@example.org",
            "CA:FALSE",
        ] {
            assert!(out.contains(want), "encryption cert lacks {want:?}:\n{out}");
        }
        let (ok, out) = openssl(d, &["x509", "-in", "ca.pem", "-noout", "-text", "-serial"]);
        assert!(ok, "{out}");
        for want in [
            "Version: 3 (0x2)",
            "X509v3 Basic Constraints: critical\n                CA:TRUE",
            "Certificate Sign, CRL Sign",
            "X509v3 Subject Key Identifier",
        ] {
            assert!(out.contains(want), "CA cert lacks {want:?}:\n{out}");
        }
        assert!(
            out.contains(&format!("serial={}", serial_hex(&ca))),
            "{out}"
        );
    }

    #[test]
    fn openssl_accepts_rsa_ca_certificates_and_crl() {
        let (signer, spki) = rsa_signer(0);
        openssl_interop(signer, &spki);
    }

    #[test]
    fn openssl_accepts_p256_ca_certificates_and_crl() {
        let (signer, spki) = p256_signer();
        openssl_interop(signer, &spki);
    }

    #[test]
    fn certificates_made_by_openssl_verify_here() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (ok, out) = openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=OpenSSL CA",
                "-days",
                "2",
                "-sha256",
            ],
        );
        assert!(ok, "{out}");
        let ca_text = std::fs::read_to_string(d.join("ca.pem")).unwrap();
        let ca = certs_from_pem(&ca_text).unwrap().remove(0);
        verify_issued_by(&ca, &ca).unwrap();
        check_validity(&ca, SystemTime::now()).unwrap();
        assert_eq!(common_name(&ca).as_deref(), Some("OpenSSL CA"));
    }
}
