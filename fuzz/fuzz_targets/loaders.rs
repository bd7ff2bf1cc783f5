//! The TOML loaders of keyward's own files: the keyset registry (`keysets.toml`), the
//! configuration (`config.toml`) and the authority's `authority.toml` and `users.toml`. A file
//! that does not parse must be an error with a line and column, never a panic; a registry that
//! parses must be written back (`Registry::render`) as text that parses to the same keysets and
//! renders the same again, or a save would lose or change records.
#![no_main]

#[path = "../checks/loaders.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
