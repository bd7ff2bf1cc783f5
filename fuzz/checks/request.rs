//! The enrollment request parser: `wire::open` (split, TOML, format check) and the authority's
//! `parse_request` (PKCS#10, both signatures, transport key) on arbitrary text. Any panic is a bug:
//! a request is untrusted input the authority reads.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/request.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

use std::path::Path;

use keyward::authority::process::parse_request;
use keyward::enroll::wire::{self, RequestBody, Signed};
use keyward::pki::PublicKey;

/// One input: must not panic; see the module comment for what else must hold.
pub fn check(data: &[u8]) {
    // The authority reads the file with read_to_string: only UTF-8 gets this far.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("request.toml");
    match wire::open::<RequestBody>(path, text, "request") {
        Ok(Signed { body, .. }) => {
            let _ = wire::check_header(path, &body.format, body.version, wire::REQUEST_FORMAT);
            let _ = wire::b64(path, "encrypted_temp_key", &body.encrypted_temp_key);
            // parse_request reads the transport key only once the signature verifies, which a
            // mutated request never does: feed it here directly.
            let _ = PublicKey::from_pem(&body.transport_public_key);
        }
        Err(e) => {
            let m = e.to_string();
            assert!(!m.is_empty());
        }
    }
    if let Err(e) = parse_request(path, text) {
        let m = e.to_string();
        assert!(!m.is_empty());
    }
}
