//! Reading the authority directory of keyward before the store (schema 1: `authority.toml`,
//! `users.toml`, `ca.pem`, `issued/`, `archive/`, `audit.log`), for `authority migrate`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{AuthorityConfig, UserRecord};

/// The schema of the directories this module reads.
const SCHEMA: u32 = 1;
use super::state::io;
use super::AuthorityError;
use crate::home::parse_toml;

/// `users.toml`: the schema and the users (public so the fuzz target parses what the
/// authority parses).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UsersFile {
    schema: u32,
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
    #[serde(flatten)]
    extra: toml::Table,
}

/// A schema-1 directory, read.
#[derive(Debug)]
pub struct LegacyDir {
    /// The directory.
    pub dir: PathBuf,
    /// `authority.toml`.
    pub config: AuthorityConfig,
    /// `users.toml`.
    pub users: Vec<UserRecord>,
}

/// Reads a schema-1 directory.
pub fn read(dir: &Path) -> Result<LegacyDir, AuthorityError> {
    let cfg_path = dir.join("authority.toml");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| io("read", &cfg_path, e))?;
    let config: AuthorityConfig = parse_toml(&cfg_path, &text)?;
    if config.schema > SCHEMA {
        return Err(AuthorityError::NewerSchema {
            path: cfg_path,
            found: config.schema,
        });
    }
    let users_path = dir.join("users.toml");
    let users: UsersFile = match std::fs::read_to_string(&users_path) {
        Ok(t) => parse_toml(&users_path, &t)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsersFile::default(),
        Err(e) => return Err(io("read", &users_path, e)),
    };
    if users.schema > SCHEMA {
        return Err(AuthorityError::NewerSchema {
            path: users_path,
            found: users.schema,
        });
    }
    Ok(LegacyDir {
        dir: dir.to_path_buf(),
        config,
        users: users.users,
    })
}
