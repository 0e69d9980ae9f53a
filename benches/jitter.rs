//! Jitter buffer: one 50-packet window (1 s of 20 ms G.711 frames) pushed with arrival jitter
//! and reordering, frames polled as they fall due, on a fake clock.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use trunkguard::core::media::jitter::{JitterBuffer, JitterConfig};
use trunkguard::core::media::rtp::RtpInfo;

const WINDOW: usize = 50;
const PAYLOAD: [u8; 160] = [0xd5; 160];

/// Packets in arrival order with their arrival offsets: every fifth pair swapped, and a
/// deterministic 0..8 ms of arrival jitter.
fn arrivals() -> Vec<(RtpInfo, Duration)> {
    let mut order: Vec<usize> = (0..WINDOW).collect();
    for i in (3..WINDOW - 1).step_by(5) {
        order.swap(i, i + 1);
    }
    let mut lcg = 12345u32;
    order
        .iter()
        .enumerate()
        .map(|(slot, &i)| {
            lcg = lcg.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let jitter = Duration::from_micros(u64::from(lcg >> 16) % 8000);
            let info = RtpInfo {
                ssrc: 0xcafe,
                seq: 1000 + i as u16,
                timestamp: 160 * i as u32,
                payload_type: 0,
                marker: i == 0,
                payload_len: PAYLOAD.len(),
                payload_offset: 12,
            };
            (info, Duration::from_millis(20) * slot as u32 + jitter)
        })
        .collect()
}

fn window(jb: &mut JitterBuffer, t0: Instant, arrivals: &[(RtpInfo, Duration)]) -> usize {
    let mut frames = 0;
    for (info, at) in arrivals {
        let now = t0 + *at;
        jb.push(now, info, &PAYLOAD);
        while let Some(f) = jb.poll_frame(now) {
            black_box(f);
            frames += 1;
        }
    }
    let end = t0 + Duration::from_millis(20 * WINDOW as u64 + 500);
    while let Some(f) = jb.poll_frame(end) {
        black_box(f);
        frames += 1;
    }
    frames
}

fn bench(c: &mut Criterion) {
    let arrivals = arrivals();
    let t0 = Instant::now();
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(WINDOW as u64));
    g.bench_function("push_poll_50_reordered", |b| {
        b.iter_batched(
            || JitterBuffer::new(JitterConfig::default()),
            |mut jb| window(&mut jb, t0, &arrivals),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
