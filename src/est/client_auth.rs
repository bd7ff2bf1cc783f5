//! The TLS client-certificate check of `authority serve`. A client certificate is optional (only
//! `simplereenroll` uses one); when one is sent it must be issued by the authority's CA (its
//! signature checked with the CA's key) and valid now. Unlike rustls' WebPki verifier it does
//! not demand the clientAuth extended key usage: a user's signing certificate carries only
//! emailProtection (the CA/B S/MIME strict profile forbids clientAuth there), and it is the
//! certificate `simplereenroll` authenticates with. The handshake signatures are verified with
//! the ring provider's algorithms. Whether the certificate is the user's current one (not
//! revoked or superseded) is [`super::node::simple_reenroll`]'s to decide.

use std::time::{Duration, SystemTime};

use der::Encode;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_cert::Certificate;

use crate::pki::x509;

/// Accepts (does not require) a client certificate issued by one of the authority's CAs.
#[derive(Debug)]
pub struct AuthorityClientVerifier {
    cas: Vec<Certificate>,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl AuthorityClientVerifier {
    /// A verifier for certificates of `cas`, checking handshake signatures with `algorithms`
    /// (the crypto provider's `signature_verification_algorithms`).
    pub fn new(
        cas: Vec<Certificate>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Result<AuthorityClientVerifier, der::Error> {
        let hints = cas
            .iter()
            .map(|ca| {
                ca.tbs_certificate
                    .subject
                    .to_der()
                    .map(DistinguishedName::from)
            })
            .collect::<Result<_, _>>()?;
        Ok(AuthorityClientVerifier {
            cas,
            hints,
            algorithms,
        })
    }
}

impl ClientCertVerifier for AuthorityClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let cert = x509::cert_from_der(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self
            .cas
            .iter()
            .any(|ca| x509::verify_issued_by(&cert, ca).is_ok())
        {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        x509::check_validity(&cert, at).map_err(|e| match e {
            x509::X509Error::NotYetValid { .. } => {
                Error::InvalidCertificate(CertificateError::NotValidYet)
            }
            _ => Error::InvalidCertificate(CertificateError::Expired),
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
