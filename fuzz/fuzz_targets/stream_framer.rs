//! The TCP/TLS stream framer: arbitrary bytes in arbitrary chunks. Never panics, never holds
//! more than its limit plus one chunk, and every framed message is at most the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkguard::core::sip::framing::StreamFramer;
use trunkguard::core::sip::parse_message;

const MAX: usize = 4096;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (data, cuts) = input;
    let mut framer = StreamFramer::new(MAX);
    let mut rest = data.as_slice();
    let mut cuts = cuts.into_iter().cycle();
    while !rest.is_empty() {
        let n = (usize::from(cuts.next().unwrap_or(255)) + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        framer.push(chunk);
        while let Some(next) = framer.next_message() {
            match next {
                Ok(msg) => {
                    assert!(msg.len() <= MAX, "framed {} bytes over the {MAX} limit", msg.len());
                    let _ = parse_message(&msg);
                }
                Err(_) => break,
            }
        }
        assert!(framer.is_failed() || framer.buffered() <= MAX + 256, "{}", framer.buffered());
        if framer.is_failed() {
            break;
        }
    }
});
