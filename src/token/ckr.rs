//! `CKR_*` names and numbers of cryptoki's return values: cryptoki maps numbers to
//! [`RvError`] but not back. Generated from `vendor/cryptoki/src/error/rv.rs` (its
//! `From<CK_RV>`); a return value cryptoki adds later falls to the last arm.

use cryptoki::error::RvError;
use cryptoki_sys::*;

/// The `CKR_` name and number of `rv`, e.g. `("CKR_PIN_INCORRECT", 0xa0)`.
#[allow(clippy::unnecessary_cast)] // CK_RV is u64 here, u32 where c_ulong is
pub(crate) fn ckr(rv: &RvError) -> (&'static str, u64) {
    #[allow(unreachable_patterns)]
    let (name, value) = match rv {
        RvError::Cancel => ("CKR_CANCEL", CKR_CANCEL),
        RvError::HostMemory => ("CKR_HOST_MEMORY", CKR_HOST_MEMORY),
        RvError::SlotIdInvalid => ("CKR_SLOT_ID_INVALID", CKR_SLOT_ID_INVALID),
        RvError::GeneralError => ("CKR_GENERAL_ERROR", CKR_GENERAL_ERROR),
        RvError::FunctionFailed => ("CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED),
        RvError::ArgumentsBad => ("CKR_ARGUMENTS_BAD", CKR_ARGUMENTS_BAD),
        RvError::NoEvent => ("CKR_NO_EVENT", CKR_NO_EVENT),
        RvError::NeedToCreateThreads => ("CKR_NEED_TO_CREATE_THREADS", CKR_NEED_TO_CREATE_THREADS),
        RvError::CantLock => ("CKR_CANT_LOCK", CKR_CANT_LOCK),
        RvError::AttributeReadOnly => ("CKR_ATTRIBUTE_READ_ONLY", CKR_ATTRIBUTE_READ_ONLY),
        RvError::AttributeSensitive => ("CKR_ATTRIBUTE_SENSITIVE", CKR_ATTRIBUTE_SENSITIVE),
        RvError::AttributeTypeInvalid => ("CKR_ATTRIBUTE_TYPE_INVALID", CKR_ATTRIBUTE_TYPE_INVALID),
        RvError::AttributeValueInvalid => {
            ("CKR_ATTRIBUTE_VALUE_INVALID", CKR_ATTRIBUTE_VALUE_INVALID)
        }
        RvError::ActionProhibited => ("CKR_ACTION_PROHIBITED", CKR_ACTION_PROHIBITED),
        RvError::DataInvalid => ("CKR_DATA_INVALID", CKR_DATA_INVALID),
        RvError::DataLenRange => ("CKR_DATA_LEN_RANGE", CKR_DATA_LEN_RANGE),
        RvError::DeviceError => ("CKR_DEVICE_ERROR", CKR_DEVICE_ERROR),
        RvError::DeviceMemory => ("CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY),
        RvError::DeviceRemoved => ("CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED),
        RvError::EncryptedDataInvalid => ("CKR_ENCRYPTED_DATA_INVALID", CKR_ENCRYPTED_DATA_INVALID),
        RvError::EncryptedDataLenRange => {
            ("CKR_ENCRYPTED_DATA_LEN_RANGE", CKR_ENCRYPTED_DATA_LEN_RANGE)
        }
        RvError::FunctionCanceled => ("CKR_FUNCTION_CANCELED", CKR_FUNCTION_CANCELED),
        RvError::FunctionNotParallel => ("CKR_FUNCTION_NOT_PARALLEL", CKR_FUNCTION_NOT_PARALLEL),
        RvError::FunctionNotSupported => ("CKR_FUNCTION_NOT_SUPPORTED", CKR_FUNCTION_NOT_SUPPORTED),
        RvError::CurveNotSupported => ("CKR_CURVE_NOT_SUPPORTED", CKR_CURVE_NOT_SUPPORTED),
        RvError::KeyHandleInvalid => ("CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID),
        RvError::KeySizeRange => ("CKR_KEY_SIZE_RANGE", CKR_KEY_SIZE_RANGE),
        RvError::KeyTypeInconsistent => ("CKR_KEY_TYPE_INCONSISTENT", CKR_KEY_TYPE_INCONSISTENT),
        RvError::KeyNotNeeded => ("CKR_KEY_NOT_NEEDED", CKR_KEY_NOT_NEEDED),
        RvError::KeyChanged => ("CKR_KEY_CHANGED", CKR_KEY_CHANGED),
        RvError::KeyNeeded => ("CKR_KEY_NEEDED", CKR_KEY_NEEDED),
        RvError::KeyIndigestible => ("CKR_KEY_INDIGESTIBLE", CKR_KEY_INDIGESTIBLE),
        RvError::KeyFunctionNotPermitted => (
            "CKR_KEY_FUNCTION_NOT_PERMITTED",
            CKR_KEY_FUNCTION_NOT_PERMITTED,
        ),
        RvError::KeyNotWrappable => ("CKR_KEY_NOT_WRAPPABLE", CKR_KEY_NOT_WRAPPABLE),
        RvError::KeyUnextractable => ("CKR_KEY_UNEXTRACTABLE", CKR_KEY_UNEXTRACTABLE),
        RvError::MechanismInvalid => ("CKR_MECHANISM_INVALID", CKR_MECHANISM_INVALID),
        RvError::MechanismParamInvalid => {
            ("CKR_MECHANISM_PARAM_INVALID", CKR_MECHANISM_PARAM_INVALID)
        }
        RvError::ObjectHandleInvalid => ("CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID),
        RvError::OperationActive => ("CKR_OPERATION_ACTIVE", CKR_OPERATION_ACTIVE),
        RvError::OperationNotInitialized => (
            "CKR_OPERATION_NOT_INITIALIZED",
            CKR_OPERATION_NOT_INITIALIZED,
        ),
        RvError::PinIncorrect => ("CKR_PIN_INCORRECT", CKR_PIN_INCORRECT),
        RvError::PinInvalid => ("CKR_PIN_INVALID", CKR_PIN_INVALID),
        RvError::PinLenRange => ("CKR_PIN_LEN_RANGE", CKR_PIN_LEN_RANGE),
        RvError::PinExpired => ("CKR_PIN_EXPIRED", CKR_PIN_EXPIRED),
        RvError::PinLocked => ("CKR_PIN_LOCKED", CKR_PIN_LOCKED),
        RvError::SessionClosed => ("CKR_SESSION_CLOSED", CKR_SESSION_CLOSED),
        RvError::SessionCount => ("CKR_SESSION_COUNT", CKR_SESSION_COUNT),
        RvError::SessionHandleInvalid => ("CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID),
        RvError::SessionParallelNotSupported => (
            "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
            CKR_SESSION_PARALLEL_NOT_SUPPORTED,
        ),
        RvError::SessionReadOnly => ("CKR_SESSION_READ_ONLY", CKR_SESSION_READ_ONLY),
        RvError::SessionExists => ("CKR_SESSION_EXISTS", CKR_SESSION_EXISTS),
        RvError::SessionReadOnlyExists => {
            ("CKR_SESSION_READ_ONLY_EXISTS", CKR_SESSION_READ_ONLY_EXISTS)
        }
        RvError::SessionReadWriteSoExists => (
            "CKR_SESSION_READ_WRITE_SO_EXISTS",
            CKR_SESSION_READ_WRITE_SO_EXISTS,
        ),
        RvError::SignatureInvalid => ("CKR_SIGNATURE_INVALID", CKR_SIGNATURE_INVALID),
        RvError::SignatureLenRange => ("CKR_SIGNATURE_LEN_RANGE", CKR_SIGNATURE_LEN_RANGE),
        RvError::TemplateIncomplete => ("CKR_TEMPLATE_INCOMPLETE", CKR_TEMPLATE_INCOMPLETE),
        RvError::TemplateInconsistent => ("CKR_TEMPLATE_INCONSISTENT", CKR_TEMPLATE_INCONSISTENT),
        RvError::TokenNotPresent => ("CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT),
        RvError::TokenNotRecognized => ("CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED),
        RvError::TokenWriteProtected => ("CKR_TOKEN_WRITE_PROTECTED", CKR_TOKEN_WRITE_PROTECTED),
        RvError::UnwrappingKeyHandleInvalid => (
            "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        ),
        RvError::UnwrappingKeySizeRange => (
            "CKR_UNWRAPPING_KEY_SIZE_RANGE",
            CKR_UNWRAPPING_KEY_SIZE_RANGE,
        ),
        RvError::UserAlreadyLoggedIn => ("CKR_USER_ALREADY_LOGGED_IN", CKR_USER_ALREADY_LOGGED_IN),
        RvError::UserNotLoggedIn => ("CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN),
        RvError::UserPinNotInitialized => {
            ("CKR_USER_PIN_NOT_INITIALIZED", CKR_USER_PIN_NOT_INITIALIZED)
        }
        RvError::UserTypeInvalid => ("CKR_USER_TYPE_INVALID", CKR_USER_TYPE_INVALID),
        RvError::UserAnotherAlreadyLoggedIn => (
            "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        ),
        RvError::UserTooManyTypes => ("CKR_USER_TOO_MANY_TYPES", CKR_USER_TOO_MANY_TYPES),
        RvError::WrappedKeyInvalid => ("CKR_WRAPPED_KEY_INVALID", CKR_WRAPPED_KEY_INVALID),
        RvError::WrappedKeyLenRange => ("CKR_WRAPPED_KEY_LEN_RANGE", CKR_WRAPPED_KEY_LEN_RANGE),
        RvError::WrappingKeyHandleInvalid => (
            "CKR_WRAPPING_KEY_HANDLE_INVALID",
            CKR_WRAPPING_KEY_HANDLE_INVALID,
        ),
        RvError::WrappingKeySizeRange => {
            ("CKR_WRAPPING_KEY_SIZE_RANGE", CKR_WRAPPING_KEY_SIZE_RANGE)
        }
        RvError::WrappingKeyTypeInconsistent => (
            "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
            CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
        ),
        RvError::RandomSeedNotSupported => (
            "CKR_RANDOM_SEED_NOT_SUPPORTED",
            CKR_RANDOM_SEED_NOT_SUPPORTED,
        ),
        RvError::RandomNoRng => ("CKR_RANDOM_NO_RNG", CKR_RANDOM_NO_RNG),
        RvError::DomainParamsInvalid => ("CKR_DOMAIN_PARAMS_INVALID", CKR_DOMAIN_PARAMS_INVALID),
        RvError::BufferTooSmall => ("CKR_BUFFER_TOO_SMALL", CKR_BUFFER_TOO_SMALL),
        RvError::SavedStateInvalid => ("CKR_SAVED_STATE_INVALID", CKR_SAVED_STATE_INVALID),
        RvError::InformationSensitive => ("CKR_INFORMATION_SENSITIVE", CKR_INFORMATION_SENSITIVE),
        RvError::StateUnsaveable => ("CKR_STATE_UNSAVEABLE", CKR_STATE_UNSAVEABLE),
        RvError::CryptokiNotInitialized => {
            ("CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED)
        }
        RvError::CryptokiAlreadyInitialized => (
            "CKR_CRYPTOKI_ALREADY_INITIALIZED",
            CKR_CRYPTOKI_ALREADY_INITIALIZED,
        ),
        RvError::MutexBad => ("CKR_MUTEX_BAD", CKR_MUTEX_BAD),
        RvError::MutexNotLocked => ("CKR_MUTEX_NOT_LOCKED", CKR_MUTEX_NOT_LOCKED),
        RvError::NewPinMode => ("CKR_NEW_PIN_MODE", CKR_NEW_PIN_MODE),
        RvError::NextOtp => ("CKR_NEXT_OTP", CKR_NEXT_OTP),
        RvError::ExceededMaxIterations => {
            ("CKR_EXCEEDED_MAX_ITERATIONS", CKR_EXCEEDED_MAX_ITERATIONS)
        }
        RvError::FipsSelfTestFailed => ("CKR_FIPS_SELF_TEST_FAILED", CKR_FIPS_SELF_TEST_FAILED),
        RvError::LibraryLoadFailed => ("CKR_LIBRARY_LOAD_FAILED", CKR_LIBRARY_LOAD_FAILED),
        RvError::PinTooWeak => ("CKR_PIN_TOO_WEAK", CKR_PIN_TOO_WEAK),
        RvError::PublicKeyInvalid => ("CKR_PUBLIC_KEY_INVALID", CKR_PUBLIC_KEY_INVALID),
        RvError::FunctionRejected => ("CKR_FUNCTION_REJECTED", CKR_FUNCTION_REJECTED),
        RvError::VendorDefined(v) => ("CKR_VENDOR_DEFINED", *v),
        RvError::UnknownErrorCode(v) => ("CKR_UNKNOWN", *v),
        _ => ("CKR_UNKNOWN", 0),
    };
    (name, value as u64)
}
