//! Update bundles: one gzip-compressed tar file (`.tgu`) holding `manifest.json` first, then
//! `manifest.sig` when signed, then the payload files the manifest lists (`bin/trunkguard`,
//! `share/...`). Beside it, `FILE.sha256` (the `sha256sum` line of the whole file) lets the box
//! check the download before it reads a byte of the archive.
//!
//! - [`make`]: `trunkguard-update bundle`.
//! - [`read`]: the checks on the box (checksum, manifest, signature, every entry) and the
//!   unpacking into a slot's staging directory.

pub mod make;
pub mod read;

use std::io::{self, Read, Write};
use std::path::Path;

use ring::digest::{Context, SHA256};

/// `hasher` over everything written through it.
pub(crate) struct HashingWriter<W> {
    pub inner: W,
    pub hash: Context,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hash: Context::new(&SHA256), written: 0 }
    }

    pub fn finish_hex(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hash.finish().as_ref()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The sha256 (hex) and size of everything `reader` yields.
pub(crate) fn sha256_of(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut w)?;
    let (_, hex, n) = w.finish_hex();
    Ok((hex, n))
}

/// The sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let f = std::fs::File::open(path)?;
    sha256_of(io::BufReader::new(f)).map(|(h, _)| h)
}
