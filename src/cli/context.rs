//! What every command needs: the home directory, the module (loaded on first use), secrets.

use std::path::PathBuf;

use secrecy::SecretString;

use super::args::GlobalArgs;
use crate::error::Error;
use crate::home::{resolve_home, Config};
use crate::secrets::SecretSource;
use crate::token::{find_token, LoginPolicy, Module, Pkcs11Uri, Token};

/// The state of one keyward invocation.
pub struct Context {
    args: GlobalArgs,
    module: Option<Module>,
}

impl Context {
    /// A context from the global flags; nothing is loaded yet.
    pub fn new(args: GlobalArgs) -> Self {
        Context { args, module: None }
    }

    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.args.json
    }

    /// The login policy from `--final-try`.
    pub fn login_policy(&self) -> LoginPolicy {
        LoginPolicy {
            allow_final_try: self.args.final_try,
        }
    }

    /// keyward's home directory.
    pub fn home(&self) -> Result<PathBuf, Error> {
        Ok(resolve_home(self.args.home.as_deref())?)
    }

    /// The module, loaded and initialised on first use.
    ///
    /// The module: `--module` / `KEYWARD_MODULE`, else `module` in config.toml, else discovery.
    /// Its arguments: `--module-args` / `KEYWARD_MODULE_ARGS` (an empty string: none), else
    /// `module_args` in config.toml unless the module came from the flag (the configured
    /// arguments belong to the configured module), else a p11-kit registration's own.
    pub fn module(&mut self) -> Result<&Module, Error> {
        if self.module.is_none() {
            let (path, args) = self.module_choice()?;
            self.module = Some(Module::load_with_args(&path, args.as_deref())?);
        }
        Ok(self.module.as_ref().expect("module was just loaded"))
    }

    /// The module to load and its arguments (what [`Context::module`] loads), for a command
    /// that loads it itself (`send`, on a thread of its own).
    pub fn module_choice(&self) -> Result<(PathBuf, Option<String>), Error> {
        let flag_args = self.args.module_args.clone();
        if let Some(path) = &self.args.module {
            return Ok((path.clone(), flag_args));
        }
        let config = Config::load(&self.home()?)?;
        let args = flag_args.or(config.module_args);
        if let Some(path) = config.module {
            return Ok((path, args));
        }
        let found = Module::discover()?;
        log::debug!("module {} ({})", found.path.display(), found.how);
        Ok((found.path, args.or(found.init_args)))
    }

    /// The token `--token` names (URI or bare label).
    pub fn token(&mut self, arg: &str) -> Result<Token, Error> {
        let uri = Pkcs11Uri::from_token_arg(arg)?;
        let module = self.module()?;
        Ok(find_token(module, &uri)?)
    }

    /// The current user PIN.
    pub fn pin(&self) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            "PIN",
            "--pin-file",
            self.args.pin_file.clone(),
            "KEYWARD_PIN",
        )
        .read()?)
    }

    /// The password of a keyset (the token PIN, or what a hardened PIN is derived from).
    pub fn password(&self, keyset: &str) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            &format!("password of keyset {keyset:?}"),
            "--pin-file",
            self.args.pin_file.clone(),
            "KEYWARD_PIN",
        )
        .read()?)
    }

    /// A new keyset password (asked twice at a prompt).
    pub fn new_password(&self, keyset: &str) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            &format!("new password of keyset {keyset:?}"),
            "--new-pin-file",
            self.args.new_pin_file.clone(),
            "KEYWARD_NEW_PIN",
        )
        .confirmed()
        .read()?)
    }

    /// The temporary key from the authority.
    pub fn temp_key(&self) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            "temporary key",
            "--temp-key-file",
            self.args.temp_key_file.clone(),
            "KEYWARD_TEMP_KEY",
        )
        .read()?)
    }

    /// The PIN of the authority's token (when one command needs both tokens).
    pub fn authority_pin(&self) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            "authority token PIN",
            "--authority-pin-file",
            self.args.authority_pin_file.clone(),
            "KEYWARD_AUTHORITY_PIN",
        )
        .read()?)
    }

    /// The authority token's PIN for `authority` commands: `--authority-pin-file` or
    /// `KEYWARD_AUTHORITY_PIN` when given (as for `enroll --authority`), else `--pin-file` /
    /// `KEYWARD_PIN` / the prompt, named as the authority's.
    pub fn authority_command_pin(&self) -> Result<SecretString, Error> {
        if self.args.authority_pin_file.is_some()
            || std::env::var_os("KEYWARD_AUTHORITY_PIN").is_some()
        {
            return self.authority_pin();
        }
        Ok(SecretSource::new(
            "authority token PIN",
            "--pin-file",
            self.args.pin_file.clone(),
            "KEYWARD_PIN",
        )
        .read()?)
    }

    /// The PIN of an operator's own token (`--as NAME`).
    pub fn operator_pin(&self, name: &str) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            &format!("PIN of operator {name:?}'s token"),
            "--operator-pin-file",
            self.args.operator_pin_file.clone(),
            "KEYWARD_OPERATOR_PIN",
        )
        .read()?)
    }

    /// A new password only when one was given by file or environment (never prompted).
    pub fn new_password_if_given(&self, keyset: &str) -> Result<Option<SecretString>, Error> {
        if self.args.new_pin_file.is_some() || std::env::var_os("KEYWARD_NEW_PIN").is_some() {
            return self.new_password(keyset).map(Some);
        }
        Ok(None)
    }

    /// A new user PIN (asked twice at a prompt).
    pub fn new_pin(&self) -> Result<SecretString, Error> {
        Ok(SecretSource::new(
            "new PIN",
            "--new-pin-file",
            self.args.new_pin_file.clone(),
            "KEYWARD_NEW_PIN",
        )
        .confirmed()
        .read()?)
    }

    /// The SO PIN; `new` asks twice at a prompt.
    pub fn so_pin(&self, new: bool) -> Result<SecretString, Error> {
        let source = SecretSource::new(
            if new { "new SO PIN" } else { "SO PIN" },
            "--so-pin-file",
            self.args.so_pin_file.clone(),
            "KEYWARD_SO_PIN",
        );
        let source = if new { source.confirmed() } else { source };
        Ok(source.read()?)
    }

    /// Finalises the module, if one was loaded.
    pub fn finish(&mut self) {
        if let Some(module) = self.module.take() {
            module.finalize();
        }
    }
}
