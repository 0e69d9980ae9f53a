//! The configuration loader on arbitrary text: never panics, and every error it reports is
//! printable (field names and lines come from the source map, even for unparsable files).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkguard::config::Config;

fuzz_target!(|text: &str| {
    if let Err(e) = Config::from_toml_str(text, "fuzz.toml") {
        let _ = e.to_string();
    }
});
