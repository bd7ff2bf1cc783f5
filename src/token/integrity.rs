//! What the authority's store needs from its token to be vouched for: small private data
//! objects (`CKO_DATA`) that keep the newest state head on the token itself.
//!
//! A data object is private (`CKA_PRIVATE`: read and written only after a login), a token
//! object, and found by its label; keyward never keeps two with one label.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use super::error::TokenError;
use super::session::TokenSession;

/// `CKA_APPLICATION` of keyward's data objects.
const APPLICATION: &[u8] = b"keyward";

/// The label of the object [`TokenSession::check_data_objects`] makes and removes at once.
const PROBE_LABEL: &str = "keyward data object probe";

impl TokenSession {
    fn find_data(&self, label: &str) -> Result<Option<ObjectHandle>, TokenError> {
        let found = self
            .session
            .find_objects(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| self.op_error(e, "finding a data object"))?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.first().copied()),
            n => Err(TokenError::Wrapper {
                what: format!("finding the data object {label:?}"),
                reason: format!(
                    "{n} objects share that label on token {:?}; remove the duplicates",
                    self.token.label()
                ),
            }),
        }
    }

    /// The private data objects whose label starts with `prefix` (needs a login), as
    /// (label, value) pairs.
    pub fn data_objects_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, TokenError> {
        let found = self
            .session
            .find_objects(&[Attribute::Class(ObjectClass::DATA)])
            .map_err(|e| self.op_error(e, "finding data objects"))?;
        let mut out = Vec::new();
        for handle in found {
            let attrs = self
                .session
                .get_attributes(handle, &[AttributeType::Label, AttributeType::Value])
                .map_err(|e| self.op_error(e, "reading a data object"))?;
            let mut label = None;
            let mut value = Vec::new();
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = Some(String::from_utf8_lossy(&l).into_owned()),
                    Attribute::Value(v) => value = v,
                    _ => {}
                }
            }
            if let Some(label) = label.filter(|l| l.starts_with(prefix)) {
                out.push((label, value));
            }
        }
        Ok(out)
    }

    /// The value of the private data object labelled `label` (needs a login), or `None`.
    pub fn read_data_object(&self, label: &str) -> Result<Option<Vec<u8>>, TokenError> {
        let Some(handle) = self.find_data(label)? else {
            return Ok(None);
        };
        let attrs = self
            .session
            .get_attributes(handle, &[AttributeType::Value])
            .map_err(|e| self.op_error(e, "reading a data object"))?;
        Ok(attrs.into_iter().find_map(|a| match a {
            Attribute::Value(v) => Some(v),
            _ => None,
        }))
    }

    /// Sets the value of the private data object labelled `label`: removes the old object and
    /// creates the new one (many tokens, SoftHSM among them, make `CKA_VALUE` of a data object
    /// read-only once created). Between the two calls the object is absent; callers keep a
    /// second object (a pending copy) so that a crash there loses nothing.
    pub fn write_data_object(&self, label: &str, value: &[u8]) -> Result<(), TokenError> {
        if let Some(handle) = self.find_data(label)? {
            self.session
                .destroy_object(handle)
                .map_err(|e| self.op_error(e, "replacing a data object"))?;
        }
        self.session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Modifiable(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Application(APPLICATION.to_vec()),
                Attribute::Value(value.to_vec()),
            ])
            .map(|_| ())
            .map_err(|e| self.op_error(e, "creating a data object"))
    }

    /// Refuses, with one sentence, a token that cannot keep a private data object (NSS
    /// softokn's database keeps none: `CKR_ATTRIBUTE_VALUE_INVALID`), before an authority is
    /// made on it: one is made and removed at once (needs a login).
    pub fn check_data_objects(&self) -> Result<(), TokenError> {
        self.destroy_data_object(PROBE_LABEL)?;
        match self.write_data_object(PROBE_LABEL, b"probe") {
            // Asked twice: a probe object must not stay behind after one failed call.
            Ok(()) => self
                .destroy_data_object(PROBE_LABEL)
                .or_else(|_| self.destroy_data_object(PROBE_LABEL)),
            Err(TokenError::Call { call, .. }) if refuses_data(&call.code()) => {
                Err(TokenError::NoDataObjects {
                    label: self.token.label().to_string(),
                    call,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the data object labelled `label`, if any (a failed `authority init` cleans up).
    pub fn destroy_data_object(&self, label: &str) -> Result<(), TokenError> {
        if let Some(handle) = self.find_data(label)? {
            self.session
                .destroy_object(handle)
                .map_err(|e| self.op_error(e, "removing a data object"))?;
        }
        Ok(())
    }
}

/// A token's "no" to a private token data object (not a device or session failure).
fn refuses_data(code: &str) -> bool {
    matches!(
        code,
        "AttributeValueInvalid"
            | "AttributeTypeInvalid"
            | "TemplateInconsistent"
            | "TemplateIncomplete"
            | "FunctionNotSupported"
            | "AttributeReadOnly"
    )
}
