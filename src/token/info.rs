//! Slots and tokens: listing them, and finding one by PKCS#11 URI.

use cryptoki::slot::{Slot, TokenInfo};
use serde::Serialize;

use super::error::{map_error, ErrCtx, TokenError};
use super::module::Module;
use super::uri::{Pkcs11Uri, TokenFacts};

/// The state of one PIN as the token reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PinState {
    /// A wrong PIN was entered since the last success (`CKF_*_PIN_COUNT_LOW`).
    pub count_low: bool,
    /// One more wrong PIN locks it (`CKF_*_PIN_FINAL_TRY`).
    pub final_try: bool,
    /// It is locked (`CKF_*_PIN_LOCKED`).
    pub locked: bool,
    /// The token asks for it to be changed (`CKF_*_PIN_TO_BE_CHANGED`).
    pub to_be_changed: bool,
}

/// One token as keyward shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenSummary {
    /// The slot's id (SoftHSM changes it when a token is initialised).
    pub slot_id: u64,
    /// The slot's description.
    pub slot_description: String,
    /// The slot's manufacturer.
    pub slot_manufacturer: String,
    /// The token label (trailing padding removed).
    pub label: String,
    /// The token manufacturer.
    pub manufacturer: String,
    /// The token model.
    pub model: String,
    /// The token serial number.
    pub serial: String,
    /// `CKF_TOKEN_INITIALIZED`.
    pub initialized: bool,
    /// `CKF_USER_PIN_INITIALIZED`.
    pub user_pin_initialized: bool,
    /// `CKF_LOGIN_REQUIRED`.
    pub login_required: bool,
    /// `CKF_WRITE_PROTECTED`.
    pub write_protected: bool,
    /// `CKF_PROTECTED_AUTHENTICATION_PATH` (PIN pad).
    pub protected_auth_path: bool,
    /// User PIN state.
    pub user_pin: PinState,
    /// SO PIN state.
    pub so_pin: PinState,
    /// Shortest PIN the token accepts.
    pub min_pin_len: usize,
    /// Longest PIN the token accepts.
    pub max_pin_len: usize,
    /// The URI that picks this token.
    pub uri: String,
}

/// One slot: its id and, when a token is present, the token.
#[derive(Debug, Clone, Serialize)]
pub struct SlotEntry {
    /// The slot's id.
    pub slot_id: u64,
    /// The slot's description.
    pub description: String,
    /// The token in the slot, if any.
    pub token: Option<TokenSummary>,
    /// A token is present but the module cannot read it (an unrecognised card, one removed
    /// while listing): what the module said. Then `token` is `None`.
    pub unreadable: Option<String>,
}

/// A token found on the module: its slot and what it reported.
#[derive(Debug, Clone)]
pub struct Token {
    pub(crate) slot: Slot,
    summary: TokenSummary,
}

impl Token {
    /// What the token reported when it was found or last refreshed.
    pub fn summary(&self) -> &TokenSummary {
        &self.summary
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.summary.label
    }

    /// The token serial number.
    pub fn serial(&self) -> &str {
        &self.summary.serial
    }

    /// Reads the token's flags again (PIN state changes after a login).
    /// Only `C_GetTokenInfo` (where the PIN flags are); the slot's description is kept.
    pub fn refresh(&mut self, module: &Module) -> Result<(), TokenError> {
        let info = module
            .ctx()
            .get_token_info(self.slot)
            .map_err(|e| map_error(e, ErrCtx::op("reading token info", self.label())))?;
        let (desc, manuf) = (
            self.summary.slot_description.clone(),
            self.summary.slot_manufacturer.clone(),
        );
        self.summary = summary_from(self.slot, &info, &desc, &manuf);
        Ok(())
    }
}

/// Lists every slot the module has, with its token when one is present. A slot whose token
/// cannot be read (`CKR_TOKEN_NOT_RECOGNIZED`, removed meanwhile, …) is listed as such and the
/// listing goes on.
pub fn list_slots(module: &Module) -> Result<Vec<SlotEntry>, TokenError> {
    let slots = module
        .ctx()
        .get_all_slots()
        .map_err(|e| map_error(e, ErrCtx::op("listing slots", "")))?;
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        let info = module
            .ctx()
            .get_slot_info(slot)
            .map_err(|e| map_error(e, ErrCtx::op("reading slot info", "")))?;
        let (token, unreadable) = if info.token_present() {
            match summarize(module, slot) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(unreadable_reason(e)?)),
            }
        } else {
            (None, None)
        };
        out.push(SlotEntry {
            slot_id: slot.id(),
            description: padded(info.slot_description()),
            token,
            unreadable,
        });
    }
    Ok(out)
}

/// Every present token that can be read; the others are skipped (see [`list_slots`]).
pub fn list_tokens(module: &Module) -> Result<Vec<Token>, TokenError> {
    Ok(scan_tokens(module)?.0)
}

/// The tokens that can be read, and a note for each slot whose token cannot.
fn scan_tokens(module: &Module) -> Result<(Vec<Token>, Vec<String>), TokenError> {
    let slots = module
        .ctx()
        .get_slots_with_token()
        .map_err(|e| map_error(e, ErrCtx::op("listing tokens", "")))?;
    let mut tokens = Vec::with_capacity(slots.len());
    let mut unreadable = Vec::new();
    for slot in slots {
        match summarize(module, slot) {
            Ok(summary) => tokens.push(Token { slot, summary }),
            Err(e) => {
                let why = unreadable_reason(e)?;
                log::debug!("slot {}: {why}", slot.id());
                unreadable.push(format!("slot {}: {why}", slot.id()));
            }
        }
    }
    Ok((tokens, unreadable))
}

/// Why a present token cannot be listed, as a phrase, when the module says it does not know
/// the token or it went away (`CKR_TOKEN_NOT_RECOGNIZED`, `CKR_TOKEN_NOT_PRESENT`,
/// `CKR_DEVICE_REMOVED`): the slot is listed as such and the listing goes on. Any other failure
/// (a device error) is an error.
fn unreadable_reason(err: cryptoki::error::Error) -> Result<String, TokenError> {
    use cryptoki::error::{Error as CkError, RvError};
    match &err {
        CkError::Pkcs11(RvError::TokenNotRecognized, f) => Ok(format!(
            "token not recognised by the module (C_{f:?} returned CKR_TOKEN_NOT_RECOGNIZED)"
        )),
        CkError::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, f) => {
            Ok(format!("token removed while listing (C_{f:?})"))
        }
        _ => Err(map_error(err, ErrCtx::op("reading token info", ""))),
    }
}

/// The one token the URI names: zero matches is "not found", several is "ambiguous".
pub fn find_token(module: &Module, uri: &Pkcs11Uri) -> Result<Token, TokenError> {
    let (tokens, unreadable) = scan_tokens(module)?;
    let wanted = describe_wanted(uri);
    let (matching, others): (Vec<Token>, Vec<Token>) = tokens
        .into_iter()
        .partition(|t| uri.matches_token(&facts(&t.summary)));
    match matching.len() {
        1 => Ok(matching.into_iter().next().expect("one match")),
        0 => Err(TokenError::TokenNotFound {
            wanted,
            present: others
                .iter()
                .filter(|t| t.summary.initialized)
                .map(|t| format!("{:?} (serial {})", t.summary.label, t.summary.serial))
                .chain(unreadable)
                .collect(),
        }),
        _ => Err(TokenError::TokenAmbiguous {
            wanted,
            candidates: matching
                .iter()
                .map(|t| {
                    format!(
                        "{:?}: {} (slot {})",
                        t.summary.label, t.summary.uri, t.summary.slot_id
                    )
                })
                .collect(),
        }),
    }
}

/// The token in slot `slot_id`.
pub fn token_in_slot(module: &Module, slot_id: u64) -> Result<Token, TokenError> {
    list_tokens(module)?
        .into_iter()
        .find(|t| t.slot.id() == slot_id)
        .ok_or(TokenError::SlotNotFound { slot: slot_id })
}

fn describe_wanted(uri: &Pkcs11Uri) -> String {
    match (
        &uri.token,
        uri.token_part()
            == Pkcs11Uri {
                token: uri.token.clone(),
                ..Default::default()
            },
    ) {
        (Some(label), true) => format!("label {label:?}"),
        _ => uri.to_string(),
    }
}

fn facts(s: &TokenSummary) -> TokenFacts<'_> {
    TokenFacts {
        label: &s.label,
        manufacturer: &s.manufacturer,
        model: &s.model,
        serial: &s.serial,
        slot_id: s.slot_id,
        slot_description: &s.slot_description,
        slot_manufacturer: &s.slot_manufacturer,
    }
}

fn summarize(module: &Module, slot: Slot) -> Result<TokenSummary, cryptoki::error::Error> {
    let info = module.ctx().get_token_info(slot)?;
    let slot_info = module.ctx().get_slot_info(slot)?;
    Ok(summary_from(
        slot,
        &info,
        slot_info.slot_description(),
        slot_info.manufacturer_id(),
    ))
}

/// A fixed-length PKCS#11 string without its padding: blanks, as the standard says, or NULs,
/// as some modules write (opencryptoki's slot description).
fn padded(s: &str) -> String {
    s.trim_end_matches([' ', '\0']).to_string()
}

fn summary_from(slot: Slot, info: &TokenInfo, slot_desc: &str, slot_manuf: &str) -> TokenSummary {
    let label = padded(info.label());
    let manufacturer = padded(info.manufacturer_id());
    let model = padded(info.model());
    let serial = padded(info.serial_number());
    // An uninitialised token has no label or serial to name it by (SoftHSM's free slot has
    // neither): name its slot instead, which `token init --token` takes.
    let uri = if info.token_initialized() {
        Pkcs11Uri::for_token(&label, &manufacturer, &model, &serial)
    } else {
        Pkcs11Uri::for_slot(slot.id(), &manufacturer, &model)
    }
    .to_string();
    TokenSummary {
        slot_id: slot.id(),
        slot_description: padded(slot_desc),
        slot_manufacturer: padded(slot_manuf),
        label,
        manufacturer,
        model,
        serial,
        initialized: info.token_initialized(),
        user_pin_initialized: info.user_pin_initialized(),
        login_required: info.login_required(),
        write_protected: info.write_protected(),
        protected_auth_path: info.protected_authentication_path(),
        user_pin: PinState {
            count_low: info.user_pin_count_low(),
            final_try: info.user_pin_final_try(),
            locked: info.user_pin_locked(),
            to_be_changed: info.user_pin_to_be_changed(),
        },
        so_pin: PinState {
            count_low: info.so_pin_count_low(),
            final_try: info.so_pin_final_try(),
            locked: info.so_pin_locked(),
            to_be_changed: info.so_pin_to_be_changed(),
        },
        min_pin_len: info.min_pin_length(),
        max_pin_len: info.max_pin_length(),
        uri,
    }
}
