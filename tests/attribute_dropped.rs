//! A module that silently drops a security attribute from a new key's template (issue 10,
//! item 6), played by the PKCS#11 shim on SoftHSM2 (`KEYWARD_SHIM_DROP_ATTRIBUTE`: the
//! attribute is left out of the template and reads back with its insecure value). keyward reads
//! the new private key's attributes back, refuses, and destroys the pair: the command fails with
//! one sentence naming the attribute, and the token and the keyset registry are as before.

mod util;

use util::*;

const PIN: &str = "24681357";

/// Each attribute the shim can drop, the `keyset create` flags that ask for it, and how keyward
/// names it.
const CASES: [(&str, &[&str], &str); 5] = [
    ("CKA_TOKEN", &[], "CKA_TOKEN"),
    ("CKA_PRIVATE", &[], "CKA_PRIVATE"),
    ("CKA_SENSITIVE", &[], "CKA_SENSITIVE"),
    ("CKA_EXTRACTABLE", &[], "CKA_EXTRACTABLE=false"),
    (
        "CKA_ALWAYS_AUTHENTICATE",
        &["--security", "high"],
        "CKA_ALWAYS_AUTHENTICATE",
    ),
];

#[test]
fn a_key_whose_security_attribute_was_dropped_is_refused_and_destroyed() {
    let bed = TestBed::new();
    bed.init_token("card", PIN);
    // Something on the token already, which must stay.
    bed.create_keyset("Old", "card", PIN, &[]).ok();
    let registry = bed.registry_text();
    let objects = || -> Vec<(String, String)> {
        let mut o: Vec<(String, String)> = bed
            .token_objects("card", PIN)
            .iter()
            .map(|o| (o.get("label").to_string(), o.get("ID").to_string()))
            .collect();
        o.sort();
        o
    };
    let before = objects();
    for (attribute, flags, named) in CASES {
        let mut args = vec!["keyset", "create", "New", "--token", "card"];
        args.extend_from_slice(flags);
        let run = bed
            .run_shim(
                &args,
                &[
                    ("KEYWARD_PIN", PIN),
                    ("KEYWARD_SHIM_DROP_ATTRIBUTE", attribute),
                ],
            )
            .fails(
                1,
                &format!("did not keep {named} on the new signing key pair, so keyward destroyed it and stopped"),
            );
        assert!(
            run.stderr.contains("honours the key's security attributes"),
            "{attribute}: the refusal says what to do: {}",
            run.stderr
        );
        assert_eq!(objects(), before, "{attribute}: the token changed");
        assert_eq!(
            bed.registry_text(),
            registry,
            "{attribute}: the registry changed"
        );
    }
    // The same command through the shim without the fault works: the refusal was the fault's.
    bed.run_shim(
        &["keyset", "create", "New", "--token", "card"],
        &[("KEYWARD_PIN", PIN)],
    )
    .ok();
}
