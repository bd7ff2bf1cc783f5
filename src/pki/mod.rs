//! PKI: X.509 certificates and CRLs, CMS and S/MIME encodings — shared by the authority,
//! enrollment and messages, which all import them from here. Signing keys stay on tokens:
//! what signs takes a [`x509::TbsSigner`] or a CMS signer.

pub mod cms;
pub mod smime;
pub mod x509;
