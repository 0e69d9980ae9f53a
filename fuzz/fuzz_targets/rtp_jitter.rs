//! RTP packets and jitter buffer operations: packets (checked by `rtp::inspect`) arriving at
//! arbitrary times, frames polled on the 20 ms clock, clock jumps. Never panics; the buffer
//! stays within its packet limit.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use trunkguard::core::media::jitter::{JitterBuffer, JitterConfig};
use trunkguard::core::media::rtp::inspect;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes as a datagram.
    Raw(Vec<u8>),
    /// A well-formed packet with these fields.
    Packet { seq: u16, ts: u32, ssrc: u8, marker: bool, len: u8 },
    /// Poll frames for `frames` × 20 ms.
    Play { frames: u8 },
    /// Time passes without polling.
    Wait { ms: u16 },
}

fn packet(seq: u16, ts: u32, ssrc: u8, marker: bool, len: u8) -> Vec<u8> {
    let mut p = vec![0x80, if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&u32::from(ssrc).to_be_bytes());
    p.resize(12 + usize::from(len), 0xd5);
    p
}

fuzz_target!(|ops: Vec<Op>| {
    let config = JitterConfig::default();
    let mut jb = JitterBuffer::new(config);
    let mut now = Instant::now();
    for op in ops.into_iter().take(512) {
        match op {
            Op::Raw(bytes) => push(&mut jb, now, &bytes),
            Op::Packet { seq, ts, ssrc, marker, len } => {
                push(&mut jb, now, &packet(seq, ts, ssrc, marker, len))
            }
            Op::Play { frames } => {
                for _ in 0..frames {
                    now += Duration::from_millis(20);
                    let _ = jb.poll_frame(now);
                }
            }
            Op::Wait { ms } => now += Duration::from_millis(u64::from(ms)),
        }
        let _ = jb.poll_timeout();
        let _ = jb.stats();
    }
});

fn push(jb: &mut JitterBuffer, now: Instant, bytes: &[u8]) {
    if let Ok(info) = inspect(bytes) {
        let end = info.payload_offset + info.payload_len;
        let payload = &bytes[info.payload_offset..end];
        jb.push(now, &info, payload);
    }
}
