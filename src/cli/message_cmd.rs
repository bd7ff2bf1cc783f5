//! `keyward send` and `keyward read`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::args::{ReadArgs, SendArgs};
use super::output::{note, print_json, refuse_same_file};
use super::Context;
use crate::error::Error;
use crate::keyset::registry::{is_special_file, open_in_place, KeysetState};
use crate::keyset::{KeysetError, KeysetRecord, Registry};
use crate::message::send::current_encryption_cert;
use crate::message::{self, MessageError, ReadOptions, SendOptions};
use crate::pki::cms::KeyTransport;
use crate::pki::x509;
use crate::token::Module;

fn io(action: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::File(crate::error::IoError::new(action, path, e))
}

/// Opens the input file (or standard input), refusing an output that is the input itself.
fn open_input(input: Option<&Path>, output: Option<&Path>) -> Result<Box<dyn BufRead>, Error> {
    if let (Some(i), Some(o)) = (input, output) {
        refuse_same_file(i, o)?;
    }
    Ok(match input {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| io("read", p, e))?;
            Box::new(BufReader::with_capacity(IO_BUFFER, f))
        }
        None => Box::new(BufReader::with_capacity(IO_BUFFER, std::io::stdin())),
    })
}

const IO_BUFFER: usize = 64 * 1024;

/// The most `read` holds in memory for standard output: the content goes out only once
/// the signature checks, so it waits somewhere; larger content needs `-o FILE`.
const MAX_STDOUT_CONTENT: usize = 32 * 1024 * 1024;

/// Where a command's output goes: a temporary file beside the target, renamed over it when
/// the command succeeds and removed when it fails (not fsynced: the output can be made
/// again), or standard output.
enum Output {
    File {
        tmp: BufWriter<tempfile::NamedTempFile>,
        path: PathBuf,
    },
    Stdout(std::io::StdoutLock<'static>),
    /// A device or pipe named by `-o` (`/dev/null`, a FIFO): written in place, never
    /// replaced by a rename.
    Device {
        file: BufWriter<std::fs::File>,
        path: PathBuf,
    },
    /// Held back until the command succeeds, then written to standard output or the device.
    Held(CappedBuffer, Option<PathBuf>),
}

impl Output {
    fn to(path: Option<&PathBuf>, hold_stdout: bool) -> Result<Output, Error> {
        Ok(match path {
            Some(p) if is_special_file(p) && hold_stdout => {
                Output::Held(CappedBuffer::default(), Some(p.clone()))
            }
            Some(p) if is_special_file(p) => Output::Device {
                file: BufWriter::with_capacity(
                    IO_BUFFER,
                    open_in_place(p).map_err(|e| io("write", p, e))?,
                ),
                path: p.clone(),
            },
            Some(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let tmp = tempfile::Builder::new()
                    .prefix(".keyward-")
                    .suffix(".part")
                    .tempfile_in(dir)
                    .map_err(|e| io("write", p, e))?;
                Output::File {
                    tmp: BufWriter::with_capacity(IO_BUFFER, tmp),
                    path: p.clone(),
                }
            }
            None if hold_stdout => Output::Held(CappedBuffer::default(), None),
            None => Output::Stdout(std::io::stdout().lock()),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::File { tmp, .. } => tmp,
            Output::Stdout(s) => s,
            Output::Device { file, .. } => file,
            Output::Held(b, _) => b,
        }
    }

    /// Makes the output final: renames the file into place, or writes what was held.
    fn commit(self) -> Result<(), Error> {
        match self {
            Output::File { tmp, path } => {
                let tmp = tmp
                    .into_inner()
                    .map_err(|e| io("write", &path, e.into_error()))?;
                replace(tmp, &path)
            }
            Output::Stdout(mut s) => s
                .flush()
                .map_err(|e| io("write", Path::new("standard output"), e)),
            Output::Device { mut file, path } => file.flush().map_err(|e| io("write", &path, e)),
            Output::Held(b, None) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&b.0)
                    .and_then(|()| out.flush())
                    .map_err(|e| io("write", Path::new("standard output"), e))
            }
            Output::Held(b, Some(p)) => open_in_place(&p)
                .and_then(|mut f| f.write_all(&b.0).and_then(|()| f.flush()))
                .map_err(|e| io("write", &p, e)),
        }
    }
}

/// Puts the finished temporary file at `path`. Over an existing regular file the two are
/// exchanged (renameat2 RENAME_EXCHANGE) and the old one, now under the temporary name, is
/// removed: a plain rename over an existing file makes ext4 (`auto_da_alloc`) write the new
/// file's data out there and then — an fsync in all but name, seconds for a large message
/// when the disk is busy. Either way the name holds a whole file, the old or the new, at
/// every moment; where the exchange is not supported, a plain rename.
fn replace(tmp: tempfile::NamedTempFile, path: &Path) -> Result<(), Error> {
    let over_a_file = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if over_a_file {
        let exchanged = rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp.path(),
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        if exchanged.is_ok() {
            // The temporary name now holds the old file: closing removes it.
            return tmp.close().map_err(|e| io("write", path, e));
        }
    }
    tmp.persist(path)
        .map(drop)
        .map_err(|e| io("write", path, e.error))
}

/// A buffer that refuses more than [`MAX_STDOUT_CONTENT`].
#[derive(Default)]
struct CappedBuffer(zeroize::Zeroizing<Vec<u8>>);

impl Write for CappedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + data.len() > MAX_STDOUT_CONTENT {
            return Err(std::io::Error::other(format!(
                "the content is larger than {} MiB, which is as much as keyward holds back for standard output until the signature is checked; pass -o FILE",
                MAX_STDOUT_CONTENT >> 20
            )));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    if ctx.json() && a.output.is_none() {
        return Err(Error::Usage(
            "with --json, pass -o OUTPUT for the message (standard output carries the JSON)".into(),
        ));
    }
    let warnings = crate::revocation::check_recipients(&ctx.home()?, &registry, &recipients)?;
    let mut input = open_input(a.input.as_deref(), a.output.as_deref())?;
    if a.oaep {
        super::output::note!("{OAEP_WARNING}");
    }
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let file_name = a
        .input
        .as_deref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let (module_path, module_args) = ctx.module_choice()?;
    let mut out = Output::to(a.output.as_ref(), false)?;
    let written = message::send(
        move || {
            Module::load_with_args(&module_path, module_args.as_deref())
                .map_err(|e| MessageError::Keyset(e.into()))
        },
        &mut input,
        out.writer(),
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
            content_type: a.content_type.as_deref(),
            file_name: file_name.as_deref(),
        },
    )?;
    out.commit()?;
    for w in &warnings {
        note!("{w}");
    }
    if ctx.json() {
        print_json(&serde_json::json!({
            "keyset": record.name,
            "recipients": recipients.iter().map(|(who, _)| who).collect::<Vec<_>>(),
            "output": a.output.as_ref().map(|p| p.display().to_string()),
            "smime": a.smime,
            "bytes": written,
        }));
        return Ok(());
    }
    super::output::note!(
        "signed with keyset {:?} and encrypted to {} recipient(s) and yourself ({written} bytes)",
        record.name,
        recipients.len(),
    );
    Ok(())
}

/// Which clients cannot open a message whose key is wrapped with RSA-OAEP (tested in
/// tests/message_interop.rs).
pub const OAEP_WARNING: &str = "warning: --oaep: NSS (Thunderbird, cmsutil; 3.87 tested) and gpgsm (2.2 with gnupg-pkcs11-scd) cannot open RSA-OAEP messages, OpenSSL can; leave --oaep out for mail clients";

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
    if a.output.is_none() {
        let size = a
            .input
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        if size.is_some_and(|n| n > MAX_STDOUT_CONTENT as u64) {
            return Err(Error::Usage(format!(
                "the message is larger than {} MiB, as much as keyward holds back for standard output until the signature is checked; pass -o FILE",
                MAX_STDOUT_CONTENT >> 20
            )));
        }
    }
    let mut input = open_input(a.input.as_deref(), a.output.as_deref())?;
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let (given_ca, warn) = (ca.clone(), crl.is_none());
    let mut out = Output::to(a.output.as_ref(), true)?;
    let done = message::read(
        ctx.module()?,
        &mut input,
        out.writer(),
        a.mime,
        ReadOptions {
            keyset: &record,
            ca,
            crl,
            password: &password,
            policy,
        },
    )?;
    let signer = (done.signer.as_str(), done.signer_serial.as_str());
    // The kept CRL of the CA that issued the signer (across a CA rollover, not necessarily
    // the keyset's own CA).
    let issuer = given_ca.as_ref().unwrap_or(&done.issuer);
    let unchecked =
        crate::revocation::check_signer(&ctx.home()?, Some(issuer), &record, signer, warn)?;
    if let Some(w) = unchecked {
        note!("{w}");
    }
    out.commit()?;
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
            bytes: u64,
            content_type: Option<&'a str>,
        }
        print_json(&Out {
            signer: &done.signer,
            signer_serial: &done.signer_serial.to_lowercase(),
            signed_at: signed_at.as_deref(),
            signer_certificate_expired: expired.as_deref(),
            opened_with: &done.opened_with.to_lowercase(),
            archived_key: done.archived_key,
            bytes: done.bytes,
            content_type: done.content_type.as_deref(),
        });
        return Ok(());
    }
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
