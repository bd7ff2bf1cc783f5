//! The EST request parsers of `authority serve` (`keyward::est::wire`) on arbitrary bytes: the
//! first byte picks the parser — `b` the HTTP Basic header, `c` a base64 PKCS#10 body with the
//! CSR checks (self-signature, keyset name, transport key, AsymmetricDecryptKeyIdentifier), `t` the Content-Type, `m` a
//! serverkeygen multipart answer, `p` a base64 certs-only PKCS#7 — the rest is its input. Any
//! panic is a bug: every one of these reads untrusted network input. Refusals carry a status
//! (400, 401, 413) and a reason.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/est.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

use keyward::est::wire::{self, Refusal};

fn refused(r: &Refusal) {
    assert!(matches!(r.status, 400 | 401 | 413), "status {}", r.status);
    assert!(!r.reason.is_empty());
}

/// One input: must not panic; see the module comment for what else must hold.
pub fn check(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which {
        b'b' => {
            if let Err(r) = wire::parse_basic(rest) {
                refused(&r);
            }
        }
        b'c' => match wire::decode_body(rest).and_then(|der| wire::check_csr(&der)) {
            Ok(csr) => {
                let _ = wire::keyset_of(&csr.csr).map_err(|r| refused(&r));
                let _ = wire::transport_key(&csr).map_err(|r| refused(&r));
                let _ = wire::asymmetric_decrypt_key_id(&csr.csr).map_err(|r| refused(&r));
            }
            Err(r) => refused(&r),
        },
        b't' => {
            if let Err(r) = wire::check_content_type(Some(rest)) {
                refused(&r);
            }
        }
        b'm' => {
            if let Err(r) = wire::split_serverkeygen(&String::from_utf8_lossy(rest)) {
                refused(&r);
            }
        }
        b'p' => match wire::decode_body(rest).and_then(|der| wire::certs_of(&der)) {
            Ok(certs) => {
                let _ = wire::certs_only(&certs);
            }
            Err(r) => refused(&r),
        },
        _ => {}
    }
}
