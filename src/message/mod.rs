//! Messages: CMS (S/MIME) signed and enveloped data with token keys.

pub mod cms;
pub mod smime;
