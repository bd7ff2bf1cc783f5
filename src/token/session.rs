//! Sessions on one token, and logging in without ever spending a PIN try by accident.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use secrecy::{ExposeSecret, SecretString};

use super::error::{map_error, ErrCtx, PinRole, TokenError, TriesLeft};
use super::info::Token;
use super::module::Module;

/// How often a vague failure on a removable token asks the slot whether the token is still
/// there (100 ms apart).
const GONE_CHECKS: u32 = 10;

/// How careful a login must be.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoginPolicy {
    /// Log in even when the token says the next wrong PIN locks it (`--final-try`).
    pub allow_final_try: bool,
}

/// An open session on one token. Closed (and logged out) on drop.
pub struct TokenSession {
    pub(crate) session: Session,
    pub(crate) token: Token,
    /// The module, to ask whether the token is still there when a call fails vaguely.
    ctx: Pkcs11,
}

impl Token {
    /// Opens a read-only session.
    pub fn open_ro(&self, module: &Module) -> Result<TokenSession, TokenError> {
        let session = module
            .ctx()
            .open_ro_session(self.slot)
            .map_err(|e| map_error(e, ErrCtx::op("opening a session", self.label())))?;
        Ok(TokenSession {
            session,
            token: self.clone(),
            ctx: module.ctx().clone(),
        })
    }

    /// Opens a read-write session.
    pub fn open_rw(&self, module: &Module) -> Result<TokenSession, TokenError> {
        let session = module
            .ctx()
            .open_rw_session(self.slot)
            .map_err(|e| map_error(e, ErrCtx::op("opening a session", self.label())))?;
        Ok(TokenSession {
            session,
            token: self.clone(),
            ctx: module.ctx().clone(),
        })
    }

    /// Checks a PIN against the token's length limits before the token sees it.
    pub fn check_pin_length(&self, role: PinRole, pin: &SecretString) -> Result<(), TokenError> {
        let s = self.summary();
        let len = pin.expose_secret().chars().count();
        let (min, max) = (s.min_pin_len, s.max_pin_len);
        if (min > 0 && len < min) || (max > 0 && len > max) {
            return Err(TokenError::PinLength {
                label: s.label.clone(),
                role,
                min,
                max,
                len,
            });
        }
        Ok(())
    }

    /// Refuses when the PIN is locked, or on its final try without `allow_final_try`.
    pub fn check_pin_state(&self, role: PinRole, policy: LoginPolicy) -> Result<(), TokenError> {
        let s = self.summary();
        let state = match role {
            PinRole::User => s.user_pin,
            PinRole::So => s.so_pin,
        };
        let label = s.label.clone();
        if state.locked {
            return Err(TokenError::PinLocked { label, role });
        }
        if role == PinRole::User && !s.user_pin_initialized && s.initialized {
            return Err(TokenError::UserPinNotInitialized { label });
        }
        if state.final_try && !policy.allow_final_try {
            return Err(TokenError::FinalTry { label, role });
        }
        Ok(())
    }

    /// What the token says about remaining tries, read fresh after a failure.
    pub(crate) fn tries_left(&mut self, module: &Module, role: PinRole) -> TriesLeft {
        if self.refresh(module).is_err() {
            return TriesLeft::Unknown;
        }
        let s = self.summary();
        let state = match role {
            PinRole::User => s.user_pin,
            PinRole::So => s.so_pin,
        };
        if state.locked {
            TriesLeft::Locked
        } else if state.final_try {
            TriesLeft::One
        } else if state.count_low {
            TriesLeft::Few
        } else {
            TriesLeft::Unknown
        }
    }
}

impl TokenSession {
    /// The token this session is on.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// A new read-write session on the same token, to undo what this one made after a
    /// failure: the failure may have left an operation active here (a search whose
    /// `C_FindObjectsFinal` failed, a signature whose `C_Sign` failed), and the token refuses
    /// other calls in this session until it ends. A login holds for all of the application's
    /// sessions with the token, so the new one is logged in too. `None` if it cannot be opened
    /// (then undo in this one).
    pub fn for_cleanup(&self, module: &Module) -> Option<TokenSession> {
        match self.token.open_rw(module) {
            Ok(s) => Some(s),
            Err(e) => {
                log::debug!("no fresh session for clean-up: {e}");
                None
            }
        }
    }

    /// Logs in once. Checks lock state and PIN length first; never retries.
    pub fn login(
        &mut self,
        module: &Module,
        role: PinRole,
        pin: &SecretString,
        policy: LoginPolicy,
    ) -> Result<(), TokenError> {
        self.token.refresh(module)?;
        self.token.check_pin_state(role, policy)?;
        self.token.check_pin_length(role, pin)?;
        let user_type = match role {
            PinRole::User => UserType::User,
            PinRole::So => UserType::So,
        };
        log::debug!("C_Login as {role} on token {:?}", self.token.label());
        match self.session.login(user_type, Some(pin)) {
            Ok(()) => Ok(()),
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => Ok(()),
            Err(e) => Err(self.pin_error(module, e, "logging in", role)),
        }
    }

    /// Logs out; errors are ignored because the session closes next anyway.
    pub fn logout(&self) {
        if let Err(e) = self.session.logout() {
            log::debug!("C_Logout: {e}");
        }
    }

    /// Maps an error from a PIN-bearing call, reading the tries left when the PIN was wrong.
    pub(crate) fn pin_error(
        &mut self,
        module: &Module,
        err: cryptoki::error::Error,
        what: &str,
        role: PinRole,
    ) -> TokenError {
        let wrong = matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::PinIncorrect, _)
        );
        let tries = if wrong {
            self.token.tries_left(module, role)
        } else {
            TriesLeft::Unknown
        };
        let label = self.token.label().to_string();
        let err = self.gone_or(err);
        map_error(
            err,
            ErrCtx {
                what,
                label: &label,
                role: Some(role),
                tries,
            },
        )
    }

    /// Maps an error from a call without a PIN.
    pub(crate) fn op_error(&self, err: cryptoki::error::Error, what: &str) -> TokenError {
        map_error(self.gone_or(err), ErrCtx::op(what, self.token.label()))
    }

    /// A vague failure (`CKR_GENERAL_ERROR`, `CKR_DEVICE_ERROR`, `CKR_FUNCTION_FAILED`) of a
    /// token that is no longer in its slot is its removal: smart-card modules answer a card
    /// pulled out in the middle of a call that way (OpenSC: `CKR_GENERAL_ERROR` from
    /// `C_Login`). Asked of the slot, not guessed.
    fn gone_or(&self, err: CkError) -> CkError {
        let CkError::Pkcs11(
            RvError::GeneralError | RvError::DeviceError | RvError::FunctionFailed,
            function,
        ) = err
        else {
            return err;
        };
        // The reader may take a moment to report the card gone (pcscd polls it): asked a few
        // times, for at most about a second.
        for _ in 0..GONE_CHECKS {
            match self.ctx.get_slot_info(self.token.slot) {
                Ok(info) if !info.token_present() => {
                    log::debug!("{function:?} failed and the slot holds no token now: removed");
                    return CkError::Pkcs11(RvError::DeviceRemoved, function);
                }
                Ok(info) if !info.removable_device() => return err,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
                Err(_) => return err,
            }
        }
        err
    }
}
