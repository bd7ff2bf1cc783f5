//! Names people give keyward: user names, e-mail addresses, the authority's distinguished
//! name, keyset names. One place for the rules, used by the authority and the keyset code.

/// Checks a user (or operator) name: 1-64 characters of ASCII letters, digits and `._@-`;
/// not `.` or `..`, not starting with `-` or `.` (no path component, no option, no hidden
/// file); `/` and control characters are outside the set.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let charset = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if !charset {
        return Err(format!(
            "user name {name:?} must be 1-64 characters of letters, digits and . _ @ -"
        ));
    }
    if name.starts_with('-') || name.starts_with('.') {
        return Err(format!(
            "user name {name:?} must not start with '-' or '.' (it would read as an option or a hidden file); start it with a letter or digit"
        ));
    }
    Ok(())
}

/// The form two user names are compared in (user names are unique ignoring case).
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Checks an e-mail address as an RFC 5322 `addr-spec` in its dot-atom form: `local@domain`,
/// each a dot-separated run of atoms (`atext` on the left, letters, digits and inner hyphens
/// on the right), the domain with at least two labels; at most 64 characters before the `@`
/// and 254 in all. Quoted local parts and domain literals (`[192.0.2.1]`), valid in RFC 5322
/// but not what a certificate's rfc822Name should carry, are refused.
pub fn check_email(addr: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{addr:?} is not an e-mail address: {why}"));
    if addr.len() > 254 {
        return bad("longer than 254 characters");
    }
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return bad("it has no '@'");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("the part before '@' must be 1-64 characters");
    }
    const ATEXT: &str = "!#$%&'*+-/=?^_`{|}~";
    if !dot_atom(local, |c| c.is_ascii_alphanumeric() || ATEXT.contains(c)) {
        return bad("the part before '@' must be dot-separated atoms of letters, digits and !#$%&'*+-/=?^_`{|}~");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return bad("the domain needs at least two labels (example.org)");
    }
    for l in labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return bad("each domain label must be 1-63 letters, digits and inner hyphens");
        }
    }
    Ok(())
}

fn dot_atom(s: &str, atext: impl Fn(char) -> bool) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(&atext))
}

/// Checks the text of a distinguished name before it is parsed: no control characters (they
/// would hide parts of the name from whoever reads it).
pub fn check_dn_text(name: &str) -> Result<(), String> {
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the name {name:?} holds the control character U+{:04X}; write it without",
            u32::from(c)
        ));
    }
    if name.trim().is_empty() {
        return Err("the name is empty; write e.g. CN=Example Authority,O=Example".into());
    }
    Ok(())
}

/// A name's confusable skeleton: lower case, with letters that look alike mapped to one
/// (a subset of Unicode UTS #39's confusables: Cyrillic and Greek look-alikes of Latin
/// letters, `0`/`o`, `1`/`l`/`i`, `rn`/`m`, `vv`/`w`), so `alice`, `ALICE` and `аlice` (Cyrillic
/// a) share one.
pub fn skeleton(name: &str) -> String {
    let mapped: String = name
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'а' | 'α' => 'a',
            'е' | 'ε' => 'e',
            'о' | 'ο' | '0' => 'o',
            'р' | 'ρ' => 'p',
            'с' | 'ϲ' => 'c',
            'х' | 'χ' => 'x',
            'у' | 'γ' => 'y',
            'і' | 'ι' | 'ı' | '1' | 'l' | '|' | 'ӏ' => 'l',
            'ј' => 'j',
            'ѕ' => 's',
            'ԁ' => 'd',
            'ɡ' => 'g',
            'ν' => 'v',
            'κ' | 'к' => 'k',
            'н' | 'η' => 'n',
            'т' | 'τ' => 't',
            'м' => 'm',
            'в' | 'β' => 'b',
            '_' | '-' | '.' => '_',
            other => other,
        })
        .collect();
    mapped.replace("rn", "m").replace("vv", "w")
}

/// The existing name `name` is confusable with (same skeleton, different name), if any.
pub fn confusable_with<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let s = skeleton(name);
    existing
        .into_iter()
        .find(|e| *e != name && skeleton(e) == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_user_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "-rf",
            ".hidden",
            "a/b",
            "../x",
            "a\nb",
            "a\u{7}",
            "é",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(check_user_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["alice", "bob.smith", "c_d-e", "x@example.org", "a..b"] {
            assert!(check_user_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn addresses_are_rfc5322_dot_atoms() {
        for good in [
            "a@example.org",
            "first.last+tag@mail.example.co.uk",
            "o'neil@x.io",
        ] {
            assert!(check_email(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a",
            "@example.org",
            "a@",
            "a@org",
            "a..b@example.org",
            ".a@example.org",
            "a.@example.org",
            "a@-x.org",
            "a@x-.org",
            "a b@example.org",
            "a@exa mple.org",
            "\"q\"@example.org",
            "a@[192.0.2.1]",
            "a@b@example.org",
            "a\n@example.org",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn confusable_names_share_a_skeleton() {
        assert_eq!(confusable_with("ALICE", ["alice"]), Some("alice"));
        assert_eq!(confusable_with("\u{430}lice", ["alice"]), Some("alice"));
        assert_eq!(confusable_with("a1ice", ["alice"]), Some("alice"));
        assert_eq!(confusable_with("modern", ["modem"]), Some("modem"));
        assert_eq!(confusable_with("bob", ["alice"]), None);
        assert!(check_dn_text("CN=x\u{1b}[2J").is_err());
        assert!(check_dn_text("CN=Example").is_ok());
    }
}
