//! What a token can do, probed — never assumed from the module's name — once per process.
//!
//! * Mechanisms and their flags come from `C_GetMechanismInfo`.
//! * The AES key-wrap flavours are tried with known-answer tests on session objects: RFC 3394's
//!   own test vector for `CKM_AES_KEY_WRAP`, RFC 5649's for `CKM_AES_KEY_WRAP_KWP` and for
//!   `CKM_AES_KEY_WRAP_PAD` (0x210A), whose meaning differs between modules (SoftHSM implements
//!   RFC 5649 there; PKCS#11 3.x defines PKCS#7 padding + RFC 3394): the answer decides, not the
//!   manufacturer string.
//! * RSA-OAEP hashes are tried on a session copy of a public key.
//! * With the user PIN (only in commands that log in anyway): unwrapping an RSA private key into
//!   the token, importing one with `C_CreateObject`, and the context-specific login.
//!
//! Every object a probe makes is a session object (`CKA_TOKEN` false) and is destroyed before
//! the probe returns; a failure of the device itself is an error, never a quiet "no".

use std::sync::{Arc, Mutex};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki_sys::CK_MECHANISM_TYPE;
use secrecy::SecretString;
use serde::Serialize;
use zeroize::Zeroizing;

use super::error::TokenError;
use super::keys::KeySpec;
use super::module::Module;
use super::session::TokenSession;
use super::template::{self, Protection, Storage, Usage};
use super::wrap::{OaepHash, ObjectRef};

/// `CKM_AES_KEY_WRAP_KWP` (RFC 5649 in PKCS#11 3.x); cryptoki 0.12 has no name for it.
pub(crate) const CKM_AES_KEY_WRAP_KWP: CK_MECHANISM_TYPE = 0x210B;
/// `CKM_AES_KEY_WRAP_PAD`: RFC 5649 on SoftHSM, PKCS#7 + RFC 3394 in PKCS#11 3.x.
pub(crate) const CKM_AES_KEY_WRAP_PAD: CK_MECHANISM_TYPE = 0x210A;

/// The mechanisms keyward looks at, by name.
const MECHANISMS: &[(&str, CK_MECHANISM_TYPE)] = &[
    ("CKM_RSA_PKCS_KEY_PAIR_GEN", 0x0000),
    ("CKM_RSA_PKCS", 0x0001),
    ("CKM_RSA_PKCS_OAEP", 0x0009),
    ("CKM_RSA_PKCS_PSS", 0x000D),
    ("CKM_SHA256_RSA_PKCS", 0x0040),
    ("CKM_EC_KEY_PAIR_GEN", 0x1040),
    ("CKM_ECDSA", 0x1041),
    ("CKM_ECDSA_SHA256", 0x1044),
    ("CKM_RSA_AES_KEY_WRAP", 0x1054),
    ("CKM_AES_KEY_GEN", 0x1080),
    ("CKM_AES_CBC_PAD", 0x1085),
    ("CKM_AES_KEY_WRAP", 0x2109),
    ("CKM_AES_KEY_WRAP_PAD", CKM_AES_KEY_WRAP_PAD),
    ("CKM_AES_KEY_WRAP_KWP", CKM_AES_KEY_WRAP_KWP),
    ("CKM_AES_KEY_WRAP_PKCS7", 0x210C),
    ("CKM_SHA256", 0x0250),
];

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "kebab-case")]
pub enum Probe {
    /// It works (it was tried).
    Yes,
    /// It does not work: why.
    No(String),
    /// Not tried: why (e.g. it needs the PIN and this command does not log in).
    NotProbed(String),
}

impl Probe {
    /// It was tried and works.
    pub fn yes(&self) -> bool {
        matches!(self, Probe::Yes)
    }

    fn text(&self) -> String {
        match self {
            Probe::Yes => "yes".into(),
            Probe::No(why) => format!("no ({why})"),
            Probe::NotProbed(why) => format!("not probed ({why})"),
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// What `CKM_AES_KEY_WRAP_PAD` (0x210A) turned out to mean on this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PadMeaning {
    /// RFC 5649 both ways: RFC 5649's test vectors wrap and unwrap to the RFC's answers.
    Rfc5649,
    /// Unwraps RFC 5649's test vectors, but wraps RFC 5649 of the key first padded with zeros
    /// to a multiple of 8 bytes (SoftHSM 2.6): unwrapping elsewhere gives the key plus zeros.
    Rfc5649ZeroPadded,
    /// It wraps, but not to RFC 5649's answer (PKCS#11 3.x: PKCS#7 padding + RFC 3394).
    NotRfc5649,
    /// The token does not offer it.
    Absent,
    /// The known-answer test could not run (see the log with `-v`).
    Unknown,
}

/// One mechanism the token offers, with its `C_GetMechanismInfo` flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MechanismCaps {
    /// `CKM_…` name.
    pub name: &'static str,
    /// Its number, hex.
    pub code: String,
    /// Smallest key size (bits or bytes, as the mechanism defines).
    pub min_key_size: u64,
    /// Largest key size.
    pub max_key_size: u64,
    /// The flags among encrypt, decrypt, sign, verify, wrap, unwrap, generate,
    /// generate-key-pair, derive.
    pub flags: Vec<&'static str>,
}

impl MechanismCaps {
    fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }
}

/// The AES key-wrap flavours, tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AesWrapCaps {
    /// `CKM_AES_KEY_WRAP` (RFC 3394), by RFC 3394's test vector.
    pub kw: Probe,
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B, RFC 5649), by RFC 5649's test vectors.
    pub kwp: Probe,
    /// What `CKM_AES_KEY_WRAP_PAD` (0x210A) means here, by RFC 5649's test vectors.
    pub pad: PadMeaning,
    /// `CKM_AES_CBC_PAD` wrapping, by a known answer.
    pub cbc_pad: Probe,
    /// `CKM_RSA_AES_KEY_WRAP` is offered for wrap and unwrap (not tried).
    pub rsa_aes_key_wrap: bool,
}

/// Which mechanism does RFC 5649 on a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rfc5649Mechanism {
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B), the standard one.
    Kwp,
    /// `CKM_AES_KEY_WRAP_PAD` (0x210A), where the known-answer test showed RFC 5649 (SoftHSM).
    Pad,
}

impl Rfc5649Mechanism {
    pub(crate) fn mechanism(self) -> Mechanism<'static> {
        match self {
            Rfc5649Mechanism::Pad => Mechanism::AesKeyWrapPad,
            Rfc5649Mechanism::Kwp => raw_mechanism(CKM_AES_KEY_WRAP_KWP),
        }
    }

    /// `CKM_…` name.
    pub fn name(self) -> &'static str {
        match self {
            Rfc5649Mechanism::Kwp => "CKM_AES_KEY_WRAP_KWP",
            Rfc5649Mechanism::Pad => "CKM_AES_KEY_WRAP_PAD (RFC 5649 by known-answer test)",
        }
    }
}

/// Key pairs the token can generate, from `C_GetMechanismInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyGenCaps {
    /// RSA modulus sizes (min, max bits), when RSA key pairs can be generated.
    pub rsa_bits: Option<(u64, u64)>,
    /// ECDSA on P-256.
    pub ec_p256: bool,
}

impl KeyGenCaps {
    /// Refuses a key type the token cannot generate, in a sentence naming what is missing.
    pub fn check(&self, spec: KeySpec) -> Result<(), String> {
        match spec {
            KeySpec::Rsa(bits) => match self.rsa_bits {
                None => {
                    Err("it cannot generate RSA key pairs (no CKM_RSA_PKCS_KEY_PAIR_GEN)".into())
                }
                Some((min, max)) if u64::from(bits) < min || (max > 0 && u64::from(bits) > max) => {
                    Err(format!(
                        "it generates RSA keys of {min}–{max} bits only, not {bits}"
                    ))
                }
                Some(_) => Ok(()),
            },
            KeySpec::EcP256 if !self.ec_p256 => Err(
                "it cannot generate EC P-256 key pairs (no CKM_EC_KEY_PAIR_GEN for 256 bits)"
                    .into(),
            ),
            KeySpec::EcP256 => Ok(()),
        }
    }
}

/// Unwrapping an RSA private key into the token, per flavour (with the PIN only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnwrapCaps {
    /// An RFC 5649 blob, with [`Capabilities::rfc5649`]'s mechanism.
    pub rfc5649: Probe,
    /// An AES-CBC blob with PKCS#7 padding (`CKM_AES_CBC_PAD`).
    pub aes_cbc_pad: Probe,
}

/// Everything keyward knows about what one token can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Shortest PIN the token accepts.
    pub pin_min: usize,
    /// Longest PIN the token accepts.
    pub pin_max: usize,
    /// `CKF_PROTECTED_AUTHENTICATION_PATH` (a PIN pad).
    pub protected_auth_path: bool,
    /// The mechanisms keyward uses that the token offers.
    pub mechanisms: Vec<MechanismCaps>,
    /// AES key wrap flavours.
    pub aes_wrap: AesWrapCaps,
    /// The mechanism this token does RFC 5649 with (KWP first, then PAD where it is RFC 5649).
    pub rfc5649: Option<Rfc5649Mechanism>,
    /// RSA-OAEP hashes that work, best first.
    pub oaep: Vec<OaepHash>,
    /// Key pairs the token generates.
    pub key_generation: KeyGenCaps,
    /// `C_UnwrapKey` of an RSA private key into the token.
    pub unwrap_private_key: UnwrapCaps,
    /// `C_CreateObject` of an RSA private key.
    pub import_private_key: Probe,
    /// `C_Login(CKU_CONTEXT_SPECIFIC)` (needed by `--security high`).
    pub context_specific_login: Probe,
}

impl Capabilities {
    /// The mechanism's entry, if the token offers it.
    pub fn mechanism(&self, name: &str) -> Option<&MechanismCaps> {
        self.mechanisms.iter().find(|m| m.name == name)
    }

    /// Refuses a key type the token cannot generate, in a sentence naming what is missing.
    pub fn check_generate(&self, spec: KeySpec) -> Result<(), String> {
        self.key_generation.check(spec)
    }

    /// Refuses `--security high` on a token without the context-specific login.
    pub fn check_context_login(&self) -> Result<(), String> {
        check_context_login(&self.context_specific_login)
    }
}

/// Refuses `--security high` when the context-specific login probe did not say yes.
pub fn check_context_login(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Yes => Ok(()),
        Probe::No(why) => Err(format!(
            "it does not support the context-specific login that --security high needs ({why})"
        )),
        Probe::NotProbed(why) => Err(format!(
            "its context-specific login (needed by --security high) could not be checked ({why})"
        )),
    }
}

/// The capabilities found so far in this process, by token.
static CACHE: Mutex<Vec<(String, Arc<Capabilities>)>> = Mutex::new(Vec::new());

fn cache_key(session: &TokenSession) -> String {
    let s = session.token.summary();
    format!("{}|{}", s.slot_id, s.uri)
}

impl TokenSession {
    /// What this token can do: probed on first use in this process, then remembered. With
    /// `pin` (the session is logged in with it), the probes that need a login run too; without,
    /// they say "not probed". Only session objects are made, and all are destroyed.
    pub fn capabilities(
        &self,
        module: &Module,
        pin: Option<&SecretString>,
    ) -> Result<Arc<Capabilities>, TokenError> {
        let key = cache_key(self);
        let cached = CACHE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| c.clone());
        let caps = match (cached, pin) {
            (Some(c), None) => return Ok(c),
            (Some(c), Some(_)) if !matches!(c.import_private_key, Probe::NotProbed(_)) => {
                return Ok(c)
            }
            (Some(c), Some(pin)) => {
                let mut c = (*c).clone();
                self.probe_with_login(&mut c, pin)?;
                c
            }
            (None, pin) => {
                let mut c = self.probe_public(module)?;
                if let Some(pin) = pin {
                    self.probe_with_login(&mut c, pin)?;
                }
                c
            }
        };
        let caps = Arc::new(caps);
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| *k != key);
        cache.push((key, caps.clone()));
        Ok(caps)
    }

    /// The probes that need no login.
    fn probe_public(&self, module: &Module) -> Result<Capabilities, TokenError> {
        let summary = self.token.summary().clone();
        let mechanisms = self.mechanism_infos(module)?;
        let offered =
            |name: &str, flag: &str| mechanisms.iter().any(|m| m.name == name && m.has(flag));
        let wraps = |name: &str| offered(name, "wrap");
        let kw = if wraps("CKM_AES_KEY_WRAP") {
            self.kat(&kat::RFC3394, Mechanism::AesKeyWrap)?
        } else {
            Probe::No("not offered".into())
        };
        let kwp = if wraps("CKM_AES_KEY_WRAP_KWP") {
            match self.kat_rfc5649(Rfc5649Mechanism::Kwp)? {
                PadMeaning::Rfc5649 => Probe::Yes,
                PadMeaning::Rfc5649ZeroPadded => {
                    Probe::No("it wraps RFC 5649 of the key padded with zeros".into())
                }
                PadMeaning::Unknown => {
                    Probe::NotProbed("the known-answer test could not run".into())
                }
                _ => Probe::No("wrong answer to RFC 5649's test vectors".into()),
            }
        } else {
            Probe::No("not offered".into())
        };
        let pad = if wraps("CKM_AES_KEY_WRAP_PAD") {
            self.kat_rfc5649(Rfc5649Mechanism::Pad)?
        } else {
            PadMeaning::Absent
        };
        let cbc_pad = if wraps("CKM_AES_CBC_PAD") {
            self.kat_cbc_pad()?
        } else {
            Probe::No("not offered".into())
        };
        let rfc5649 = if kwp.yes() {
            Some(Rfc5649Mechanism::Kwp)
        } else if matches!(pad, PadMeaning::Rfc5649 | PadMeaning::Rfc5649ZeroPadded) {
            Some(Rfc5649Mechanism::Pad)
        } else {
            None
        };
        let oaep = if offered("CKM_RSA_PKCS_OAEP", "encrypt") {
            self.probe_oaep()?
        } else {
            Vec::new()
        };
        let key_generation = key_generation_of(&mechanisms);
        let needs_pin = || Probe::NotProbed("needs the user PIN: add --login".into());
        Ok(Capabilities {
            pin_min: summary.min_pin_len,
            pin_max: summary.max_pin_len,
            protected_auth_path: summary.protected_auth_path,
            aes_wrap: AesWrapCaps {
                kw,
                kwp,
                pad,
                cbc_pad,
                rsa_aes_key_wrap: wraps("CKM_RSA_AES_KEY_WRAP")
                    && offered("CKM_RSA_AES_KEY_WRAP", "unwrap"),
            },
            rfc5649,
            oaep,
            key_generation,
            unwrap_private_key: UnwrapCaps {
                rfc5649: needs_pin(),
                aes_cbc_pad: needs_pin(),
            },
            import_private_key: needs_pin(),
            context_specific_login: needs_pin(),
            mechanisms,
        })
    }

    /// The key pairs the token generates (two `C_GetMechanismInfo` calls).
    pub fn key_generation(&self, module: &Module) -> Result<KeyGenCaps, TokenError> {
        let m = self.mechanism_infos_of(
            module,
            &["CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_EC_KEY_PAIR_GEN"],
        )?;
        Ok(key_generation_of(&m))
    }

    /// The mechanism this token does RFC 5649 with — KWP when RFC 5649's test vectors pass with
    /// it, else PAD when they do (as on SoftHSM) — probed without the rest of
    /// [`TokenSession::capabilities`] (for the authority's token).
    pub fn rfc5649_mechanism(
        &self,
        module: &Module,
    ) -> Result<Option<Rfc5649Mechanism>, TokenError> {
        let key = cache_key(self);
        let cached = CACHE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| c.rfc5649);
        if let Some(m) = cached {
            return Ok(m);
        }
        let m =
            self.mechanism_infos_of(module, &["CKM_AES_KEY_WRAP_KWP", "CKM_AES_KEY_WRAP_PAD"])?;
        let wraps = |name: &str| {
            m.iter()
                .any(|x| x.name == name && x.has("wrap") && x.has("unwrap"))
        };
        if wraps("CKM_AES_KEY_WRAP_KWP")
            && self.kat_rfc5649(Rfc5649Mechanism::Kwp)? == PadMeaning::Rfc5649
        {
            return Ok(Some(Rfc5649Mechanism::Kwp));
        }
        if wraps("CKM_AES_KEY_WRAP_PAD")
            && matches!(
                self.kat_rfc5649(Rfc5649Mechanism::Pad)?,
                PadMeaning::Rfc5649 | PadMeaning::Rfc5649ZeroPadded
            )
        {
            return Ok(Some(Rfc5649Mechanism::Pad));
        }
        Ok(None)
    }

    /// Whether `CKM_AES_CBC_PAD` wraps here, by its known answer (for the authority's token).
    pub fn cbc_pad_wraps(&self, module: &Module) -> Result<bool, TokenError> {
        let m = self.mechanism_infos_of(module, &["CKM_AES_CBC_PAD"])?;
        if !m.iter().any(|x| x.has("wrap")) {
            return Ok(false);
        }
        Ok(self.kat_cbc_pad()?.yes())
    }

    /// Wraps `key` under an AES key with `CKM_AES_CBC_PAD` and a fresh random IV: the IV
    /// (16 bytes) followed by the wrapped key.
    pub fn wrap_cbc_pad(&self, wrapping: ObjectRef, key: ObjectRef) -> Result<Vec<u8>, TokenError> {
        let iv: [u8; 16] = self
            .random(16)?
            .try_into()
            .map_err(|_| TokenError::Wrapper {
                what: "making an IV".into(),
                reason: "the token returned another number of random bytes".into(),
            })?;
        let wrapped = self
            .session
            .wrap_key(&Mechanism::AesCbcPad(iv), wrapping.0, key.0)
            .map_err(|e| self.op_error(e, "wrapping a key (CKM_AES_CBC_PAD)"))?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// Unwraps an RSA private key made by [`TokenSession::wrap_cbc_pad`] (IV, then the wrapped
    /// key) into this token: decrypt and unwrap only, always sensitive.
    pub fn unwrap_private_cbc_pad(
        &self,
        unwrapping: ObjectRef,
        blob: &[u8],
        t: &super::wrap::UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, TokenError> {
        let (Some(iv), Some(wrapped)) = (blob.get(..16), blob.get(16..)) else {
            return Err(TokenError::Wrapper {
                what: "unwrapping a private key (CKM_AES_CBC_PAD)".into(),
                reason: "the wrapped key is shorter than its IV".into(),
            });
        };
        let mut iv16 = [0u8; 16];
        iv16.copy_from_slice(iv);
        let template = template::private_key(
            KeyType::RSA,
            Storage {
                persistent: t.persistent,
                id: Some(t.id),
                label: Some(t.label),
            },
            Usage::DECRYPT_UNWRAP,
            Protection {
                extractable: t.extractable,
                always_authenticate: t.always_authenticate,
            },
        );
        self.session
            .unwrap_key(
                &Mechanism::AesCbcPad(iv16),
                unwrapping.0,
                wrapped,
                &template,
            )
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, "unwrapping a private key (CKM_AES_CBC_PAD)"))
    }

    /// Whether the context-specific login works (one `C_Login`, with the PIN this session
    /// logged in with).
    pub fn context_login(&self, pin: &SecretString) -> Result<Probe, TokenError> {
        self.probe_context_login(pin)
    }

    fn mechanism_infos(&self, module: &Module) -> Result<Vec<MechanismCaps>, TokenError> {
        let all: Vec<&str> = MECHANISMS.iter().map(|(n, _)| *n).collect();
        self.mechanism_infos_of(module, &all)
    }

    fn mechanism_infos_of(
        &self,
        module: &Module,
        names: &[&str],
    ) -> Result<Vec<MechanismCaps>, TokenError> {
        let mut out = Vec::new();
        for (name, code) in MECHANISMS.iter().filter(|(n, _)| names.contains(n)) {
            match module
                .ctx()
                .get_mechanism_info(self.token.slot, mechanism_type(*code))
            {
                Ok(info) => {
                    let flags = [
                        (info.encrypt(), "encrypt"),
                        (info.decrypt(), "decrypt"),
                        (info.sign(), "sign"),
                        (info.verify(), "verify"),
                        (info.wrap(), "wrap"),
                        (info.unwrap(), "unwrap"),
                        (info.generate(), "generate"),
                        (info.generate_key_pair(), "generate-key-pair"),
                        (info.derive(), "derive"),
                    ]
                    .into_iter()
                    .filter_map(|(on, n)| on.then_some(n))
                    .collect();
                    out.push(MechanismCaps {
                        name,
                        code: format!("{code:#06x}"),
                        min_key_size: info.min_key_size() as u64,
                        max_key_size: info.max_key_size() as u64,
                        flags,
                    });
                }
                Err(e) if device_failure(&e) => {
                    return Err(self.op_error(e, "reading the token's mechanisms"))
                }
                Err(e) => log::debug!("{name}: {e}"),
            }
        }
        Ok(out)
    }

    /// RFC 5649's two test vectors (a 20-byte and a 7-byte key) with `mech`, both ways:
    /// unwrapping the RFC's answers must give the RFC's keys back, and wrapping the keys must
    /// give the RFC's answers — or, as SoftHSM 2.6 does, RFC 5649 of the key first padded with
    /// zeros to a multiple of 8 bytes (its unwrap is RFC 5649 all the same).
    fn kat_rfc5649(&self, mech: Rfc5649Mechanism) -> Result<PadMeaning, TokenError> {
        let mut zero_padded = false;
        for v in [&kat::RFC5649_20, &kat::RFC5649_7] {
            match self.kat_unwrap(v, mech.mechanism())? {
                Probe::Yes => {}
                Probe::No(why) => {
                    log::debug!("{}: RFC 5649 unwrap test: {why}", mech.name());
                    return Ok(PadMeaning::NotRfc5649);
                }
                Probe::NotProbed(why) => {
                    log::debug!("{}: RFC 5649 unwrap test not run: {why}", mech.name());
                    return Ok(PadMeaning::Unknown);
                }
            }
            let mut padded = v.key.to_vec();
            padded.resize(v.key.len().div_ceil(8) * 8, 0);
            let quirk = reference::rfc5649(v.kek, &padded).unwrap_or_default();
            match self.kat_wrap(v, mech.mechanism())? {
                Ok(w) if w == v.wrapped => {}
                Ok(w) if w == quirk => zero_padded = true,
                Ok(w) => {
                    log::debug!(
                        "{}: wrapped to {}, not RFC 5649",
                        mech.name(),
                        super::keys::hex(&w)
                    );
                    return Ok(PadMeaning::NotRfc5649);
                }
                Err(p) => {
                    log::debug!("{}: RFC 5649 wrap test: {p}", mech.name());
                    return Ok(PadMeaning::NotRfc5649);
                }
            }
        }
        Ok(if zero_padded {
            PadMeaning::Rfc5649ZeroPadded
        } else {
            PadMeaning::Rfc5649
        })
    }

    /// Wraps the vector's key under its KEK (both session objects) and compares the answer.
    fn kat(&self, v: &kat::Vector, mech: Mechanism<'_>) -> Result<Probe, TokenError> {
        Ok(match self.kat_wrap(v, mech)? {
            Ok(w) if w == v.wrapped => Probe::Yes,
            Ok(_) => Probe::No("wrong answer to the known-answer test".into()),
            Err(p) => p,
        })
    }

    /// Wraps the vector's key under its KEK: the wrapped bytes, or why not.
    fn kat_wrap(
        &self,
        v: &kat::Vector,
        mech: Mechanism<'_>,
    ) -> Result<Result<Vec<u8>, Probe>, TokenError> {
        let (kek, key) = match self.kat_objects(v.kek, Some(v.key)) {
            Ok((kek, key)) => (kek, key.unwrap_or(kek)),
            Err(e) if device_failure(&e) => return Err(self.op_error(e, "a wrap probe")),
            Err(e) => {
                return Ok(Err(Probe::NotProbed(format!(
                    "cannot make the test keys: {e}"
                ))))
            }
        };
        let result = self.session.wrap_key(&mech, kek, key);
        self.destroy_quietly(&[kek, key]);
        match result {
            Ok(w) => Ok(Ok(w)),
            Err(e) if device_failure(&e) => Err(self.op_error(e, "a wrap probe")),
            Err(e) => Ok(Err(Probe::No(short(&e)))),
        }
    }

    /// Unwraps the vector's answer under its KEK into a readable session secret and compares
    /// its value with the vector's key.
    fn kat_unwrap(&self, v: &kat::Vector, mech: Mechanism<'_>) -> Result<Probe, TokenError> {
        let kek = match self.kat_objects(v.kek, None) {
            Ok((kek, _)) => kek,
            Err(e) if device_failure(&e) => return Err(self.op_error(e, "an unwrap probe")),
            Err(e) => return Ok(Probe::NotProbed(format!("cannot make the test key: {e}"))),
        };
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let result = self
            .session
            .unwrap_key(&mech, kek, v.wrapped, &template)
            .and_then(|key| {
                let value = self
                    .session
                    .get_attributes(key, &[cryptoki::object::AttributeType::Value]);
                self.destroy_quietly(&[key]);
                value
            });
        self.destroy_quietly(&[kek]);
        match result {
            Ok(attrs) => Ok(
                if attrs
                    .iter()
                    .any(|a| matches!(a, Attribute::Value(x) if x == v.key))
                {
                    Probe::Yes
                } else {
                    Probe::No("unwrapped to another value than the vector's key".into())
                },
            ),
            Err(e) if device_failure(&e) => Err(self.op_error(e, "an unwrap probe")),
            Err(e) => Ok(Probe::No(short(&e))),
        }
    }

    /// `CKM_AES_CBC_PAD` against the same cipher in software.
    fn kat_cbc_pad(&self) -> Result<Probe, TokenError> {
        let v = &kat::RFC5649_20;
        let expected = reference::cbc_pad(v.kek, &kat::CBC_IV, v.key);
        let (kek, key) = match self.kat_objects(v.kek, Some(v.key)) {
            Ok((kek, key)) => (kek, key.unwrap_or(kek)),
            Err(e) if device_failure(&e) => return Err(self.op_error(e, "a wrap probe")),
            Err(e) => return Ok(Probe::NotProbed(format!("cannot make the test keys: {e}"))),
        };
        let result = self
            .session
            .wrap_key(&Mechanism::AesCbcPad(kat::CBC_IV), kek, key);
        self.destroy_quietly(&[kek, key]);
        match (result, expected) {
            (Ok(w), Some(exp)) if w == exp => Ok(Probe::Yes),
            (Ok(_), _) => Ok(Probe::No("wrong answer to the known-answer test".into())),
            (Err(e), _) if device_failure(&e) => Err(self.op_error(e, "a wrap probe")),
            (Err(e), _) => Ok(Probe::No(short(&e))),
        }
    }

    /// A public session AES key (the KEK) and a public, extractable generic secret (the key).
    fn kat_objects(
        &self,
        kek: &[u8],
        key: Option<&[u8]>,
    ) -> Result<(ObjectHandle, Option<ObjectHandle>), CkError> {
        let kek = self.session.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Sensitive(false),
            Attribute::Value(kek.to_vec()),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ])?;
        let Some(key) = key else {
            return Ok((kek, None));
        };
        let key = self.session.create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Value(key.to_vec()),
        ]);
        match key {
            Ok(key) => Ok((kek, Some(key))),
            Err(e) => {
                self.destroy_quietly(&[kek]);
                Err(e)
            }
        }
    }

    /// The RSA-OAEP hashes that encrypt to a session copy of the probe key's public half.
    fn probe_oaep(&self) -> Result<Vec<OaepHash>, TokenError> {
        let Some(key) = probe_key() else {
            return Ok(Vec::new());
        };
        let (n, e) = (key.n.to_vec(), key.e.to_vec());
        let public = match self.import_rsa_public(&n, &e) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("OAEP probe: no session public key: {e}");
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        let mut failure = None;
        for h in [OaepHash::Sha256, OaepHash::Sha1] {
            match self.supports_oaep(public, h) {
                Ok(true) => out.push(h),
                Ok(false) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let _ = self.destroy(public);
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The probes that need the session logged in with `pin`.
    fn probe_with_login(&self, c: &mut Capabilities, pin: &SecretString) -> Result<(), TokenError> {
        c.import_private_key = self.probe_import()?;
        c.unwrap_private_key.rfc5649 = match c.rfc5649 {
            Some(m) => self.probe_unwrap(UnwrapFlavour::Rfc5649(m))?,
            None => Probe::No("no RFC 5649 mechanism (KWP, or PAD that is RFC 5649)".into()),
        };
        c.unwrap_private_key.aes_cbc_pad = if c.aes_wrap.cbc_pad.yes()
            || c.mechanism("CKM_AES_CBC_PAD")
                .is_some_and(|m| m.has("unwrap"))
        {
            self.probe_unwrap(UnwrapFlavour::CbcPad)?
        } else {
            Probe::No("CKM_AES_CBC_PAD does not unwrap here".into())
        };
        c.context_specific_login = self.probe_context_login(pin)?;
        Ok(())
    }

    /// `C_CreateObject` of the probe key as a sensitive session private key.
    fn probe_import(&self) -> Result<Probe, TokenError> {
        let Some(pkcs8) = probe_pkcs8() else {
            return Ok(Probe::NotProbed("the probe key does not decode".into()));
        };
        let t = super::wrap::UnwrapTemplate {
            persistent: false,
            id: b"keyward-probe",
            label: "keyward capability probe",
            extractable: false,
            always_authenticate: false,
        };
        match self.create_rsa_private(&pkcs8, &t) {
            Ok(obj) => {
                let _ = self.destroy(obj);
                Ok(Probe::Yes)
            }
            Err(ImportFailure::Token(e)) if device_failure(&e) => {
                Err(self.op_error(e, "an import probe"))
            }
            Err(ImportFailure::Token(e)) => Ok(Probe::No(short(&e))),
            Err(ImportFailure::Key(why)) => Ok(Probe::NotProbed(why)),
        }
    }

    /// Wraps the probe key in software, then `C_UnwrapKey` into a session private key.
    fn probe_unwrap(&self, flavour: UnwrapFlavour) -> Result<Probe, TokenError> {
        let (Some(pkcs8), Ok(kek)) = (probe_pkcs8(), self.random(32)) else {
            return Ok(Probe::NotProbed("no probe key or random bytes".into()));
        };
        let kek = Zeroizing::new(kek);
        let iv = kat::CBC_IV;
        let (blob, mech) = match flavour {
            UnwrapFlavour::Rfc5649(m) => (reference::rfc5649(&kek, &pkcs8), m.mechanism()),
            UnwrapFlavour::CbcPad => (
                reference::cbc_pad(&kek, &iv, &pkcs8),
                Mechanism::AesCbcPad(iv),
            ),
        };
        let Some(blob) = blob else {
            return Ok(Probe::NotProbed(
                "cannot wrap the probe key in software".into(),
            ));
        };
        let kek_obj = match self.session.create_object(&template_kek(&kek)) {
            Ok(o) => o,
            Err(e) if device_failure(&e) => return Err(self.op_error(e, "an unwrap probe")),
            Err(e) => {
                return Ok(Probe::NotProbed(format!(
                    "cannot create a session AES key: {}",
                    short(&e)
                )))
            }
        };
        let private = template::private_key(
            KeyType::RSA,
            Storage::session_only(),
            Usage::DECRYPT_UNWRAP,
            Protection::default(),
        );
        let result = self.session.unwrap_key(&mech, kek_obj, &blob, &private);
        match result {
            Ok(key) => {
                self.destroy_quietly(&[kek_obj, key]);
                Ok(Probe::Yes)
            }
            Err(e) => {
                self.destroy_quietly(&[kek_obj]);
                if device_failure(&e) {
                    Err(self.op_error(e, "an unwrap probe"))
                } else {
                    Ok(Probe::No(short(&e)))
                }
            }
        }
    }

    /// `C_Login(CKU_CONTEXT_SPECIFIC)` with no operation active: a token that knows the user
    /// type answers `CKR_OPERATION_NOT_INITIALIZED`; one that does not, `CKR_USER_TYPE_INVALID`.
    /// The PIN is the one the session logged in with, so no try is ever spent.
    fn probe_context_login(&self, pin: &SecretString) -> Result<Probe, TokenError> {
        match self.session.login(UserType::ContextSpecific, Some(pin)) {
            Ok(()) => Ok(Probe::Yes),
            Err(CkError::Pkcs11(RvError::OperationNotInitialized, _)) => Ok(Probe::Yes),
            Err(CkError::Pkcs11(RvError::UserTypeInvalid, _)) => Ok(Probe::No(
                "C_Login(CKU_CONTEXT_SPECIFIC) returned CKR_USER_TYPE_INVALID".into(),
            )),
            Err(e) if device_failure(&e) => {
                Err(self.op_error(e, "the context-specific login probe"))
            }
            Err(e) => Ok(Probe::No(short(&e))),
        }
    }

    fn destroy_quietly(&self, objects: &[ObjectHandle]) {
        for o in objects {
            if let Err(e) = self.session.destroy_object(*o) {
                log::debug!("could not destroy a probe's session object: {e}");
            }
        }
    }
}

fn key_generation_of(mechanisms: &[MechanismCaps]) -> KeyGenCaps {
    let rsa_bits = mechanisms
        .iter()
        .find(|m| m.name == "CKM_RSA_PKCS_KEY_PAIR_GEN" && m.has("generate-key-pair"))
        .map(|m| (m.min_key_size, m.max_key_size));
    let ec_p256 = mechanisms.iter().any(|m| {
        m.name == "CKM_EC_KEY_PAIR_GEN"
            && m.has("generate-key-pair")
            && (m.max_key_size == 0 || (m.min_key_size <= 256 && m.max_key_size >= 256))
    });
    KeyGenCaps { rsa_bits, ec_p256 }
}

#[derive(Clone, Copy)]
enum UnwrapFlavour {
    Rfc5649(Rfc5649Mechanism),
    CbcPad,
}

fn template_kek(kek: &[u8]) -> Vec<Attribute> {
    let mut t = template::secret_key(
        KeyType::AES,
        Storage::session_only(),
        Usage::WRAP_UNWRAP,
        Protection::default(),
    );
    t.push(Attribute::Value(kek.to_vec()));
    t
}

/// Why importing a private key failed.
pub(crate) enum ImportFailure {
    /// The token refused.
    Token(CkError),
    /// The key itself does not decode.
    Key(String),
}

impl TokenSession {
    /// `C_CreateObject` of an RSA private key given as PKCS#8 DER: sensitive, decrypt/unwrap
    /// only. The key's parts exist in this process only for the call and are zeroized after.
    pub(crate) fn create_rsa_private(
        &self,
        pkcs8: &[u8],
        t: &super::wrap::UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, ImportFailure> {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        use zeroize::Zeroize;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
            .map_err(|e| ImportFailure::Key(format!("the private key does not decode: {e}")))?;
        let primes = key.primes();
        let (Some(p), Some(q), Some(dp), Some(dq), Some(qinv)) = (
            primes.first(),
            primes.get(1),
            key.dp(),
            key.dq(),
            key.crt_coefficient(),
        ) else {
            return Err(ImportFailure::Key(
                "the private key lacks its CRT parts".into(),
            ));
        };
        let mut template = template::private_key(
            KeyType::RSA,
            Storage {
                persistent: t.persistent,
                id: Some(t.id),
                label: Some(t.label),
            },
            Usage::DECRYPT_UNWRAP,
            Protection {
                extractable: t.extractable,
                always_authenticate: t.always_authenticate,
            },
        );
        template.extend([
            Attribute::Modulus(key.n().to_bytes_be()),
            Attribute::PublicExponent(key.e().to_bytes_be()),
            Attribute::PrivateExponent(key.d().to_bytes_be()),
            Attribute::Prime1(p.to_bytes_be()),
            Attribute::Prime2(q.to_bytes_be()),
            Attribute::Exponent1(dp.to_bytes_be()),
            Attribute::Exponent2(dq.to_bytes_be()),
            Attribute::Coefficient(qinv.to_bytes_be()),
        ]);
        drop(key);
        let result = self.session.create_object(&template);
        for a in &mut template {
            match a {
                Attribute::PrivateExponent(v)
                | Attribute::Prime1(v)
                | Attribute::Prime2(v)
                | Attribute::Exponent1(v)
                | Attribute::Exponent2(v)
                | Attribute::Coefficient(v) => v.zeroize(),
                _ => {}
            }
        }
        result.map(ObjectRef).map_err(ImportFailure::Token)
    }
}

impl TokenSession {
    /// Wraps `key` under an AES key with RFC 5649, by this token's mechanism for it.
    pub fn wrap_rfc5649(
        &self,
        mech: Rfc5649Mechanism,
        wrapping: ObjectRef,
        key: ObjectRef,
    ) -> Result<Vec<u8>, TokenError> {
        self.session
            .wrap_key(&mech.mechanism(), wrapping.0, key.0)
            .map_err(|e| self.op_error(e, &format!("wrapping a key ({})", mech.name())))
    }

    /// Unwraps an RFC 5649-wrapped RSA private key into this token (decrypt and unwrap only,
    /// always sensitive), by this token's mechanism for RFC 5649.
    pub fn unwrap_private_rfc5649(
        &self,
        mech: Rfc5649Mechanism,
        unwrapping: ObjectRef,
        wrapped: &[u8],
        t: &super::wrap::UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, TokenError> {
        let template = template::private_key(
            KeyType::RSA,
            Storage {
                persistent: t.persistent,
                id: Some(t.id),
                label: Some(t.label),
            },
            Usage::DECRYPT_UNWRAP,
            Protection {
                extractable: t.extractable,
                always_authenticate: t.always_authenticate,
            },
        );
        self.session
            .unwrap_key(&mech.mechanism(), unwrapping.0, wrapped, &template)
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, &format!("unwrapping a private key ({})", mech.name())))
    }

    /// Creates an RSA private key (PKCS#8 DER) on the token with `C_CreateObject`: decrypt
    /// and unwrap only, sensitive. Its parts are zeroized after the call.
    pub fn import_private_key(
        &self,
        pkcs8: &[u8],
        t: &super::wrap::UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, TokenError> {
        self.create_rsa_private(pkcs8, t).map_err(|f| match f {
            ImportFailure::Token(e) => self.op_error(e, "importing a private key (C_CreateObject)"),
            ImportFailure::Key(reason) => TokenError::Wrapper {
                what: "importing a private key".into(),
                reason,
            },
        })
    }
}

/// Unwraps an RFC 5649 blob with a 256-bit AES key in this process's memory, for an import:
/// the PKCS#8 key, cut to its DER length (SoftHSM 2.6 pads with zeros before wrapping), in
/// memory that is zeroized when dropped.
pub fn unwrap_rfc5649_in_memory(kek: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut plain = reference::rfc5649_unwrap(kek, blob)?;
    let len = der_length(&plain)?;
    if len > plain.len() || plain[len..].iter().any(|b| *b != 0) {
        return None;
    }
    zeroize::Zeroize::zeroize(&mut plain[len..]);
    plain.truncate(len);
    Some(plain)
}

/// The length of the DER element at the start of `b` (tag, length and contents).
fn der_length(b: &[u8]) -> Option<usize> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*b.get(2 + i)?);
    }
    Some(2 + n + len)
}

/// A failure of the device or session, not a "this token cannot": never read as a "no".
pub(crate) fn device_failure(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::HostMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::OperationActive
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

fn short(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("C_{f:?} returned CKR {rv:?}"),
        other => other.to_string(),
    }
}

/// A mechanism type by number, including those cryptoki 0.12 has no constant for
/// (`CKM_AES_KEY_WRAP_KWP`, `CKM_RSA_AES_KEY_WRAP`).
#[allow(unsafe_code)]
pub(crate) fn mechanism_type(code: CK_MECHANISM_TYPE) -> MechanismType {
    // (Not `MechanismType::try_from`: it logs an error for every number it has no name for.)
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over `CK_MECHANISM_TYPE` (cryptoki
    // 0.12, src/mechanism/mod.rs), and any number is a mechanism type to pass on to the module.
    unsafe { std::mem::transmute::<CK_MECHANISM_TYPE, MechanismType>(code) }
}

/// A mechanism without parameters, by number.
pub(crate) fn raw_mechanism(code: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<u8>(
        mechanism_type(code),
        None,
    ))
}

fn probe_pkcs8() -> Option<Zeroizing<Vec<u8>>> {
    use base64ct::{Base64, Encoding};
    Base64::decode_vec(PROBE_KEY_PKCS8).ok().map(Zeroizing::new)
}

struct ProbePublic {
    n: Vec<u8>,
    e: Vec<u8>,
}

fn probe_key() -> Option<ProbePublic> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&probe_pkcs8()?).ok()?;
    Some(ProbePublic {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    })
}

/// The same wrappings in software, to check a token's answers and make blobs for it.
pub(crate) mod reference {
    use aes::cipher::{BlockEncryptMut, KeyIvInit};

    /// RFC 5649 (AES key wrap with padding), for a 128-, 192- or 256-bit KEK.
    pub fn rfc5649(kek: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        match kek.len() {
            16 => aes_kw::KekAes128::try_from(kek)
                .ok()?
                .wrap_with_padding_vec(data)
                .ok(),
            24 => aes_kw::KekAes192::try_from(kek)
                .ok()?
                .wrap_with_padding_vec(data)
                .ok(),
            32 => aes_kw::KekAes256::try_from(kek)
                .ok()?
                .wrap_with_padding_vec(data)
                .ok(),
            _ => None,
        }
    }

    /// RFC 5649 unwrapping with a 256-bit KEK.
    pub fn rfc5649_unwrap(kek: &[u8], blob: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        aes_kw::KekAes256::try_from(kek)
            .ok()?
            .unwrap_with_padding_vec(blob)
            .ok()
            .map(zeroize::Zeroizing::new)
    }

    /// AES-CBC with PKCS#7 padding (`CKM_AES_CBC_PAD`).
    pub fn cbc_pad(kek: &[u8], iv: &[u8; 16], data: &[u8]) -> Option<Vec<u8>> {
        use aes::cipher::block_padding::Pkcs7;
        match kek.len() {
            16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(kek, iv)
                .ok()
                .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(data)),
            24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(kek, iv)
                .ok()
                .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(data)),
            32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(kek, iv)
                .ok()
                .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(data)),
            _ => None,
        }
    }
}

/// Known-answer vectors.
mod kat {
    /// A KEK, a key, and the key wrapped under the KEK.
    pub struct Vector {
        pub kek: &'static [u8],
        pub key: &'static [u8],
        pub wrapped: &'static [u8],
    }

    /// RFC 3394 section 4.6: 256 bits of key data with a 256-bit KEK.
    pub const RFC3394: Vector = Vector {
        kek: &[
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
            0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
            0x1c, 0x1d, 0x1e, 0x1f,
        ],
        key: &[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
            0x0c, 0x0d, 0x0e, 0x0f,
        ],
        wrapped: &[
            0x28, 0xc9, 0xf4, 0x04, 0xc4, 0xb8, 0x10, 0xf4, 0xcb, 0xcc, 0xb3, 0x5c, 0xfb, 0x87,
            0xf8, 0x26, 0x3f, 0x57, 0x86, 0xe2, 0xd8, 0x0e, 0xd3, 0x26, 0xcb, 0xc7, 0xf0, 0xe7,
            0x1a, 0x99, 0xf4, 0x3b, 0xfb, 0x98, 0x8b, 0x9b, 0x7a, 0x02, 0xdd, 0x21,
        ],
    };

    /// RFC 5649 section 6, first vector: a 20-byte key under a 192-bit KEK.
    pub const RFC5649_20: Vector = Vector {
        kek: &[
            0x58, 0x40, 0xdf, 0x6e, 0x29, 0xb0, 0x2a, 0xf1, 0xab, 0x49, 0x3b, 0x70, 0x5b, 0xf1,
            0x6e, 0xa1, 0xae, 0x83, 0x38, 0xf4, 0xdc, 0xc1, 0x76, 0xa8,
        ],
        key: &[
            0xc3, 0x7b, 0x7e, 0x64, 0x92, 0x58, 0x43, 0x40, 0xbe, 0xd1, 0x22, 0x07, 0x80, 0x89,
            0x41, 0x15, 0x50, 0x68, 0xf7, 0x38,
        ],
        wrapped: &[
            0x13, 0x8b, 0xde, 0xaa, 0x9b, 0x8f, 0xa7, 0xfc, 0x61, 0xf9, 0x77, 0x42, 0xe7, 0x22,
            0x48, 0xee, 0x5a, 0xe6, 0xae, 0x53, 0x60, 0xd1, 0xae, 0x6a, 0x5f, 0x54, 0xf3, 0x73,
            0xfa, 0x54, 0x3b, 0x6a,
        ],
    };

    /// RFC 5649 section 6, second vector: a 7-byte key under the same KEK.
    pub const RFC5649_7: Vector = Vector {
        kek: &[
            0x58, 0x40, 0xdf, 0x6e, 0x29, 0xb0, 0x2a, 0xf1, 0xab, 0x49, 0x3b, 0x70, 0x5b, 0xf1,
            0x6e, 0xa1, 0xae, 0x83, 0x38, 0xf4, 0xdc, 0xc1, 0x76, 0xa8,
        ],
        key: &[0x46, 0x6f, 0x72, 0x50, 0x61, 0x73, 0x69],
        wrapped: &[
            0xaf, 0xbe, 0xb0, 0xf0, 0x7d, 0xfb, 0xf5, 0x41, 0x92, 0x00, 0xf2, 0xcc, 0xb5, 0x0b,
            0xb2, 0x4f,
        ],
    };

    /// The IV of the CBC-PAD known-answer test.
    pub const CBC_IV: [u8; 16] = *b"keyward-cbc-iv-1";
}

/// A throw-away RSA-2048 key (PKCS#8, base64) used only by the probes: imported or unwrapped as
/// a session object and destroyed at once. It protects nothing; it is public on purpose.
const PROBE_KEY_PKCS8: &str = concat!(
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCeDx3aO3+Aw1gu/i0S5NtYIz3gbDC8ISx/v67JYX",
    "hf/sP8zXAuNo1TV8jOa5QGpVfciNyRnNohuNRgGlZMJw7K8kqq3wYlKMv1N2i7PvGAr35P7wofiO9d7sqMhm/5X9rQ",
    "vTSITzOFoqxeWhTFr2x0LnmbCVHDo6R32B32Ds4wwqC0YmWXIKizxme2osjZYb4lkWrLsRBQIhAez1wtI0aIYlWCIp",
    "+glYgX2rjaDzRtmKIGk8j+eLjanyRPPZJn3lCEsGPFbch6LY9B8Nl2pKfyHwJwY0R+OLqiB6K3fX1OVM5Nm+d6Yfo/",
    "pMtQrsXYzN49JRIAed+GIr1f6zWPho4nAgMBAAECggEAEUc4GAlQBLHrW7u9Dqcw6Sofvf7ltvMYwQr3CZxGQ0F/iD",
    "em+eOhwF4aHU06Rx21BJkmJM7U3kHXtCe846Hou+Zk+Nfc0pwVQQRNG8b43HySs3Hp6ozsFG8hpN9KB084sCqMFGiK",
    "tSLqx9JTb1F1asqX0DW3wp9gFRptcAlUoJTCEMxrIi8XPHOgNE12ifGrtH7lh4qX10zlRyMtb/LnRbQ7So2qH31tAB",
    "a7y5TwWao/GJBbqY34+4lb4TZ27if7vXgMVuOaZWNp5ALXxRN6urIaK6nyTQv2Tic+IeSqMN51S3mjMm+m50/FWXOR",
    "fd5pbBgi2rVDj1gsWckMqXC/wQKBgQDRk+pL5Wjg36LoeevnMPtIY0AjCUUcKdKzXSm/+hsBjA3fM5Hi5wrbu9hBb0",
    "QGq4b3hBN+D000qHZuJZpI5V6IdcQFP2gudaRuNPHpXna9PVy2eo1tAmAwABPuNk6QcPwA2HoQ5p8S5q9A/PEu1s6O",
    "JBKqP2HPLqegex0Qyd615wKBgQDBEdY+D6o18Ior3iVbYAJAlPHCEjXBnVFNEXudYs031Pm0l4jYggcy1GGRsBQMKj",
    "v+rjwIqfGRQZPkE9cPSi+38z/ZazrXFJe77Y3U5fWGSftQat6y7DxhReaqAxNS+8fL6t095c3+JAggu6HmBcRIikRq",
    "f9i3gS9zzIKWVtHdwQKBgDNr54DXuPPz6zS/NXJ0QjNwprvx+lL+sAPyR9wisZ2fj4fET3cs2S0w2c60TiyUyXjRnz",
    "a+6mKRMv2znDdmj9tLidz/wcAkfUPNGc34r4mfFLBxQWINwywD2OAJ0xz9m9dZRhn/e+hXUYjQhxzG98dIcovzITyE",
    "ZfyqOGd2IH7hAoGAH5YteOXTMRPzZw3nCrYAaFR14Qxdoxl7zaIImU0qyfGcEMGh79oGF3jLpawq+3qFajtTMw+qp9",
    "sUuQHN84Btoii3z3hNnhaOZH6O77/XlWrRJOz3Fkqz7i4jeLkcFj1/CIuaOqA4PVXjxocsC5fx7vRAETRtXkhSXR2e",
    "V75Ig4ECgYEAqUHjeFVOMVscGvce1I3ZQfkw5Xd4BmKNwMyQ21klF8tQP6P3Me6o3NLENXugcrplIKT6TwF/ToSrxK",
    "IElJA+HdiZazsCYuWScbP4OqBE0/GICQShCzx4v1j5Ha31H5KBptJPXawzDwkKsLFfX6CHnm1r582cKBlnv5qmAdR3",
    "iz8=",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_wrap_gives_rfc5649s_own_answers() {
        for v in [&kat::RFC5649_20, &kat::RFC5649_7] {
            assert_eq!(reference::rfc5649(v.kek, v.key).unwrap(), v.wrapped);
        }
    }

    #[test]
    fn the_probe_key_decodes() {
        assert_eq!(probe_key().unwrap().n.len(), 256);
    }
}
