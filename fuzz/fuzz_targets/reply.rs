//! The enrollment reply parser: `wire::open::<ReplyBody>`, the header check, the base64 and PEM
//! fields the user's keyward decodes before it touches the token, and the authority
//! certificate bundle parser. Any panic is a bug: a reply arrives by e-mail.
#![no_main]

#[path = "../checks/reply.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
