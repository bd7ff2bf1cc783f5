//! `token provision --manifest FILE`: many tokens initialised from one manifest, each with its
//! label, the SO PIN from one source, and a user PIN generated for it and handed out once.
//!
//! ```toml
//! so_pin_file = "so.pin"   # else --so-pin-file / KEYWARD_SO_PIN / a prompt
//! pin_out = "pins"         # one 0600 file per token, LABEL.pin; "-" prints each PIN once
//! pin_length = 12          # generated PINs (letters and digits, no look-alikes)
//!
//! [[token]]
//! label = "alice-card"
//! [[token]]
//! label = "bob-card"
//! ```
//!
//! A token whose label exists already is skipped (a second run says so); a PIN file is written
//! and synced *before* its token is initialised, so a stopped run loses no PIN: the rerun
//! initialises the tokens not made yet with new PINs (overwriting their files).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::fsguard::SecretDir;

use super::{check_label, free_token, init_token, list_tokens, InitSecrets, Module, TokenError};

/// The manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The SO PIN's file (relative to the manifest), if not given on the command line.
    #[serde(default)]
    pub so_pin_file: Option<PathBuf>,
    /// Where the user PINs go: a directory, or `-` for standard output.
    pub pin_out: String,
    /// Length of the generated user PINs.
    #[serde(default = "default_pin_length")]
    pub pin_length: usize,
    /// The tokens.
    #[serde(rename = "token")]
    pub tokens: Vec<ManifestToken>,
}

fn default_pin_length() -> usize {
    12
}

/// One token of the manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestToken {
    /// Its label.
    pub label: String,
}

/// A provisioning error (the manifest, or a token).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The manifest is unusable.
    #[error("manifest {}: {why}; nothing was changed", .path.display())]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
    /// A token failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The PIN directory or a file in it is not safe for secrets.
    #[error("cannot use {0}")]
    Unsafe(#[from] crate::fsguard::Unsafe),
    /// A PIN file.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Manifest {
    /// Reads and checks a manifest: labels valid and unique, a PIN length of 6 to 64.
    pub fn load(path: &Path) -> Result<Manifest, ProvisionError> {
        let bad = |why: String| ProvisionError::Manifest {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if !(6..=64).contains(&m.pin_length) {
            return Err(bad(format!(
                "pin_length {} is out of range: 6 to 64",
                m.pin_length
            )));
        }
        let mut seen = HashSet::new();
        for t in &m.tokens {
            check_label(&t.label).map_err(|e| bad(e.to_string()))?;
            if !seen.insert(t.label.as_str()) {
                return Err(bad(format!("label {:?} appears twice", t.label)));
            }
            if m.pin_out != "-" && !crate::fsguard::is_file_name(&format!("{}.pin", t.label)) {
                return Err(bad(format!(
                    "label {:?} cannot name a PIN file in pin_out (it holds '/' or a control character); choose another label or set pin_out = \"-\"",
                    t.label
                )));
            }
        }
        Ok(m)
    }

    /// The SO PIN file, relative to the manifest's directory.
    pub fn so_pin_path(&self, manifest: &Path) -> Option<PathBuf> {
        self.so_pin_file
            .as_ref()
            .map(|f| manifest.parent().unwrap_or(Path::new(".")).join(f))
    }

    /// The PIN directory (relative to the manifest's), or `None` to print.
    pub fn pin_dir(&self, manifest: &Path) -> Option<PathBuf> {
        (self.pin_out != "-").then(|| {
            manifest
                .parent()
                .unwrap_or(Path::new("."))
                .join(&self.pin_out)
        })
    }
}

/// What a run did (or would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct Provisioned {
    /// Labels initialised.
    pub initialised: Vec<String>,
    /// Labels that existed already.
    pub skipped: Vec<String>,
    /// Nothing changed (`--dry-run`).
    pub dry_run: bool,
}

/// The labels already on initialised tokens.
fn existing_labels(module: &Module) -> Result<HashSet<String>, TokenError> {
    Ok(list_tokens(module)?
        .into_iter()
        .filter(|t| t.summary().initialized)
        .map(|t| t.label().to_string())
        .collect())
}

/// What a run would do, and whether there are enough free slots: refused when not.
pub fn plan(module: &Module, m: &Manifest) -> Result<Provisioned, TokenError> {
    let existing = existing_labels(module)?;
    let mut p = Provisioned {
        dry_run: true,
        ..Provisioned::default()
    };
    for t in &m.tokens {
        if existing.contains(&t.label) {
            p.skipped.push(t.label.clone());
        } else {
            p.initialised.push(t.label.clone());
        }
    }
    Ok(p)
}

/// A PIN handed out: written to its file, or to be printed by the caller.
pub enum PinOut<'a> {
    /// `DIR/LABEL.pin`, 0600.
    Dir(&'a Path),
    /// Given to this function to print once.
    Print(&'a mut dyn FnMut(&str, &SecretString)),
}

/// Initialises the manifest's tokens that do not exist yet; `progress` is told how many
/// manifest entries are done.
pub fn provision(
    module: &Module,
    m: &Manifest,
    so_pin: &SecretString,
    mut out: PinOut<'_>,
    progress: &mut dyn FnMut(usize),
) -> Result<Provisioned, ProvisionError> {
    let mut existing = existing_labels(module)?;
    let mut done = Provisioned::default();
    let pin_dir = match &out {
        PinOut::Dir(dir) => Some(SecretDir::open(dir)?),
        _ => None,
    };
    for (i, t) in m.tokens.iter().enumerate() {
        if existing.contains(&t.label) {
            done.skipped.push(t.label.clone());
            progress(i + 1);
            continue;
        }
        let target = free_token(module)?;
        let pin = generate_pin(m.pin_length)?;
        target.check_pin_length(super::PinRole::User, &pin)?;
        // The PIN is safe on disk before the token takes it.
        if let Some(dir) = &pin_dir {
            write_pin(dir, &t.label, &pin)?;
        }
        init_token(
            module,
            &target,
            &t.label,
            InitSecrets {
                so_pin,
                user_pin: &pin,
            },
            false,
        )?;
        if let PinOut::Print(print) = &mut out {
            print(&t.label, &pin);
        }
        existing.insert(t.label.clone());
        done.initialised.push(t.label.clone());
        progress(i + 1);
    }
    Ok(done)
}

/// Letters and digits without look-alikes (0/O, 1/I/l).
const PIN_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

fn generate_pin(len: usize) -> Result<SecretString, ProvisionError> {
    let mut pin = Zeroizing::new(String::with_capacity(len));
    let mut byte = [0u8; 1];
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % PIN_ALPHABET.len();
    while pin.len() < len {
        getrandom::getrandom(&mut byte).map_err(|e| ProvisionError::Io {
            path: PathBuf::from("/dev/urandom"),
            source: e.raw_os_error().map_or_else(
                || std::io::Error::other(e.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        })?;
        if usize::from(byte[0]) < limit {
            pin.push(char::from(
                PIN_ALPHABET[usize::from(byte[0]) % PIN_ALPHABET.len()],
            ));
        }
    }
    Ok(SecretString::from(pin.as_str()))
}

/// `DIR/LABEL.pin` (0600), written to a temporary file created new, renamed, the directory
/// synced.
fn write_pin(dir: &SecretDir, label: &str, pin: &SecretString) -> Result<(), ProvisionError> {
    use secrecy::ExposeSecret;
    let line = Zeroizing::new(format!("{}\n", pin.expose_secret()));
    dir.write_file(&format!("{label}.pin"), line.as_bytes())?;
    Ok(dir.sync()?)
}
