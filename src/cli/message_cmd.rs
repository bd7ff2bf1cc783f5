//! `keyward send` and `keyward read`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::args::{ReadArgs, SendArgs};
use super::output::{print_json, refuse_same_file};
use super::Context;
use crate::authority::x509;
use crate::error::Error;
use crate::keyset::registry::{write_atomic, KeysetState};
use crate::keyset::{KeysetError, KeysetRecord, Registry};
use crate::message::cms::KeyTransport;
use crate::message::send::current_encryption_cert;
use crate::message::{self, MessageError, ReadOptions, SendOptions};

fn io(action: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads the input file (or standard input), refusing an output that is the input itself.
fn read_input(input: Option<&Path>, output: Option<&Path>) -> Result<Vec<u8>, Error> {
    if let (Some(i), Some(o)) = (input, output) {
        refuse_same_file(i, o)?;
    }
    match input {
        Some(p) => std::fs::read(p).map_err(|e| io("read", p, e)),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| io("read", Path::new("standard input"), e))?;
            Ok(buf)
        }
    }
}

fn write_output(output: Option<&PathBuf>, bytes: &[u8]) -> Result<(), Error> {
    match output {
        Some(p) => write_atomic(p, bytes).map_err(|e| io("write", p, e)),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(|e| io("write", Path::new("standard output"), e))
        }
    }
}

fn enrolled(registry: &Registry, name: &str) -> Result<KeysetRecord, Error> {
    Ok(registry.get(name).map_err(KeysetError::from)?.clone())
}

/// A retired keyset's certificates were revoked when its user was recovered and re-enrolled:
/// it still reads old mail, but nothing new is signed with it or encrypted to it.
fn refuse_retired(registry: &Registry, r: &KeysetRecord, verb: &str) -> Result<(), Error> {
    if r.state != KeysetState::Retired {
        return Ok(());
    }
    let user = r.enrollment.as_ref().map(|e| e.user.as_str());
    let successors: Vec<String> = registry
        .keysets()
        .iter()
        .filter(|k| {
            k.state == KeysetState::Active && k.enrollment.as_ref().map(|e| e.user.as_str()) == user
        })
        .map(|k| format!("{:?}", k.name))
        .collect();
    let instead = match successors.as_slice() {
        [] => String::new(),
        names => format!("; use {} instead", names.join(" or ")),
    };
    Err(KeysetError::Unsupported(format!(
        "keyset {:?} is retired (its certificates were revoked when it was replaced); it can still read old mail, but keyward will not {verb} it{instead}",
        r.name
    ))
    .into())
}

/// A recipient: a certificate file, else a keyset known here.
fn recipient(registry: &Registry, spec: &str) -> Result<(String, x509_cert::Certificate), Error> {
    let path = Path::new(spec);
    if path.is_file() {
        let bytes = std::fs::read(path).map_err(|e| io("read", path, e))?;
        let not_a_cert = |e: x509::X509Error| MessageError::Recipient {
            who: spec.to_string(),
            why: e.to_string(),
        };
        let cert = match std::str::from_utf8(&bytes) {
            Ok(text) if text.contains("-----BEGIN") => x509::certs_from_pem(text)
                .map_err(not_a_cert)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Usage(format!("{spec} holds no certificate")))?,
            _ => x509::cert_from_der(&bytes).map_err(not_a_cert)?,
        };
        return Ok((spec.to_string(), cert));
    }
    match registry.get(spec) {
        Ok(r) => {
            refuse_retired(registry, r, "encrypt to")?;
            Ok((spec.to_string(), current_encryption_cert(r)?))
        }
        Err(_) => Err(Error::Usage(format!(
            "recipient {spec:?} is neither a certificate file nor a keyset known here"
        ))),
    }
}

/// `keyward send`.
pub fn send(ctx: &mut Context, a: SendArgs) -> Result<(), Error> {
    let registry = Registry::load(&ctx.home()?).map_err(KeysetError::from)?;
    let record = enrolled(&registry, &a.keyset)?;
    refuse_retired(&registry, &record, "send with")?;
    let recipients =
        a.to.iter()
            .map(|spec| recipient(&registry, spec))
            .collect::<Result<Vec<_>, _>>()?;
    let warnings = crate::revocation::check_recipients(&ctx.home()?, &registry, &recipients)?;
    let content = read_input(a.input.as_deref(), a.output.as_deref())?;
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let msg = message::send(
        ctx.module()?,
        &content,
        SendOptions {
            keyset: &record,
            recipients: &recipients,
            transport: if a.oaep {
                KeyTransport::RsaOaepSha1
            } else {
                KeyTransport::RsaPkcs1v15
            },
            smime: a.smime,
            password: &password,
            policy,
        },
    )?;
    if ctx.json() && a.output.is_none() {
        return Err(Error::Usage(
            "with --json, pass -o OUTPUT for the message (standard output carries the JSON)".into(),
        ));
    }
    write_output(a.output.as_ref(), &msg)?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "keyset": record.name,
            "recipients": recipients.iter().map(|(who, _)| who).collect::<Vec<_>>(),
            "output": a.output.as_ref().map(|p| p.display().to_string()),
            "smime": a.smime,
            "bytes": msg.len(),
        }));
        return Ok(());
    }
    super::output::note!(
        "signed with keyset {:?} and encrypted to {} recipient(s) and yourself ({} bytes)",
        record.name,
        recipients.len(),
        msg.len()
    );
    for w in warnings {
        eprintln!("{w}");
    }
    Ok(())
}

/// `keyward read`.
pub fn read(ctx: &mut Context, a: ReadArgs) -> Result<(), Error> {
    let registry = Registry::load(&ctx.home()?).map_err(KeysetError::from)?;
    let record = enrolled(&registry, &a.keyset)?;
    let ca = match &a.ca {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| io("read", p, e))?;
            Some(
                x509::certs_from_pem(&text)
                    .map_err(MessageError::from)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Usage(format!("{} holds no certificate", p.display())))?,
            )
        }
        None => None,
    };
    let crl = match &a.crl {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| io("read", p, e))?;
            Some(match std::str::from_utf8(&bytes) {
                Ok(t) if t.contains("-----BEGIN") => {
                    x509::crl_from_pem(t).map_err(MessageError::from)?
                }
                _ => x509::crl_from_der(&bytes).map_err(MessageError::from)?,
            })
        }
        None => None,
    };
    if ctx.json() && a.output.is_none() {
        return Err(Error::Usage(
            "with --json, pass -o OUTPUT for the content (standard output carries the JSON)".into(),
        ));
    }
    let input = read_input(a.input.as_deref(), a.output.as_deref())?;
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let (given_ca, warn) = (ca.clone(), crl.is_none());
    let done = message::read(
        ctx.module()?,
        &input,
        ReadOptions {
            keyset: &record,
            ca,
            crl,
            password: &password,
            policy,
        },
    )?;
    let signer = (done.signer.as_str(), done.signer_serial.as_str());
    crate::revocation::check_signer(&ctx.home()?, given_ca.as_ref(), &record, signer, warn)?;
    let signed_at = done
        .signed_at
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    let when = signed_at
        .clone()
        .unwrap_or_else(|| "(no signing time)".into());
    let expired = done
        .signer_expired
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    if ctx.json() {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            signer: &'a str,
            signer_serial: &'a str,
            signed_at: Option<&'a str>,
            signer_certificate_expired: Option<&'a str>,
            opened_with: &'a str,
            archived_key: bool,
            bytes: usize,
        }
        write_output(a.output.as_ref(), &done.content)?;
        print_json(&Out {
            signer: &done.signer,
            signer_serial: &done.signer_serial.to_lowercase(),
            signed_at: signed_at.as_deref(),
            signer_certificate_expired: expired.as_deref(),
            opened_with: &done.opened_with.to_lowercase(),
            archived_key: done.archived_key,
            bytes: done.content.len(),
        });
        return Ok(());
    }
    write_output(a.output.as_ref(), &done.content)?;
    super::output::note!(
        "good signature from {} (certificate {}), signed {when}; opened with {} encryption key {}",
        done.signer,
        done.signer_serial,
        if done.archived_key {
            "ARCHIVED"
        } else {
            "current"
        },
        done.opened_with
    );
    if let Some(expired) = expired {
        super::output::note!(
            "note: the signer's certificate has expired since ({expired}); the signature was checked at the signing time the signer states"
        );
    }
    Ok(())
}
