//! SIP wire bytes → message: never panics; what parses serializes and parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkguard::core::sip::{parse_headers_lenient, parse_message, validate};

fuzz_target!(|data: &[u8]| {
    let _ = parse_headers_lenient(data);
    if let Ok(msg) = parse_message(data) {
        if let trunkguard::core::sip::SipMessage::Request(req) = &msg {
            let _ = validate::check_request(req);
        }
        let wire = msg.to_bytes();
        let _ = parse_message(&wire);
    }
});
