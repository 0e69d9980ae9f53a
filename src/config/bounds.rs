//! The bounds the runtime can hold: the largest configuration file, secret file, prompt file,
//! string and list it accepts, and a reader that never reads past its limit (a `token_file`
//! naming `/dev/zero` costs a few kilobytes, not all memory).

use std::io::Read;
use std::path::Path;

/// The configuration file itself.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// A password or token file (`password_file`, `token_file`).
pub const MAX_SECRET_BYTES: u64 = 16 * 1024;
/// A prompt WAV: 60 s of 8 kHz 16-bit mono is 960 000 bytes, plus headers.
pub const MAX_PROMPT_BYTES: u64 = 2 * 1024 * 1024;
/// A PEM file (certificate, key, CA bundle).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Any string value unless its field has its own bound.
pub const MAX_STRING: usize = 4096;
/// OpenAI Realtime `instructions` (a system prompt).
pub const MAX_INSTRUCTIONS: usize = 64 * 1024;
/// Any array or table (listen addresses, `inbound_from`, carriers, headers).
pub const MAX_ENTRIES: usize = 1024;
/// `user_agent`: sent in every SIP message.
pub const MAX_USER_AGENT: usize = 256;

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {max} bytes")]
    TooLarge { max: u64 },
}

/// Reads at most `max` bytes of `path`; a longer file (or an endless device) is refused after
/// reading `max + 1` bytes.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { max });
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_limited_string(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_limited(path, max)?;
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"))
    })
}
