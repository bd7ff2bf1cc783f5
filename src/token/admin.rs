//! Token administration: initialise, change the user PIN, unblock it with the SO PIN.

use secrecy::SecretString;

use super::error::{map_error, CallFailure, ErrCtx, PinRole, TokenError};
use super::info::{list_slots, list_tokens, Token};
use super::module::Module;
use super::session::LoginPolicy;

/// The longest token label PKCS#11 can hold, in bytes.
pub const MAX_LABEL_BYTES: usize = 32;

/// The secrets `token init` needs.
pub struct InitSecrets<'a> {
    /// The new SO PIN.
    pub so_pin: &'a SecretString,
    /// The first user PIN.
    pub user_pin: &'a SecretString,
}

/// Checks a token label before it is written: PKCS#11 labels are 32 bytes, and cryptoki cuts longer ones silently.
pub fn check_label(label: &str) -> Result<(), TokenError> {
    if label.len() > MAX_LABEL_BYTES || label.is_empty() {
        return Err(TokenError::LabelTooLong {
            label: label.to_string(),
            len: label.len(),
        });
    }
    Ok(())
}

/// The first slot whose token is not initialised yet.
pub fn free_token(module: &Module) -> Result<Token, TokenError> {
    list_tokens(module)?
        .into_iter()
        .find(|t| !t.summary().initialized)
        .ok_or(TokenError::NoFreeSlot)
}

/// Initialises `token` with `label`, sets the SO PIN and the first user PIN, and finds it again
/// (SoftHSM moves a token to a new slot id when it is initialised).
pub fn init_token(
    module: &Module,
    token: &Token,
    label: &str,
    secrets: InitSecrets<'_>,
    force: bool,
) -> Result<Token, TokenError> {
    check_label(label)?;
    if token.summary().initialized && !force {
        return Err(TokenError::AlreadyInitialized {
            label: token.label().to_string(),
        });
    }
    token.check_pin_length(PinRole::So, secrets.so_pin)?;
    token.check_pin_length(PinRole::User, secrets.user_pin)?;
    if token.summary().initialized {
        check_so_login(module, token, secrets.so_pin)?;
    }
    let before: Vec<String> = initialized_serials(module)?;
    log::debug!(
        "C_InitToken on slot {} with label {label:?}",
        token.slot.id()
    );
    module
        .ctx()
        .init_token(token.slot, secrets.so_pin, label)
        .map_err(|e| init_refused(module, token, e))?;
    let unfinished = |e: TokenError| TokenError::InitUnfinished {
        label: label.to_string(),
        source: Box::new(e),
    };
    let fresh = find_initialized(module, token, label, &before).map_err(unfinished)?;
    let mut session = fresh.open_rw(module).map_err(unfinished)?;
    session
        .login(module, PinRole::So, secrets.so_pin, LoginPolicy::default())
        .map_err(unfinished)?;
    let result = session
        .session
        .init_pin(secrets.user_pin)
        .map_err(|e| unfinished(session.op_error(e, "setting the first user PIN")));
    session.logout();
    result?;
    let mut fresh = fresh;
    fresh.refresh(module)?;
    Ok(fresh)
}

/// Before re-initialising, one SO login with the current SO PIN: a wrong one is refused with
/// the tries left, and a token whose SO cannot log in (NSS softokn has no SO once its database
/// has a password: `CKR_USER_TYPE_INVALID`) cannot finish an init either (the first user PIN is
/// set as SO), so it is refused with its own tool named, before `C_InitToken` wipes anything.
fn check_so_login(module: &Module, token: &Token, so_pin: &SecretString) -> Result<(), TokenError> {
    use cryptoki::error::{Error as CkError, RvError};
    let mut session = token.open_rw(module)?;
    log::debug!(
        "C_Login as SO on token {:?} before C_InitToken",
        token.label()
    );
    let result = match session
        .session
        .login(cryptoki::session::UserType::So, Some(so_pin))
    {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            session.logout();
            Ok(())
        }
        Err(e @ CkError::Pkcs11(RvError::UserTypeInvalid | RvError::FunctionNotSupported, _)) => {
            let CkError::Pkcs11(rv, function) = &e else {
                unreachable!("matched above")
            };
            Err(TokenError::InitUnsupported {
                label: token.label().to_string(),
                reinit: true,
                tool: init_tool(module, token),
                call: super::error::CallFailure::of(*function, rv),
            })
        }
        Err(e) => Err(session.pin_error(module, e, "checking the SO PIN", PinRole::So)),
    };
    drop(session);
    result
}

/// Why `C_InitToken` failed. A module that cannot initialise this token through PKCS#11 —
/// `CKR_FUNCTION_NOT_SUPPORTED` (smart cards), or any refusal other than a PIN's or the token's
/// state on a token that is already initialised (tpm2-pkcs11 initialises a token once,
/// answering `CKR_ARGUMENTS_BAD` after) — gets the tool that can; nothing was changed.
fn init_refused(module: &Module, token: &Token, err: cryptoki::error::Error) -> TokenError {
    use cryptoki::error::{Error as CkError, RvError};
    let reinit = token.summary().initialized;
    let not_pkcs11 = match &err {
        CkError::Pkcs11(RvError::FunctionNotSupported, _) => true,
        CkError::Pkcs11(
            RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinLenRange
            | RvError::PinInvalid
            | RvError::SessionExists
            | RvError::TokenWriteProtected
            | RvError::TokenNotPresent
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::HostMemory
            | RvError::SlotIdInvalid,
            _,
        ) => false,
        CkError::Pkcs11(_, _) => reinit,
        _ => false,
    };
    if let (true, CkError::Pkcs11(rv, function)) = (not_pkcs11, &err) {
        return TokenError::InitUnsupported {
            label: token.label().to_string(),
            reinit,
            tool: init_tool(module, token),
            call: super::error::CallFailure::of(*function, rv),
        };
    }
    map_error(
        err,
        ErrCtx {
            what: "initialising the token",
            label: token.label(),
            role: Some(PinRole::So),
            tries: super::error::TriesLeft::Unknown,
        },
    )
}

/// The module's own tool for (re-)initialising a token. Named from what the module says about
/// itself (`C_GetInfo`): a hint, not a decision — whether `C_InitToken` works was decided by its
/// answer.
fn init_tool(module: &Module, token: &Token) -> String {
    let lib = module.library();
    let who = format!("{} {}", lib.manufacturer, lib.description).to_lowercase();
    let slot = token.slot.id();
    let label = token.label();
    if who.contains("tpm2") {
        format!("tpm2-pkcs11's own tool: `tpm2_ptool rmtoken --label {label:?}` (its keys are lost), then `keyward token init --free`, or `tpm2_ptool addtoken` for a new token")
    } else if who.contains("meta pkcs11") || who.contains("opencryptoki") {
        format!("opencryptoki's own tool: `pkcsconf -c {slot} -I` (SO PIN), then `pkcsconf -c {slot} -u` for the user PIN")
    } else if who.contains("nss") {
        "NSS's own tool: make its database again with `certutil -N -d sql:DIR` (in a new or emptied directory; its keys are lost); its password is the user PIN".to_string()
    } else if who.contains("opensc") {
        "the card's own tool (OpenSC's `pkcs15-init --erase-card` or `piv-tool`, or the card vendor's); a card provisioned that way is used with `keyward keyset adopt`".to_string()
    } else {
        format!(
            "the administration tool that comes with the module ({} {})",
            lib.manufacturer, lib.description
        )
    }
}

/// Changes the user PIN (`C_SetPIN`), refusing on a final try unless the policy allows it.
pub fn change_pin(
    module: &Module,
    token: &Token,
    old: &SecretString,
    new: &SecretString,
    policy: LoginPolicy,
) -> Result<(), TokenError> {
    let mut token = token.clone();
    token.refresh(module)?;
    token.check_pin_state(PinRole::User, policy)?;
    token.check_pin_length(PinRole::User, old)?;
    token.check_pin_length(PinRole::User, new)?;
    let mut session = token.open_rw(module)?;
    session.set_user_pin(module, old, new)
}

/// Sets a new user PIN with the SO PIN (`C_Login(SO)` + `C_InitPIN`), which also unlocks it.
///
/// A smart card's unblocking secret (a PIV card's PUK) is not a PIN one logs in with: such a
/// module refuses the SO login without spending a try. When it does and the user PIN is
/// locked, the unblocking secret is given as the old PIN of `C_SetPIN` in a session without a
/// login — the convention of such modules (OpenSC's `user_pin_unblock_style =
/// set_pin_in_unlogged_session`). A locked PIN has no try left to spend, so the attempt costs
/// nothing; when the module takes neither, the error says what will work.
pub fn unblock(
    module: &Module,
    token: &Token,
    so_pin: &SecretString,
    new_user_pin: &SecretString,
    policy: LoginPolicy,
) -> Result<(), TokenError> {
    token.check_pin_length(PinRole::User, new_user_pin)?;
    let mut session = token.open_rw(module)?;
    let so_login = match session.login(module, PinRole::So, so_pin, policy) {
        Ok(()) => {
            log::debug!("C_InitPIN on token {:?}", token.label());
            let result = session
                .session
                .init_pin(new_user_pin)
                .map_err(|e| session.op_error(e, "setting the new user PIN"));
            session.logout();
            return result;
        }
        Err(e) => e,
    };
    let refused = match &so_login {
        TokenError::Call { call, .. } if so_login_refused(call) => call.clone(),
        _ => return Err(so_login),
    };
    drop(session);
    let mut now = token.clone();
    now.refresh(module)?;
    if !now.summary().user_pin.locked {
        return Err(so_login);
    }
    log::debug!(
        "token {:?} refused the SO login ({refused}); C_SetPIN with the unblocking PIN in a session without a login",
        token.label()
    );
    let session = now.open_rw(module)?;
    match session.session.set_pin(so_pin, new_user_pin) {
        Ok(()) => Ok(()),
        Err(e) => {
            log::debug!("C_SetPIN with the unblocking PIN: {e}");
            Err(TokenError::UnblockUnsupported {
                label: token.label().to_string(),
                call: refused,
            })
        }
    }
}

/// An SO login the module refused as such (no SO session on this token), not a wrong or
/// locked PIN nor a device failure.
fn so_login_refused(call: &CallFailure) -> bool {
    matches!(
        call.code().as_str(),
        "GeneralError" | "FunctionFailed" | "UserTypeInvalid" | "FunctionNotSupported"
    )
}

fn initialized_serials(module: &Module) -> Result<Vec<String>, TokenError> {
    Ok(list_tokens(module)?
        .into_iter()
        .filter(|t| t.summary().initialized)
        .map(|t| t.serial().to_string())
        .collect())
}

/// After `C_InitToken`, the token with `label` that is new (or in the same slot when re-initialised).
fn find_initialized(
    module: &Module,
    old: &Token,
    label: &str,
    before: &[String],
) -> Result<Token, TokenError> {
    let tokens = list_tokens(module)?;
    let same_slot = tokens
        .iter()
        .find(|t| t.slot.id() == old.slot.id() && t.label() == label && t.summary().initialized);
    if let Some(t) = same_slot {
        return Ok(t.clone());
    }
    let mut new: Vec<Token> = tokens
        .into_iter()
        .filter(|t| {
            t.summary().initialized
                && t.label() == label
                && (t.serial() == old.serial() || !before.iter().any(|s| s == t.serial()))
        })
        .collect();
    match new.len() {
        1 => Ok(new.remove(0)),
        _ => Err(TokenError::TokenNotFound {
            wanted: format!("the newly initialised token {label:?}"),
            present: list_slots(module)?
                .into_iter()
                .filter_map(|s| s.token)
                .map(|t| format!("{:?} (serial {})", t.label, t.serial))
                .collect(),
        }),
    }
}
