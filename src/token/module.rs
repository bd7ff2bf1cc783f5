//! Finding, loading and initialising a PKCS#11 module, once per process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::Error as CkError;

use super::error::TokenError;

/// Where Debian and other distributions put SoftHSM2, tried in order when no module is named.
pub const DEFAULT_MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
];

static LOADED: AtomicBool = AtomicBool::new(false);

/// A loaded and initialised PKCS#11 module. One per process; finalised by [`Module::finalize`].
pub struct Module {
    pkcs11: Pkcs11,
    path: PathBuf,
    raw: std::sync::OnceLock<Result<super::raw::RawFunctions, String>>,
    _softhsm_lock: Option<std::fs::File>,
}

impl Module {
    /// Picks the module: the given path, else the first of [`DEFAULT_MODULE_PATHS`] that exists.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, TokenError> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        DEFAULT_MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| TokenError::ModuleNotFound {
                tried: DEFAULT_MODULE_PATHS.iter().map(PathBuf::from).collect(),
            })
    }

    /// Loads and initialises the module at `path`. Fails if a module is already loaded here.
    pub fn load(path: &Path) -> Result<Module, TokenError> {
        if LOADED.swap(true, Ordering::SeqCst) {
            return Err(TokenError::AlreadyLoaded);
        }
        let result = Self::load_unguarded(path);
        if result.is_err() {
            LOADED.store(false, Ordering::SeqCst);
        }
        result
    }

    fn load_unguarded(path: &Path) -> Result<Module, TokenError> {
        if !path.exists() {
            return Err(TokenError::ModuleLoad {
                path: path.to_path_buf(),
                reason: "no such file".to_string(),
            });
        }
        let softhsm_lock = softhsm_process_lock(path);
        log::debug!("loading PKCS#11 module {}", path.display());
        let pkcs11 = Pkcs11::new(path).map_err(|e| TokenError::ModuleLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| init_error(path, e))?;
        Ok(Module {
            pkcs11,
            path: path.to_path_buf(),
            raw: std::sync::OnceLock::new(),
            _softhsm_lock: softhsm_lock,
        })
    }

    /// The module's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw cryptoki context, for benchmarks that compare against it. Not for keyward's layers.
    #[doc(hidden)]
    pub fn raw(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    /// The module's function list for calls cryptoki cannot make (loaded on first use).
    pub(crate) fn raw_functions(&self) -> Result<&super::raw::RawFunctions, TokenError> {
        self.raw
            .get_or_init(|| super::raw::RawFunctions::load(&self.path))
            .as_ref()
            .map_err(|reason| TokenError::ModuleLoad {
                path: self.path.clone(),
                reason: reason.clone(),
            })
    }

    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    /// Calls `C_Finalize`. Sessions should be closed first.
    pub fn finalize(self) {
        log::debug!("finalising PKCS#11 module {}", self.path.display());
        if let Err(e) = self.pkcs11.finalize() {
            log::debug!("C_Finalize: {e}");
        }
        LOADED.store(false, Ordering::SeqCst);
    }
}

/// SoftHSM's file store is not safe between processes: a process reading a token can see it
/// vanish while another writes it (SoftHSMv2 issue #757). keyward processes that use the same
/// SoftHSM configuration therefore take turns, holding a lock on the configuration file from
/// `C_Initialize` to `C_Finalize`. Other modules (real tokens) are not affected.
fn softhsm_process_lock(path: &Path) -> Option<std::fs::File> {
    let name = path.to_string_lossy();
    let softhsm_like = name.contains("softhsm")
        || name.contains("p11shim")
        || std::env::var_os("SOFTHSM2_CONF").is_some();
    if !softhsm_like {
        return None;
    }
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    let file = std::fs::File::open(&conf).ok()?;
    match file.lock() {
        Ok(()) => Some(file),
        Err(e) => {
            log::debug!("cannot lock {}: {e}", conf.display());
            None
        }
    }
}

fn init_error(path: &Path, err: CkError) -> TokenError {
    let code = match &err {
        CkError::Pkcs11(rv, _) => format!("CKR {rv:?}"),
        other => other.to_string(),
    };
    let hint = if path.to_string_lossy().contains("softhsm") {
        match std::env::var_os("SOFTHSM2_CONF") {
            Some(conf) => format!(
                "check that SOFTHSM2_CONF={} is a readable SoftHSM2 config whose directories.tokendir exists and is writable",
                Path::new(&conf).display()
            ),
            None => "check /etc/softhsm/softhsm2.conf and that its directories.tokendir exists and is writable (or set SOFTHSM2_CONF)".to_string(),
        }
    } else {
        "check the module's own configuration".to_string()
    };
    TokenError::ModuleInit {
        path: path.to_path_buf(),
        code,
        hint,
    }
}
