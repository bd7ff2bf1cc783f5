//! How an encryption key reaches the user's token, chosen from what both tokens can do.
//!
//! The user's keyward puts in its request what its token can receive ([`receivable`]); the
//! authority picks the first of those it can make and its policy allows ([`choose`]); the reply
//! says which one it used, and completing it checks again that the token can still do it.
//! Deliveries, best first:
//!
//! 1. `rfc5649` — every key wrapped with AES key wrap with padding (RFC 5649) under an AES key
//!    that is wrapped to the request's transport key, and unwrapped **inside** the user's token
//!    (with `CKM_AES_KEY_WRAP_KWP`, or `CKM_AES_KEY_WRAP_PAD` where a known-answer test showed it
//!    is RFC 5649). Requests and replies without a delivery field mean this one, as done on
//!    SoftHSM (`CKM_AES_KEY_WRAP_PAD`) before deliveries were recorded.
//! 2. `import` — the same blobs, but the user's keyward decrypts the AES key with the transport
//!    key and unwraps each private key in its own memory, then creates it on the token with
//!    `C_CreateObject`: only when the authority allows it (`authority init --allow-import`), and
//!    recorded by both sides.
//!
//! A token that can do neither is refused when the request is made, before any key is
//! generated.

use serde::{Deserialize, Serialize};

use crate::token::{Capabilities, Module, Probe, Rfc5649Mechanism, TokenError, TokenSession};

/// A way to deliver encryption keys to a user's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Unwrapped inside the token from RFC 5649 blobs.
    Rfc5649,
    /// Unwrapped inside the token from AES-CBC blobs with PKCS#7 padding (`CKM_AES_CBC_PAD`),
    /// each the IV followed by the wrapped key.
    AesCbcPad,
    /// Unwrapped by keyward and created on the token with `C_CreateObject`.
    Import,
}

impl Delivery {
    /// Its name in files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Rfc5649 => "rfc5649",
            Delivery::AesCbcPad => "aes-cbc-pad",
            Delivery::Import => "import",
        }
    }

    /// What it means, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Delivery::Rfc5649 => "unwrapped inside the token (AES key wrap with padding, RFC 5649)",
            Delivery::AesCbcPad => "unwrapped inside the token (AES-CBC with PKCS#7 padding)",
            Delivery::Import => {
                "imported with C_CreateObject (the key passes through keyward's memory for that one call)"
            }
        }
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The marker `authority cert` writes after the certificates: the deliveries the authority
/// makes. A bundle without it comes from an authority that makes `rfc5649` only.
pub const DELIVERIES_MARKER: &str = "# keyward-deliveries:";

/// The deliveries an authority offers, best first: `rfc5649` always, `aes-cbc-pad` when its
/// token wraps with `CKM_AES_CBC_PAD`, `import` when its policy allows it.
pub fn offered(allow_import: bool, cbc_pad: bool) -> Vec<Delivery> {
    let mut v = vec![Delivery::Rfc5649];
    if cbc_pad {
        v.push(Delivery::AesCbcPad);
    }
    if allow_import {
        v.push(Delivery::Import);
    }
    v
}

/// The marker line for a bundle.
pub fn marker_line(allow_import: bool, cbc_pad: bool) -> String {
    let names: Vec<&str> = offered(allow_import, cbc_pad)
        .iter()
        .map(|d| d.name())
        .collect();
    format!("{DELIVERIES_MARKER} {}\n", names.join(", "))
}

/// The deliveries a bundle's marker names (`rfc5649` alone without a marker).
pub fn parse_marker(bundle: &str) -> Vec<Delivery> {
    let Some(line) = bundle
        .lines()
        .find_map(|l| l.strip_prefix(DELIVERIES_MARKER))
    else {
        return vec![Delivery::Rfc5649];
    };
    line.split(',')
        .filter_map(|n| match n.trim() {
            "rfc5649" => Some(Delivery::Rfc5649),
            "aes-cbc-pad" => Some(Delivery::AesCbcPad),
            "import" => Some(Delivery::Import),
            _ => None,
        })
        .collect()
}

/// What a renewal without the authority's bundle may ask for: `rfc5649`, and the delivery
/// the keyset's enrollment used (the authority made it then, so it offers it).
pub fn offered_by_enrollment(used: Option<&str>) -> Vec<Delivery> {
    let mut v = vec![Delivery::Rfc5649];
    match used {
        Some("aes-cbc-pad") => v.push(Delivery::AesCbcPad),
        Some("import") => v.push(Delivery::Import),
        _ => {}
    }
    v
}

/// What a token (probed with the PIN) can receive, best first.
pub fn receivable(caps: &Capabilities) -> Vec<Delivery> {
    let mut v = Vec::new();
    if caps.rfc5649.is_some() && caps.unwrap_private_key.rfc5649.yes() && !caps.oaep.is_empty() {
        v.push(Delivery::Rfc5649);
    }
    if caps.unwrap_private_key.aes_cbc_pad.yes() && !caps.oaep.is_empty() {
        v.push(Delivery::AesCbcPad);
    }
    if caps.import_private_key.yes() && !caps.oaep.is_empty() {
        v.push(Delivery::Import);
    }
    v
}

/// Why a token can receive none of `wanted`: one clause per delivery, naming what it lacks.
pub fn lacks(caps: &Capabilities, wanted: &[Delivery]) -> String {
    let mut why = Vec::new();
    if caps.oaep.is_empty() {
        why.push("it cannot decrypt with RSA-OAEP (SHA-1 or SHA-256)".to_string());
    }
    for d in wanted {
        match d {
            Delivery::Rfc5649 => why.push(match (caps.rfc5649, &caps.unwrap_private_key.rfc5649) {
                (None, _) => "it has no RFC 5649 AES key wrap (neither CKM_AES_KEY_WRAP_KWP nor a CKM_AES_KEY_WRAP_PAD that passes RFC 5649's test vectors)".to_string(),
                (Some(_), p) => format!("it cannot unwrap an RSA private key into the token: {}", probe_text(p)),
            }),
            Delivery::AesCbcPad => why.push(format!(
                "it cannot unwrap an RSA private key with CKM_AES_CBC_PAD: {}",
                probe_text(&caps.unwrap_private_key.aes_cbc_pad)
            )),
            Delivery::Import => why.push(format!(
                "it does not accept a private key by C_CreateObject: {}",
                probe_text(&caps.import_private_key)
            )),
        }
    }
    why.join("; ")
}

fn probe_text(p: &Probe) -> String {
    match p {
        Probe::Yes => "it works".into(),
        Probe::No(w) => w.clone(),
        Probe::NotProbed(w) => format!("not probed ({w})"),
    }
}

/// What a token offers to an authority that makes `offered`: the deliveries both support, or a
/// sentence saying why none — checked before any key is generated.
pub fn usable(caps: &Capabilities, offered: &[Delivery]) -> Result<Vec<Delivery>, String> {
    let can = receivable(caps);
    let both: Vec<Delivery> = can
        .iter()
        .copied()
        .filter(|d| offered.contains(d))
        .collect();
    if !both.is_empty() {
        return Ok(can);
    }
    let mut why = lacks(caps, offered);
    if !offered.contains(&Delivery::Import) {
        if can.contains(&Delivery::Import) {
            why.push_str("; it could receive the key by import, but the authority does not allow import (its operator can create it with `keyward authority init --allow-import`)");
        } else {
            why.push_str("; the authority does not allow import either");
        }
    }
    Err(why)
}

/// The authority's choice: the first delivery of the request's list (best first) that this
/// authority makes. `allow_import` is its policy; `cbc_pad` whether its token wraps with
/// `CKM_AES_CBC_PAD`. Requests written before deliveries were recorded (an empty list) mean
/// `rfc5649`.
pub fn choose(
    requested: &[Delivery],
    allow_import: bool,
    cbc_pad: bool,
) -> Result<Delivery, String> {
    let requested = if requested.is_empty() {
        &[Delivery::Rfc5649][..]
    } else {
        requested
    };
    let ours = offered(allow_import, cbc_pad);
    requested
        .iter()
        .copied()
        .find(|d| ours.contains(d))
        .ok_or_else(|| {
            let names: Vec<&str> = requested.iter().map(|d| d.name()).collect();
            let ours: Vec<&str> = ours.iter().map(|d| d.name()).collect();
            let import = if allow_import {
                ""
            } else {
                " (this authority does not allow import: it was created without --allow-import)"
            };
            format!(
                "the user's token can receive its encryption key only by {}, and this authority makes {}{import}; the user must enroll with a token that can unwrap keys (see `keyward token info --token URI --login`)",
                names.join(", "),
                ours.join(", ")
            )
        })
}

/// The mechanism the authority's token wraps and unwraps RFC 5649 with (archive, re-wrap,
/// delivery), or an error naming what it lacks.
pub fn authority_wrap(
    session: &TokenSession,
    module: &Module,
) -> Result<Rfc5649Mechanism, TokenError> {
    session
        .rfc5649_mechanism(module)?
        .ok_or_else(|| TokenError::NoAuthorityWrap {
            label: session.token().label().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_and_its_absence_means_rfc5649() {
        assert_eq!(
            parse_marker(&marker_line(true, true)),
            vec![Delivery::Rfc5649, Delivery::AesCbcPad, Delivery::Import]
        );
        assert_eq!(
            parse_marker(&marker_line(false, false)),
            vec![Delivery::Rfc5649]
        );
        assert_eq!(
            parse_marker("-----BEGIN CERTIFICATE-----\n"),
            vec![Delivery::Rfc5649]
        );
    }

    #[test]
    fn the_authority_takes_the_users_first_choice_it_makes() {
        let both = [Delivery::Rfc5649, Delivery::Import];
        assert_eq!(choose(&both, false, false), Ok(Delivery::Rfc5649));
        assert_eq!(
            choose(&[Delivery::Import], true, false),
            Ok(Delivery::Import)
        );
        let e = choose(&[Delivery::Import], false, true).unwrap_err();
        assert!(e.contains("does not allow import"), "{e}");
        assert_eq!(choose(&[], false, false), Ok(Delivery::Rfc5649));
        let cbc = [Delivery::AesCbcPad, Delivery::Import];
        assert_eq!(choose(&cbc, true, true), Ok(Delivery::AesCbcPad));
        assert_eq!(choose(&cbc, true, false), Ok(Delivery::Import));
        assert!(choose(&cbc, false, false).is_err());
    }
}
