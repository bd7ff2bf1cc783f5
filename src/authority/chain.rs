//! Paths across CA rollovers: which certificates a relying party that holds one CA
//! certificate (its anchor) may take as the issuer of a user's certificate.
//!
//! After `authority rollover --ca` the authority hands out, with its CA certificate, the link
//! certificates of each rollover: the new key certified by the old (new-with-old) and the old
//! key certified by the new (old-with-new). A relying party holding the old root reaches the
//! new CA through the first, one holding the new root reaches the old CA through the second
//! (RFC 4210 5.3.13; Windows CA renewal with a new key).

use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use crate::pki::x509;

/// The anchor (first of `trusted`) and every CA certificate among the rest of `trusted` and
/// `offered` (say, the certificates a message carries) that a trusted one issued, followed
/// transitively: the link certificates, and the CA certificates they lead to.
pub fn issuers(trusted: &[Certificate], offered: &[Certificate]) -> Vec<Certificate> {
    let Some(anchor) = trusted.first() else {
        return Vec::new();
    };
    let mut out = vec![anchor.clone()];
    let mut pool: Vec<&Certificate> = trusted[1..]
        .iter()
        .chain(offered)
        .filter(|c| is_ca(c))
        .collect();
    loop {
        let before = out.len();
        pool.retain(|c| {
            if out.iter().any(|t| t == *c) {
                return false;
            }
            if out.iter().any(|t| x509::verify_issued_by(c, t).is_ok()) {
                out.push((*c).clone());
                return false;
            }
            true
        });
        if out.len() == before {
            return out;
        }
    }
}

/// The trusted certificate (see [`issuers`]) that issued `cert`, if any.
pub fn issuer_of(
    cert: &Certificate,
    trusted: &[Certificate],
    offered: &[Certificate],
) -> Option<Certificate> {
    issuers(trusted, offered)
        .into_iter()
        .find(|i| x509::verify_issued_by(cert, i).is_ok())
}

/// Whether `ca` is, by key and name, one of [`issuers`]: the same CA as a trusted one.
pub fn is_trusted_ca(ca: &Certificate, trusted: &[Certificate], offered: &[Certificate]) -> bool {
    let key = x509::spki_der_of(ca);
    issuers(trusted, offered).iter().any(|t| {
        x509::spki_der_of(t) == key && t.tbs_certificate.subject == ca.tbs_certificate.subject
    })
}

fn is_ca(c: &Certificate) -> bool {
    matches!(c.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

/// Whether the CA bundle `offered` (an authority's CA and link certificates, as `authority
/// cert` prints them) is the authority a keyset trusting `trusted` (PEM) enrolled with: the
/// same CA, or the next generation of it through a link certificate.
pub fn same_authority(trusted: &str, offered: &str) -> bool {
    let (Ok(trust), Ok(offer)) = (x509::certs_from_pem(trusted), x509::certs_from_pem(offered))
    else {
        return false;
    };
    offer
        .first()
        .is_some_and(|ca| !trust.is_empty() && is_trusted_ca(ca, &trust, &offer[1..]))
}

/// `trusted` (PEM) followed by every CA certificate of `learned` (PEM) it does not hold yet
/// that the trust reaches (see [`issuers`]): the anchor stays first.
pub fn extend_trust(trusted: &str, learned: &str) -> Result<String, x509::X509Error> {
    let mut trust = x509::certs_from_pem(trusted)?;
    let offered = x509::certs_from_pem(learned)?;
    let reached = issuers(&trust, &offered);
    let mut out = trusted.to_string();
    for c in offered {
        if !trust.contains(&c) && reached.contains(&c) {
            out.push_str(&x509::cert_to_pem(&c)?);
            trust.push(c);
        }
    }
    Ok(out)
}

/// What a keyset learns from its authority's CA bundle (`keyset trust`, see [`learn`]).
#[derive(Debug)]
pub struct Learned {
    /// The keyset's trust with the new CA certificates appended (its anchor stays first).
    pub trust_pem: String,
    /// The CA certificates the keyset did not trust yet, in the bundle's order.
    pub added: Vec<Certificate>,
    /// CA certificates of the bundle the keyset trusted already.
    pub known: usize,
    /// Certificates of the bundle that are not CA certificates (the authority's exchange
    /// certificate): left out, they issue nothing.
    pub skipped: usize,
}

/// Why a keyset does not take a CA bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The keyset has no authority to extend the trust of.
    #[error("keyset {keyset:?} is not enrolled with an authority, so it trusts no CA to extend; enroll it first (`keyward enroll`), or give the CA to `keyward read --ca FILE`")]
    NotEnrolled {
        /// The keyset.
        keyset: String,
    },
    /// The keyset's own trust or the bundle does not parse.
    #[error("{what} holds a certificate that does not parse ({source}); give the bundle `keyward authority cert --all` prints, unchanged")]
    Parse {
        /// The keyset's trust or the bundle.
        what: String,
        /// Why.
        #[source]
        source: x509::X509Error,
    },
    /// Nothing to learn from.
    #[error("{file} holds no CA certificate; give the bundle `keyward authority cert --all --dir DIR` prints")]
    NoCa {
        /// The bundle's file.
        file: String,
    },
    /// A CA certificate no link leads to from the keyset's CA.
    #[error("{subject} (serial {serial}) in {file} does not chain by link certificates from the CA keyset {keyset:?} trusts ({anchor}): it is another authority's CA or its signature does not verify, so keyset {keyset:?} was not changed; get the bundle from your own authority with `keyward authority cert --all`")]
    Foreign {
        /// The keyset.
        keyset: String,
        /// The bundle's file.
        file: String,
        /// The certificate refused.
        subject: String,
        /// Its serial, hex.
        serial: String,
        /// The keyset's CA.
        anchor: String,
    },
}

impl TrustError {
    /// Whether this is a check that found something bad (a foreign CA: exit status 3).
    pub fn found_bad(&self) -> bool {
        matches!(self, TrustError::Foreign { .. })
    }
}

/// The CA certificates of `offered` (PEM: the bundle `authority cert --all` prints, read
/// from `file`) a keyset trusting `trusted` (PEM, its anchor first) takes: every one must be
/// trusted already or reached from the anchor through link certificates whose signatures
/// verify (see [`issuers`]); a single one that is not refuses the whole bundle. Certificates
/// that are not CA certificates are left out.
pub fn learn(
    keyset: &str,
    trusted: &str,
    offered: &str,
    file: &str,
) -> Result<Learned, TrustError> {
    let parse = |what: &str, pem: &str| {
        x509::certs_from_pem(pem).map_err(|source| TrustError::Parse {
            what: what.to_string(),
            source,
        })
    };
    let trust = parse(&format!("the trust of keyset {keyset:?}"), trusted)?;
    let bundle = parse(file, offered)?;
    let anchor = trust.first().ok_or_else(|| TrustError::NotEnrolled {
        keyset: keyset.to_string(),
    })?;
    let (cas, others): (Vec<Certificate>, Vec<Certificate>) = bundle.into_iter().partition(is_ca);
    if cas.is_empty() {
        return Err(TrustError::NoCa {
            file: file.to_string(),
        });
    }
    let reached = issuers(&trust, &cas);
    let mut learned = Learned {
        trust_pem: trusted.to_string(),
        added: Vec::new(),
        known: 0,
        skipped: others.len(),
    };
    for c in cas {
        if trust.contains(&c) || learned.added.contains(&c) {
            learned.known += usize::from(trust.contains(&c));
            continue;
        }
        if !reached.contains(&c) {
            return Err(TrustError::Foreign {
                keyset: keyset.to_string(),
                file: file.to_string(),
                subject: c.tbs_certificate.subject.to_string(),
                serial: x509::serial_hex(&c),
                anchor: anchor.tbs_certificate.subject.to_string(),
            });
        }
        let pem = x509::cert_to_pem(&c).map_err(|source| TrustError::Parse {
            what: file.to_string(),
            source,
        })?;
        if !learned.trust_pem.ends_with('\n') && !learned.trust_pem.is_empty() {
            learned.trust_pem.push('\n');
        }
        learned.trust_pem.push_str(&pem);
        learned.added.push(c);
    }
    Ok(learned)
}
