//! The streaming message parsers of `keyward read` (see `fuzz/checks/message.rs`). Any panic
//! is a bug: a message arrives by e-mail.
#![no_main]

#[path = "../checks/message.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
