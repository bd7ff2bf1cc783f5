//! The adapter's error type, and the one place that turns `CKR_*` codes into sentences.

use std::fmt;
use std::path::PathBuf;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};

/// Which PKCS#11 call failed and what it returned; shown with `-v` as
/// `C_Login: CKR_PIN_INCORRECT (0xa0)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// The PKCS#11 function, e.g. `C_Login`.
    pub function: String,
    /// The return value ([`CallFailure::code`], [`CallFailure::ckr`], [`CallFailure::value`]).
    rv: RvError,
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({:#x})", self.function, self.ckr(), self.value())
    }
}

impl CallFailure {
    /// The failure of `function` with `rv`.
    pub(crate) fn of(function: Function, rv: &RvError) -> Self {
        Self::new(function, rv)
    }

    fn new(function: Function, rv: &RvError) -> Self {
        CallFailure {
            function: format!("C_{function:?}"),
            rv: *rv,
        }
    }

    /// `function` returning the `CK_RV` `value` (for tests, and calls made outside cryptoki).
    #[allow(clippy::unnecessary_cast)] // CK_RV is u64 here, u32 where c_ulong is
    pub fn named(function: &str, value: u64) -> Self {
        let rv = match cryptoki::error::Rv::from(value as cryptoki_sys::CK_RV) {
            cryptoki::error::Rv::Error(rv) => rv,
            cryptoki::error::Rv::Ok => RvError::UnknownErrorCode(0),
        };
        CallFailure {
            function: function.to_string(),
            rv,
        }
    }

    /// The return value as cryptoki names it, e.g. `PinIncorrect` (what keyward matches on).
    pub fn code(&self) -> String {
        format!("{:?}", self.rv)
    }

    /// The return value's `CKR_` name, e.g. `CKR_PIN_INCORRECT`.
    pub fn ckr(&self) -> &'static str {
        super::ckr::ckr(&self.rv).0
    }

    /// The return value's number, e.g. `0xa0`.
    pub fn value(&self) -> u64 {
        super::ckr::ckr(&self.rv).1
    }
}

/// What the token says about the remaining PIN tries after a wrong PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriesLeft {
    /// The token does not say.
    Unknown,
    /// The token reports that few tries remain (`CKF_*_PIN_COUNT_LOW`).
    Few,
    /// One more wrong PIN locks the token (`CKF_*_PIN_FINAL_TRY`).
    One,
    /// That wrong PIN was the last try: the PIN is now locked (`CKF_*_PIN_LOCKED`).
    Locked,
}

/// Which PIN a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinRole {
    /// The user PIN (the keyset password).
    User,
    /// The security officer PIN.
    So,
}

impl fmt::Display for PinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PinRole::User => "user PIN",
            PinRole::So => "SO PIN",
        })
    }
}

/// Everything that can go wrong in the PKCS#11 adapter, with what a person needs to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No module path was given and none of the usual places has one.
    #[error("no PKCS#11 module found (looked at {}); pass --module PATH (or set KEYWARD_MODULE, or module = \"PATH\" in config.toml), register the module with p11-kit, or install softhsm2 (apt-get install softhsm2)", list_paths(.tried))]
    ModuleNotFound {
        /// Every place that was looked at: SoftHSM2 paths, p11-kit registrations, p11-kit's proxy.
        tried: Vec<PathBuf>,
    },
    /// Several modules are registered with p11-kit and its proxy is not installed.
    #[error("several PKCS#11 modules are registered with p11-kit ({}) and p11-kit-proxy.so is not installed; pass --module PATH to pick one (or install p11-kit-modules for the proxy)", list_paths(.registered))]
    ModuleChoice {
        /// The registered modules.
        registered: Vec<PathBuf>,
    },
    /// The module file could not be loaded as a PKCS#11 library.
    #[error("cannot load PKCS#11 module {}: {source}; check the path or pass another --module", .path.display())]
    ModuleLoad {
        /// The module path.
        path: PathBuf,
        /// What the loader said.
        #[source]
        source: CkError,
    },
    /// The module file does not exist.
    #[error("cannot load PKCS#11 module {}: no such file; check the path or pass another --module", .path.display())]
    ModuleMissing {
        /// The module path.
        path: PathBuf,
    },
    /// `C_Initialize` failed.
    #[error("PKCS#11 module {} failed to initialise ({code}); {hint}", .path.display())]
    ModuleInit {
        /// The module path.
        path: PathBuf,
        /// The CKR code.
        code: String,
        /// What to check.
        hint: String,
    },
    /// A second module initialisation in one process was attempted.
    #[error("a PKCS#11 module is already loaded in this process; load it once and share it")]
    AlreadyLoaded,
    /// No token matches the `--token` argument.
    #[error("no token matches {wanted}; tokens present: {}; if it was removed, insert it and run the command again, else see `keyward token list`", list_or_none(.present))]
    TokenNotFound {
        /// The URI or label asked for.
        wanted: String,
        /// The tokens that are present, as `label (serial)`.
        present: Vec<String>,
    },
    /// Several tokens match the `--token` argument.
    #[error("{wanted} is ambiguous: it matches {}; pass the URI that picks one", .candidates.join(", "))]
    TokenAmbiguous {
        /// The URI or label asked for.
        wanted: String,
        /// Each candidate, as `label: URI`.
        candidates: Vec<String>,
    },
    /// No slot with that id exists.
    #[error("no slot {slot}; run `keyward token list` to see the slots")]
    SlotNotFound {
        /// The slot id asked for.
        slot: u64,
    },
    /// No slot has an uninitialised token.
    #[error("no free (uninitialised) token slot; pass --slot ID or --token URI")]
    NoFreeSlot,
    /// The token is already initialised and `--force` was not given.
    #[error("token {label:?} is already initialised; pass --force to wipe it and all its keys")]
    AlreadyInitialized {
        /// The token label.
        label: String,
    },
    /// The token has no user PIN set yet.
    #[error("token {label:?} has no user PIN yet; set one with `keyward token unblock --token {label:?}` (SO PIN needed)")]
    UserPinNotInitialized {
        /// The token label.
        label: String,
    },
    /// `token init` failed after `C_InitToken`: the token is initialised (its old contents
    /// are gone), but its first user PIN was not set. PKCS#11 sets the two in separate calls,
    /// so this cannot be undone, only finished.
    #[error("token {label:?} was initialised, but its first user PIN was not set: {source}; set it with `keyward token unblock --token {label:?}` (SO PIN and new user PIN), or start again with `keyward token init --token {label:?} --label {label:?} --force`")]
    InitUnfinished {
        /// The new token label.
        label: String,
        /// What failed.
        source: Box<TokenError>,
    },
    /// A wrong PIN was given.
    #[error("wrong {role} for token {label:?}{}", wrong_pin_tail(*.tries, *.role, .label))]
    WrongPin {
        /// The token label.
        label: String,
        /// Which PIN.
        role: PinRole,
        /// What the token says about remaining tries.
        tries: TriesLeft,
        /// The failing call.
        call: CallFailure,
    },
    /// The PIN is locked.
    #[error("the {role} of token {label:?} is locked; {}", locked_hint(*.role, .label))]
    PinLocked {
        /// The token label.
        label: String,
        /// Which PIN.
        role: PinRole,
    },
    /// The next wrong PIN would lock the token and `--final-try` was not given.
    #[error("the next wrong {role} locks token {label:?}; keyward will not log in without --final-try (or unblock it first with `keyward token unblock`)")]
    FinalTry {
        /// The token label.
        label: String,
        /// Which PIN.
        role: PinRole,
    },
    /// The PIN's length is outside what the token accepts (checked before the token sees it).
    #[error("the {role} must be {min} to {max} characters for token {label:?}, but it has {len}; nothing was sent to the token")]
    PinLength {
        /// The token label.
        label: String,
        /// Which PIN.
        role: PinRole,
        /// Shortest allowed.
        min: usize,
        /// Longest allowed.
        max: usize,
        /// Length given.
        len: usize,
    },
    /// The token refused the new PIN's characters or strength.
    #[error(
        "token {label:?} refused the new {role} (invalid characters or too weak); choose another"
    )]
    PinRejected {
        /// The token label.
        label: String,
        /// Which PIN.
        role: PinRole,
        /// The failing call.
        call: CallFailure,
    },
    /// Neither the SO login + `C_InitPIN` nor `C_SetPIN` with the unblocking PIN works.
    #[error("token {label:?} refused the SO login ({call}) and did not take the SO PIN as the unblocking PIN of C_SetPIN either, so its module offers no PIN unblocking through PKCS#11; nothing was changed; on an OpenSC card set `user_pin_unblock_style = set_pin_in_unlogged_session;` in the pkcs11 block of opensc.conf and run this again with the PUK as the SO PIN, or unblock it with the card's own tool")]
    UnblockUnsupported {
        /// The token label.
        label: String,
        /// The refused SO login.
        call: CallFailure,
    },
    /// The token was removed or is not present.
    #[error("token {label:?} is not present (removed?); insert it and run the command again")]
    TokenGone {
        /// The token label.
        label: String,
        /// The failing call.
        call: CallFailure,
    },
    /// The module closed keyward's session underneath it: what modules answer once the card
    /// that held it is gone (or was reset by another program).
    #[error("token {label:?} lost keyward's session in the middle of the command (was it removed or reset?); insert it and run the command again")]
    SessionGone {
        /// The token label.
        label: String,
        /// The failing call.
        call: CallFailure,
    },
    /// The token does not support a mechanism keyward needs.
    #[error("token {label:?} does not support {mechanism}; use another key type or token")]
    MechanismUnsupported {
        /// The token label.
        label: String,
        /// The mechanism's name.
        mechanism: String,
    },
    /// The token cannot hold a keyward authority: no RFC 5649 AES key wrap (probed by the
    /// mechanism list and RFC 5649's own test vectors).
    #[error("token {label:?} cannot hold a keyward authority: it has no RFC 5649 AES key wrap (neither CKM_AES_KEY_WRAP_KWP nor a CKM_AES_KEY_WRAP_PAD that passes RFC 5649's test vectors), which the authority's key archive and key deliveries need; put the authority on a token whose `keyward token info` shows one (SoftHSM2 and kryoptic do)")]
    NoAuthorityWrap {
        /// The token label.
        label: String,
    },
    /// The token keeps no private data objects, where an authority keeps its state head.
    #[error("token {label:?} cannot hold a keyward authority: it does not keep private data objects (CKO_DATA: {call}), where the authority keeps the head of its state; nothing was changed; put the authority on a token that does (SoftHSM2 and kryoptic do)")]
    NoDataObjects {
        /// The token label.
        label: String,
        /// The refused C_CreateObject.
        call: CallFailure,
    },
    /// The token is write-protected.
    #[error("token {label:?} is write-protected; use a writable token")]
    WriteProtected {
        /// The token label.
        label: String,
        /// The failing call.
        call: CallFailure,
    },
    /// The module cannot (re-)initialise this token through PKCS#11; nothing was changed.
    #[error("the module cannot {} token {label:?} through PKCS#11 ({call}); nothing was changed; use {tool}", if *.reinit { "re-initialise" } else { "initialise" })]
    InitUnsupported {
        /// The token label (empty when it has none yet).
        label: String,
        /// The token was initialised already.
        reinit: bool,
        /// What to use instead.
        tool: String,
        /// The failing call.
        call: CallFailure,
    },
    /// A new key came out without a security attribute keyward asked for; it was destroyed.
    #[error("token {label:?} did not keep {attribute} on the new {what}, so keyward destroyed it and stopped; use a token that honours the key's security attributes")]
    AttributeDropped {
        /// The token label.
        label: String,
        /// What was generated ("a key pair").
        what: String,
        /// The attribute, as asked for (`CKA_SENSITIVE`, `CKA_EXTRACTABLE=false`, …).
        attribute: &'static str,
    },
    /// A label longer than the 32 bytes PKCS#11 allows (or an empty one).
    #[error("{}", label_problem(.label, *.len))]
    LabelTooLong {
        /// The label.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Any other PKCS#11 failure.
    #[error("{what} failed{}: {}", on_token(.label), describe(.call))]
    Call {
        /// What keyward was doing.
        what: String,
        /// The token label.
        label: String,
        /// The failing call.
        call: CallFailure,
    },
    /// A failure of the cryptoki wrapper that is not a CKR code.
    #[error("{what} failed: {reason}")]
    Wrapper {
        /// What keyward was doing.
        what: String,
        /// The wrapper's message.
        reason: String,
    },
    /// A private key to import does not decode (PKCS#8).
    #[error("{what} failed: the private key does not decode: {source}")]
    KeyDecode {
        /// What keyward was doing.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: rsa::pkcs8::Error,
    },
    /// A failure of the cryptoki wrapper that is not a CKR code, with its error.
    #[error("{what} failed: {source}")]
    Cryptoki {
        /// What keyward was doing.
        what: String,
        /// The wrapper's error.
        #[source]
        source: CkError,
    },
    /// Reading the data to sign or digest failed.
    #[error("{what} failed: {source}")]
    Input {
        /// What keyward was doing.
        what: &'static str,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
}

impl TokenError {
    /// The PKCS#11 call behind this error, when there is one (printed with `-v`).
    pub fn call(&self) -> Option<&CallFailure> {
        match self {
            TokenError::WrongPin { call, .. }
            | TokenError::PinRejected { call, .. }
            | TokenError::TokenGone { call, .. }
            | TokenError::SessionGone { call, .. }
            | TokenError::WriteProtected { call, .. }
            | TokenError::InitUnsupported { call, .. }
            | TokenError::UnblockUnsupported { call, .. }
            | TokenError::NoDataObjects { call, .. }
            | TokenError::Call { call, .. } => Some(call),
            _ => None,
        }
    }
}

/// Context for turning a cryptoki error into a [`TokenError`].
pub(crate) struct ErrCtx<'a> {
    /// What keyward was doing ("logging in", "generating a key pair").
    pub what: &'a str,
    /// The token's label.
    pub label: &'a str,
    /// Which PIN was in play, for login and PIN calls.
    pub role: Option<PinRole>,
    /// Tries left, read from the token after a PIN failure.
    pub tries: TriesLeft,
}

impl<'a> ErrCtx<'a> {
    /// A context for an operation without a PIN.
    pub fn op(what: &'a str, label: &'a str) -> Self {
        ErrCtx {
            what,
            label,
            role: None,
            tries: TriesLeft::Unknown,
        }
    }
}

/// The one place that maps cryptoki errors and `CKR_*` codes to sentences.
pub(crate) fn map_error(err: CkError, ctx: ErrCtx<'_>) -> TokenError {
    let (rv, function) = match err {
        CkError::Pkcs11(rv, function) => (rv, function),
        other => {
            return TokenError::Cryptoki {
                what: ctx.what.to_string(),
                source: other,
            }
        }
    };
    let call = CallFailure::new(function, &rv);
    let label = ctx.label.to_string();
    let role = ctx.role.unwrap_or(PinRole::User);
    match rv {
        RvError::PinIncorrect => TokenError::WrongPin {
            label,
            role,
            tries: ctx.tries,
            call,
        },
        RvError::PinLocked => TokenError::PinLocked { label, role },
        RvError::PinLenRange | RvError::PinInvalid | RvError::PinTooWeak => {
            TokenError::PinRejected { label, role, call }
        }
        RvError::UserPinNotInitialized => TokenError::UserPinNotInitialized { label },
        RvError::TokenNotPresent
        | RvError::DeviceRemoved
        | RvError::TokenNotRecognized
        | RvError::SlotIdInvalid => TokenError::TokenGone { label, call },
        RvError::SessionHandleInvalid | RvError::SessionClosed => {
            TokenError::SessionGone { label, call }
        }
        RvError::TokenWriteProtected => TokenError::WriteProtected { label, call },
        RvError::MechanismInvalid | RvError::MechanismParamInvalid | RvError::CurveNotSupported => {
            TokenError::MechanismUnsupported {
                label,
                mechanism: format!("the mechanism requested by {}", call.function),
            }
        }
        _ => TokenError::Call {
            what: ctx.what.to_string(),
            label,
            call,
        },
    }
}

/// ` on token "LABEL"`, or nothing when the call was not on one token (listing slots) or the
/// token has no label yet.
fn on_token(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" on token {label:?}")
    }
}

fn describe(call: &CallFailure) -> String {
    let meaning = match call.code().as_str() {
        "DeviceError" => "the device reported an error; reinsert it and retry",
        "DeviceMemory" => "the token is out of memory; remove unused objects",
        "GeneralError" | "FunctionFailed" => "the module reported a general failure",
        "UserNotLoggedIn" => "the operation needs a login",
        "KeyFunctionNotPermitted" => "the key does not allow this use",
        "TemplateInconsistent" | "TemplateIncomplete" | "AttributeValueInvalid" => {
            "the token rejected keyward's object template"
        }
        _ => "the token refused the operation",
    };
    format!("{meaning} ({call})")
}

fn wrong_pin_tail(t: TriesLeft, role: PinRole, label: &str) -> String {
    const AGAIN: &str = "check it and try again (keyward never retries on its own)";
    match t {
        TriesLeft::Unknown => format!("; {AGAIN}"),
        TriesLeft::Few => format!(
            " — the token reports fewer tries left (wrong PINs counted since the last successful login); {AGAIN}"
        ),
        TriesLeft::One => format!(
            " — 1 try left before the {role} locks; check it, then run the command again with --final-try to spend that try{}",
            match role {
                PinRole::User => format!(
                    " (or set a new PIN first with `keyward token unblock --token {label:?}`)"
                ),
                PinRole::So => String::new(),
            }
        ),
        TriesLeft::Locked => format!(
            " — that was the last try: the {role} is now locked; {}",
            locked_hint(role, label)
        ),
    }
}

fn locked_hint(role: PinRole, label: &str) -> String {
    match role {
        PinRole::User => {
            format!("unblock it with the SO PIN (a smart card's PUK): `keyward token unblock --token {label:?}`")
        }
        PinRole::So => {
            "the token must be re-initialised (all keys are lost) or reset by its vendor tool"
                .to_string()
        }
    }
}

fn label_problem(label: &str, len: usize) -> String {
    if len == 0 {
        "the token label is empty; pass --label with 1 to 32 bytes".to_string()
    } else {
        format!("token label {label:?} is {len} bytes; PKCS#11 labels hold at most 32 bytes")
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(label: &str) -> String {
        TokenError::Call {
            what: "listing tokens".to_string(),
            label: label.to_string(),
            call: CallFailure::named("C_GetSlotList", 0x30),
        }
        .to_string()
    }

    #[test]
    fn a_call_says_its_ckr_name_and_number() {
        let c = CallFailure::new(Function::Login, &RvError::PinIncorrect);
        assert_eq!(c.to_string(), "C_Login: CKR_PIN_INCORRECT (0xa0)");
        let c = CallFailure::new(Function::GenerateKeyPair, &RvError::MechanismInvalid);
        assert_eq!(
            c.to_string(),
            "C_GenerateKeyPair: CKR_MECHANISM_INVALID (0x70)"
        );
    }

    #[test]
    fn a_call_names_its_token_only_when_there_is_one() {
        assert!(call("card").starts_with("listing tokens failed on token \"card\": "));
        let none = call("");
        assert!(none.starts_with("listing tokens failed: "), "{none}");
        assert!(!none.contains("token \"\""), "{none}");
    }
}
