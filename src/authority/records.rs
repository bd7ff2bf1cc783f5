//! The records the authority keeps: its configuration, its users with their temporary keys,
//! certificates, revocations and archive entries (stored as JSON bodies, see `docs/formats.md`).

use serde::{Deserialize, Serialize};

use super::tempkey::TempKeyRecord;
use crate::token::OaepHash;

/// The state schema this keyward writes.
pub const SCHEMA: u32 = 2;

/// `authority.toml`: who the authority is and where its keys are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorityConfig {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The CA's subject, as given to `authority init --name`.
    pub name: String,
    /// The authority token's label.
    pub token_label: String,
    /// The authority token's serial.
    pub token_serial: String,
    /// `CKA_ID` of the CA signing key, hex.
    pub ca_key_id: String,
    /// `CKA_ID` of the exchange key (decrypts temporary keys), hex.
    pub exchange_key_id: String,
    /// `CKA_ID` of the AES archive key, hex.
    pub archive_key_id: String,
    /// RSA-OAEP hash the authority's token decrypts with.
    pub exchange_oaep: OaepHash,
    /// `authority init --allow-import`: keys may be delivered by import (`C_CreateObject`) to
    /// user tokens that cannot unwrap them. Absent: no.
    #[serde(default)]
    pub allow_import: bool,
    /// The authority's token wraps with `CKM_AES_CBC_PAD` (probed at init): it can deliver to
    /// tokens that unwrap only that way. Absent: no.
    #[serde(default)]
    pub wraps_cbc_pad: bool,
    /// The last CRL number issued.
    #[serde(default)]
    pub crl_number: u64,
    /// Audit log head: sequence number.
    #[serde(default)]
    pub log_seq: u64,
    /// Audit log head: hash.
    #[serde(default)]
    pub log_hash: String,
    /// When created, RFC 3339.
    pub created: String,
    /// The CA certificate and the exchange certificate, PEM (what `authority cert` prints).
    #[serde(default)]
    pub ca_pem: String,
    /// `authority init --policy-oid/--crl-url/--aia-url`: what goes into every certificate
    /// issued after. Absent: none of these.
    #[serde(default, skip_serializing_if = "IssuingOptions::is_empty")]
    pub issuing: IssuingOptions,
    /// The CA generations before the current one, oldest first (`authority rollover --ca`):
    /// each still verifies what it issued and signs CRLs for it. Absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_cas: Vec<PreviousCa>,
    /// Fields from a newer keyward, kept.
    #[serde(flatten)]
    pub extra: toml::Table,
}

impl AuthorityConfig {
    /// The authority's lasting identity: the `CKA_ID` of its first CA key (hex), which names
    /// the token's head objects and is what operators' approvals are bound to. It stays the
    /// same across `authority rollover --ca`.
    pub fn authority_id(&self) -> &str {
        self.previous_cas
            .first()
            .map_or(self.ca_key_id.as_str(), |p| p.key_id.as_str())
    }

    /// The link certificates of every CA rollover, PEM, newest first (empty when the CA key
    /// never rolled over): what relying parties need, next to either root, to reach the other.
    pub fn links_pem(&self) -> String {
        self.previous_cas
            .iter()
            .rev()
            .map(|p| p.links_pem.as_str())
            .collect()
    }

    /// The CA generation now issuing, counted from 1.
    pub fn ca_generation(&self) -> usize {
        self.previous_cas.len() + 1
    }
}

/// A CA generation retired by `authority rollover --ca`: its key stays on the token, to sign
/// CRLs for the certificates it issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreviousCa {
    /// `CKA_ID` of its key, hex.
    pub key_id: String,
    /// Its self-signed CA certificate, PEM.
    pub cert_pem: String,
    /// The link certificates made when it was retired, PEM: the next generation's key
    /// certified by this one (new-with-old), then this key certified by the next
    /// (old-with-new).
    pub links_pem: String,
    /// The last CRL number it issued.
    #[serde(default)]
    pub crl_number: u64,
    /// Its CRL distribution point (the URL its certificates name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_url: Option<String>,
    /// Retired at, RFC 3339.
    pub retired: String,
}

/// The authority's own policy OID and publication URLs, as given to `authority init`
/// (checked there; see [`crate::pki::x509::IssuingPolicy`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuingOptions {
    /// The organisation's certificate policy OID, dotted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_oid: Option<String>,
    /// Where the CRL is published: the cRLDistributionPoints URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_url: Option<String>,
    /// Where the CA certificate is published: the AIA caIssuers URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aia_url: Option<String>,
}

impl IssuingOptions {
    /// Nothing configured (an authority made before these options, or without them).
    pub fn is_empty(&self) -> bool {
        *self == IssuingOptions::default()
    }

    /// The options as the X.509 layer takes them.
    pub fn policy(&self) -> Result<crate::pki::x509::IssuingPolicy, crate::pki::x509::X509Error> {
        crate::pki::x509::IssuingPolicy::new(
            self.policy_oid.as_deref(),
            self.crl_url.as_deref(),
            self.aia_url.as_deref(),
        )
    }
}

/// Where a user is in the enrollment life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Added; has a temporary key; not enrolled yet.
    Pending,
    /// Enrolled, certificates valid.
    Active,
    /// Recovered: old certificates revoked, a new temporary key issued.
    Recovering,
    /// Revoked: no enrollment possible.
    Revoked,
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// The user's signing certificate.
    Signing,
    /// The user's encryption certificate.
    Encryption,
}

/// A revocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    /// When, RFC 3339.
    pub at: String,
    /// RFC 5280 reason name.
    pub reason: String,
}

/// A certificate the authority issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IssuedCert {
    /// Serial number, hex.
    pub serial: String,
    /// Signing or encryption.
    pub kind: CertKind,
    /// The keyset it was issued for.
    pub keyset: String,
    /// Issued at, RFC 3339.
    pub issued: String,
    /// Expires at, RFC 3339.
    pub not_after: String,
    /// Set once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
    /// When a renewal replaced it (RFC 3339): no longer current, but not revoked (it stays
    /// valid for what it signed and encrypted until it expires). Absent: current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<String>,
}

/// An archived encryption key: wrapped under the archive key in `archive/USER/SERIAL.kwp`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchivedKey {
    /// Serial of the encryption certificate, hex.
    pub cert_serial: String,
    /// Archived at, RFC 3339.
    pub archived: String,
}

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user name.
    pub name: String,
    /// E-mail address, put in certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Life-cycle state.
    pub state: UserState,
    /// Added at, RFC 3339.
    pub created: String,
    /// The outstanding temporary key, if any (hash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_key: Option<TempKeyRecord>,
    /// Keysets enrolled, oldest first.
    #[serde(default)]
    pub keysets: Vec<String>,
    /// Certificates issued, oldest first.
    #[serde(default)]
    pub certs: Vec<IssuedCert>,
    /// Archived encryption keys, oldest first.
    #[serde(default)]
    pub archive: Vec<ArchivedKey>,
    /// Fields from a newer keyward, kept.
    #[serde(flatten)]
    pub extra: toml::Table,
}
