//! Finding, loading and initialising a PKCS#11 module, once per process.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::discover::SearchPlaces;
pub use super::discover::{FoundModule, DEFAULT_MODULE_PATHS};
use super::error::TokenError;

static LOADED: AtomicBool = AtomicBool::new(false);

/// What the module says about itself (`C_GetInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LibraryInfo {
    /// `manufacturerID`.
    pub manufacturer: String,
    /// `libraryDescription`.
    pub description: String,
    /// `libraryVersion`, `M.N`.
    pub version: String,
    /// The PKCS#11 version it implements, `M.N`.
    pub cryptoki_version: String,
}

/// A loaded and initialised PKCS#11 module. One per process; finalised by [`Module::finalize`].
pub struct Module {
    pkcs11: Pkcs11,
    path: PathBuf,
    library: LibraryInfo,
    /// The `C_Initialize` argument string, kept alive as long as the module (NSS keeps it).
    _init_args: Option<CString>,
    _softhsm_lock: Option<std::fs::File>,
}

impl Module {
    /// Picks the module: the given path, else the first of [`DEFAULT_MODULE_PATHS`] that
    /// exists, else what p11-kit has registered (see [`Module::discover`]).
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, TokenError> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        Ok(Self::discover()?.path)
    }

    /// Finds a module when none is named: SoftHSM2 on its usual paths, else the one module
    /// registered with p11-kit (with its `x-init-reserved:` arguments), else p11-kit's proxy
    /// when several are registered. The error names every place looked at.
    pub fn discover() -> Result<FoundModule, TokenError> {
        SearchPlaces::system().find()
    }

    /// Loads and initialises the module at `path`. Fails if a module is already loaded here.
    pub fn load(path: &Path) -> Result<Module, TokenError> {
        Self::load_with_args(path, None)
    }

    /// Loads the module at `path` and initialises it with `init_args` as `pReserved` of
    /// `C_Initialize` (NSS softokn's `configdir='sql:DIR' …`); `None` or an empty string passes
    /// none. Fails if a module is already loaded here.
    pub fn load_with_args(path: &Path, init_args: Option<&str>) -> Result<Module, TokenError> {
        if LOADED.swap(true, Ordering::SeqCst) {
            return Err(TokenError::AlreadyLoaded);
        }
        let result = Self::load_unguarded(path, init_args.filter(|a| !a.is_empty()));
        if result.is_err() {
            LOADED.store(false, Ordering::SeqCst);
        }
        result
    }

    fn load_unguarded(path: &Path, init_args: Option<&str>) -> Result<Module, TokenError> {
        if !path.exists() {
            return Err(TokenError::ModuleMissing {
                path: path.to_path_buf(),
            });
        }
        let init_args = init_args
            .map(|a| {
                CString::new(a).map_err(|_| TokenError::ModuleInit {
                    path: path.to_path_buf(),
                    code: "not called".to_string(),
                    hint: "the module arguments contain a NUL byte; remove it".to_string(),
                })
            })
            .transpose()?;
        // Taken before C_Initialize, which reads SoftHSM's token directory; kept only when the
        // module turns out to be SoftHSM (see `softhsm_process_lock`).
        let provisional_lock = may_be_softhsm(path).then(softhsm_process_lock).flatten();
        log::debug!(
            "loading PKCS#11 module {}{}",
            path.display(),
            if init_args.is_some() {
                " with initialisation arguments"
            } else {
                ""
            }
        );
        let pkcs11 = Pkcs11::new(path).map_err(|source| TokenError::ModuleLoad {
            path: path.to_path_buf(),
            source,
        })?;
        pkcs11
            .initialize(initialize_args(init_args.as_ref()))
            .map_err(|e| init_error(path, init_args.is_some(), e))?;
        let library = library_info(&pkcs11);
        log::debug!(
            "module {}: {:?} {:?} {}",
            path.display(),
            library.manufacturer,
            library.description,
            library.version
        );
        let softhsm_lock = if is_softhsm(&pkcs11, &library) {
            provisional_lock.or_else(softhsm_process_lock)
        } else {
            None
        };
        Ok(Module {
            pkcs11,
            path: path.to_path_buf(),
            library,
            _init_args: init_args,
            _softhsm_lock: softhsm_lock,
        })
    }

    /// The module's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the module says about itself.
    pub fn library(&self) -> &LibraryInfo {
        &self.library
    }

    /// The raw cryptoki context, for benchmarks that compare against it. Not for keyward's layers.
    #[doc(hidden)]
    pub fn raw(&self) -> &Pkcs11 {
        &self.pkcs11
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

/// `C_Initialize`'s arguments. keyward calls a module from one thread: without module
/// arguments, NULL_PTR (PKCS#11 2.40, 5.4: no threads, no locking), which is also what keeps
/// OpenSC from deadlocking on itself when a card is pulled out during `C_GetTokenInfo`; with
/// them, the argument string as `pReserved` (and OS locking, which modules that take arguments,
/// NSS softokn, expect).
#[allow(unsafe_code)]
fn initialize_args(init_args: Option<&CString>) -> CInitializeArgs {
    match init_args.and_then(|a| NonNull::new(a.as_ptr().cast_mut().cast())) {
        // SAFETY: the pointer is a NUL-terminated C string, the `char *` modules that take
        // arguments (NSS softokn's `LibraryParameters`) read in place of `pReserved`. The
        // string is kept in the `Module`, so it outlives `C_Initialize` and every later call.
        Some(reserved) => unsafe {
            CInitializeArgs::new_with_reserved(CInitializeFlags::OS_LOCKING_OK, reserved)
        },
        None => CInitializeArgs::new(CInitializeFlags::empty()),
    }
}

fn library_info(pkcs11: &Pkcs11) -> LibraryInfo {
    match pkcs11.get_library_info() {
        Ok(info) => LibraryInfo {
            manufacturer: info
                .manufacturer_id()
                .trim_end_matches([' ', '\0'])
                .to_string(),
            description: info
                .library_description()
                .trim_end_matches([' ', '\0'])
                .to_string(),
            version: info.library_version().to_string(),
            cryptoki_version: info.cryptoki_version().to_string(),
        },
        Err(e) => {
            log::debug!("C_GetInfo: {e}");
            LibraryInfo::default()
        }
    }
}

/// Could the module at `path` be SoftHSM (or reach it through the test shim or p11-kit's
/// proxy)? Only decides whether to take the lock before `C_Initialize`; [`is_softhsm`]
/// decides whether to keep it.
fn may_be_softhsm(path: &Path) -> bool {
    let name = path.to_string_lossy();
    std::env::var_os("SOFTHSM2_CONF").is_some()
        || ["softhsm", "p11shim", "p11-kit-proxy"]
            .iter()
            .any(|n| name.contains(n))
}

/// Is the loaded module SoftHSM, directly or behind a proxy (one of its slots)? A name check,
/// and on purpose: the lock works around one module's bug (SoftHSMv2 #757), which no
/// PKCS#11 call reveals. Capabilities are never decided this way.
fn is_softhsm(pkcs11: &Pkcs11, library: &LibraryInfo) -> bool {
    const NAME: &str = "SoftHSM";
    if library.manufacturer.contains(NAME) || library.description.contains(NAME) {
        return true;
    }
    let Ok(slots) = pkcs11.get_all_slots() else {
        return false;
    };
    slots.into_iter().any(|slot| {
        pkcs11
            .get_slot_info(slot)
            .is_ok_and(|i| i.manufacturer_id().contains(NAME))
    })
}

/// SoftHSM's file store is not safe between processes: a process reading a token can see it
/// vanish while another writes it (SoftHSMv2 issue #757). keyward processes that use the same
/// SoftHSM configuration therefore take turns, holding a lock on the configuration file from
/// `C_Initialize` to `C_Finalize`. Other modules (real tokens) are not affected.
fn softhsm_process_lock() -> Option<std::fs::File> {
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    let file = std::fs::File::open(&conf).ok()?;
    match file.try_lock() {
        Ok(()) => return Some(file),
        Err(std::fs::TryLockError::WouldBlock) => log::warn!(
            "waiting for another keyward process using the SoftHSM2 configuration {} to finish (SoftHSM's token store cannot be shared between processes; a running `keyward authority serve` keeps it until stopped)",
            conf.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            log::debug!("cannot lock {}: {e}", conf.display());
            return None;
        }
    }
    match file.lock() {
        Ok(()) => Some(file),
        Err(e) => {
            log::debug!("cannot lock {}: {e}", conf.display());
            None
        }
    }
}

fn init_error(path: &Path, had_args: bool, err: CkError) -> TokenError {
    let code = match &err {
        CkError::Pkcs11(rv, f) => super::CallFailure::of(*f, rv).to_string(),
        other => other.to_string(),
    };
    let bad_args = matches!(err, CkError::Pkcs11(RvError::ArgumentsBad, _));
    let hint = if bad_args && had_args {
        "it refused the initialisation arguments given (--module-args, KEYWARD_MODULE_ARGS or module_args in config.toml); check them, or pass none (SoftHSM2 takes none)".to_string()
    } else if bad_args {
        "it may need initialisation arguments: pass --module-args STRING (or KEYWARD_MODULE_ARGS, or module_args in config.toml); NSS softokn needs \"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\"".to_string()
    } else if path.to_string_lossy().contains("softhsm") {
        match std::env::var_os("SOFTHSM2_CONF") {
            Some(conf) => format!(
                "check that SOFTHSM2_CONF={} is a readable SoftHSM2 config whose directories.tokendir exists and is writable",
                Path::new(&conf).display()
            ),
            None => "check /etc/softhsm/softhsm2.conf and that its directories.tokendir exists and is writable (or set SOFTHSM2_CONF)".to_string(),
        }
    } else {
        "check the module's own configuration (and its --module-args)".to_string()
    };
    TokenError::ModuleInit {
        path: path.to_path_buf(),
        code,
        hint,
    }
}
