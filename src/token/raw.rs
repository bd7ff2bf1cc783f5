//! Single-part decryption or signature with a key that has `CKA_ALWAYS_AUTHENTICATE`.
//! PKCS#11 wants `C_DecryptInit`, then `C_Login(CKU_CONTEXT_SPECIFIC)`, then `C_Decrypt`
//! (likewise for signing). All three go through cryptoki's one function list (the patched
//! `decrypt_single` / `sign_single`, see `vendor/cryptoki/KEYWARD-PATCHES.md`): no second load
//! of the module, so this works through `p11-kit-proxy.so` too.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;

/// Output room for one single-part call: an RSA-8192 signature, or a decryption (whose output
/// is never longer than its input, which is at least this long when it is not).
const MAX_SINGLE_PART_OUTPUT: usize = 1024;

/// Which single-part operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SinglePart {
    /// `C_DecryptInit` + `C_Decrypt`.
    Decrypt,
    /// `C_SignInit` + `C_Sign`.
    Sign,
}

/// Init, context-specific login with `pin`, then the single-part call on `data`.
pub(crate) fn with_context_login(
    op: SinglePart,
    session: &Session,
    mechanism: &Mechanism<'_>,
    key: ObjectHandle,
    pin: &SecretString,
    data: &[u8],
) -> Result<Vec<u8>, CkError> {
    match op {
        SinglePart::Decrypt => session.decrypt_init(mechanism, key)?,
        SinglePart::Sign => session.sign_init(mechanism, key)?,
    }
    session.login(UserType::ContextSpecific, Some(pin))?;
    // One call with room for the output, not a length query first: on a card the query may
    // already run the operation and spend the context-specific login (OpenSC's PIV decryption
    // does), leaving the real call CKR_USER_NOT_LOGGED_IN.
    let capacity = data.len().max(MAX_SINGLE_PART_OUTPUT);
    match op {
        SinglePart::Decrypt => session.decrypt_single_with_capacity(data, capacity),
        SinglePart::Sign => session.sign_single_with_capacity(data, capacity),
    }
}
