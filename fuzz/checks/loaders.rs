//! The TOML loaders of keyward's own files: the keyset registry (`keysets.toml`), the
//! configuration (`config.toml`) and the old-format authority's `authority.toml` and `users.toml`
//! (what `authority migrate` reads). A file
//! that does not parse must be an error with a line and column, never a panic; a registry that
//! parses must be written back (`Registry::render`) as text that parses to the same keysets and
//! renders the same again, or a save would lose or change records.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/loaders.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

use std::path::Path;

use keyward::authority::legacy::UsersFile;
use keyward::authority::state::AuthorityConfig;
use keyward::home::{parse_toml, ConfigError};
use keyward::keyset::Registry;
use keyward::Config;

/// Whether a TOML value holds a float NaN anywhere.
fn has_nan(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(f) => f.is_nan(),
        toml::Value::Array(a) => a.iter().any(has_nan),
        toml::Value::Table(t) => t.values().any(has_nan),
        _ => false,
    }
}

fn check_error(text: &str, e: ConfigError) {
    if let ConfigError::Parse { line, column, .. } = &e {
        assert!(*line >= 1 && *column >= 1);
        assert!(
            *line <= text.matches('\n').count() + 1,
            "line {line} past the end"
        );
    }
    let _ = e.to_string();
}

/// One input: must not panic; see the module comment for what else must hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("keysets.toml");
    match Registry::parse(path, text) {
        Ok(reg) => {
            let rendered = reg.render().expect("a parsed registry renders");
            let again = Registry::parse(path, &rendered).unwrap_or_else(|e| {
                panic!("the registry as saved does not parse: {e}\n{rendered}")
            });
            // NaN in a kept unknown field is never equal to itself; the text check covers it.
            let nan =
                toml::from_str::<toml::Table>(&rendered).is_ok_and(|t| t.values().any(has_nan));
            if !nan {
                assert_eq!(
                    again.keysets(),
                    reg.keysets(),
                    "records changed on save:\n{rendered}"
                );
            }
            let twice = again.render().expect("renders again");
            assert_eq!(twice, rendered, "saving twice changes the file");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Err(e) = parse_toml::<Config>(Path::new("config.toml"), text) {
        check_error(text, e);
    }
    if let Err(e) = parse_toml::<AuthorityConfig>(Path::new("authority.toml"), text) {
        check_error(text, e);
    }
    if let Err(e) = parse_toml::<UsersFile>(Path::new("users.toml"), text) {
        check_error(text, e);
    }
}
