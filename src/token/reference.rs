//! The wrappings keyward checks tokens against, done in software: RFC 5649 (`aes-kw`) and
//! AES-CBC with PKCS#7 padding (`cbc`), the known-answer vectors, and the throw-away key the
//! capability probes unwrap and import. Nothing here touches a token.

use aes::cipher::{BlockEncryptMut, KeyIvInit};
use zeroize::Zeroizing;

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

/// Known-answer vectors.
pub(crate) mod kat {
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

/// The probe key, PKCS#8 DER.
pub(crate) fn probe_pkcs8() -> Option<Zeroizing<Vec<u8>>> {
    use base64ct::{Base64, Encoding};
    Base64::decode_vec(PROBE_KEY_PKCS8).ok().map(Zeroizing::new)
}

/// The public half of the probe key.
pub(crate) struct ProbePublic {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

/// The probe key's modulus and exponent.
pub(crate) fn probe_key() -> Option<ProbePublic> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&probe_pkcs8()?).ok()?;
    Some(ProbePublic {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    })
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
            assert_eq!(rfc5649(v.kek, v.key).unwrap(), v.wrapped);
        }
    }

    #[test]
    fn the_probe_key_decodes() {
        assert_eq!(probe_key().unwrap().n.len(), 256);
    }
}
