//! keyward's home directory and its `config.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors finding or reading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No home directory could be worked out.
    #[error(
        "cannot work out keyward's home directory: set KEYWARD_HOME or HOME, or pass --home DIR"
    )]
    NoHome,
    /// The config file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file does not parse.
    #[error("{}:{line}:{column}: {message}; fix the file (it was not changed)", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Where keyward keeps its state: `--home`, else `KEYWARD_HOME`, else `$XDG_CONFIG_HOME/keyward`,
/// else `~/.config/keyward`.
pub fn resolve_home(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("KEYWARD_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("keyward"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".config").join("keyward"))
        .ok_or(ConfigError::NoHome)
}

/// The settings in `$KEYWARD_HOME/config.toml`. Unknown keys are ignored for forward compatibility.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct Config {
    /// The PKCS#11 module to load.
    pub module: Option<PathBuf>,
    /// The module's `C_Initialize` argument string (`pReserved`), used when the module is not
    /// named by `--module` / `KEYWARD_MODULE` (the arguments belong to the configured module).
    pub module_args: Option<String>,
    /// The authority directory `authority` commands use when neither `--dir` nor
    /// `KEYWARD_AUTHORITY_DIR` names one.
    pub authority_dir: Option<PathBuf>,
}

impl Config {
    /// Reads `config.toml` in `home`; a missing file is the default configuration.
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        let path = home.join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(ConfigError::Read { path, source: e }),
        };
        parse_toml(&path, &text)
    }
}

/// Parses TOML text, reporting an error with the file, line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_column() {
        let text = "module = \"/x\"\nbogus = = 3\n";
        let err = parse_toml::<Config>(Path::new("/h/config.toml"), text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/h/config.toml:2:"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let c: Config = parse_toml(Path::new("c"), "module = \"/m.so\"\nfuture = 1\n").unwrap();
        assert_eq!(c.module.as_deref(), Some(Path::new("/m.so")));
    }

    #[test]
    fn module_args_are_read() {
        let c: Config = parse_toml(
            Path::new("c"),
            "module = \"/m.so\"\nmodule_args = \"configdir='sql:/d' flags=\"\n",
        )
        .unwrap();
        assert_eq!(c.module_args.as_deref(), Some("configdir='sql:/d' flags="));
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
