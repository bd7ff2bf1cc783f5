//! Signing certificates, CRLs and replies with the CA key on the authority's token.

use secrecy::SecretString;
use spki::AlgorithmIdentifierOwned;

use crate::pki::key::SHA256_WITH_RSA;
use crate::pki::x509::TbsSigner;
use crate::pki::SignError;
use crate::token::{KeyRef, Module, TokenSession};

/// The CA key on a logged-in session, as an X.509 signer (RSA PKCS#1 v1.5 with SHA-256).
pub struct CaSigner<'a> {
    /// The module.
    pub module: &'a Module,
    /// The logged-in session on the authority's token.
    pub session: &'a mut TokenSession,
    /// The CA private key.
    pub key: KeyRef,
    /// The PIN, for context-specific logins.
    pub pin: &'a SecretString,
}

impl TbsSigner for CaSigner<'_> {
    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: SHA256_WITH_RSA,
            parameters: Some(der::asn1::Null.into()),
        }
    }

    fn sign_tbs(&mut self, tbs_der: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut reader = tbs_der;
        Ok(self
            .session
            .sign(self.module, &self.key, &mut reader, self.pin)?)
    }
}
