//! Reading secrets (PINs, temporary keys) from a file, an environment variable or a prompt.
//!
//! Secrets live in [`SecretString`]s from the moment they are read; buffers are zeroized.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Errors reading a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// No source had the secret and there is no terminal to ask on.
    #[error("no {what} given and no terminal to ask on; pass {flag} FILE or set {env}")]
    Missing {
        /// What secret ("PIN", "SO PIN").
        what: String,
        /// The file flag.
        flag: String,
        /// The environment variable.
        env: String,
    },
    /// The secret file could not be read.
    #[error("cannot read {what} from {}: {source}", .path.display())]
    File {
        /// What secret.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret file holds more than one line.
    #[error("cannot read {what} from {}: it has more than one line; put the secret alone on the first line", .path.display())]
    MultiLine {
        /// What secret.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// The secret is empty.
    #[error("the {what} from {source_name} is empty")]
    Empty {
        /// What secret.
        what: String,
        /// Where it came from.
        source_name: String,
    },
    /// The secret is not valid UTF-8.
    #[error("the {what} from {source_name} is not valid UTF-8")]
    NotUtf8 {
        /// What secret.
        what: String,
        /// Where it came from.
        source_name: String,
    },
    /// The prompt failed.
    #[error("cannot read {what} from the terminal: {source}")]
    Prompt {
        /// What secret.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The two entries of a new secret differ.
    #[error("the two entries of the {what} differ; nothing was changed")]
    Mismatch {
        /// What secret.
        what: String,
    },
}

/// Where one secret may come from, tried in order: file, environment variable, prompt.
#[derive(Clone)]
pub struct SecretSource {
    /// What it is, for prompts and errors ("PIN", "new PIN", "SO PIN").
    pub what: String,
    /// The `--…-file` flag name, for error messages.
    pub flag: String,
    /// The file given with that flag.
    pub file: Option<PathBuf>,
    /// The environment variable to read.
    pub env: String,
    /// Ask twice at the prompt (a new secret).
    pub confirm: bool,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("what", &self.what)
            .field("file", &self.file)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl SecretSource {
    /// A source with the given name, flag, file and environment variable.
    pub fn new(what: &str, flag: &str, file: Option<PathBuf>, env: &str) -> Self {
        SecretSource {
            what: what.to_string(),
            flag: flag.to_string(),
            file,
            env: env.to_string(),
            confirm: false,
        }
    }

    /// The same source, asking twice at the prompt.
    pub fn confirmed(mut self) -> Self {
        self.confirm = true;
        self
    }

    /// Reads the secret from the first source that has it.
    pub fn read(&self) -> Result<SecretString, SecretError> {
        if let Some(path) = &self.file {
            return self.read_file(path);
        }
        if let Some(value) = std::env::var_os(&self.env) {
            let value = Zeroizing::new(value.into_string().map_err(|_| SecretError::NotUtf8 {
                what: self.what.clone(),
                source_name: self.env.clone(),
            })?);
            return self.nonempty(value.as_str(), &self.env);
        }
        if std::io::stdin().is_terminal() {
            return self.prompt();
        }
        Err(SecretError::Missing {
            what: self.what.clone(),
            flag: self.flag.clone(),
            env: self.env.clone(),
        })
    }

    fn read_file(&self, path: &Path) -> Result<SecretString, SecretError> {
        crate::fsguard::warn_if_readable(path, &self.what);
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| SecretError::File {
            what: self.what.clone(),
            path: path.to_path_buf(),
            source: e,
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotUtf8 {
            what: self.what.clone(),
            source_name: path.display().to_string(),
        })?;
        // The secret is the file's one line; trailing line ends (an editor's extra blank line)
        // are not part of it, but a second line is a mistake, not something to send.
        let line = text.trim_end_matches(['\n', '\r']);
        if line.contains('\n') {
            return Err(SecretError::MultiLine {
                what: self.what.clone(),
                path: path.to_path_buf(),
            });
        }
        self.nonempty(line, &path.display().to_string())
    }

    fn nonempty(&self, value: &str, source_name: &str) -> Result<SecretString, SecretError> {
        if value.is_empty() {
            return Err(SecretError::Empty {
                what: self.what.clone(),
                source_name: source_name.to_string(),
            });
        }
        let secret = SecretString::from(value.to_string());
        crate::fsguard::lock_in_memory(secrecy::ExposeSecret::expose_secret(&secret).as_bytes());
        Ok(secret)
    }

    fn prompt(&self) -> Result<SecretString, SecretError> {
        let first = self.ask(&format!("{}: ", capitalize(&self.what)))?;
        if self.confirm {
            let second = self.ask(&format!("{} again: ", capitalize(&self.what)))?;
            if first.expose_secret() != second.expose_secret() {
                return Err(SecretError::Mismatch {
                    what: self.what.clone(),
                });
            }
        }
        self.nonempty(first.expose_secret(), "the prompt")
    }

    fn ask(&self, prompt: &str) -> Result<SecretString, SecretError> {
        rpassword::prompt_password(prompt)
            .map(SecretString::from)
            .map_err(|e| SecretError::Prompt {
                what: self.what.clone(),
                source: e,
            })
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_file(text: &str) -> Result<String, SecretError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, text).unwrap();
        SecretSource::new("PIN", "--pin-file", Some(path), "KEYWARD_TEST_NO_SUCH_VAR")
            .read()
            .map(|s| s.expose_secret().to_string())
    }

    #[test]
    fn a_secret_file_holds_one_line_and_its_line_ends_are_not_part_of_it() {
        assert_eq!(from_file("2222").unwrap(), "2222");
        assert_eq!(from_file("2222\n").unwrap(), "2222");
        assert_eq!(from_file("2222\r\n").unwrap(), "2222");
        assert_eq!(from_file("2222\n\n").unwrap(), "2222");
        assert_eq!(from_file(" spaced pin \n").unwrap(), " spaced pin ");
        let e = from_file("2222\n3333\n").unwrap_err().to_string();
        assert!(e.contains("more than one line"), "{e}");
        assert!(matches!(from_file("\n"), Err(SecretError::Empty { .. })));
    }
}
