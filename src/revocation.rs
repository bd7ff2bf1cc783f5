//! Revocation seen by default: the newest CRL of each authority, kept under
//! `KEYWARD_HOME/crls/` (`keyward crl import`, `keyward crl fetch`), and the checks `send`
//! and `read` make against it without `--crl`.
//!
//! A CRL is kept only when its authority's CA certificate signed it (the CA of a keyset
//! enrolled here, one kept beside an earlier CRL, or one named with `--ca`), and never
//! replaces a newer one (higher cRLNumber, later thisUpdate). Files: `<key id>.crl` (DER)
//! and `<key id>.ca.pem`, the key id being the CA's subject key identifier in hex.
//!
//! A missing or stale CRL (past its nextUpdate) is a warning, never silence; the revocations a
//! stale CRL lists still count (a revocation is not undone).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use crate::keyset::registry::write_atomic;
use crate::keyset::Registry;
use crate::pki::x509::{self, X509Error};

/// The store's directory under `KEYWARD_HOME`.
pub const DIR: &str = "crls";

/// The largest CRL `crl fetch` downloads.
const MAX_CRL: u64 = 16 << 20;

/// What went wrong keeping or using a CRL.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// No known authority has the CRL's issuer as its subject.
    #[error("the CRL was issued by {issuer:?}, an authority none of your keysets is enrolled with; pass --ca FILE, that authority's CA certificate")]
    UnknownIssuer {
        /// The CRL's issuer name.
        issuer: String,
    },
    /// The CRL's signature does not verify with its authority's CA certificate.
    #[error("the CRL from {issuer:?} does not verify with that authority's CA certificate ({why}); it was altered or forged: do not use it, get the CRL from the authority again")]
    Forged {
        /// The CRL's issuer name.
        issuer: String,
        /// Why not.
        why: String,
    },
    /// The CRL is older than (or conflicts with) the one kept.
    #[error("the CRL from {issuer:?} (number {number}, issued {this_update}) is not newer than the one kept (number {kept_number}, issued {kept_this_update}); nothing changed — get the authority's current CRL")]
    Older {
        /// The CRL's issuer name.
        issuer: String,
        /// Its cRLNumber.
        number: u64,
        /// Its thisUpdate.
        this_update: String,
        /// The kept CRL's cRLNumber.
        kept_number: u64,
        /// The kept CRL's thisUpdate.
        kept_this_update: String,
    },
    /// A certificate is on its authority's CRL.
    #[error("{who}: certificate {serial} was REVOKED at {at} (on the CRL of {issuer:?} issued {this_update}); ask for the current certificate")]
    Revoked {
        /// Whose certificate.
        who: String,
        /// Its serial, hex.
        serial: String,
        /// When revoked.
        at: String,
        /// The CA.
        issuer: String,
        /// The CRL's thisUpdate.
        this_update: String,
    },
    /// A recipient's certificate has expired.
    #[error("{who}: {source}")]
    Expired {
        /// Whose certificate.
        who: String,
        /// The validity error.
        source: X509Error,
    },
    /// A CRL or certificate could not be read.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// "read", "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A distribution point could not be fetched.
    #[error("cannot fetch the CRL from {url}: {why}; check the URL (file:/ or http://) or get the CRL file and `keyward crl import` it")]
    Fetch {
        /// The URL.
        url: String,
        /// Why not.
        why: String,
    },
}

impl RevocationError {
    /// Checked and found bad (exit status 3): a forged CRL, a revoked certificate.
    pub fn found_bad(&self) -> bool {
        matches!(
            self,
            RevocationError::Forged { .. } | RevocationError::Revoked { .. }
        )
    }
}

fn io(action: &'static str, path: &Path, e: std::io::Error) -> RevocationError {
    RevocationError::Io {
        action,
        path: path.to_path_buf(),
        source: e,
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The file a `file:` URL names (`file:///var/pki/ca.crl`, `file:/var/pki/ca.crl`).
pub fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file:")?;
    let path = match rest.strip_prefix("//") {
        Some(r) if r.starts_with('/') => r,
        Some(r) => r.strip_prefix("localhost").filter(|p| p.starts_with('/'))?,
        None => rest,
    };
    path.starts_with('/').then(|| PathBuf::from(path))
}

/// A CRL in PEM or DER.
pub fn parse_crl(bytes: &[u8]) -> Result<CertificateList, X509Error> {
    match std::str::from_utf8(bytes) {
        Ok(t) if t.contains("-----BEGIN") => x509::crl_from_pem(t),
        _ => x509::crl_from_der(bytes),
    }
}

/// What an import kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// The authority (the CRL's issuer).
    pub issuer: String,
    /// The cRLNumber (0 when it has none).
    pub number: u64,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339, when given.
    pub next_update: Option<String>,
    /// How many certificates it lists.
    pub revoked: usize,
    /// The very same CRL was kept already.
    pub unchanged: bool,
}

/// The result of checking one certificate: checked against a current CRL, or a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Not on its authority's current CRL.
    Good,
    /// Not on the CRL kept, but that CRL is missing or stale: the one-line warning to print.
    Unchecked(String),
}

/// The newest CRL per authority, under `KEYWARD_HOME/crls/`.
pub struct CrlStore {
    dir: PathBuf,
}

impl CrlStore {
    /// The store of `home` (nothing is created until a CRL is imported).
    pub fn new(home: &Path) -> Self {
        CrlStore {
            dir: home.join(DIR),
        }
    }

    fn key(ca: &Certificate) -> String {
        crate::token::keys::hex(&x509::key_id_of(ca))
    }

    fn crl_path(&self, ca: &Certificate) -> PathBuf {
        self.dir.join(format!("{}.crl", Self::key(ca)))
    }

    fn ca_path(&self, ca: &Certificate) -> PathBuf {
        self.dir.join(format!("{}.ca.pem", Self::key(ca)))
    }

    /// The CA certificates kept beside CRLs.
    pub fn cas(&self) -> Vec<Certificate> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".ca.pem"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| x509::certs_from_pem(&t).ok())
            .flatten()
            .collect()
    }

    /// The CRL kept for `ca`, checked against it again (a file changed since is refused).
    pub fn kept(&self, ca: &Certificate) -> Result<Option<CertificateList>, RevocationError> {
        let path = self.crl_path(ca);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
        };
        let crl = parse_crl(&bytes)?;
        x509::verify_crl(&crl, ca).map_err(|e| RevocationError::Forged {
            issuer: crl.tbs_cert_list.issuer.to_string(),
            why: format!("the copy kept in {} changed: {e}", path.display()),
        })?;
        Ok(Some(crl))
    }

    /// Keeps `bytes` (a CRL, PEM or DER) when one of `cas` signed it and it is newer than the
    /// one kept; nothing changes otherwise.
    pub fn import(&self, bytes: &[u8], cas: &[Certificate]) -> Result<Imported, RevocationError> {
        let crl = parse_crl(bytes)?;
        let tbs = &crl.tbs_cert_list;
        let issuer = tbs.issuer.to_string();
        let named: Vec<&Certificate> = cas
            .iter()
            .filter(|c| c.tbs_certificate.subject == tbs.issuer)
            .collect();
        if named.is_empty() {
            return Err(RevocationError::UnknownIssuer { issuer });
        }
        let mut why = String::new();
        let ca = named
            .into_iter()
            .find(|ca| match x509::verify_crl(&crl, ca) {
                Ok(()) => true,
                Err(e) => {
                    why = e.to_string();
                    false
                }
            })
            .ok_or_else(|| RevocationError::Forged {
                issuer: issuer.clone(),
                why,
            })?;
        let der = x509::crl_to_der(&crl)?;
        let number = x509::crl_number_of(&crl).unwrap_or(0);
        let this_update = tbs.this_update.to_system_time();
        let mut unchanged = false;
        if let Some(kept) = self.kept(ca)? {
            let kept_number = x509::crl_number_of(&kept).unwrap_or(0);
            let kept_this = kept.tbs_cert_list.this_update.to_system_time();
            unchanged = x509::crl_to_der(&kept)? == der;
            if !unchanged && (number <= kept_number || this_update < kept_this) {
                return Err(RevocationError::Older {
                    issuer,
                    number,
                    this_update: rfc3339(this_update),
                    kept_number,
                    kept_this_update: rfc3339(kept_this),
                });
            }
        }
        if !unchanged {
            std::fs::create_dir_all(&self.dir).map_err(|e| io("create", &self.dir, e))?;
            let ca_path = self.ca_path(ca);
            write_atomic(&ca_path, x509::cert_to_pem(ca)?.as_bytes())
                .map_err(|e| io("write", &ca_path, e))?;
            let crl_path = self.crl_path(ca);
            write_atomic(&crl_path, &der).map_err(|e| io("write", &crl_path, e))?;
        }
        Ok(Imported {
            issuer,
            number,
            this_update: rfc3339(this_update),
            next_update: tbs.next_update.map(|t| rfc3339(t.to_system_time())),
            revoked: tbs.revoked_certificates.as_ref().map_or(0, Vec::len),
            unchanged,
        })
    }

    /// Checks the certificate with serial `serial` (issued by `ca`, already verified) against
    /// the CRL kept for `ca`: an error when it is listed, a warning when no current CRL is kept.
    pub fn check(
        &self,
        ca: &Certificate,
        serial: &[u8],
        who: &str,
        now: SystemTime,
    ) -> Result<Checked, RevocationError> {
        let authority = ca.tbs_certificate.subject.to_string();
        let Some(crl) = self.kept(ca)? else {
            return Ok(Checked::Unchecked(format!(
                "warning: no CRL of {authority:?} is known here, so {who} was not checked for revocation; run `keyward crl import FILE` (or `keyward crl fetch`)"
            )));
        };
        let this_update = crl.tbs_cert_list.this_update.to_system_time();
        if let Some((at, _)) = x509::revocation(&crl, serial) {
            let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
            return Err(RevocationError::Revoked {
                who: who.to_string(),
                serial: hex.trim_start_matches("00").to_string(),
                at: rfc3339(at),
                issuer: authority,
                this_update: rfc3339(this_update),
            });
        }
        match crl.tbs_cert_list.next_update.map(|t| t.to_system_time()) {
            Some(next) if next < now => Ok(Checked::Unchecked(format!(
                "warning: the CRL of {authority:?} kept here is stale (its next update was due {}), so {who} was checked only against revocations up to {}; import a current one (`keyward crl import FILE` or `keyward crl fetch`)",
                rfc3339(next),
                rfc3339(this_update)
            ))),
            _ => Ok(Checked::Good),
        }
    }

    /// The authority that issued `cert`, among `cas` and the CAs kept here: its subject is
    /// the certificate's issuer and its key signed the certificate.
    pub fn issuer_of(&self, cert: &Certificate, cas: &[Certificate]) -> Option<Certificate> {
        cas.iter()
            .cloned()
            .chain(self.cas())
            .find(|ca| x509::verify_issued_by(cert, ca).is_ok())
    }
}

/// The CA certificates of the authorities the keysets here are enrolled with.
pub fn enrolled_cas(registry: &Registry) -> Vec<Certificate> {
    registry
        .keysets()
        .iter()
        .filter_map(|k| k.enrollment.as_ref())
        .filter_map(|e| x509::certs_from_pem(&e.authority_ca).ok())
        .flatten()
        .collect()
}

/// A recipient for `send`: refused when expired, or when on its authority's kept CRL. The
/// warning to print, if revocation could not be checked against a current CRL.
pub fn check_recipient(
    store: &CrlStore,
    cas: &[Certificate],
    who: &str,
    cert: &Certificate,
) -> Result<Option<String>, RevocationError> {
    let now = SystemTime::now();
    x509::check_validity(cert, now).map_err(|source| RevocationError::Expired {
        who: who.to_string(),
        source,
    })?;
    let Some(ca) = store.issuer_of(cert, cas) else {
        return Ok(Some(format!(
            "warning: {who}'s certificate was issued by {:?}, an authority keyward knows no CA certificate or CRL of; its revocation was not checked (`keyward crl import --ca CA FILE`)",
            cert.tbs_certificate.issuer.to_string()
        )));
    };
    let serial = cert.tbs_certificate.serial_number.as_bytes();
    match store.check(&ca, serial, who, now)? {
        Checked::Good => Ok(None),
        Checked::Unchecked(w) => Ok(Some(w)),
    }
}

/// `send`: refuses an expired recipient, or one on its authority's kept CRL; returns a
/// one-line warning for each recipient whose revocation could not be checked against a current
/// CRL (to print once the message is written).
pub fn check_recipients(
    home: &Path,
    registry: &Registry,
    recipients: &[(String, Certificate)],
) -> Result<Vec<String>, RevocationError> {
    let store = CrlStore::new(home);
    let cas = enrolled_cas(registry);
    let mut warnings = Vec::new();
    for (who, cert) in recipients {
        let who = format!("recipient {who}");
        warnings.extend(check_recipient(&store, &cas, &who, cert)?);
    }
    Ok(warnings)
}

/// `read`, once the signature verified: refuses a signer (`signer` = (who, serial hex)) on
/// the CRL kept for its authority (`given_ca`, else the keyset's), before the content is
/// written — also when `--crl` was given, as an older CRL does not undo a revocation; with
/// `warn` (no `--crl`), the one-line warning to show when no current CRL is kept.
pub fn check_signer(
    home: &Path,
    given_ca: Option<&Certificate>,
    record: &crate::keyset::KeysetRecord,
    (signer, serial_hex): (&str, &str),
    warn: bool,
) -> Result<Option<String>, crate::error::Error> {
    let authority_ca = || {
        let pem = &record.enrollment.as_ref()?.authority_ca;
        x509::certs_from_pem(pem).ok()?.into_iter().next()
    };
    let Some(ca) = given_ca.cloned().or_else(authority_ca) else {
        return Ok(None);
    };
    let serial = crate::keyset::ops::unhex_id(serial_hex)
        .map_err(|e| crate::error::Error::Usage(e.to_string()))?;
    let who = format!("the signer {signer}");
    match CrlStore::new(home).check(&ca, &serial, &who, SystemTime::now()) {
        Ok(Checked::Good) => Ok(None),
        Ok(Checked::Unchecked(w)) => Ok(warn.then_some(w)),
        Err(RevocationError::Revoked { at, this_update, .. }) => {
            Err(crate::message::MessageError::Untrusted {
                signer: signer.to_string(),
                why: format!(
                    "has a REVOKED certificate (revoked at {at}, on the CRL kept here issued {this_update})"
                ),
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The bytes at a distribution point: a `file:` URL is read, an `http://` one fetched with
/// a plain HTTP/1.0 GET (CRLs are published over HTTP, never HTTPS, so that checking one
/// needs no other revocation check); redirects are not followed.
pub fn fetch(url: &str) -> Result<Vec<u8>, RevocationError> {
    let fail = |why: String| RevocationError::Fetch {
        url: url.to_string(),
        why,
    };
    if let Some(path) = file_url_path(url) {
        return std::fs::read(&path).map_err(|e| fail(format!("{}: {e}", path.display())));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail("only file: and http:// URLs are fetched".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let host = authority.split(':').next().unwrap_or(authority);
    let timeout = Duration::from_secs(20);
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&addr).map_err(|e| fail(e.to_string()))?;
    let mut last = String::from("the name resolves to no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(mut s) => {
                s.set_read_timeout(Some(timeout))
                    .map_err(|e| fail(e.to_string()))?;
                write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/pkix-crl\r\nConnection: close\r\n\r\n")
                    .map_err(|e| fail(e.to_string()))?;
                let mut body = Vec::new();
                s.take(MAX_CRL + 64 * 1024)
                    .read_to_end(&mut body)
                    .map_err(|e| fail(e.to_string()))?;
                return http_body(body).map_err(fail);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail(last))
}

/// The body of an HTTP/1.x `200` response.
fn http_body(response: Vec<u8>) -> Result<Vec<u8>, String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the server's answer is not an HTTP response")?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(format!("the server answered {status:?}"));
    }
    let body = response[end + 4..].to_vec();
    if body.len() as u64 > MAX_CRL {
        return Err(format!("the CRL is larger than {} MiB", MAX_CRL >> 20));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_name_absolute_paths_only() {
        let p = |u| file_url_path(u).map(|p| p.display().to_string());
        assert_eq!(
            p("file:///var/pki/ca.crl").as_deref(),
            Some("/var/pki/ca.crl")
        );
        assert_eq!(
            p("file:/var/pki/ca.crl").as_deref(),
            Some("/var/pki/ca.crl")
        );
        assert_eq!(p("file://localhost/x.crl").as_deref(), Some("/x.crl"));
        assert_eq!(p("file://host/x.crl"), None);
        assert_eq!(p("file:relative.crl"), None);
        assert_eq!(p("http://example.org/x.crl"), None);
    }

    #[test]
    fn only_a_200_answer_has_a_body() {
        assert_eq!(
            http_body(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\nCRL".to_vec()).unwrap(),
            b"CRL"
        );
        assert!(http_body(b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec()).is_err());
        assert!(http_body(b"garbage".to_vec()).is_err());
    }
}
