//! The one thing `cryptoki` 0.12 cannot do: a single-part decryption or signature with a key
//! that has `CKA_ALWAYS_AUTHENTICATE`. PKCS#11 wants `C_DecryptInit`, then
//! `C_Login(CKU_CONTEXT_SPECIFIC)`, then `C_Decrypt`; cryptoki's `decrypt` makes the first
//! and last call together. This module makes the three calls through the module's own
//! function list, on the session and key handles cryptoki already holds.
#![allow(unsafe_code)]

use std::path::Path;
use std::ptr;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, Rv};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki_sys::{
    CKU_CONTEXT_SPECIFIC, CK_FUNCTION_LIST, CK_FUNCTION_LIST_PTR, CK_MECHANISM, CK_ULONG,
};
use secrecy::{ExposeSecret, SecretString};

/// The module's function list, loaded a second time from the same library (the dynamic
/// loader returns the already-initialised instance).
pub(crate) struct RawFunctions {
    _lib: cryptoki_sys::Pkcs11,
    list: CK_FUNCTION_LIST,
}

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

fn check(rv: CK_ULONG, function: Function) -> Result<(), CkError> {
    Rv::from(rv).into_result(function)
}

impl RawFunctions {
    /// Loads the function list of the module at `path`.
    pub(crate) fn load(path: &Path) -> Result<RawFunctions, String> {
        // SAFETY: loading the same PKCS#11 library cryptoki already loaded; C_GetFunctionList
        // only fills in a pointer to the library's static function table, which we copy.
        unsafe {
            let lib = cryptoki_sys::Pkcs11::new(path).map_err(|e| e.to_string())?;
            let mut list_ptr: CK_FUNCTION_LIST_PTR = ptr::null_mut();
            let rv = lib.C_GetFunctionList(&mut list_ptr);
            check(rv, Function::GetFunctionList).map_err(|e| e.to_string())?;
            if list_ptr.is_null() {
                return Err("C_GetFunctionList returned no list".into());
            }
            Ok(RawFunctions {
                _lib: lib,
                list: *list_ptr,
            })
        }
    }

    /// Init, context-specific login with `pin`, then the single-part call on `data`.
    pub(crate) fn with_context_login(
        &self,
        op: SinglePart,
        session: &Session,
        mechanism: &Mechanism<'_>,
        key: ObjectHandle,
        pin: &SecretString,
        data: &[u8],
    ) -> Result<Vec<u8>, CkError> {
        let h = session.handle();
        let mut mech: CK_MECHANISM = mechanism.into();
        let (init, init_fn, call, call_fn) = match op {
            SinglePart::Decrypt => (
                self.list.C_DecryptInit,
                Function::DecryptInit,
                self.list.C_Decrypt,
                Function::Decrypt,
            ),
            SinglePart::Sign => (
                self.list.C_SignInit,
                Function::SignInit,
                self.list.C_Sign,
                Function::Sign,
            ),
        };
        let (Some(init), Some(call), Some(login)) = (init, call, self.list.C_Login) else {
            return Err(CkError::NullFunctionPointer);
        };
        let pin_bytes = pin.expose_secret().as_bytes();
        let data_len = CK_ULONG::try_from(data.len())?;
        let pin_len = CK_ULONG::try_from(pin_bytes.len())?;
        // SAFETY: the handles are live (the session and key belong to the caller), every
        // buffer pointer comes with its true length, and the mechanism parameter outlives the
        // call because `mechanism` is borrowed for the whole function.
        unsafe {
            check(init(h, &mut mech, key.handle()), init_fn)?;
            check(
                login(
                    h,
                    CKU_CONTEXT_SPECIFIC,
                    pin_bytes.as_ptr() as *mut u8,
                    pin_len,
                ),
                Function::Login,
            )?;
            // One call with a buffer large enough, not a length query first: on a card the
            // query may already run the operation and spend the context-specific login
            // (OpenSC's PIV decryption does), leaving the real call CKR_USER_NOT_LOGGED_IN.
            // Only when the buffer is too small (the operation stays active) ask again.
            let mut out = vec![0u8; data.len().max(MAX_SINGLE_PART_OUTPUT)];
            let mut out_len = CK_ULONG::try_from(out.len())?;
            let rv = call(
                h,
                data.as_ptr() as *mut u8,
                data_len,
                out.as_mut_ptr(),
                &mut out_len,
            );
            if rv == cryptoki_sys::CKR_BUFFER_TOO_SMALL {
                out = vec![0u8; usize::try_from(out_len)?];
                check(
                    call(
                        h,
                        data.as_ptr() as *mut u8,
                        data_len,
                        out.as_mut_ptr(),
                        &mut out_len,
                    ),
                    call_fn,
                )?;
            } else {
                check(rv, call_fn)?;
            }
            out.truncate(usize::try_from(out_len)?);
            Ok(out)
        }
    }
}
