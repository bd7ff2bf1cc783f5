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
use super::wrap::OaepHash;

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
    /// Whether the token lists `flag` (sign, wrap, …) for it.
    pub fn has(&self, flag: &str) -> bool {
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

/// This process's probe of the token `key` names, if any.
fn cached(key: &str) -> Option<Arc<Capabilities>> {
    CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, c)| c.clone())
}

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
        let cached = cached(&key);
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
            self.kat(&super::reference::kat::RFC3394, Mechanism::AesKeyWrap)?
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
        let cached = cached(&cache_key(self)).map(|c| c.rfc5649);
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
        for v in [
            &super::reference::kat::RFC5649_20,
            &super::reference::kat::RFC5649_7,
        ] {
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
            let quirk = super::reference::rfc5649(v.kek, &padded).unwrap_or_default();
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
    fn kat(
        &self,
        v: &super::reference::kat::Vector,
        mech: Mechanism<'_>,
    ) -> Result<Probe, TokenError> {
        Ok(match self.kat_wrap(v, mech)? {
            Ok(w) if w == v.wrapped => Probe::Yes,
            Ok(_) => Probe::No("wrong answer to the known-answer test".into()),
            Err(p) => p,
        })
    }

    /// Wraps the vector's key under its KEK: the wrapped bytes, or why not.
    fn kat_wrap(
        &self,
        v: &super::reference::kat::Vector,
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
    fn kat_unwrap(
        &self,
        v: &super::reference::kat::Vector,
        mech: Mechanism<'_>,
    ) -> Result<Probe, TokenError> {
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
        let v = &super::reference::kat::RFC5649_20;
        let expected = super::reference::cbc_pad(v.kek, &super::reference::kat::CBC_IV, v.key);
        let (kek, key) = match self.kat_objects(v.kek, Some(v.key)) {
            Ok((kek, key)) => (kek, key.unwrap_or(kek)),
            Err(e) if device_failure(&e) => return Err(self.op_error(e, "a wrap probe")),
            Err(e) => return Ok(Probe::NotProbed(format!("cannot make the test keys: {e}"))),
        };
        let result = self.session.wrap_key(
            &Mechanism::AesCbcPad(super::reference::kat::CBC_IV),
            kek,
            key,
        );
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
        let Some(key) = super::reference::probe_key() else {
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
        let Some(pkcs8) = super::reference::probe_pkcs8() else {
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
            Err(super::transfer::ImportFailure::Token(e)) if device_failure(&e) => {
                Err(self.op_error(e, "an import probe"))
            }
            Err(super::transfer::ImportFailure::Token(e)) => Ok(Probe::No(short(&e))),
            Err(super::transfer::ImportFailure::Decode(e)) => Ok(Probe::NotProbed(format!(
                "the private key does not decode: {e}"
            ))),
            Err(super::transfer::ImportFailure::Key(why)) => Ok(Probe::NotProbed(why.into())),
        }
    }

    /// Wraps the probe key in software, then `C_UnwrapKey` into a session private key.
    fn probe_unwrap(&self, flavour: UnwrapFlavour) -> Result<Probe, TokenError> {
        let (Some(pkcs8), Ok(kek)) = (super::reference::probe_pkcs8(), self.random(32)) else {
            return Ok(Probe::NotProbed("no probe key or random bytes".into()));
        };
        let kek = Zeroizing::new(kek);
        let iv = super::reference::kat::CBC_IV;
        let (blob, mech) = match flavour {
            UnwrapFlavour::Rfc5649(m) => (super::reference::rfc5649(&kek, &pkcs8), m.mechanism()),
            UnwrapFlavour::CbcPad => (
                super::reference::cbc_pad(&kek, &iv, &pkcs8),
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
        CkError::Pkcs11(rv, f) => super::CallFailure::of(*f, rv).to_string(),
        other => other.to_string(),
    }
}

/// A mechanism type by number, including those cryptoki 0.12 has no constant for
/// (`CKM_AES_KEY_WRAP_KWP`, `CKM_RSA_AES_KEY_WRAP`).
pub(crate) fn mechanism_type(code: CK_MECHANISM_TYPE) -> MechanismType {
    // (Not `MechanismType::try_from`: it logs an error for every number it has no name for.)
    MechanismType::from_raw(code)
}

/// A mechanism without parameters, by number.
pub(crate) fn raw_mechanism(code: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<u8>(
        mechanism_type(code),
        None,
    ))
}
