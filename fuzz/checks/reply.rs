//! The enrollment reply parser: `wire::open::<ReplyBody>`, the header check, the base64 and PEM
//! fields the user's keyward decodes before it touches the token, and the authority
//! certificate bundle parser. Any panic is a bug: a reply arrives by e-mail.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/reply.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

use std::path::Path;

use keyward::enroll::client::AuthorityCerts;
use keyward::enroll::wire::{self, ReplyBody, Signed};
use keyward::pki::x509;

/// One input: must not panic; see the module comment for what else must hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("reply.toml");
    match wire::open::<ReplyBody>(path, text, "reply") {
        Ok(Signed { body, .. }) => {
            let _ = wire::check_header(path, &body.format, body.version, wire::REPLY_FORMAT);
            let _ = wire::b64(path, "wrapped_aes_key", &body.wrapped_aes_key);
            let _ = x509::certs_from_pem(&body.ca_certificate);
            let _ = x509::certs_from_pem(&body.signing_certificate);
            for k in &body.encryption_keys {
                let _ = wire::b64(path, "wrapped_key", &k.wrapped_key);
                let _ = x509::certs_from_pem(&k.certificate);
            }
        }
        Err(e) => {
            let m = e.to_string();
            assert!(!m.is_empty());
        }
    }
    // The same bytes as an `authority cert` bundle (what `enroll --authority-cert` reads).
    if let Err(e) = AuthorityCerts::parse(text) {
        let _ = e.to_string();
    }
}
