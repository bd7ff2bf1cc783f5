//! `keyward-p11shim`: a test-only PKCS#11 module that wraps a real one (SoftHSM2 by default).
//!
//! Every entry of its function list forwards to the real module, except that, as configured
//! by environment variables read at `C_Initialize` (see `README.md`), it can
//!
//! * count wrong user PINs per token like a smart card (`KEYWARD_SHIM_PIN_TRIES`), reporting
//!   `CKF_USER_PIN_COUNT_LOW` / `_FINAL_TRY` / `_LOCKED` and answering `CKR_PIN_LOCKED` once
//!   locked, with the counters in a state file shared by successive processes;
//! * answer a chosen `CKR_*` code instead of forwarding the Nth call overall or of one function
//!   (`KEYWARD_SHIM_FAULT`);
//! * write how many calls were made (`KEYWARD_SHIM_COUNT_FILE`);
//! * silently drop a security attribute from the templates of new keys and read back the
//!   insecure value a module that ignored it would show (`KEYWARD_SHIM_DROP_ATTRIBUTE`).
//!
//! Only `C_GetFunctionList` is exported: without `C_GetInterface`, PKCS#11 3.x callers (such
//! as `cryptoki`) fall back to the 2.40 function list.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
// PKCS#11 names its functions `C_Xxx`.
#![allow(non_snake_case)]

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki_sys::*;

/// The module wrapped when `KEYWARD_SHIM_MODULE` is not set.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user-PIN flags the shim owns when it counts tries.
const USER_PIN_FLAGS: CK_FLAGS =
    CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;

/// The `CKR_*` codes a fault may name (with or without `CKR_`); others as hex or decimal.
const CODES: &[(&str, CK_RV)] = &[
    ("DEVICE_REMOVED", CKR_DEVICE_REMOVED),
    ("DEVICE_ERROR", CKR_DEVICE_ERROR),
    ("TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT),
    ("TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED),
    ("SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID),
    ("SESSION_CLOSED", CKR_SESSION_CLOSED),
    ("GENERAL_ERROR", CKR_GENERAL_ERROR),
    ("FUNCTION_FAILED", CKR_FUNCTION_FAILED),
    ("DEVICE_MEMORY", CKR_DEVICE_MEMORY),
    ("HOST_MEMORY", CKR_HOST_MEMORY),
];

/// The attributes `KEYWARD_SHIM_DROP_ATTRIBUTE` may name, and the value a module that ignored
/// the attribute shows when it is read back: the insecure one (a session key, public, not
/// sensitive, extractable, no PIN at each use).
const DROPPABLE: &[(&str, CK_ATTRIBUTE_TYPE, CK_BBOOL)] = &[
    ("TOKEN", CKA_TOKEN, CK_FALSE),
    ("PRIVATE", CKA_PRIVATE, CK_FALSE),
    ("SENSITIVE", CKA_SENSITIVE, CK_FALSE),
    ("EXTRACTABLE", CKA_EXTRACTABLE, CK_TRUE),
    ("ALWAYS_AUTHENTICATE", CKA_ALWAYS_AUTHENTICATE, CK_FALSE),
];

// ---- the real module ------------------------------------------------------------------------

/// The wrapped module: the library (kept loaded) and a copy of its function list.
struct Real {
    _lib: libloading::Library,
    list: CK_FUNCTION_LIST,
}

static REAL: OnceLock<Result<Real, String>> = OnceLock::new();

/// Loads the real module named by `KEYWARD_SHIM_MODULE` once, on first use.
fn load_real() -> Result<&'static Real, String> {
    REAL.get_or_init(|| {
        let path = std::env::var_os("KEYWARD_SHIM_MODULE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
        let fail = |what: &str| format!("cannot load the real module {}: {what}", path.display());
        // SAFETY: loading a PKCS#11 library runs its initialisers, as any PKCS#11 application does.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| fail(&e.to_string()))?;
        let mut list_ptr: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        let rv = {
            // SAFETY: every PKCS#11 module exports C_GetFunctionList with this signature.
            let get = unsafe {
                lib.get::<unsafe extern "C" fn(*mut CK_FUNCTION_LIST_PTR) -> CK_RV>(
                    b"C_GetFunctionList\0",
                )
            }
            .map_err(|e| fail(&e.to_string()))?;
            // SAFETY: `list_ptr` is a valid place for the one pointer the call writes.
            unsafe { get(&mut list_ptr) }
        };
        if rv != CKR_OK || list_ptr.is_null() {
            return Err(fail(&format!("C_GetFunctionList returned {rv:#x}")));
        }
        if std::ptr::eq(list_ptr, &raw const FUNCTION_LIST) {
            return Err(fail(
                "it is this shim; point KEYWARD_SHIM_MODULE at the real module",
            ));
        }
        // SAFETY: the module returned a valid pointer to its static function list; it is
        // copied, and the library stays loaded (`_lib`) as long as the copy is used.
        let list = unsafe { *list_ptr };
        Ok(Real { _lib: lib, list })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The real module's function list, once loaded.
fn real() -> Option<&'static CK_FUNCTION_LIST> {
    REAL.get().and_then(|r| r.as_ref().ok()).map(|r| &r.list)
}

/// Calls one function of the real module.
macro_rules! real_call {
    ($name:ident($($arg:expr),* $(,)?)) => {
        match real().map(|list| list.$name) {
            Some(Some(f)) => {
                // SAFETY: the same arguments the caller gave this function of the same
                // signature (or, for the shim's own queries, locals that outlive the call).
                unsafe { f($($arg),*) }
            }
            Some(None) => CKR_FUNCTION_NOT_SUPPORTED,
            None => CKR_CRYPTOKI_NOT_INITIALIZED,
        }
    };
}

// ---- configuration --------------------------------------------------------------------------

/// Which call a fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The Nth call overall (counting from `C_Initialize` = 1).
    Overall(u64),
    /// The Nth call of one function.
    Function(String, u64),
}

/// One configured fault: answer `rv` at `target` (and every later one when `sticky`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    rv: CK_RV,
    target: Target,
    sticky: bool,
}

impl Fault {
    fn hits(&self, name: &str, overall: u64, nth: u64) -> bool {
        let (at, count) = match &self.target {
            Target::Overall(at) => (*at, overall),
            Target::Function(f, at) if f == name => (*at, nth),
            Target::Function(..) => return false,
        };
        count == at || (self.sticky && count > at)
    }
}

/// Parses `KEYWARD_SHIM_FAULT`: `CODE@N`, `CODE@C_Name:N`, either with a trailing `+`
/// (that call and every later one), several separated by commas.
fn parse_faults(spec: &str) -> Result<Vec<Fault>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| format!("KEYWARD_SHIM_FAULT item {item:?}: {why}");
        let (code, at) = item
            .split_once('@')
            .ok_or_else(|| bad("want CODE@N or CODE@C_Name:N"))?;
        let rv = parse_rv(code.trim()).map_err(|e| bad(&e))?;
        let (at, sticky) = match at.trim().strip_suffix('+') {
            Some(rest) => (rest, true),
            None => (at.trim(), false),
        };
        let index = |n: &str| match n.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad("the call index must be a number from 1")),
        };
        let target = match at.split_once(':') {
            None => Target::Overall(index(at)?),
            Some((name, n)) => {
                let name = name.trim();
                let name = if name.starts_with("C_") {
                    name.to_string()
                } else {
                    format!("C_{name}")
                };
                if !FUNCTION_NAMES.contains(&name.as_str()) {
                    return Err(bad(&format!("no PKCS#11 function {name}")));
                }
                Target::Function(name, index(n)?)
            }
        };
        out.push(Fault { rv, target, sticky });
    }
    Ok(out)
}

/// Parses `KEYWARD_SHIM_HIDE_MECHANISMS`: mechanism numbers (`0x210A`, `8458`), comma-separated.
fn parse_mechanisms(spec: &str) -> Result<Vec<CK_MECHANISM_TYPE>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|m| {
            let upper = m.to_ascii_uppercase();
            match upper.strip_prefix("0X") {
                Some(hex) => CK_MECHANISM_TYPE::from_str_radix(hex, 16),
                None => upper.parse::<CK_MECHANISM_TYPE>(),
            }
            .map_err(|_| format!("KEYWARD_SHIM_HIDE_MECHANISMS item {m:?}: want a number (0x210A)"))
        })
        .collect()
}

/// Parses `KEYWARD_SHIM_DROP_ATTRIBUTE`: attribute names of [`DROPPABLE`] (with or without
/// `CKA_`), comma-separated.
fn parse_dropped(spec: &str) -> Result<Vec<(CK_ATTRIBUTE_TYPE, CK_BBOOL)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|a| {
            let upper = a.to_ascii_uppercase();
            let name = upper.strip_prefix("CKA_").unwrap_or(&upper);
            DROPPABLE
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, v)| (*t, *v))
                .ok_or_else(|| {
                    let known: Vec<String> = DROPPABLE
                        .iter()
                        .map(|(n, _, _)| format!("CKA_{n}"))
                        .collect();
                    format!(
                        "KEYWARD_SHIM_DROP_ATTRIBUTE item {a:?}: want one of {}",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

/// The dropped attributes and the values they read back as.
fn dropped() -> Vec<(CK_ATTRIBUTE_TYPE, CK_BBOOL)> {
    state().config.dropped.clone()
}

/// A copy of the template `(ptr, len)` without the dropped attributes (the caller's buffers
/// are not touched; the copy points into them).
///
/// # Safety
/// `ptr` must be null or point to `len` readable `CK_ATTRIBUTE`s.
unsafe fn without_dropped(
    ptr: *const CK_ATTRIBUTE,
    len: CK_ULONG,
    dropped: &[(CK_ATTRIBUTE_TYPE, CK_BBOOL)],
) -> Vec<CK_ATTRIBUTE> {
    if ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's template of `len` attributes (PKCS#11 2.40, 4.1).
    let template = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
    template
        .iter()
        .filter(|a| !dropped.iter().any(|(t, _)| *t == a.type_))
        .copied()
        .collect()
}

/// Is this mechanism hidden from the application?
fn hidden(mechanism: CK_MECHANISM_TYPE) -> bool {
    state().config.hidden.contains(&mechanism)
}

/// A `CKR_*` name (with or without the prefix), or a number (`0x32`, `50`).
fn parse_rv(code: &str) -> Result<CK_RV, String> {
    let upper = code.to_ascii_uppercase();
    let name = upper.strip_prefix("CKR_").unwrap_or(&upper);
    if let Some((_, rv)) = CODES.iter().find(|(n, _)| *n == name) {
        return Ok(*rv);
    }
    let number = match upper.strip_prefix("0X") {
        Some(hex) => CK_RV::from_str_radix(hex, 16),
        None => upper.parse::<CK_RV>(),
    };
    number.map_err(|_| {
        let known: Vec<String> = CODES.iter().map(|(n, _)| format!("CKR_{n}")).collect();
        format!(
            "unknown code {code:?}; use {} or a number",
            known.join(", ")
        )
    })
}

/// What the environment asked for at `C_Initialize`.
#[derive(Debug, Default, Clone)]
struct Config {
    /// `KEYWARD_SHIM_PIN_TRIES`: count wrong user PINs, lock after this many.
    pin_tries: Option<u32>,
    /// `KEYWARD_SHIM_STATE`: the counters' file (else they live in this process only).
    state_file: Option<PathBuf>,
    /// `KEYWARD_SHIM_FAULT`.
    faults: Vec<Fault>,
    /// `KEYWARD_SHIM_COUNT_FILE`.
    count_file: Option<PathBuf>,
    /// `KEYWARD_SHIM_HIDE_MECHANISMS`: mechanisms the token seems not to have.
    hidden: Vec<CK_MECHANISM_TYPE>,
    /// `KEYWARD_SHIM_NO_CONTEXT_LOGIN=1`: `C_Login(CKU_CONTEXT_SPECIFIC)` answers
    /// `CKR_USER_TYPE_INVALID`, as opencryptoki's soft token does.
    no_context_login: bool,
    /// `KEYWARD_SHIM_DROP_ATTRIBUTE`: attributes left out of new keys' templates, and the
    /// values they read back as.
    dropped: Vec<(CK_ATTRIBUTE_TYPE, CK_BBOOL)>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let pin_tries = match env("KEYWARD_SHIM_PIN_TRIES") {
            None => None,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(format!(
                        "KEYWARD_SHIM_PIN_TRIES={v:?}: want a number from 1"
                    ))
                }
            },
        };
        Ok(Config {
            pin_tries,
            state_file: env("KEYWARD_SHIM_STATE").map(PathBuf::from),
            faults: parse_faults(&env("KEYWARD_SHIM_FAULT").unwrap_or_default())?,
            count_file: env("KEYWARD_SHIM_COUNT_FILE").map(PathBuf::from),
            hidden: parse_mechanisms(&env("KEYWARD_SHIM_HIDE_MECHANISMS").unwrap_or_default())?,
            no_context_login: env("KEYWARD_SHIM_NO_CONTEXT_LOGIN").is_some_and(|v| v.trim() == "1"),
            dropped: parse_dropped(&env("KEYWARD_SHIM_DROP_ATTRIBUTE").unwrap_or_default())?,
        })
    }
}

// ---- call counting and faults ---------------------------------------------------------------

/// The shim's state in this process.
struct State {
    config: Config,
    /// Calls so far (`C_GetFunctionList` is not counted).
    total: u64,
    per_function: BTreeMap<&'static str, u64>,
    /// Every call in order, and the faults answered (call index, code).
    sequence: Vec<&'static str>,
    injected: Vec<(u64, CK_RV)>,
    /// Wrong-PIN counters when there is no state file.
    pins: BTreeMap<String, u32>,
}

impl State {
    const fn new() -> State {
        State {
            config: Config {
                pin_tries: None,
                state_file: None,
                faults: Vec::new(),
                count_file: None,
                hidden: Vec::new(),
                no_context_login: false,
                dropped: Vec::new(),
            },
            total: 0,
            per_function: BTreeMap::new(),
            sequence: Vec::new(),
            injected: Vec::new(),
            pins: BTreeMap::new(),
        }
    }
}

static STATE: Mutex<State> = Mutex::new(State::new());

fn state() -> MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts a call of `name`; returns the code to answer instead of forwarding, if a fault hits.
fn enter(name: &'static str) -> Option<CK_RV> {
    let mut s = state();
    s.total += 1;
    let overall = s.total;
    let nth = {
        let n = s.per_function.entry(name).or_insert(0);
        *n += 1;
        *n
    };
    s.sequence.push(name);
    let rv = s
        .config
        .faults
        .iter()
        .find(|f| f.hits(name, overall, nth))
        .map(|f| f.rv)?;
    s.injected.push((overall, rv));
    Some(rv)
}

/// Writes the call counts to `KEYWARD_SHIM_COUNT_FILE`, if set.
fn write_counts(s: &State) {
    let Some(path) = &s.config.count_file else {
        return;
    };
    let mut text = format!("total {}\n", s.total);
    for (name, n) in &s.per_function {
        text.push_str(&format!("fn {name} {n}\n"));
    }
    for (i, name) in s.sequence.iter().enumerate() {
        text.push_str(&format!("call {} {name}\n", i + 1));
    }
    for (at, rv) in &s.injected {
        text.push_str(&format!("fault {at} {rv:#x}\n"));
    }
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("keyward-p11shim: cannot write {}: {e}", path.display());
    }
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn write_counts_at_exit() {
    // try_lock: never block process exit on a lock some other thread held when it ended.
    if let Ok(s) = STATE.try_lock() {
        write_counts(&s);
    }
}

/// Makes sure the count file is written even when the application never calls `C_Finalize`.
fn register_exit_hook() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::SeqCst) {
        // SAFETY: registers a function of this library that takes no arguments; the C runtime
        // runs it at exit, or when this library is unloaded (it is registered with the
        // library's own handle).
        unsafe { atexit(write_counts_at_exit) };
    }
}

// ---- the smart-card PIN counter -------------------------------------------------------------

/// `KEYWARD_SHIM_PIN_TRIES`, when PIN counting is on.
fn pin_tries() -> Option<u32> {
    state().config.pin_tries
}

/// The user-PIN flags for a token with `tries` allowed and `failed` counted.
fn pin_flags(tries: u32, failed: u32) -> CK_FLAGS {
    let left = tries.saturating_sub(failed);
    let mut flags = 0;
    if failed > 0 {
        flags |= CKF_USER_PIN_COUNT_LOW;
    }
    if left == 1 {
        flags |= CKF_USER_PIN_FINAL_TRY;
    }
    if left == 0 {
        flags |= CKF_USER_PIN_LOCKED;
    }
    flags
}

/// The state file's text: one `SERIAL FAILURES` line per token with wrong PINs counted.
fn parse_state(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (serial, n) = l.trim_end().rsplit_once(' ')?;
            Some((serial.to_string(), n.parse().ok()?))
        })
        .collect()
}

fn format_state(map: &BTreeMap<String, u32>) -> String {
    map.iter().map(|(s, n)| format!("{s} {n}\n")).collect()
}

/// Applies `f` to the token's wrong-PIN count (under a file lock) and returns the new count.
fn update_failures(serial: &str, f: impl FnOnce(u32) -> u32) -> u32 {
    let path = state().config.state_file.clone();
    let Some(path) = path else {
        let mut s = state();
        let n = s.pins.entry(serial.to_string()).or_insert(0);
        *n = f(*n);
        return *n;
    };
    update_file(&path, serial, f).unwrap_or_else(|e| {
        eprintln!("keyward-p11shim: state file {}: {e}", path.display());
        0
    })
}

fn update_file(path: &Path, serial: &str, f: impl FnOnce(u32) -> u32) -> std::io::Result<u32> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.lock()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let mut map = parse_state(&text);
    let old = map.get(serial).copied().unwrap_or(0);
    let new = f(old);
    if new != old {
        if new == 0 {
            map.remove(serial);
        } else {
            map.insert(serial.to_string(), new);
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(format_state(&map).as_bytes())?;
    }
    Ok(new)
}

fn failures(serial: &str) -> u32 {
    update_failures(serial, |n| n)
}

/// A token's serial number (padding removed), or `None` when it has none.
fn serial_of(info: &CK_TOKEN_INFO) -> Option<String> {
    let serial = String::from_utf8_lossy(&info.serialNumber);
    let serial = serial.trim_end_matches([' ', '\0']);
    (!serial.is_empty()).then(|| serial.to_string())
}

/// The serial of the token in `slot`, asked of the real module (not counted).
fn token_serial(slot: CK_SLOT_ID) -> Option<String> {
    let mut info = CK_TOKEN_INFO::default();
    if real_call!(C_GetTokenInfo(slot, &mut info)) != CKR_OK {
        return None;
    }
    serial_of(&info)
}

/// The serial of the token whose user PIN a PIN call on session `h` is about: `None` when
/// counting is off, or when the session is the SO's (then the SO PIN is meant).
fn user_pin_token(h: CK_SESSION_HANDLE) -> Option<(u32, String)> {
    let tries = pin_tries()?;
    let mut info = CK_SESSION_INFO::default();
    if real_call!(C_GetSessionInfo(h, &mut info)) != CKR_OK || info.state == CKS_RW_SO_FUNCTIONS {
        return None;
    }
    Some((tries, token_serial(info.slotID)?))
}

/// A call that checks the user PIN: refused while locked, counted when wrong, reset when right.
fn pin_checked(tries: u32, serial: &str, call: impl FnOnce() -> CK_RV) -> CK_RV {
    if failures(serial) >= tries {
        return CKR_PIN_LOCKED;
    }
    let rv = call();
    match rv {
        CKR_PIN_INCORRECT => {
            update_failures(serial, |n| n.saturating_add(1));
        }
        CKR_OK => {
            update_failures(serial, |_| 0);
        }
        _ => {}
    }
    rv
}

// ---- the function list ----------------------------------------------------------------------

/// Functions that only forward (after counting and fault injection).
macro_rules! forwarders {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                if let Some(rv) = enter(stringify!($name)) {
                    return rv;
                }
                real_call!($name($($arg),*))
            }
        )*
    };
}

/// Functions whose second argument is the mechanism: refused with `CKR_MECHANISM_INVALID`
/// when it is hidden, else as [`forwarders`].
macro_rules! mech_forwarders {
    ($($name:ident(a1: $t1:ty, a2: *mut CK_MECHANISM $(, $arg:ident: $ty:ty)*);)*) => {
        $(
            unsafe extern "C" fn $name(a1: $t1, a2: *mut CK_MECHANISM $(, $arg: $ty)*) -> CK_RV {
                if let Some(rv) = enter(stringify!($name)) {
                    return rv;
                }
                // SAFETY: a non-null mechanism pointer points to the caller's CK_MECHANISM.
                if !a2.is_null() && hidden(unsafe { (*a2).mechanism }) {
                    return CKR_MECHANISM_INVALID;
                }
                real_call!($name(a1, a2 $(, $arg)*))
            }
        )*
    };
}

/// The shim's function list (version 2.40) and the names of its functions.
macro_rules! function_list {
    ($($name:ident),* $(,)?) => {
        static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
            version: CK_VERSION { major: 2, minor: 40 },
            C_GetFunctionList: Some(C_GetFunctionList),
            $($name: Some($name),)*
        };
        const FUNCTION_NAMES: &[&str] = &["C_GetFunctionList", $(stringify!($name)),*];
    };
}

/// Returns the shim's function list, loading the real module (`KEYWARD_SHIM_MODULE`) first.
///
/// # Safety
/// `list` must be null or point to writable storage for one pointer (PKCS#11 2.40, 5.2).
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut CK_FUNCTION_LIST_PTR) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    if let Err(e) = load_real() {
        eprintln!("keyward-p11shim: {e}");
        return CKR_GENERAL_ERROR;
    }
    // SAFETY: `list` is non-null and points to storage for one pointer (the caller's contract);
    // the function list is a static that callers only read.
    unsafe { *list = (&raw const FUNCTION_LIST).cast_mut() };
    CKR_OK
}

unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keyward-p11shim: {e}");
            return CKR_GENERAL_ERROR;
        }
    };
    if let Err(e) = load_real() {
        eprintln!("keyward-p11shim: {e}");
        return CKR_GENERAL_ERROR;
    }
    let counting = config.count_file.is_some();
    *state() = State {
        config,
        ..State::new()
    };
    if counting {
        register_exit_hook();
    }
    if let Some(rv) = enter("C_Initialize") {
        return rv;
    }
    real_call!(C_Initialize(args))
}

unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    let fault = enter("C_Finalize");
    write_counts(&state());
    if let Some(rv) = fault {
        return rv;
    }
    real_call!(C_Finalize(reserved))
}

unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    if let Some(rv) = enter("C_GetTokenInfo") {
        return rv;
    }
    let rv = real_call!(C_GetTokenInfo(slot, info));
    let Some(tries) = pin_tries() else {
        return rv;
    };
    if rv != CKR_OK || info.is_null() {
        return rv;
    }
    // SAFETY: non-null, and the real module has just filled it in for the caller.
    let info = unsafe { &mut *info };
    if info.flags & CKF_TOKEN_INITIALIZED != 0 {
        if let Some(serial) = serial_of(info) {
            info.flags = (info.flags & !USER_PIN_FLAGS) | pin_flags(tries, failures(&serial));
        }
    }
    rv
}

unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    if let Some(rv) = enter("C_GetMechanismList") {
        return rv;
    }
    let hidden_ones = state().config.hidden.clone();
    if hidden_ones.is_empty() || count.is_null() {
        return real_call!(C_GetMechanismList(slot, list, count));
    }
    // Ask for the whole list, drop the hidden ones, then answer as PKCS#11 says (size query
    // with a null list, CKR_BUFFER_TOO_SMALL for a short buffer).
    let mut n: CK_ULONG = 0;
    let rv = real_call!(C_GetMechanismList(slot, std::ptr::null_mut(), &mut n));
    if rv != CKR_OK {
        return rv;
    }
    let mut all: Vec<CK_MECHANISM_TYPE> = vec![0; n as usize];
    let rv = real_call!(C_GetMechanismList(slot, all.as_mut_ptr(), &mut n));
    if rv != CKR_OK {
        return rv;
    }
    all.truncate(n as usize);
    all.retain(|m| !hidden_ones.contains(m));
    // SAFETY: `count` is non-null and the caller's.
    let room = unsafe { *count } as usize;
    // SAFETY: as above.
    unsafe { *count = all.len() as CK_ULONG };
    if list.is_null() {
        return CKR_OK;
    }
    if room < all.len() {
        return CKR_BUFFER_TOO_SMALL;
    }
    // SAFETY: `list` has room for `room` >= all.len() entries (the caller's contract).
    unsafe { std::ptr::copy_nonoverlapping(all.as_ptr(), list, all.len()) };
    CKR_OK
}

unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mechanism: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    if let Some(rv) = enter("C_GetMechanismInfo") {
        return rv;
    }
    if hidden(mechanism) {
        return CKR_MECHANISM_INVALID;
    }
    real_call!(C_GetMechanismInfo(slot, mechanism, info))
}

unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    if let Some(rv) = enter("C_Login") {
        return rv;
    }
    if user == CKU_CONTEXT_SPECIFIC && state().config.no_context_login {
        return CKR_USER_TYPE_INVALID;
    }
    let counted = match user {
        CKU_USER | CKU_CONTEXT_SPECIFIC => user_pin_token(h),
        _ => None,
    };
    match counted {
        Some((tries, serial)) => {
            pin_checked(tries, &serial, || real_call!(C_Login(h, user, pin, len)))
        }
        None => real_call!(C_Login(h, user, pin, len)),
    }
}

unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    if let Some(rv) = enter("C_SetPIN") {
        return rv;
    }
    match user_pin_token(h) {
        Some((tries, serial)) => pin_checked(tries, &serial, || {
            real_call!(C_SetPIN(h, old, old_len, new, new_len))
        }),
        None => real_call!(C_SetPIN(h, old, old_len, new, new_len)),
    }
}

unsafe extern "C" fn C_InitPIN(
    h: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    if let Some(rv) = enter("C_InitPIN") {
        return rv;
    }
    let rv = real_call!(C_InitPIN(h, pin, len));
    if rv == CKR_OK && pin_tries().is_some() {
        let mut info = CK_SESSION_INFO::default();
        if real_call!(C_GetSessionInfo(h, &mut info)) == CKR_OK {
            if let Some(serial) = token_serial(info.slotID) {
                update_failures(&serial, |_| 0);
            }
        }
    }
    rv
}

unsafe extern "C" fn C_InitToken(
    slot: CK_SLOT_ID,
    so_pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    if let Some(rv) = enter("C_InitToken") {
        return rv;
    }
    let before = pin_tries().and_then(|_| token_serial(slot));
    let rv = real_call!(C_InitToken(slot, so_pin, len, label));
    if rv == CKR_OK && pin_tries().is_some() {
        for serial in before.into_iter().chain(token_serial(slot)) {
            update_failures(&serial, |_| 0);
        }
    }
    rv
}

// ---- dropped attributes (`KEYWARD_SHIM_DROP_ATTRIBUTE`) -------------------------------------

/// Is the mechanism hidden? Counted first, as in [`mech_forwarders`].
///
/// # Safety
/// `mechanism` must be null or point to the caller's `CK_MECHANISM`.
unsafe fn mechanism_hidden(mechanism: *const CK_MECHANISM) -> bool {
    // SAFETY: per this function's contract.
    !mechanism.is_null() && hidden(unsafe { (*mechanism).mechanism })
}

unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    len: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    if let Some(rv) = enter("C_CreateObject") {
        return rv;
    }
    let dropped = dropped();
    if dropped.is_empty() {
        return real_call!(C_CreateObject(h, template, len, object));
    }
    // SAFETY: the caller's template.
    let mut kept = unsafe { without_dropped(template, len, &dropped) };
    real_call!(C_CreateObject(
        h,
        kept.as_mut_ptr(),
        kept.len() as CK_ULONG,
        object
    ))
}

unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    public: *mut CK_ATTRIBUTE,
    public_len: CK_ULONG,
    private: *mut CK_ATTRIBUTE,
    private_len: CK_ULONG,
    public_out: *mut CK_OBJECT_HANDLE,
    private_out: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    if let Some(rv) = enter("C_GenerateKeyPair") {
        return rv;
    }
    // SAFETY: the caller's mechanism.
    if unsafe { mechanism_hidden(mechanism) } {
        return CKR_MECHANISM_INVALID;
    }
    let dropped = dropped();
    if dropped.is_empty() {
        return real_call!(C_GenerateKeyPair(
            h,
            mechanism,
            public,
            public_len,
            private,
            private_len,
            public_out,
            private_out
        ));
    }
    // SAFETY: the caller's templates.
    let (mut public, mut private) = unsafe {
        (
            without_dropped(public, public_len, &dropped),
            without_dropped(private, private_len, &dropped),
        )
    };
    real_call!(C_GenerateKeyPair(
        h,
        mechanism,
        public.as_mut_ptr(),
        public.len() as CK_ULONG,
        private.as_mut_ptr(),
        private.len() as CK_ULONG,
        public_out,
        private_out
    ))
}

unsafe extern "C" fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    unwrapping_key: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    template: *mut CK_ATTRIBUTE,
    len: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    if let Some(rv) = enter("C_UnwrapKey") {
        return rv;
    }
    // SAFETY: the caller's mechanism.
    if unsafe { mechanism_hidden(mechanism) } {
        return CKR_MECHANISM_INVALID;
    }
    let dropped = dropped();
    if dropped.is_empty() {
        return real_call!(C_UnwrapKey(
            h,
            mechanism,
            unwrapping_key,
            wrapped,
            wrapped_len,
            template,
            len,
            key
        ));
    }
    // SAFETY: the caller's template.
    let mut kept = unsafe { without_dropped(template, len, &dropped) };
    real_call!(C_UnwrapKey(
        h,
        mechanism,
        unwrapping_key,
        wrapped,
        wrapped_len,
        kept.as_mut_ptr(),
        kept.len() as CK_ULONG,
        key
    ))
}

/// Forwards, then shows each dropped attribute the caller asked for with its insecure value.
unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    len: CK_ULONG,
) -> CK_RV {
    if let Some(rv) = enter("C_GetAttributeValue") {
        return rv;
    }
    let rv = real_call!(C_GetAttributeValue(h, object, template, len));
    let dropped = dropped();
    if dropped.is_empty() || template.is_null() {
        return rv;
    }
    if rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_BUFFER_TOO_SMALL {
        return rv;
    }
    // SAFETY: the caller's template of `len` attributes, writable (PKCS#11 2.40, 5.7).
    let template = unsafe { std::slice::from_raw_parts_mut(template, len as usize) };
    for attribute in template.iter_mut() {
        let Some((_, value)) = dropped.iter().find(|(t, _)| *t == attribute.type_) else {
            continue;
        };
        let size = std::mem::size_of::<CK_BBOOL>() as CK_ULONG;
        if !attribute.pValue.is_null() && attribute.ulValueLen >= size {
            // SAFETY: the caller's buffer of at least one CK_BBOOL.
            unsafe { *(attribute.pValue as *mut CK_BBOOL) = *value };
        }
        attribute.ulValueLen = size;
    }
    rv
}

forwarders! {
    C_GetInfo(a1: *mut CK_INFO);
    C_GetSlotList(a1: CK_BBOOL, a2: *mut CK_SLOT_ID, a3: *mut CK_ULONG);
    C_GetSlotInfo(a1: CK_SLOT_ID, a2: *mut CK_SLOT_INFO);
    C_OpenSession(a1: CK_SLOT_ID, a2: CK_FLAGS, a3: *mut c_void, a4: CK_NOTIFY, a5: *mut CK_SESSION_HANDLE);
    C_CloseSession(a1: CK_SESSION_HANDLE);
    C_CloseAllSessions(a1: CK_SLOT_ID);
    C_GetSessionInfo(a1: CK_SESSION_HANDLE, a2: *mut CK_SESSION_INFO);
    C_GetOperationState(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_SetOperationState(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: CK_OBJECT_HANDLE, a5: CK_OBJECT_HANDLE);
    C_Logout(a1: CK_SESSION_HANDLE);
    C_CopyObject(a1: CK_SESSION_HANDLE, a2: CK_OBJECT_HANDLE, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG, a5: *mut CK_OBJECT_HANDLE);
    C_DestroyObject(a1: CK_SESSION_HANDLE, a2: CK_OBJECT_HANDLE);
    C_GetObjectSize(a1: CK_SESSION_HANDLE, a2: CK_OBJECT_HANDLE, a3: *mut CK_ULONG);
    C_SetAttributeValue(a1: CK_SESSION_HANDLE, a2: CK_OBJECT_HANDLE, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG);
    C_FindObjectsInit(a1: CK_SESSION_HANDLE, a2: *mut CK_ATTRIBUTE, a3: CK_ULONG);
    C_FindObjects(a1: CK_SESSION_HANDLE, a2: *mut CK_OBJECT_HANDLE, a3: CK_ULONG, a4: *mut CK_ULONG);
    C_FindObjectsFinal(a1: CK_SESSION_HANDLE);
    C_Encrypt(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_EncryptUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_EncryptFinal(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_Decrypt(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptFinal(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_Digest(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DigestUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_DigestKey(a1: CK_SESSION_HANDLE, a2: CK_OBJECT_HANDLE);
    C_DigestFinal(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_Sign(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_SignUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_SignFinal(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: *mut CK_ULONG);
    C_SignRecover(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_Verify(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: CK_ULONG);
    C_VerifyUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_VerifyFinal(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_VerifyRecover(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DigestEncryptUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptDigestUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_SignEncryptUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_DecryptVerifyUpdate(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG, a4: *mut CK_BYTE, a5: *mut CK_ULONG);
    C_SeedRandom(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_GenerateRandom(a1: CK_SESSION_HANDLE, a2: *mut CK_BYTE, a3: CK_ULONG);
    C_GetFunctionStatus(a1: CK_SESSION_HANDLE);
    C_CancelFunction(a1: CK_SESSION_HANDLE);
    C_WaitForSlotEvent(a1: CK_FLAGS, a2: *mut CK_SLOT_ID, a3: *mut c_void);
}

mech_forwarders! {
    C_EncryptInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_DecryptInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_DigestInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM);
    C_SignInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_SignRecoverInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_VerifyInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_VerifyRecoverInit(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE);
    C_GenerateKey(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: *mut CK_ATTRIBUTE, a4: CK_ULONG, a5: *mut CK_OBJECT_HANDLE);
    C_WrapKey(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE, a4: CK_OBJECT_HANDLE, a5: *mut CK_BYTE, a6: *mut CK_ULONG);
    C_DeriveKey(a1: CK_SESSION_HANDLE, a2: *mut CK_MECHANISM, a3: CK_OBJECT_HANDLE, a4: *mut CK_ATTRIBUTE, a5: CK_ULONG, a6: *mut CK_OBJECT_HANDLE);
}

function_list! {
    C_Initialize, C_Finalize, C_GetInfo, C_GetSlotList, C_GetSlotInfo, C_GetTokenInfo,
    C_GetMechanismList, C_GetMechanismInfo, C_InitToken, C_InitPIN, C_SetPIN, C_OpenSession,
    C_CloseSession, C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState,
    C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject, C_DestroyObject,
    C_GetObjectSize, C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit, C_FindObjects,
    C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal, C_DecryptInit,
    C_Decrypt, C_DecryptUpdate, C_DecryptFinal, C_DigestInit, C_Digest, C_DigestUpdate,
    C_DigestKey, C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, C_SignRecoverInit,
    C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate, C_VerifyFinal, C_VerifyRecoverInit,
    C_VerifyRecover, C_DigestEncryptUpdate, C_DecryptDigestUpdate, C_SignEncryptUpdate,
    C_DecryptVerifyUpdate, C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey,
    C_SeedRandom, C_GenerateRandom, C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(
            parse_faults("CKR_DEVICE_REMOVED@17").unwrap(),
            vec![Fault {
                rv: CKR_DEVICE_REMOVED,
                target: Target::Overall(17),
                sticky: false
            }]
        );
        assert_eq!(
            parse_faults(" device_error@C_Sign:1 , 0x30@Login:2+").unwrap(),
            vec![
                Fault {
                    rv: CKR_DEVICE_ERROR,
                    target: Target::Function("C_Sign".into(), 1),
                    sticky: false
                },
                Fault {
                    rv: 0x30,
                    target: Target::Function("C_Login".into(), 2),
                    sticky: true
                },
            ]
        );
        assert!(parse_faults("").unwrap().is_empty());
        for bad in [
            "CKR_NOPE@1",
            "CKR_DEVICE_ERROR",
            "CKR_DEVICE_ERROR@0",
            "CKR_DEVICE_ERROR@C_Sing:1",
            "CKR_DEVICE_ERROR@C_Sign:x",
        ] {
            assert!(parse_faults(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hidden_mechanisms_parse() {
        assert_eq!(
            parse_mechanisms(" 0x210A, 8459 ,").unwrap(),
            vec![0x210A, 0x210B]
        );
        assert_eq!(
            parse_mechanisms("").unwrap(),
            Vec::<CK_MECHANISM_TYPE>::new()
        );
        assert!(parse_mechanisms("PAD").is_err());
    }

    #[test]
    fn dropped_attributes_parse() {
        assert_eq!(
            parse_dropped("CKA_SENSITIVE, extractable").unwrap(),
            vec![(CKA_SENSITIVE, CK_FALSE), (CKA_EXTRACTABLE, CK_TRUE)]
        );
        assert!(parse_dropped("CKA_LABEL").is_err());
    }

    #[test]
    fn faults_hit_the_right_call() {
        let once = &parse_faults("DEVICE_ERROR@C_Sign:2").unwrap()[0];
        assert!(!once.hits("C_Sign", 5, 1));
        assert!(once.hits("C_Sign", 9, 2));
        assert!(!once.hits("C_Sign", 12, 3));
        assert!(!once.hits("C_Login", 9, 2));
        let sticky = &parse_faults("DEVICE_REMOVED@3+").unwrap()[0];
        assert!(!sticky.hits("C_Login", 2, 1));
        assert!(sticky.hits("C_Login", 3, 1));
        assert!(sticky.hits("C_Sign", 40, 7));
    }

    #[test]
    fn pin_flags_follow_the_counter() {
        assert_eq!(pin_flags(3, 0), 0);
        assert_eq!(pin_flags(3, 1), CKF_USER_PIN_COUNT_LOW);
        assert_eq!(
            pin_flags(3, 2),
            CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY
        );
        assert_eq!(
            pin_flags(3, 3),
            CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED
        );
        assert_eq!(pin_flags(1, 0), CKF_USER_PIN_FINAL_TRY);
    }

    #[test]
    fn state_file_round_trips() {
        let map = parse_state("# comment\nabc 2\nserial with space 1\n\nbroken\n");
        assert_eq!(map.get("abc"), Some(&2));
        assert_eq!(map.get("serial with space"), Some(&1));
        assert_eq!(map.len(), 2);
        assert_eq!(parse_state(&format_state(&map)), map);
    }
}
