//! The signed content as a MIME entity (RFC 8551 §3.1): what `send` wraps around the input
//! and what `read` takes off again.
//!
//! Sending: UTF-8 text becomes `text/plain; charset=utf-8`, anything else
//! `application/octet-stream` with the file's name; `--content-type` chooses. The body is
//! never base64-encoded: inside the signature it travels as `Content-Transfer-Encoding:
//! binary` (8bit for text that already is canonical CRLF text), which CMS carries as is.
//! Whether the input is text is decided on its first [`SNIFF`] bytes; a longer input is
//! sent as application/octet-stream unless `--content-type` says otherwise.
//!
//! Reading ([`BodyWriter`]): content that starts with a MIME header block with a
//! Content-Type is an entity; its body is written (base64 decoded, binary/7bit/8bit as is),
//! or the whole entity with `--mime`. Content without such a header (older keyward
//! messages, `openssl cms -sign` without `-text`) is written as it is.

use std::io::{self, Write};

use base64ct::{Base64, Encoding};

/// How much of the input decides between text and binary.
pub const SNIFF: usize = 1024 * 1024;

/// The longest header block looked for at the start of the content.
const MAX_HEADER: usize = 64 * 1024;

/// The MIME header block (ending in the empty line) for content whose first bytes are
/// `head`; `complete` when `head` is all of it.
pub fn header_for(
    head: &[u8],
    complete: bool,
    file_name: Option<&str>,
    content_type: Option<&str>,
) -> Result<String, String> {
    if let Some(ct) = content_type {
        let valid = ct.split(';').next().is_some_and(|t| {
            let mut parts = t.trim().splitn(2, '/');
            let token = |s: Option<&str>| {
                s.is_some_and(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                })
            };
            token(parts.next()) && token(parts.next())
        }) && !ct.contains(['\r', '\n']);
        if !valid {
            return Err(format!(
                "--content-type {ct:?} is not a MIME type; give one like text/plain; charset=utf-8 or application/pdf"
            ));
        }
        let mut h = format!("Content-Type: {ct}\r\n");
        if let Some(name) = file_name {
            h.push_str(&format!(
                "Content-Disposition: attachment; {}\r\n",
                filename_param(name)
            ));
        }
        h.push_str("Content-Transfer-Encoding: binary\r\n\r\n");
        return Ok(h);
    }
    if complete && std::str::from_utf8(head).is_ok() && !head.contains(&0) {
        let cte = if canonical_text(head) {
            "8bit"
        } else {
            "binary"
        };
        return Ok(format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        ));
    }
    let mut h = String::from("Content-Type: application/octet-stream");
    match file_name {
        Some(name) => {
            h.push_str(&format!("; {}\r\n", name_param("name", name)));
            h.push_str(&format!(
                "Content-Disposition: attachment; {}\r\n",
                filename_param(name)
            ));
        }
        None => h.push_str("\r\n"),
    }
    h.push_str("Content-Transfer-Encoding: binary\r\n\r\n");
    Ok(h)
}

/// Lines end in CRLF and are at most 998 bytes: what 8bit allows (RFC 2045 §2.8).
fn canonical_text(text: &[u8]) -> bool {
    let mut prev = 0u8;
    let mut line = 0usize;
    for &b in text {
        match b {
            b'\n' if prev != b'\r' => return false,
            b'\n' => line = 0,
            b'\r' => {}
            _ if prev == b'\r' => return false,
            _ => {
                line += 1;
                if line > 998 {
                    return false;
                }
            }
        }
        prev = b;
    }
    prev != b'\r'
}

fn filename_param(name: &str) -> String {
    name_param("filename", name)
}

/// `name="value"` for a printable ASCII name, RFC 2231 `name*=utf-8''…` otherwise.
fn name_param(param: &str, value: &str) -> String {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{param}=\"{escaped}\"")
    } else {
        let enc: String = value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("{param}*=utf-8''{enc}")
    }
}

/// What [`BodyWriter`] found at the start of the content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing yet (no content).
    Nothing,
    /// A MIME entity of this Content-Type.
    Entity(String),
    /// Content without MIME headers, written as is.
    Raw,
}

enum State {
    /// Collecting the first bytes to find the header block.
    Head(Vec<u8>),
    /// Writing as is.
    Plain,
    /// Decoding a base64 body.
    Base64(Vec<u8>),
}

/// Writes the body of the signed MIME entity (or all of it with `whole`) to `out`.
pub struct BodyWriter<W: Write> {
    out: W,
    whole: bool,
    state: State,
    found: Found,
    written: u64,
}

impl<W: Write> BodyWriter<W> {
    /// `whole`: keep the entity (`--mime`).
    pub fn new(out: W, whole: bool) -> Self {
        BodyWriter {
            out,
            whole,
            state: State::Head(Vec::new()),
            found: Found::Nothing,
            written: 0,
        }
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.written += data.len() as u64;
        self.out.write_all(data)
    }

    /// Decides on the collected head: `at_end` when there is no more content.
    fn decide(&mut self, head: Vec<u8>, at_end: bool) -> io::Result<()> {
        let split = header_end(&head);
        let Some((header_len, body_start)) = split else {
            if head.len() < MAX_HEADER && !at_end {
                self.state = State::Head(head);
                return Ok(());
            }
            self.found = if head.is_empty() {
                Found::Nothing
            } else {
                Found::Raw
            };
            self.state = State::Plain;
            return self.put(&head);
        };
        let headers = parse_headers(&head[..header_len]);
        let ct = headers
            .as_ref()
            .and_then(|h| h.iter().find(|(n, _)| n == "content-type"))
            .map(|(_, v)| v.clone());
        let (Some(headers), Some(ct)) = (headers, ct) else {
            self.found = Found::Raw;
            self.state = State::Plain;
            return self.put(&head);
        };
        self.found = Found::Entity(ct);
        if self.whole {
            self.state = State::Plain;
            return self.put(&head);
        }
        let cte = headers
            .iter()
            .find(|(n, _)| n == "content-transfer-encoding")
            .map(|(_, v)| v.to_ascii_lowercase());
        match cte.as_deref() {
            Some("base64") => {
                self.state = State::Base64(Vec::new());
                self.write_base64(&head[body_start..])
            }
            Some("quoted-printable") => {
                // Not decoded: the entity as it is, so nothing is lost.
                self.found = Found::Entity(format!(
                    "{} (quoted-printable, written whole)",
                    match &self.found {
                        Found::Entity(c) => c.clone(),
                        _ => String::new(),
                    }
                ));
                self.state = State::Plain;
                self.put(&head)
            }
            _ => {
                self.state = State::Plain;
                self.put(&head[body_start..])
            }
        }
    }

    fn write_base64(&mut self, data: &[u8]) -> io::Result<()> {
        let State::Base64(pending) = &mut self.state else {
            return Ok(());
        };
        pending.extend(data.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let take = pending.len() / 4 * 4;
        if take == 0 {
            return Ok(());
        }
        let text: Vec<u8> = pending.drain(..take).collect();
        let decoded = Base64::decode_vec(&String::from_utf8_lossy(&text)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the signed content's base64 body does not decode",
            )
        })?;
        self.put(&decoded)
    }

    /// Ends the content: what was found, the bytes written, and the writer.
    pub fn finish(mut self) -> io::Result<(Found, u64, W)> {
        if let State::Head(head) = std::mem::replace(&mut self.state, State::Plain) {
            self.decide(head, true)?;
        }
        if let State::Base64(pending) = &self.state {
            if !pending.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the signed content's base64 body is cut short",
                ));
            }
        }
        self.out.flush()?;
        Ok((self.found, self.written, self.out))
    }
}

impl<W: Write> Write for BodyWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.state {
            State::Head(head) => {
                head.extend_from_slice(data);
                let head = std::mem::take(head);
                self.decide(head, false)?;
            }
            State::Plain => self.put(data)?,
            State::Base64(_) => self.write_base64(data)?,
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `(end of the header lines, start of the body)` at the first empty line.
fn header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut pos = 0;
    while pos < bytes.len() {
        let nl = bytes[pos..].iter().position(|b| *b == b'\n')? + pos;
        let line = &bytes[pos..nl];
        if line.is_empty() || line == b"\r" {
            return Some((pos, nl + 1));
        }
        pos = nl + 1;
    }
    None
}

/// Header fields (names lower case, folded lines joined), or `None` if the block is not
/// MIME headers.
fn parse_headers(block: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(block).ok()?;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let (_, v) = out.last_mut()?;
            v.push(' ');
            v.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        out.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(content: &[u8], whole: bool, pieces: usize) -> (Found, Vec<u8>) {
        let mut w = BodyWriter::new(Vec::new(), whole);
        for p in content.chunks(pieces.max(1)) {
            w.write_all(p).unwrap();
        }
        let (found, n, out) = w.finish().unwrap();
        assert_eq!(n as usize, out.len());
        (found, out)
    }

    #[test]
    fn text_and_binary_get_their_types_and_come_back() {
        let h = header_for(b"Dear Bob,\r\nhello\r\n", true, Some("a.txt"), None).unwrap();
        assert!(
            h.starts_with("Content-Type: text/plain; charset=utf-8\r\n"),
            "{h}"
        );
        assert!(h.contains("8bit"), "{h}");
        let h = header_for(b"Dear Bob,\nhello\n", true, None, None).unwrap();
        assert!(h.contains("Content-Transfer-Encoding: binary"), "{h}");
        let h = header_for(&[0xff, 0, 1], true, Some("x \"y\".bin"), None).unwrap();
        assert!(
            h.contains("application/octet-stream; name=\"x \\\"y\\\".bin\""),
            "{h}"
        );
        assert!(h.contains("filename=\"x \\\"y\\\".bin\""), "{h}");
        let h = header_for(b"text", false, Some("brief-ü.txt"), None).unwrap();
        assert!(h.contains("filename*=utf-8''brief-%C3%BC.txt"), "{h}");
        let h = header_for(b"%PDF", true, None, Some("application/pdf")).unwrap();
        assert!(h.starts_with("Content-Type: application/pdf\r\n"), "{h}");
        assert!(header_for(b"", true, None, Some("pdf")).is_err());
        assert!(header_for(b"", true, None, Some("a/b\r\nX-Evil: 1")).is_err());

        for content in [&b"plain\nletter\n"[..], &[0u8, 1, 2, 255, 10, 13], b""] {
            let h = header_for(content, true, Some("f"), None).unwrap();
            let mut entity = h.clone().into_bytes();
            entity.extend_from_slice(content);
            for pieces in [1, 3, 1000] {
                let (found, out) = body(&entity, false, pieces);
                assert_eq!(out, content, "{h}");
                assert!(matches!(found, Found::Entity(_)), "{found:?}");
                assert_eq!(body(&entity, true, pieces).1, entity);
            }
        }
    }

    #[test]
    fn other_clients_content_reads_too() {
        let (found, out) = body(b"line one\r\nline two\r\n", false, 4);
        assert_eq!(
            (found, out.as_slice()),
            (Found::Raw, &b"line one\r\nline two\r\n"[..])
        );
        let b64 = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n";
        assert_eq!(body(b64, false, 5).1, b"hello");
        let (found, out) = body(b"", false, 1);
        assert_eq!((found, out.len()), (Found::Nothing, 0));
    }
}
