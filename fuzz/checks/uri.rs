//! The PKCS#11 URI parser (RFC 7512): `Pkcs11Uri::from_str` and `--token` arguments never
//! panic, and what parses prints canonically and parses back to the same URI.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/uri.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

use std::str::FromStr;

use keyward::Pkcs11Uri;

/// One input: must not panic; see the module comment for what else must hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Pkcs11Uri::from_token_arg(text).map_err(|e| e.to_string());
    match Pkcs11Uri::from_str(text) {
        Ok(uri) => {
            let shown = uri.to_string();
            assert!(
                shown.is_ascii() && !shown.contains(' '),
                "display is not plain ASCII: {shown:?}"
            );
            let again = Pkcs11Uri::from_str(&shown)
                .unwrap_or_else(|e| panic!("{text:?} printed as {shown:?}, which is refused: {e}"));
            assert_eq!(
                again, uri,
                "{text:?} printed as {shown:?} parses differently"
            );
            assert_eq!(again.to_string(), shown, "display is not canonical");
            let token = uri.token_part();
            assert!(!token.names_object());
            assert_eq!(Pkcs11Uri::from_str(&token.to_string()).ok(), Some(token));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
