//! The PKCS#11 URI parser (RFC 7512): `Pkcs11Uri::from_str` and `--token` arguments never
//! panic, and what parses prints canonically and parses back to the same URI.
#![no_main]

#[path = "../checks/uri.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
