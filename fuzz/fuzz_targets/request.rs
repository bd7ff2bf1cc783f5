//! The enrollment request parser: `wire::open` (split, TOML, format check) and the authority's
//! `parse_request` (PKCS#10, both signatures, transport key) on arbitrary text. Any panic is a bug:
//! a request is untrusted input the authority reads.
#![no_main]

#[path = "../checks/request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
