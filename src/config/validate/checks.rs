//! Small reusable value checks shared by the section validators.

use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;

use super::Checker;
use crate::config::bounds::MAX_PEM_BYTES;
use crate::config::error::FieldPath;

/// A value that must be present: records "is required" when missing.
pub(crate) fn required<T>(value: Option<T>, path: &FieldPath, c: &mut Checker) -> Option<T> {
    if value.is_none() {
        c.error(path, "is required");
    }
    value
}

/// Records an error when `value < min`.
pub(crate) fn at_least<T: PartialOrd + std::fmt::Display>(
    value: T,
    min: T,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<T> {
    if value < min {
        c.error(path, format!("must be at least {min} (got {value})"));
        return None;
    }
    Some(value)
}

/// Records an error unless `lo <= value <= hi` ("must be at least" / "must be at most").
pub(crate) fn between<T: PartialOrd + std::fmt::Display>(
    value: T,
    (lo, hi): (T, T),
    path: &FieldPath,
    c: &mut Checker,
) -> Option<T> {
    let value = at_least(value, lo, path, c)?;
    if value > hi {
        c.error(path, format!("must be at most {hi} (got {value})"));
        return None;
    }
    Some(value)
}

/// A file that must exist, be readable now and be a regular file of at most `max` bytes
/// (TLS material, CA bundles): what the runtime later reads is bounded.
pub(crate) fn readable_file(value: &str, path: &FieldPath, c: &mut Checker) -> Option<PathBuf> {
    bounded_file(value, MAX_PEM_BYTES, path, c)
}

/// [`readable_file`] with its own size limit.
pub(crate) fn bounded_file(
    value: &str,
    max: u64,
    path: &FieldPath,
    c: &mut Checker,
) -> Option<PathBuf> {
    if value.is_empty() {
        c.error(path, "must not be empty");
        return None;
    }
    let file = PathBuf::from(value);
    if file.is_dir() {
        c.error(path, format!("{value:?}: is a directory, expected a file"));
        return None;
    }
    let meta = match File::open(&file).and_then(|f| f.metadata()) {
        Ok(meta) => meta,
        Err(e) => {
            c.error(path, format!("{value:?}: cannot open: {e}"));
            return None;
        }
    };
    if !meta.is_file() {
        c.error(path, format!("{value:?}: not a regular file"));
        return None;
    }
    if meta.len() > max {
        c.error(path, format!("{value:?}: {} bytes, larger than {max}", meta.len()));
        return None;
    }
    Some(file)
}

/// A host name or IP literal (`example.com`, `192.0.2.1`, `[2001:db8::1]`).
pub(crate) fn host(value: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let bare = value.strip_prefix('[').and_then(|v| v.strip_suffix(']'));
    let is_ip = bare.unwrap_or(value).parse::<IpAddr>().is_ok();
    let is_name = !value.is_empty()
        && value.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
    if is_ip || is_name {
        return Some(value.to_owned());
    }
    c.error(path, format!("{value:?}: expected a host name or IP address"));
    None
}

/// A SIP user part: non-empty, no whitespace, control characters or URI delimiters.
pub(crate) fn user_part(value: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    let bad = |ch: char| ch.is_whitespace() || ch.is_control() || "@:<>\";,?".contains(ch);
    if value.is_empty() {
        c.error(path, "must not be empty");
        return None;
    }
    if value.chars().any(bad) {
        c.error(path, format!("{value:?}: must not contain whitespace or any of @:<>\";,?"));
        return None;
    }
    Some(value.to_owned())
}

/// A header value: non-empty, single line, no control characters.
pub(crate) fn header_text(value: &str, path: &FieldPath, c: &mut Checker) -> Option<String> {
    if value.trim().is_empty() {
        c.error(path, "must not be empty");
        return None;
    }
    if value.chars().any(char::is_control) {
        c.error(path, "must not contain control characters (line breaks, tabs)");
        return None;
    }
    Some(value.to_owned())
}
