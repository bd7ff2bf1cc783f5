//! The PKCS#11 adapter: the only layer that touches `cryptoki`.

pub mod admin;
pub mod caps;
mod ckr;
pub mod discover;
pub mod error;
pub mod identity;
pub mod info;
pub mod integrity;
pub mod inventory;
mod keygen;
pub mod keys;
pub mod module;
pub mod provision;
mod raw;
pub(crate) mod reference;
pub mod session;
mod template;
pub mod transfer;
pub mod uri;
pub mod wrap;

pub use admin::{change_pin, check_label, free_token, init_token, unblock, InitSecrets};
pub use caps::{Capabilities, Probe, Rfc5649Mechanism};
pub use discover::{FoundModule, SearchPlaces};
pub use error::{CallFailure, PinRole, TokenError, TriesLeft};
pub use identity::{IdentityLookup, TokenIdentity};
pub use info::{
    find_token, list_slots, list_tokens, token_in_slot, PinState, SlotEntry, Token, TokenSummary,
};
pub use inventory::{CertificateEntry, KeyIntake, PrivateKeyEntry};
pub use keys::{KeyAttributes, KeyKind, KeyRef, KeySpec, KeyTemplate, RawPublicKey};
pub use module::{LibraryInfo, Module, DEFAULT_MODULE_PATHS};
pub use session::{LoginPolicy, TokenSession};
pub use uri::{ObjectKind, Pkcs11Uri, UriError};
pub use wrap::{
    CertObject, DecryptionPair, KeyTransportScheme, OaepHash, ObjectKindFilter, ObjectRef,
    UnwrapTemplate,
};
