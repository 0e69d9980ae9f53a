//! SDP offers and answers from the network: never panics; an answer we produce parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkguard::core::sdp::{accept_answer, answer, AnswerParams};

fuzz_target!(|data: &[u8]| {
    let params = AnswerParams {
        local_ip: "192.0.2.10".parse().unwrap(),
        local_port: 20000,
        session_id: 1,
        session_version: 1,
    };
    if let Ok((_, ours)) = answer(data, &params) {
        accept_answer(ours.as_bytes()).expect("our own answer must parse");
    }
    let _ = accept_answer(data);
});
