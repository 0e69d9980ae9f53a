//! Length bounds on every string, key, array and table of the file, checked on the parsed
//! document before the typed checks: a 50 MB `user_agent` or a list of a million addresses is
//! refused with its field named. Fields with their own bound are listed in [`string_limit`].

use super::Checker;
use crate::config::bounds::{MAX_ENTRIES, MAX_INSTRUCTIONS, MAX_STRING, MAX_USER_AGENT};
use crate::config::error::{FieldPath, Segment};

/// Checks every value of `table` (the whole document) and below.
pub(crate) fn check(table: &toml::Table, c: &mut Checker) {
    check_table(table, &FieldPath::root(), c);
}

fn check_table(table: &toml::Table, path: &FieldPath, c: &mut Checker) {
    if table.len() > MAX_ENTRIES {
        c.error(path, format!("has {} entries; at most {MAX_ENTRIES}", table.len()));
        return;
    }
    for (key, value) in table {
        if key.len() > MAX_STRING {
            c.error(path, format!("a key of {} bytes; at most {MAX_STRING}", key.len()));
            continue;
        }
        check_value(value, &path.key(key), c);
    }
}

fn check_value(value: &toml::Value, path: &FieldPath, c: &mut Checker) {
    match value {
        toml::Value::String(s) => {
            let max = string_limit(path);
            if s.len() > max {
                c.error(path, format!("is {} bytes long; at most {max}", s.len()));
            }
        }
        toml::Value::Array(items) => {
            if items.len() > MAX_ENTRIES {
                c.error(path, format!("has {} entries; at most {MAX_ENTRIES}", items.len()));
                return;
            }
            for (i, item) in items.iter().enumerate() {
                check_value(item, &path.index(i), c);
            }
        }
        toml::Value::Table(t) => check_table(t, path, c),
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
}

/// The longest string accepted at `path`.
fn string_limit(path: &FieldPath) -> usize {
    let last = match path.segments().last() {
        Some(Segment::Key(k)) => k.as_str(),
        _ => "",
    };
    let first = match path.segments().first() {
        Some(Segment::Key(k)) => k.as_str(),
        _ => "",
    };
    match (first, last) {
        ("sip", "user_agent") => MAX_USER_AGENT,
        ("ai_endpoint", "instructions") => MAX_INSTRUCTIONS,
        _ => MAX_STRING,
    }
}
