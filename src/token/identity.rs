//! Which token a keyset or an authority lives on: manufacturer, model, serial and label
//! together (RFC 7512's token attributes). A serial alone does not do: NSS softokn gives both its
//! tokens serial `0000000000000000`, tpm2-pkcs11 gives every token that serial.

use serde::{Deserialize, Serialize};

use super::error::TokenError;
use super::info::{list_tokens, Token};
use super::module::Module;
use super::uri::Pkcs11Uri;

/// A token's identity as recorded (registry, authority) and looked up again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIdentity {
    /// `CK_TOKEN_INFO.label`.
    pub label: String,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial: String,
    /// `CK_TOKEN_INFO.manufacturerID`; `None` in records written before keyward recorded it.
    pub manufacturer: Option<String>,
    /// `CK_TOKEN_INFO.model`; `None` in records written before keyward recorded it.
    pub model: Option<String>,
}

/// How a recorded identity was looked for among the present tokens.
#[derive(Debug, Clone)]
pub enum IdentityLookup {
    /// Exactly one initialised token has this identity.
    Found(Token),
    /// None has it, but a token with the same label and another serial is present: another
    /// card under the same name.
    Replaced {
        /// The serial of the token with that label.
        found_serial: String,
    },
    /// No present token has it.
    Missing,
}

impl TokenIdentity {
    /// The identity of a present token.
    pub fn of(token: &Token) -> TokenIdentity {
        let s = token.summary();
        TokenIdentity {
            label: s.label.clone(),
            serial: s.serial.clone(),
            manufacturer: Some(s.manufacturer.clone()),
            model: Some(s.model.clone()),
        }
    }

    /// The URI that names this token (the attributes known).
    pub fn uri(&self) -> Pkcs11Uri {
        Pkcs11Uri {
            token: Some(self.label.clone()),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            serial: Some(self.serial.clone()),
            ..Pkcs11Uri::default()
        }
    }

    /// Is `token` this one? Label and serial must be equal; manufacturer and model too when
    /// both this record and the token have them (old records have neither).
    pub fn matches(&self, token: &Token) -> bool {
        let s = token.summary();
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        s.initialized
            && self.label == s.label
            && self.serial == s.serial
            && same(&self.manufacturer, &s.manufacturer)
            && same(&self.model, &s.model)
    }

    /// Is `other` the same token as this one (for "keysets on this token")? Like
    /// [`TokenIdentity::matches`], between two records.
    pub fn same_token(&self, other: &TokenIdentity) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.label == other.label
            && self.serial == other.serial
            && same(&self.manufacturer, &other.manufacturer)
            && same(&self.model, &other.model)
    }

    /// Looks for this token among the present ones. Two matches (two tokens alike in all four
    /// attributes) is [`TokenError::TokenAmbiguous`], with the URI and slot of each.
    pub fn lookup(&self, module: &Module) -> Result<IdentityLookup, TokenError> {
        let tokens = list_tokens(module)?;
        let mut found: Vec<&Token> = tokens.iter().filter(|t| self.matches(t)).collect();
        match found.len() {
            1 => return Ok(IdentityLookup::Found(found.remove(0).clone())),
            0 => {}
            _ => {
                return Err(TokenError::TokenAmbiguous {
                    wanted: self.uri().to_string(),
                    candidates: found
                        .iter()
                        .map(|t| format!("{} (slot {})", t.summary().uri, t.summary().slot_id))
                        .collect(),
                })
            }
        }
        Ok(
            match tokens
                .iter()
                .find(|t| t.summary().initialized && t.label() == self.label)
            {
                Some(t) => IdentityLookup::Replaced {
                    found_serial: t.serial().to_string(),
                },
                None => IdentityLookup::Missing,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(label: &str, serial: &str, manufacturer: Option<&str>) -> TokenIdentity {
        TokenIdentity {
            label: label.into(),
            serial: serial.into(),
            manufacturer: manufacturer.map(Into::into),
            model: None,
        }
    }

    #[test]
    fn equal_serials_are_told_apart_by_label() {
        let a = id(
            "NSS Certificate DB",
            "0000000000000000",
            Some("Mozilla Foundation"),
        );
        let b = id(
            "NSS Generic Crypto Services",
            "0000000000000000",
            Some("Mozilla Foundation"),
        );
        assert!(!a.same_token(&b));
        assert!(a.same_token(&a.clone()));
    }

    #[test]
    fn an_old_record_without_manufacturer_still_matches() {
        let old = id("card", "42", None);
        let new = id("card", "42", Some("SoftHSM project"));
        assert!(old.same_token(&new) && new.same_token(&old));
        assert!(!id("card", "42", Some("Other")).same_token(&new));
    }

    #[test]
    fn the_uri_names_all_four() {
        let mut i = id("a b", "7", Some("M"));
        i.model = Some("X".into());
        assert_eq!(
            i.uri().to_string(),
            "pkcs11:token=a%20b;manufacturer=M;serial=7;model=X"
        );
    }
}
