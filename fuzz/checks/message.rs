//! The streaming message parsers `keyward read` runs before and after the token decrypts the
//! content key: S/MIME, PEM and DER/BER framing, the EnvelopedData's outer layers (a small
//! streaming BER reader, definite and indefinite lengths, constructed OCTET STRINGs), AES-CBC
//! unpadding, and the signed layer (SignedData streamed, its small parts decoded with `der`).
//! Any panic is a bug: a message arrives by e-mail.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/message.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

/// One input: must not panic.
pub fn check(data: &[u8]) {
    let report = keyward::message::read::parse_unverified(data);
    assert!(report.recipients <= data.len());
}
