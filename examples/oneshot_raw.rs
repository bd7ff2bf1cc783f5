//! The floor for `benches/oneshot.sh`: a one-shot signature with `cryptoki` alone and nothing
//! else — no argument parser, no registry, no checks. Exactly the PKCS#11 calls
//! `keyward keyset sign` makes for a standard-security RSA keyset: load and `C_Initialize`,
//! find the token by label, open a session, `C_Login`, find the private key by `CKA_ID`,
//! one `C_Sign` (`CKM_RSA_PKCS` over the SHA-256 DigestInfo), `C_Finalize`.
//!
//!   oneshot_raw MODULE TOKEN-LABEL KEY-ID-HEX FILE OUT      (PIN from KEYWARD_PIN)
//!
//! Not part of keyward; only the benchmark runs it.

use std::error::Error;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};

const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [module, label, id, file, out] = args.as_slice() else {
        return Err("usage: oneshot_raw MODULE TOKEN-LABEL KEY-ID-HEX FILE OUT".into());
    };
    let id = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    let pin = AuthPin::from(std::env::var("KEYWARD_PIN")?);
    let mut info = SHA256_DIGEST_INFO_PREFIX.to_vec();
    info.extend_from_slice(&Sha256::digest(std::fs::read(file)?));

    let p11 = Pkcs11::new(module)?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = p11
        .get_slots_with_token()?
        .into_iter()
        .find(|s| {
            p11.get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == label)
        })
        .ok_or("no such token")?;
    let session = p11.open_ro_session(slot)?;
    session.login(UserType::User, Some(&pin))?;
    let key = *session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(id),
        ])?
        .first()
        .ok_or("no such key")?;
    let signature = session.sign(&Mechanism::RsaPkcs, key, &info)?;
    std::fs::write(out, signature)?;
    drop(session);
    p11.finalize()?;
    Ok(())
}
