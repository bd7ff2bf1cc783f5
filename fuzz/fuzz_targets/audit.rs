//! The authority's audit log reader: `verify` (with and without the recorded head), `entries`,
//! `head` and `check_appendable` on an arbitrary file. A damaged or tampered log must be
//! reported, never panic; and what `verify` accepts, the others must read too.
#![no_main]

#[path = "../checks/audit.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
