//! PKCS#11 URIs (RFC 7512): parsing, canonical printing and token matching.

use std::fmt;
use std::str::FromStr;

/// Path attributes accepted in a URI, in canonical print order.
const PATH_ATTRS: [&str; 13] = [
    "token",
    "manufacturer",
    "serial",
    "model",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
    "library-manufacturer",
    "library-description",
    "library-version",
    "id",
    "object",
    "type",
];
/// Query attributes accepted in a URI, in canonical print order.
const QUERY_ATTRS: [&str; 3] = ["pin-source", "module-name", "module-path"];
/// Human-readable list of accepted attributes, for error messages.
const ACCEPTED: &str = "token, manufacturer, serial, model, slot-description, \
    slot-manufacturer, slot-id, library-manufacturer, library-description, library-version, \
    id, object, type (before `?`) or pin-source, module-name, module-path (after `?`)";
/// Characters (besides ALPHA DIGIT - . _ ~) printed literally in path values.
const PATH_SAFE: &[u8] = b":[]@!$'()*+,=&";
/// Characters (besides ALPHA DIGIT - . _ ~) printed literally in query values.
const QUERY_SAFE: &[u8] = b":[]@!$'()*+,=/?|";
/// Longest token label PKCS#11 can store (CK_TOKEN_INFO.label is 32 bytes).
const MAX_LABEL: usize = 32;

/// Which kind of PKCS#11 object a URI's `type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `type=public`: a public key.
    Public,
    /// `type=private`: a private key.
    Private,
    /// `type=cert`: a certificate.
    Cert,
    /// `type=secret-key`: a secret (symmetric) key.
    SecretKey,
    /// `type=data`: a data object.
    Data,
}

impl ObjectKind {
    /// The RFC 7512 spelling of this kind (`public`, `private`, `cert`, `secret-key`, `data`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Public => "public",
            ObjectKind::Private => "private",
            ObjectKind::Cert => "cert",
            ObjectKind::SecretKey => "secret-key",
            ObjectKind::Data => "data",
        }
    }
}

impl FromStr for ObjectKind {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        match s {
            "public" => Ok(ObjectKind::Public),
            "private" => Ok(ObjectKind::Private),
            "cert" => Ok(ObjectKind::Cert),
            "secret-key" => Ok(ObjectKind::SecretKey),
            "data" => Ok(ObjectKind::Data),
            _ => Err(UriError::BadType(s.to_owned())),
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed PKCS#11 URI (RFC 7512). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `slot-id`: the slot number.
    pub slot_id: Option<u64>,
    /// `slot-description`: the slot description.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`: the slot manufacturer.
    pub slot_manufacturer: Option<String>,
    /// `library-manufacturer`: the PKCS#11 module's manufacturer.
    pub library_manufacturer: Option<String>,
    /// `library-description`: the PKCS#11 module's description.
    pub library_description: Option<String>,
    /// `library-version`: the PKCS#11 module's version, `M` or `M.N`.
    pub library_version: Option<String>,
    /// `object`: the object label.
    pub object: Option<String>,
    /// `id`: the object's CKA_ID bytes.
    pub id: Option<Vec<u8>>,
    /// `type`: the object class.
    pub kind: Option<ObjectKind>,
    /// `module-name` query attribute: PKCS#11 module name.
    pub module_name: Option<String>,
    /// `module-path` query attribute: PKCS#11 module path.
    pub module_path: Option<String>,
    /// `pin-source` query attribute: where to read the PIN from.
    pub pin_source: Option<String>,
}

/// Why a PKCS#11 URI or `--token` argument was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("`{0}` is not a PKCS#11 URI; it must start with `pkcs11:`, for example `pkcs11:token=MyToken`.")]
    MissingScheme(String),
    /// A URI component has no `=`.
    #[error("PKCS#11 URI component `{0}` has no `=`; write each attribute as `name=value`, for example `token=MyToken`.")]
    MissingEquals(String),
    /// The URI carries `pin-value`.
    #[error("the PKCS#11 URI attribute `pin-value` is refused because secrets do not belong on the command line; remove it and supply the PIN with --pin-file or the KEYWARD_PIN environment variable.")]
    PinValue,
    /// The URI carries an `x-` vendor attribute.
    #[error(
        "vendor-specific PKCS#11 URI attribute `{0}` is not supported; remove it from the URI."
    )]
    VendorAttribute(String),
    /// The URI carries an attribute keyward does not know.
    #[error("unknown PKCS#11 URI attribute `{0}`; use only {list}.", list = ACCEPTED)]
    UnknownAttribute(String),
    /// A path attribute appears after the `?`.
    #[error("PKCS#11 URI attribute `{0}` is a path attribute but appears after the `?`; move it before the `?` and separate it with `;`.")]
    PathAttributeInQuery(String),
    /// A query attribute appears before the `?`.
    #[error("PKCS#11 URI attribute `{0}` is a query attribute but appears before the `?`; move it after the `?`, for example `pkcs11:token=MyToken?{0}=...`.")]
    QueryAttributeInPath(String),
    /// An attribute is given twice.
    #[error("PKCS#11 URI attribute `{0}` appears more than once; keep only one.")]
    Duplicate(String),
    /// A `%` is not followed by two hex digits.
    #[error("PKCS#11 URI attribute `{attribute}` has a bad percent-escape in `{value}`; every `%` must be followed by two hex digits (write a literal `%` as `%25`).")]
    BadEscape {
        /// The attribute name.
        attribute: String,
        /// The raw (still encoded) value.
        value: String,
    },
    /// A text value does not decode to UTF-8.
    #[error("PKCS#11 URI attribute `{attribute}` value `{value}` does not decode to UTF-8 text; fix its percent-escapes.")]
    NotUtf8 {
        /// The attribute name.
        attribute: String,
        /// The raw (still encoded) value.
        value: String,
    },
    /// `slot-id` is not a decimal u64.
    #[error("PKCS#11 URI slot-id `{0}` is not a decimal slot number; write it like `slot-id=0`.")]
    BadSlotId(String),
    /// `library-version` is not `M` or `M.N`.
    #[error("PKCS#11 URI library-version `{0}` is not a version number; write it as `M` or `M.N`, for example `library-version=2.40`.")]
    BadLibraryVersion(String),
    /// `type` is not one of the five object kinds.
    #[error("PKCS#11 URI type `{0}` is not an object type; use one of public, private, cert, secret-key or data.")]
    BadType(String),
    /// `--token` was given an empty label.
    #[error("the token label is empty; pass a token label or a `pkcs11:` URI to --token.")]
    EmptyLabel,
    /// `--token` was given a label longer than PKCS#11 allows.
    #[error("token label `{label}` is {len} bytes but PKCS#11 token labels hold at most 32 bytes; use a shorter label or a `pkcs11:` URI.")]
    LabelTooLong {
        /// The label given.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// What is known of one token when matching a URI against it.
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    /// Token label (CK_TOKEN_INFO.label).
    pub label: &'a str,
    /// Token manufacturer (CK_TOKEN_INFO.manufacturerID).
    pub manufacturer: &'a str,
    /// Token model (CK_TOKEN_INFO.model).
    pub model: &'a str,
    /// Token serial number (CK_TOKEN_INFO.serialNumber).
    pub serial: &'a str,
    /// Slot number the token sits in.
    pub slot_id: u64,
    /// Slot description (CK_SLOT_INFO.slotDescription).
    pub slot_description: &'a str,
    /// Slot manufacturer (CK_SLOT_INFO.manufacturerID).
    pub slot_manufacturer: &'a str,
}

/// Strips a case-insensitive `pkcs11:` scheme, if present.
fn strip_scheme(s: &str) -> Option<&str> {
    let (scheme, rest) = s.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("pkcs11:").then_some(rest)
}

/// Value of one hex digit.
fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes `raw` into bytes.
fn decode(attribute: &str, raw: &str) -> Result<Vec<u8>, UriError> {
    let bad = || UriError::BadEscape {
        attribute: attribute.to_owned(),
        value: raw.to_owned(),
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_val).ok_or_else(bad)?;
            let lo = bytes.next().and_then(hex_val).ok_or_else(bad)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// Percent-encodes `bytes`, leaving unreserved characters and `safe` literal.
fn encode(out: &mut String, bytes: &[u8], safe: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || safe.contains(&b) {
            out.push(char::from(b));
        } else {
            escape(out, b);
        }
    }
}

/// Appends `%XX` for one byte.
fn escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

/// Stores `value` in `slot`, refusing a second value.
fn put<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::Duplicate(name.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

/// Compares PKCS#11 strings, ignoring trailing space padding on both sides.
fn same(want: &Option<String>, have: &str) -> bool {
    want.as_deref()
        .is_none_or(|w| w.trim_end_matches(' ') == have.trim_end_matches(' '))
}

impl Pkcs11Uri {
    /// `--token` argument: a `pkcs11:` URI, or else a bare token label (any text, taken literally).
    pub fn from_token_arg(arg: &str) -> Result<Pkcs11Uri, UriError> {
        if strip_scheme(arg).is_some() {
            return arg.parse();
        }
        if arg.is_empty() {
            return Err(UriError::EmptyLabel);
        }
        if arg.len() > MAX_LABEL {
            return Err(UriError::LabelTooLong {
                label: arg.to_owned(),
                len: arg.len(),
            });
        }
        Ok(Pkcs11Uri {
            token: Some(arg.to_owned()),
            ..Pkcs11Uri::default()
        })
    }

    /// A URI naming a token by label and serial (what keyward prints for a token).
    pub fn for_token(label: &str, manufacturer: &str, model: &str, serial: &str) -> Pkcs11Uri {
        let f = |s: &str| Some(s.trim_end_matches(' ').to_owned());
        Pkcs11Uri {
            token: f(label),
            manufacturer: f(manufacturer),
            model: f(model),
            serial: f(serial),
            ..Pkcs11Uri::default()
        }
    }

    /// The URI of a slot whose token has nothing to name it by yet (uninitialised):
    /// `slot-id` with the token's manufacturer and model.
    pub fn for_slot(slot_id: u64, manufacturer: &str, model: &str) -> Pkcs11Uri {
        let f = |s: &str| Some(s.trim_end_matches(' ').to_owned()).filter(|s| !s.is_empty());
        Pkcs11Uri {
            slot_id: Some(slot_id),
            manufacturer: f(manufacturer),
            model: f(model),
            ..Pkcs11Uri::default()
        }
    }

    /// Does a token with these properties match every token/slot attribute the URI sets? (object attributes ignored)
    ///
    /// Library and query attributes are ignored too: they describe the module, not the token.
    pub fn matches_token(&self, t: &TokenFacts<'_>) -> bool {
        same(&self.token, t.label)
            && same(&self.manufacturer, t.manufacturer)
            && same(&self.model, t.model)
            && same(&self.serial, t.serial)
            && self.slot_id.is_none_or(|id| id == t.slot_id)
            && same(&self.slot_description, t.slot_description)
            && same(&self.slot_manufacturer, t.slot_manufacturer)
    }

    /// True when the URI sets any object attribute (object, id, type).
    pub fn names_object(&self) -> bool {
        self.object.is_some() || self.id.is_some() || self.kind.is_some()
    }

    /// Only the token/slot/library part (object attributes and query dropped).
    pub fn token_part(&self) -> Pkcs11Uri {
        Pkcs11Uri {
            object: None,
            id: None,
            kind: None,
            module_name: None,
            module_path: None,
            pin_source: None,
            ..self.clone()
        }
    }

    /// Parses one `name=value` component into `self`.
    fn set(&mut self, component: &str, in_query: bool) -> Result<(), UriError> {
        let (name, raw) = component
            .split_once('=')
            .ok_or_else(|| UriError::MissingEquals(component.to_owned()))?;
        if name == "pin-value" {
            return Err(UriError::PinValue);
        }
        if name.starts_with("x-") {
            return Err(UriError::VendorAttribute(name.to_owned()));
        }
        match (PATH_ATTRS.contains(&name), QUERY_ATTRS.contains(&name)) {
            (false, false) => return Err(UriError::UnknownAttribute(name.to_owned())),
            (true, _) if in_query => return Err(UriError::PathAttributeInQuery(name.to_owned())),
            (_, true) if !in_query => return Err(UriError::QueryAttributeInPath(name.to_owned())),
            _ => {}
        }
        let bytes = decode(name, raw)?;
        if name == "id" {
            return put(&mut self.id, bytes, name);
        }
        let text = String::from_utf8(bytes).map_err(|_| UriError::NotUtf8 {
            attribute: name.to_owned(),
            value: raw.to_owned(),
        })?;
        let slot = match name {
            "slot-id" => {
                let ok = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
                let id = ok.then(|| text.parse().ok()).flatten();
                let id = id.ok_or(UriError::BadSlotId(text))?;
                return put(&mut self.slot_id, id, name);
            }
            "type" => return put(&mut self.kind, text.parse()?, name),
            "library-version" => {
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                let ok = match text.split_once('.') {
                    Some((major, minor)) => digits(major) && digits(minor),
                    None => digits(&text),
                };
                if !ok {
                    return Err(UriError::BadLibraryVersion(text));
                }
                &mut self.library_version
            }
            "token" => &mut self.token,
            "manufacturer" => &mut self.manufacturer,
            "serial" => &mut self.serial,
            "model" => &mut self.model,
            "slot-description" => &mut self.slot_description,
            "slot-manufacturer" => &mut self.slot_manufacturer,
            "library-manufacturer" => &mut self.library_manufacturer,
            "library-description" => &mut self.library_description,
            "object" => &mut self.object,
            "pin-source" => &mut self.pin_source,
            "module-name" => &mut self.module_name,
            "module-path" => &mut self.module_path,
            _ => return Err(UriError::UnknownAttribute(name.to_owned())),
        };
        put(slot, text, name)
    }
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        let rest = strip_scheme(s).ok_or_else(|| UriError::MissingScheme(s.to_owned()))?;
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        for component in path.split(';').filter(|c| !c.is_empty()) {
            uri.set(component, false)?;
        }
        for component in query.into_iter().flat_map(|q| q.split('&')) {
            if !component.is_empty() {
                uri.set(component, true)?;
            }
        }
        Ok(uri)
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |v: &Option<String>| v.as_ref().map(|s| s.as_bytes().to_vec());
        let path: [Option<Vec<u8>>; 13] = [
            text(&self.token),
            text(&self.manufacturer),
            text(&self.serial),
            text(&self.model),
            text(&self.slot_description),
            text(&self.slot_manufacturer),
            self.slot_id.map(|n| n.to_string().into_bytes()),
            text(&self.library_manufacturer),
            text(&self.library_description),
            text(&self.library_version),
            self.id.clone(),
            text(&self.object),
            self.kind.map(|k| k.as_str().as_bytes().to_vec()),
        ];
        let query = [
            text(&self.pin_source),
            text(&self.module_name),
            text(&self.module_path),
        ];
        let mut out = String::from("pkcs11:");
        let mut sep = "";
        for (name, value) in PATH_ATTRS.iter().zip(&path) {
            let Some(value) = value else { continue };
            out.push_str(sep);
            out.push_str(name);
            out.push('=');
            // `id` is always fully escaped, as pkcs11-tool and p11tool print it.
            if *name == "id" {
                value.iter().for_each(|b| escape(&mut out, *b));
            } else {
                encode(&mut out, value, PATH_SAFE);
            }
            sep = ";";
        }
        sep = "?";
        for (name, value) in QUERY_ATTRS.iter().zip(&query) {
            let Some(value) = value else { continue };
            out.push_str(sep);
            out.push_str(name);
            out.push('=');
            encode(&mut out, value, QUERY_SAFE);
            sep = "&";
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pkcs11Uri {
        s.parse().unwrap()
    }
    fn err(s: &str) -> UriError {
        s.parse::<Pkcs11Uri>().unwrap_err()
    }
    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn rfc_examples_parse() {
        assert_eq!(p("pkcs11:"), Pkcs11Uri::default());
        let u = p("pkcs11:object=my-pubkey;type=public");
        assert_eq!(
            (u.object, u.kind),
            (s("my-pubkey"), Some(ObjectKind::Public))
        );
        let u = p("pkcs11:object=my-key;type=private?pin-source=file:/etc/token");
        assert_eq!(u.kind, Some(ObjectKind::Private));
        assert_eq!(u.pin_source, s("file:/etc/token"));
        let u = p("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;\
            manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;\
            id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin");
        assert_eq!(u.token, s("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer, s("Snake Oil, Inc."));
        assert_eq!(u.model, s("1.0"));
        assert_eq!(u.object, s("my-certificate"));
        assert_eq!(u.kind, Some(ObjectKind::Cert));
        assert_eq!(
            u.id,
            Some(vec![0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91])
        );
        assert_eq!(u.serial, s(""));
        assert_eq!(u.pin_source, s("file:/etc/token_pin"));
        let u = p("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11");
        assert_eq!(u.module_name, s("mypkcs11"));
        let u = p("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1");
        assert_eq!(u.module_path, s("/mnt/libmypkcs11.so.1"));
        assert_eq!(
            err("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin"),
            UriError::PinValue
        );
        let u = p("pkcs11:slot-description=Sun%20Metaslot");
        assert_eq!(u.slot_description, s("Sun Metaslot"));
        let u = p("pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;\
            library-description=Soft%20Token%20Library;library-version=1.23");
        assert_eq!(u.library_manufacturer, s("Snake Oil, Inc."));
        assert_eq!(u.library_description, s("Soft Token Library"));
        assert_eq!(u.library_version, s("1.23"));
        assert_eq!(
            err(
                "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a\
                ?pin-source=file:/etc/token_pin&vendor-bbb=value-b"
            ),
            UriError::UnknownAttribute("vendor-aaa".into())
        );
        let u = p(
            "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
        );
        assert_eq!(u.token, s("A name with a substring %;"));
        let u = p(
            "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;\
            object=my-certificate;type=cert",
        );
        assert_eq!(u.token, s("Name with a small A with acute: \u{e1}"));
    }

    #[test]
    fn scheme_case_and_leniency() {
        assert_eq!(p("PKCS11:token=a").token, s("a"));
        assert_eq!(p("Pkcs11:token=a;;?&").token, s("a"));
        assert_eq!(p("pkcs11:?module-name=m").module_name, s("m"));
        assert_eq!(p("pkcs11:id=").id, Some(vec![]));
        assert_eq!(p("pkcs11:id=%ff%FFa").id, Some(vec![0xff, 0xff, b'a']));
        assert_eq!(p("pkcs11:token=a=b&c").token, s("a=b&c"));
        assert_eq!(p("pkcs11:?pin-source=a?b/c|d").pin_source, s("a?b/c|d"));
        assert_eq!(
            p("pkcs11:slot-id=18446744073709551615").slot_id,
            Some(u64::MAX)
        );
        assert_eq!(p("pkcs11:library-version=3").library_version, s("3"));
        assert_eq!(
            p("pkcs11:type=secret-key").kind,
            Some(ObjectKind::SecretKey)
        );
        assert_eq!(p("pkcs11:type=data").kind, Some(ObjectKind::Data));
    }

    #[test]
    fn error_cases() {
        use UriError::*;
        assert_eq!(err("token=a"), MissingScheme("token=a".into()));
        assert_eq!(err("pkcs11"), MissingScheme("pkcs11".into()));
        assert_eq!(err("pkcs11:token"), MissingEquals("token".into()));
        assert_eq!(err("pkcs11:pin-value=1234"), PinValue);
        assert_eq!(err("pkcs11:x-foo=1"), VendorAttribute("x-foo".into()));
        assert_eq!(err("pkcs11:?x-foo=1"), VendorAttribute("x-foo".into()));
        assert_eq!(err("pkcs11:Token=a"), UnknownAttribute("Token".into()));
        assert_eq!(err("pkcs11:?token=a"), PathAttributeInQuery("token".into()));
        assert_eq!(
            err("pkcs11:pin-source=f"),
            QueryAttributeInPath("pin-source".into())
        );
        assert_eq!(err("pkcs11:token=a;token=b"), Duplicate("token".into()));
        assert_eq!(err("pkcs11:id=%01;id=%01"), Duplicate("id".into()));
        assert_eq!(
            err("pkcs11:?module-name=a&module-name=a"),
            Duplicate("module-name".into())
        );
        let esc = |v: &str| BadEscape {
            attribute: "token".into(),
            value: v.into(),
        };
        assert_eq!(err("pkcs11:token=%4"), esc("%4"));
        assert_eq!(err("pkcs11:token=%zz"), esc("%zz"));
        assert_eq!(err("pkcs11:token=a%"), esc("a%"));
        assert_eq!(err("pkcs11:token=%é0"), esc("%é0"));
        assert_eq!(
            err("pkcs11:object=%FF"),
            NotUtf8 {
                attribute: "object".into(),
                value: "%FF".into()
            }
        );
        for bad in ["", "-1", "+1", "1x", "18446744073709551616", " 1"] {
            assert_eq!(err(&format!("pkcs11:slot-id={bad}")), BadSlotId(bad.into()));
        }
        for bad in ["", "1.", ".1", "1.2.3", "a", "1.b", "-1"] {
            let e = err(&format!("pkcs11:library-version={bad}"));
            assert_eq!(e, BadLibraryVersion(bad.into()));
        }
        assert_eq!(err("pkcs11:type=key"), BadType("key".into()));
        assert_eq!(err("pkcs11:type=Public"), BadType("Public".into()));
    }

    #[test]
    fn error_messages_are_helpful() {
        let m = err("pkcs11:pin-value=1").to_string();
        assert!(m.contains("--pin-file") && m.contains("KEYWARD_PIN"), "{m}");
        let m = err("pkcs11:foo=1").to_string();
        assert!(
            m.contains("`foo`") && m.contains("module-path") && m.contains("slot-id"),
            "{m}"
        );
        assert!(err("pkcs11:x-a=1").to_string().contains("not supported"));
        assert!(err("pkcs11:token=%zz").to_string().contains("%25"));
        for e in [err("nope"), err("pkcs11:type=x"), err("pkcs11:slot-id=x")] {
            let m = e.to_string();
            assert!(m.ends_with('.') && !m.contains('\n'), "{m}");
        }
    }

    #[test]
    fn display_is_canonical() {
        let u = p(
            "pkcs11:type=cert;object=o;id=AB;serial=S;token=T;slot-id=3;\
            library-version=1.2;model=M;manufacturer=Mf?module-path=/x&pin-source=file:/p",
        );
        assert_eq!(
            u.to_string(),
            "pkcs11:token=T;manufacturer=Mf;serial=S;model=M;slot-id=3;\
             library-version=1.2;id=%41%42;object=o;type=cert?pin-source=file:/p&module-path=/x"
        );
        assert_eq!(Pkcs11Uri::default().to_string(), "pkcs11:");
        let u = Pkcs11Uri {
            token: s("a b;c?d%e/f&g\u{e1}"),
            ..Default::default()
        };
        assert_eq!(u.to_string(), "pkcs11:token=a%20b%3Bc%3Fd%25e%2Ff&g%C3%A1");
        let u = Pkcs11Uri {
            module_path: s("/a b/c?d&e"),
            ..Default::default()
        };
        assert_eq!(u.to_string(), "pkcs11:?module-path=/a%20b/c?d%26e");
        let u = Pkcs11Uri {
            serial: s(""),
            ..Default::default()
        };
        assert_eq!(u.to_string(), "pkcs11:serial=");
    }

    /// Tiny deterministic generator for the round-trip property test.
    struct Lcg(u64, Option<&'static str>);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize % n
        }
        /// The fixed sample if set, else random text from awkward pieces (or None).
        fn text(&mut self) -> Option<String> {
            const POOL: [&str; 24] = [
                "a",
                "Z",
                "0",
                " ",
                ";",
                "?",
                "%",
                "/",
                "&",
                "=",
                "#",
                "+",
                ":",
                "|",
                "~",
                "\u{e1}",
                "\u{20ac}",
                "\u{1f511}",
                "\0",
                "\n",
                "%20",
                "pkcs11:",
                "[",
                "\"",
            ];
            if let Some(v) = self.1 {
                return Some(v.to_owned());
            }
            (self.next(3) > 0).then(|| (0..self.next(8)).map(|_| POOL[self.next(24)]).collect())
        }
        fn some(&mut self) -> bool {
            self.1.is_some() || self.next(2) == 0
        }
        fn uri(&mut self) -> Pkcs11Uri {
            const KINDS: [ObjectKind; 5] = [
                ObjectKind::Public,
                ObjectKind::Private,
                ObjectKind::Cert,
                ObjectKind::SecretKey,
                ObjectKind::Data,
            ];
            Pkcs11Uri {
                token: self.text(),
                manufacturer: self.text(),
                serial: self.text(),
                model: self.text(),
                slot_id: self.some().then(|| self.0 >> self.next(64)),
                slot_description: self.text(),
                slot_manufacturer: self.text(),
                library_manufacturer: self.text(),
                library_description: self.text(),
                library_version: self
                    .some()
                    .then(|| format!("{}.{}", self.next(99), self.next(9))),
                object: self.text(),
                id: self
                    .text()
                    .map(|t| t.into_bytes().into_iter().chain([0, 0xff]).collect()),
                kind: self.some().then(|| KINDS[self.next(5)]),
                module_name: self.text(),
                module_path: self.text(),
                pin_source: self.text(),
            }
        }
    }

    #[test]
    fn round_trip_property() {
        let samples = [
            "",
            " ",
            "plain",
            "with space ",
            "a;b",
            "a?b",
            "100%",
            "%41",
            "/usr/lib/x.so",
            "a&b=c",
            "\u{dc}n\u{ef}c\u{f8}d\u{e9} \u{2603} \u{1f511}",
            "file:/etc/pin?x|y",
            "  padded  ",
            "\t\r\n\0",
            "=;?&%/#",
        ];
        let mut all = vec![Pkcs11Uri::default()];
        all.extend(samples.iter().map(|v| Lcg(v.len() as u64, Some(v)).uri()));
        let mut r = Lcg(7, None);
        all.extend((0..2000).map(|_| r.uri()));
        for u in all {
            let shown = u.to_string();
            assert!(shown.is_ascii() && !shown.contains(' '), "{shown}");
            assert_eq!(p(&shown), u, "{shown}");
            assert_eq!(p(&shown).to_string(), shown);
        }
    }

    fn facts() -> TokenFacts<'static> {
        TokenFacts {
            label: "My Token                        ",
            manufacturer: "ACME   ",
            model: "X1",
            serial: "0042",
            slot_id: 2,
            slot_description: "Reader 0   ",
            slot_manufacturer: "ACME Readers",
        }
    }

    #[test]
    fn matching() {
        let t = facts();
        assert!(p("pkcs11:").matches_token(&t));
        assert!(p("pkcs11:token=My%20Token").matches_token(&t));
        assert!(p("pkcs11:token=My%20Token%20%20").matches_token(&t));
        assert!(p("pkcs11:manufacturer=ACME;model=X1;serial=0042;slot-id=2").matches_token(&t));
        assert!(
            p("pkcs11:slot-description=Reader%200;slot-manufacturer=ACME%20Readers")
                .matches_token(&t)
        );
        assert!(
            p("pkcs11:token=My%20Token;object=other;type=cert;library-version=9").matches_token(&t)
        );
        assert!(!p("pkcs11:token=my%20token").matches_token(&t));
        assert!(!p("pkcs11:token=%20My%20Token").matches_token(&t));
        assert!(!p("pkcs11:token=My").matches_token(&t));
        assert!(!p("pkcs11:serial=42").matches_token(&t));
        assert!(!p("pkcs11:slot-id=3").matches_token(&t));
        assert!(!p("pkcs11:model=").matches_token(&t));
        assert!(!p("pkcs11:slot-manufacturer=ACME").matches_token(&t));
        let u = Pkcs11Uri::for_token(t.label, t.manufacturer, t.model, t.serial);
        assert_eq!(
            u.to_string(),
            "pkcs11:token=My%20Token;manufacturer=ACME;serial=0042;model=X1"
        );
        assert!(u.matches_token(&t));
    }

    #[test]
    fn object_and_token_part() {
        assert!(!p("pkcs11:token=a;slot-id=1").names_object());
        assert!(p("pkcs11:object=o").names_object());
        assert!(p("pkcs11:id=%01").names_object());
        assert!(p("pkcs11:type=data").names_object());
        let u = p(
            "pkcs11:token=a;library-version=1;object=o;id=%01;type=cert?module-name=m&pin-source=p",
        );
        assert_eq!(u.token_part(), p("pkcs11:token=a;library-version=1"));
        assert!(!u.token_part().names_object());
    }

    #[test]
    fn token_arg() {
        let label = |l: &str| Pkcs11Uri {
            token: s(l),
            ..Default::default()
        };
        assert_eq!(Pkcs11Uri::from_token_arg("My Token"), Ok(label("My Token")));
        assert_eq!(
            Pkcs11Uri::from_token_arg("a;b%20=c?"),
            Ok(label("a;b%20=c?"))
        );
        assert_eq!(Pkcs11Uri::from_token_arg("pkcs11"), Ok(label("pkcs11")));
        assert_eq!(Pkcs11Uri::from_token_arg("PKCS11:token=x"), Ok(label("x")));
        assert_eq!(
            Pkcs11Uri::from_token_arg("pkcs11:"),
            Ok(Pkcs11Uri::default())
        );
        assert_eq!(
            Pkcs11Uri::from_token_arg("pkcs11:pin-value=1"),
            Err(UriError::PinValue)
        );
        assert_eq!(Pkcs11Uri::from_token_arg(""), Err(UriError::EmptyLabel));
        let max = "é".repeat(16);
        assert_eq!(Pkcs11Uri::from_token_arg(&max), Ok(label(&max)));
        let long = format!("{max}x");
        let e = Pkcs11Uri::from_token_arg(&long).unwrap_err();
        assert_eq!(
            e,
            UriError::LabelTooLong {
                label: long,
                len: 33
            }
        );
        assert!(e.to_string().contains("32 bytes"));
    }
}
