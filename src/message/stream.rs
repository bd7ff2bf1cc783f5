//! Streaming building blocks for messages of any size in bounded memory.
//!
//! Writing: [`OctetChunks`] (a BER constructed OCTET STRING, indefinite length, in
//! [`CHUNK`]-byte pieces, what `openssl cms -stream` writes), [`CbcWriter`] (AES-CBC with
//! PKCS#7 padding, block by block), [`Base64Lines`] (64-column base64 with CRLF, as
//! S/MIME bodies are written) and [`Sha256Writer`] (hashes what passes through).
//!
//! Reading: [`BerReader`], a small streaming BER reader for the outer layers of a CMS
//! message (the headers of the SEQUENCEs, the small elements whole, the big OCTET STRING
//! piece by piece, definite or indefinite lengths); the small inner structures it returns
//! whole are decoded with `der` (through [`crate::pki::cms`]). [`OctetsReader`] reads the
//! content of a (possibly constructed) OCTET STRING as a byte stream, [`CbcReader`] decrypts
//! one, [`Base64Reader`] decodes a base64 body.

use std::io::{self, BufRead, Read, Write};

use aes::cipher::consts::U16;
use aes::cipher::inout::InOutBuf;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64ct::{Base64, Encoding};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The size of one OCTET STRING piece and of the I/O buffers.
pub const CHUNK: usize = 64 * 1024;

/// The largest small element (certificates, recipient infos, signer infos) read whole.
pub const MAX_ELEMENT: usize = 4 * 1024 * 1024;

/// Nesting limit for indefinite-length elements and constructed strings.
const MAX_DEPTH: usize = 32;

fn corrupted(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the message ends inside an ASN.1 element",
    )
}

/// Appends a DER length.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A DER TLV with a one-byte tag.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A DER SET OF: the elements sorted by their encodings (X.690 11.6), so the same
/// elements always give the same bytes.
pub fn set_of(tag: u8, mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    elements.dedup();
    tlv(tag, &elements.concat())
}

// ---------------------------------------------------------------------------------------
// Writers

/// Writes what it is given as the primitive pieces (`04 len bytes`) of a constructed
/// OCTET STRING; the caller writes the constructed header and the end-of-contents.
pub struct OctetChunks<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> OctetChunks<W> {
    /// Pieces go to `out`.
    pub fn new(out: W) -> Self {
        OctetChunks {
            out,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut head = vec![0x04];
        push_len(&mut head, self.buf.len());
        self.out.write_all(&head)?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last piece and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for OctetChunks<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// AES-CBC encryption with PKCS#7 padding as a writer.
pub struct CbcWriter<W: Write> {
    out: W,
    cipher: cbc::Encryptor<aes::Aes256>,
    buf: Zeroizing<Vec<u8>>,
}

impl<W: Write> CbcWriter<W> {
    /// AES-256-CBC under `key` and `iv`.
    pub fn new(out: W, key: &[u8; 32], iv: &[u8; 16]) -> Self {
        CbcWriter {
            out,
            cipher: cbc::Encryptor::<aes::Aes256>::new(key.into(), iv.into()),
            buf: Zeroizing::new(Vec::with_capacity(CHUNK + 16)),
        }
    }

    fn encrypt_whole_blocks(&mut self) -> io::Result<()> {
        let whole = self.buf.len() / 16 * 16;
        if whole == 0 {
            return Ok(());
        }
        let (blocks, _) = InOutBuf::from(&mut self.buf[..whole]).into_chunks::<U16>();
        self.cipher.encrypt_blocks_inout_mut(blocks);
        self.out.write_all(&self.buf[..whole])?;
        self.buf.drain(..whole);
        Ok(())
    }

    /// Pads, encrypts the last block and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let pad = 16 - self.buf.len() % 16;
        self.buf.extend(std::iter::repeat_n(pad as u8, pad));
        self.encrypt_whole_blocks()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for CbcWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.encrypt_whole_blocks()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Base64 in 64-column lines ending in CRLF.
pub struct Base64Lines<W: Write> {
    out: W,
    buf: Vec<u8>,
    text: Vec<u8>,
}

/// 48 bytes make one 64-column line.
const LINE_BYTES: usize = 48;

impl<W: Write> Base64Lines<W> {
    /// Lines go to `out`.
    pub fn new(out: W) -> Self {
        Base64Lines {
            out,
            buf: Vec::with_capacity(CHUNK),
            text: Vec::with_capacity(CHUNK / LINE_BYTES * 66 + 70),
        }
    }

    fn emit(&mut self, all: bool) -> io::Result<()> {
        let take = if all {
            self.buf.len()
        } else {
            self.buf.len() / LINE_BYTES * LINE_BYTES
        };
        self.text.clear();
        let mut encoded = [0u8; 64];
        for line in self.buf[..take].chunks(LINE_BYTES) {
            let e = Base64::encode(line, &mut encoded)
                .map_err(|_| io::Error::other("base64 encoding failed"))?;
            self.text.extend_from_slice(e.as_bytes());
            self.text.extend_from_slice(b"\r\n");
        }
        self.out.write_all(&self.text)?;
        self.buf.drain(..take);
        Ok(())
    }

    /// Writes the last line and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Base64Lines<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.emit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Hashes (SHA-256) everything written through it.
pub struct Sha256Writer<W: Write> {
    out: W,
    hash: Sha256,
}

impl<W: Write> Sha256Writer<W> {
    /// Passes through to `out`.
    pub fn new(out: W) -> Self {
        Sha256Writer {
            out,
            hash: Sha256::new(),
        }
    }

    /// The digest and the writer.
    pub fn finish(self) -> ([u8; 32], W) {
        (self.hash.finalize().into(), self.out)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        self.hash.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

// ---------------------------------------------------------------------------------------
// Readers

/// One BER header: the tag (one byte: CMS uses no high tag numbers in its outer layers)
/// and the length (`None`: indefinite).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The identifier octet.
    pub tag: u8,
    /// The length, `None` for indefinite.
    pub len: Option<u64>,
}

impl Header {
    /// Whether the element is constructed.
    pub fn constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }
}

/// A streaming BER reader over the outer layers of a CMS message.
pub struct BerReader<R: Read> {
    inner: R,
    peeked: Option<Header>,
    /// The raw bytes of the last header read, for [`BerReader::element`].
    raw_header: Vec<u8>,
}

impl<R: Read> BerReader<R> {
    /// Reads from `inner`.
    pub fn new(inner: R) -> Self {
        BerReader {
            inner,
            peeked: None,
            raw_header: Vec::new(),
        }
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.inner.read_exact(&mut b).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => truncated(),
            _ => e,
        })?;
        self.raw_header.push(b[0]);
        Ok(b[0])
    }

    /// The next header, without consuming it.
    pub fn peek(&mut self) -> io::Result<Header> {
        if let Some(h) = self.peeked {
            return Ok(h);
        }
        let h = self.read_header()?;
        self.peeked = Some(h);
        Ok(h)
    }

    /// Whether the input ends here (no more bytes).
    pub fn at_end(&mut self) -> io::Result<bool> {
        if self.peeked.is_some() {
            return Ok(false);
        }
        let mut b = [0u8];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(true),
                Ok(_) => {
                    self.raw_header.clear();
                    self.raw_header.push(b[0]);
                    let h = self.header_after(b[0])?;
                    self.peeked = Some(h);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next header, consumed.
    pub fn header(&mut self) -> io::Result<Header> {
        match self.peeked.take() {
            Some(h) => Ok(h),
            None => self.read_header(),
        }
    }

    fn read_header(&mut self) -> io::Result<Header> {
        self.raw_header.clear();
        let first = self.byte()?;
        self.header_after(first)
    }

    fn header_after(&mut self, tag: u8) -> io::Result<Header> {
        if tag & 0x1f == 0x1f {
            return Err(corrupted("an unexpected high-number ASN.1 tag"));
        }
        let l = self.byte()?;
        let len = match l {
            0x80 => None,
            0..=0x7f => Some(u64::from(l)),
            0xff => return Err(corrupted("an invalid ASN.1 length")),
            _ => {
                let n = usize::from(l & 0x7f);
                if n > 8 {
                    return Err(corrupted("an ASN.1 length too large"));
                }
                let mut v = 0u64;
                for _ in 0..n {
                    v = (v << 8) | u64::from(self.byte()?);
                }
                Some(v)
            }
        };
        if len.is_none() && tag & 0x20 == 0 {
            return Err(corrupted("indefinite length on a primitive ASN.1 element"));
        }
        Ok(Header { tag, len })
    }

    /// Consumes a header that must have `tag`.
    pub fn expect(&mut self, tag: u8, what: &str) -> io::Result<Header> {
        let h = self.header()?;
        if h.tag != tag {
            return Err(corrupted(format!(
                "{what}: expected tag {tag:#04x}, found {:#04x}",
                h.tag
            )));
        }
        Ok(h)
    }

    /// Consumes an end-of-contents (`00 00`) when the element `h` had an indefinite length.
    pub fn end_of(&mut self, h: Header, what: &str) -> io::Result<()> {
        if h.len.is_none() {
            let eoc = self.header()?;
            if eoc
                != (Header {
                    tag: 0,
                    len: Some(0),
                })
            {
                return Err(corrupted(format!("{what} does not end where it should")));
            }
        }
        Ok(())
    }

    /// The next element whole (header included, lengths as written, at most `max` bytes).
    pub fn element(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let h = self.header()?;
        let mut out = std::mem::take(&mut self.raw_header);
        self.element_body(h, &mut out, max, 0)?;
        Ok(out)
    }

    fn element_body(
        &mut self,
        h: Header,
        out: &mut Vec<u8>,
        max: usize,
        depth: usize,
    ) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(corrupted("ASN.1 nested too deeply"));
        }
        let too_big = || {
            corrupted(format!(
                "an ASN.1 element is larger than {} MiB where a small one belongs",
                max >> 20
            ))
        };
        match h.len {
            Some(len) => {
                let len = usize::try_from(len).map_err(|_| too_big())?;
                if out.len() + len > max {
                    return Err(too_big());
                }
                let start = out.len();
                out.resize(start + len, 0);
                self.inner
                    .read_exact(&mut out[start..])
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => truncated(),
                        _ => e,
                    })
            }
            None => loop {
                let child = self.read_header()?;
                out.extend_from_slice(&self.raw_header);
                if child
                    == (Header {
                        tag: 0,
                        len: Some(0),
                    })
                {
                    return Ok(());
                }
                if out.len() > max {
                    return Err(too_big());
                }
                self.element_body(child, out, max, depth + 1)?;
            },
        }
    }

    /// Skips the next element.
    pub fn skip(&mut self) -> io::Result<()> {
        self.element(MAX_ELEMENT).map(drop)
    }

    /// The content of the OCTET STRING (primitive or constructed, any tag) whose header
    /// `h` was just read, as a stream.
    pub fn octets(&mut self, h: Header) -> OctetsReader<'_, R> {
        OctetsReader {
            ber: self,
            stack: vec![h.len.map(Remaining::Bytes).unwrap_or(Remaining::Indefinite)],
            primitive: !h.constructed(),
            left: 0,
            started: false,
        }
    }

    /// The reader inside.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[derive(Clone, Copy, Debug)]
enum Remaining {
    Bytes(u64),
    Indefinite,
}

/// The content octets of a primitive or constructed OCTET STRING as a [`Read`].
pub struct OctetsReader<'b, R: Read> {
    ber: &'b mut BerReader<R>,
    /// For each open constructed level: the bytes left in it (definite) or indefinite.
    stack: Vec<Remaining>,
    primitive: bool,
    /// Bytes left in the current primitive piece.
    left: u64,
    started: bool,
}

impl<R: Read> OctetsReader<'_, R> {
    fn consume(&mut self, n: u64) -> io::Result<()> {
        for r in self.stack.iter_mut() {
            if let Remaining::Bytes(b) = r {
                *b = b
                    .checked_sub(n)
                    .ok_or_else(|| corrupted("an OCTET STRING piece overruns its string"))?;
            }
        }
        Ok(())
    }

    /// Moves to the next primitive piece; `false` at the end of the string.
    fn next_piece(&mut self) -> io::Result<bool> {
        if self.primitive {
            if self.started {
                return Ok(false);
            }
            self.started = true;
            self.left = match self.stack.pop() {
                Some(Remaining::Bytes(b)) => b,
                _ => return Err(corrupted("a primitive OCTET STRING without a length")),
            };
            return Ok(true);
        }
        loop {
            match self.stack.last() {
                None => return Ok(false),
                Some(Remaining::Bytes(0)) => {
                    self.stack.pop();
                    continue;
                }
                _ => {}
            }
            let h = self.ber.header()?;
            let head_len = self.ber.raw_header.len() as u64;
            self.consume(head_len)?;
            match (h.tag, h.len) {
                (0x00, Some(0)) => match self.stack.pop() {
                    Some(Remaining::Indefinite) => continue,
                    _ => return Err(corrupted("an end-of-contents inside a definite length")),
                },
                (0x04, Some(len)) => {
                    self.left = len;
                    self.consume(len)?;
                    return Ok(true);
                }
                (0x24, len) => {
                    if self.stack.len() > MAX_DEPTH {
                        return Err(corrupted("OCTET STRING pieces nested too deeply"));
                    }
                    self.stack
                        .push(len.map(Remaining::Bytes).unwrap_or(Remaining::Indefinite));
                }
                (tag, _) => {
                    return Err(corrupted(format!(
                        "a piece of an OCTET STRING has tag {tag:#04x}"
                    )))
                }
            }
        }
    }
}

impl<R: Read> Read for OctetsReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            if !self.next_piece()? {
                return Ok(0);
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.ber.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(truncated());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// AES-CBC decryption (128, 192 or 256-bit key) with PKCS#7 padding as a reader.
pub struct CbcReader<R: Read> {
    inner: R,
    cipher: CbcDecryptor,
    /// Decrypted bytes not yet handed out, the last block held back until the end.
    plain: Zeroizing<Vec<u8>>,
    /// Ciphertext bytes read but not yet a whole block.
    pending: Vec<u8>,
    read_buf: Vec<u8>,
    pos: usize,
    done: bool,
}

enum CbcDecryptor {
    Aes128(cbc::Decryptor<aes::Aes128>),
    Aes192(cbc::Decryptor<aes::Aes192>),
    Aes256(cbc::Decryptor<aes::Aes256>),
}

/// The content does not decrypt (bad padding or length).
pub const BAD_PADDING: &str = "the content does not decrypt with this key (bad padding)";

impl<R: Read> CbcReader<R> {
    /// Decrypts `inner` with `key` (16, 24 or 32 bytes) and `iv`; `None` for another key size.
    pub fn new(inner: R, key: &[u8], iv: &[u8]) -> Option<Self> {
        let cipher = match key.len() {
            16 => CbcDecryptor::Aes128(cbc::Decryptor::new_from_slices(key, iv).ok()?),
            24 => CbcDecryptor::Aes192(cbc::Decryptor::new_from_slices(key, iv).ok()?),
            32 => CbcDecryptor::Aes256(cbc::Decryptor::new_from_slices(key, iv).ok()?),
            _ => return None,
        };
        Some(CbcReader {
            inner,
            cipher,
            plain: Zeroizing::new(Vec::with_capacity(CHUNK + 32)),
            pending: Vec::with_capacity(CHUNK + 16),
            read_buf: vec![0u8; CHUNK],
            pos: 0,
            done: false,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        self.plain.drain(..self.pos);
        self.pos = 0;
        let n = loop {
            match self.inner.read(&mut self.read_buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.done = true;
            if !self.pending.is_empty() {
                return Err(corrupted(BAD_PADDING));
            }
            let pad = match self.plain.last() {
                Some(&p) if (1..=16).contains(&p) && self.plain.len() >= usize::from(p) => {
                    usize::from(p)
                }
                _ => return Err(corrupted(BAD_PADDING)),
            };
            let keep = self.plain.len() - pad;
            if self.plain[keep..].iter().any(|b| usize::from(*b) != pad) {
                return Err(corrupted(BAD_PADDING));
            }
            self.plain.truncate(keep);
            return Ok(());
        }
        self.pending.extend_from_slice(&self.read_buf[..n]);
        let whole = self.pending.len() / 16 * 16;
        let start = self.plain.len();
        self.plain.extend_from_slice(&self.pending[..whole]);
        self.pending.drain(..whole);
        let (blocks, _) = InOutBuf::from(&mut self.plain[start..]).into_chunks::<U16>();
        match &mut self.cipher {
            CbcDecryptor::Aes128(c) => c.decrypt_blocks_inout_mut(blocks),
            CbcDecryptor::Aes192(c) => c.decrypt_blocks_inout_mut(blocks),
            CbcDecryptor::Aes256(c) => c.decrypt_blocks_inout_mut(blocks),
        }
        Ok(())
    }

    /// Bytes that may be handed out now (all but the last block until the end).
    fn available(&self) -> usize {
        if self.done {
            self.plain.len() - self.pos
        } else {
            self.plain.len().saturating_sub(16).saturating_sub(self.pos)
        }
    }
}

impl<R: Read> Read for CbcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.available() == 0 && !self.done {
            self.fill()?;
        }
        let n = self.available().min(buf.len());
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decodes a base64 body (whitespace ignored) as a reader; stops at the end of the input or
/// at a `-` (a PEM end line).
pub struct Base64Reader<R: BufRead> {
    inner: R,
    /// Base64 characters not yet decoded (fewer than 4 between fills).
    text: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
    what: &'static str,
}

impl<R: BufRead> Base64Reader<R> {
    /// `what` names the body in errors.
    pub fn new(inner: R, what: &'static str) -> Self {
        Base64Reader {
            inner,
            text: Vec::with_capacity(CHUNK),
            out: Vec::with_capacity(CHUNK),
            pos: 0,
            done: false,
            what,
        }
    }

    fn bad(&self) -> io::Error {
        corrupted(format!(
            "the {} is not valid base64; the message was damaged, get it again",
            self.what
        ))
    }

    fn fill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        while !self.done && self.text.len() < CHUNK {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                self.done = true;
                break;
            }
            let mut used = 0;
            for &b in buf {
                used += 1;
                if b == b'-' {
                    self.done = true;
                    break;
                }
                if !b.is_ascii_whitespace() {
                    self.text.push(b);
                }
            }
            self.inner.consume(used);
        }
        let take = if self.done {
            self.text.len()
        } else {
            self.text.len() / 4 * 4
        };
        if take == 0 {
            return Ok(());
        }
        // Padding only at the very end.
        let chunk = std::str::from_utf8(&self.text[..take]).map_err(|_| self.bad())?;
        let decoded = if self.done {
            Base64::decode_vec(chunk).or_else(|_| base64ct::Base64Unpadded::decode_vec(chunk))
        } else {
            Base64::decode_vec(chunk)
        };
        self.out = decoded.map_err(|_| self.bad())?;
        self.text.drain(..take);
        Ok(())
    }
}

impl<R: BufRead> Read for Base64Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done && self.text.is_empty() {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = (self.out.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_ber(content: &[u8], nested: bool) -> Vec<u8> {
        let _ = nested;
        let mut out = vec![0x24, 0x80];
        let chunks = OctetChunks::new(&mut out);
        let mut w = chunks;
        w.write_all(content).unwrap();
        w.finish().unwrap();
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn octet_chunks_read_back_through_the_streaming_reader() {
        for size in [0usize, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17] {
            let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let ber = roundtrip_ber(&content, false);
            let mut r = BerReader::new(ber.as_slice());
            let h = r.header().unwrap();
            let mut got = Vec::new();
            r.octets(h).read_to_end(&mut got).unwrap();
            assert_eq!(got, content, "size {size}");
            assert!(
                r.at_end().unwrap(),
                "the string's end-of-contents is consumed with it"
            );
        }
        // Definite constructed, nested, and primitive.
        let ber = [0x24, 0x0a, 0x04, 0x02, 1, 2, 0x24, 0x04, 0x04, 0x02, 3, 4];
        let mut r = BerReader::new(&ber[..]);
        let h = r.header().unwrap();
        let mut got = Vec::new();
        r.octets(h).read_to_end(&mut got).unwrap();
        assert_eq!(got, [1, 2, 3, 4]);
        let ber = [0x80, 0x03, 9, 8, 7];
        let mut r = BerReader::new(&ber[..]);
        let h = r.header().unwrap();
        let mut got = Vec::new();
        r.octets(h).read_to_end(&mut got).unwrap();
        assert_eq!(got, [9, 8, 7]);
    }

    #[test]
    fn cbc_and_base64_stream_both_ways() {
        let key = [7u8; 32];
        let iv = [9u8; 16];
        for size in [0usize, 15, 16, 17, CHUNK + 5, 2 * CHUNK] {
            let content: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let mut w = CbcWriter::new(Vec::new(), &key, &iv);
            for piece in content.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let ct = w.finish().unwrap();
            let oneshot = cbc::Encryptor::<aes::Aes256>::new((&key).into(), (&iv).into())
                .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(&content);
            assert_eq!(ct, oneshot, "size {size}");
            let mut got = Vec::new();
            CbcReader::new(ct.as_slice(), &key, &iv)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, content);

            let mut b = Base64Lines::new(Vec::new());
            b.write_all(&content).unwrap();
            let text = b.finish().unwrap();
            assert!(text.split(|c| *c == b'\n').all(|l| l.len() <= 65));
            let mut got = Vec::new();
            Base64Reader::new(text.as_slice(), "body")
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, content);
        }
        let mut got = Vec::new();
        let e = CbcReader::new(&[1u8; 31][..], &key, &iv)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap_err();
        assert!(e.to_string().contains("bad padding"), "{e}");
    }

    #[test]
    fn elements_are_read_whole_and_bounded() {
        let ber = [
            0x30, 0x80, 0x02, 0x01, 0x05, 0x30, 0x80, 0, 0, 0, 0, 0x31, 0x00,
        ];
        let mut r = BerReader::new(&ber[..]);
        assert_eq!(r.element(64).unwrap(), ber[..11]);
        assert_eq!(r.element(64).unwrap(), [0x31, 0x00]);
        assert!(r.at_end().unwrap());
        let big = [0x30, 0x82, 0x10, 0x00];
        let e = BerReader::new(&big[..]).element(100).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let cut = [0x30, 0x05, 0x02];
        let e = BerReader::new(&cut[..]).element(100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn set_of_is_in_der_order() {
        let a = set_of(
            0x31,
            vec![vec![0x30, 2, 9, 9], vec![0x30, 1, 1], vec![0x30, 2, 1, 1]],
        );
        assert_eq!(a, [0x31, 11, 0x30, 1, 1, 0x30, 2, 1, 1, 0x30, 2, 9, 9]);
    }
}
