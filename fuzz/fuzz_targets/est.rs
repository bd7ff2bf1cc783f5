//! The EST request parsers of `authority serve` on arbitrary bytes (see `checks/est.rs`). Any
//! panic is a bug: they read untrusted network input.
#![no_main]

#[path = "../checks/est.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
