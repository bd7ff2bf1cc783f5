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
