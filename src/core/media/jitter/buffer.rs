//! The jitter buffer proper: stream sections (SSRC, extended sequence numbers and timestamps),
//! the packet queue, and the playout clock. The rules are in the module doc of [`super`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::estimator::DelayEstimator;
use super::stats::{Counters, JitterStats};
use super::{Frame, JitterConfig};
use crate::core::media::rtp::RtpInfo;
use crate::core::timer::{Timer, TimerTable};

/// A packet within this many sequence numbers of a discontinuity candidate confirms it.
const CONFIRM_SPAN: i64 = 10;
/// Longest frame duration learnt from timestamp deltas, in seconds.
const MAX_LEARNT_FRAME: f64 = 0.12;

/// A packet waiting for its slot.
#[derive(Debug, Clone)]
struct Queued {
    ts: i64,
    marker: bool,
    payload: Vec<u8>,
}

/// A received packet that might start a new section.
#[derive(Debug, Clone)]
struct Candidate {
    info: RtpInfo,
    payload: Vec<u8>,
    arrival: Instant,
}

/// What a packet is relative to the current section.
enum Class {
    /// No section yet: this packet starts one.
    Start,
    /// Belongs to the section, with its extended sequence number and timestamp.
    InSection(i64, i64),
    /// New SSRC, or a sequence or timestamp jump.
    Discontinuity,
}

/// One run of packets from one SSRC without discontinuity.
#[derive(Debug, Clone)]
struct Section {
    ssrc: u32,
    epoch: Instant,
    epoch_ts: i64,
    max_seq: i64,
    max_seq_raw: u16,
    ref_ts: i64,
    ref_ts_raw: u32,
    ref_arrival: Instant,
}

impl Section {
    fn new(arrival: Instant, info: &RtpInfo) -> Section {
        Section {
            ssrc: info.ssrc,
            epoch: arrival,
            epoch_ts: i64::from(info.timestamp),
            max_seq: i64::from(info.seq),
            max_seq_raw: info.seq,
            ref_ts: i64::from(info.timestamp),
            ref_ts_raw: info.timestamp,
            ref_arrival: arrival,
        }
    }

    /// Extended sequence number, nearest to the highest seen.
    fn extend_seq(&self, seq: u16) -> i64 {
        self.max_seq + i64::from(seq.wrapping_sub(self.max_seq_raw) as i16)
    }

    /// Extended timestamp, nearest to that of the highest sequence number seen.
    fn extend_ts(&self, ts: u32) -> i64 {
        self.ref_ts + i64::from(ts.wrapping_sub(self.ref_ts_raw) as i32)
    }

    /// How far the timestamp moved beyond the arrival time since the reference packet (s).
    fn skew(&self, ext_ts: i64, arrival: Instant, rate: f64) -> f64 {
        (ext_ts - self.ref_ts) as f64 / rate - signed_secs(arrival, self.ref_arrival)
    }

    /// Transit time relative to the epoch (s).
    fn transit(&self, ext_ts: i64, arrival: Instant, rate: f64) -> f64 {
        signed_secs(arrival, self.epoch) - (ext_ts - self.epoch_ts) as f64 / rate
    }

    /// When the slot with timestamp `ts` is due under clock offset `offset` (s).
    fn instant(&self, ts: i64, offset: f64, rate: f64) -> Instant {
        at(self.epoch, (ts - self.epoch_ts) as f64 / rate + offset)
    }

    fn advance(&mut self, ext_seq: i64, info: &RtpInfo, ext_ts: i64, arrival: Instant) {
        if ext_seq > self.max_seq {
            self.max_seq = ext_seq;
            self.max_seq_raw = info.seq;
            self.ref_ts = ext_ts;
            self.ref_ts_raw = info.timestamp;
            self.ref_arrival = arrival;
        }
    }
}

/// `a - b` in seconds, negative when `a` is earlier.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}

/// `base + secs` (secs may be negative), saturating at `base` when out of range.
fn at(base: Instant, secs: f64) -> Instant {
    let secs = if secs.is_finite() { secs.clamp(-1e7, 1e7) } else { 0.0 };
    let d = Duration::from_secs_f64(secs.abs());
    let t = if secs >= 0.0 { base.checked_add(d) } else { base.checked_sub(d) };
    t.unwrap_or(base)
}

/// Adaptive jitter buffer for one received audio stream. See the module doc of [`super`].
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    rate: f64,
    section: Option<Section>,
    candidate: Option<Candidate>,
    queue: BTreeMap<i64, Queued>,
    /// A frame was released in this section.
    started: bool,
    /// The clock ticks; otherwise it waits for the head packet's slot.
    running: bool,
    /// Extended timestamp of the next slot.
    next_ts: i64,
    /// Extended sequence number and timestamp of the last packet played.
    last_played: Option<(i64, i64)>,
    /// Bit `i`: sequence number `last_played - i` was played.
    played_mask: u64,
    /// Marker packet whose talk-spurt boundary was already applied.
    boundary_seq: Option<i64>,
    /// Frame duration in timestamp units.
    step: i64,
    /// Last timestamp delta seen between consecutive packets.
    seen_step: i64,
    /// Consecutive `Lost` frames released with nothing queued.
    empty_run: u32,
    /// RTP timestamp of a telephone-event (RFC 4733) the source sends instead of audio: the
    /// slots it covers are not lost audio, the clock pauses until audio resumes.
    event_at: Option<u32>,
    /// Target delay (s).
    target: f64,
    /// Applied clock offset (s): a slot is due at its timestamp position plus this.
    offset: f64,
    estimator: DelayEstimator,
    counters: Counters,
    timers: TimerTable,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        JitterBuffer::new(JitterConfig::default())
    }
}

impl JitterBuffer {
    /// A buffer with `config`, corrected into usable ranges.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let cfg = config.sanitized();
        let rate = f64::from(cfg.clock_rate);
        let step = (i64::from(cfg.clock_rate) * i64::from(cfg.frame_ms) / 1000).max(1);
        JitterBuffer {
            cfg,
            rate,
            section: None,
            candidate: None,
            queue: BTreeMap::new(),
            started: false,
            running: false,
            next_ts: 0,
            last_played: None,
            played_mask: 0,
            boundary_seq: None,
            step,
            seen_step: 0,
            empty_run: 0,
            event_at: None,
            target: cfg.initial_delay.as_secs_f64(),
            offset: 0.0,
            estimator: DelayEstimator::new(cfg.window, cfg.k),
            counters: Counters::default(),
            timers: TimerTable::default(),
        }
    }

    /// The configuration in use (after correction).
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Takes one received packet; `payload` is its payload (any length is accepted).
    pub fn push(&mut self, now: Instant, info: &RtpInfo, payload: &[u8]) {
        self.counters.received += 1;
        match self.classify(now, info) {
            Class::Start => self.start_section(now, info, payload),
            Class::InSection(seq, ts) => self.accept(now, seq, ts, info, payload),
            Class::Discontinuity => self.discontinuity(now, info, payload),
        }
        self.rearm();
    }

    /// The next frame if one is due at `now`. Call until `None`, then wait for
    /// [`JitterBuffer::poll_timeout`].
    pub fn poll_frame(&mut self, now: Instant) -> Option<Frame> {
        if !self.timers.is_expired(Timer::MediaTick, now) {
            return None;
        }
        let frame = self.next_frame(now);
        self.rearm();
        frame
    }

    /// The source sends a telephone-event (RFC 4733, started at RTP `timestamp`) instead of
    /// audio: once the audio queued before it has played, the clock pauses without `Lost`
    /// frames, and restarts (a talk-spurt boundary) with the next audio packet. A source that
    /// keeps sending audio during the event plays on as usual (audio from after the event's
    /// start ends the pause).
    pub fn note_event(&mut self, timestamp: u32) {
        self.event_at = Some(timestamp);
    }

    /// When the next frame is due; `None` while nothing is queued and the clock is stopped.
    /// The earliest queued packet (RTP timestamp, payload): after a `Lost` frame, the packet
    /// that follows the gap, whose Opus in-band FEC can rebuild the lost frame.
    pub fn peek_next(&self) -> Option<(u32, &[u8])> {
        self.queue.values().next().map(|q| (q.ts as u32, q.payload.as_slice()))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Current target delay.
    pub fn target_delay(&self) -> Duration {
        Duration::from_secs_f64(self.target.max(0.0))
    }

    /// Counters and gauges.
    pub fn stats(&self) -> JitterStats {
        let to_ms = |secs: f64| (secs * 1000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        let depth = self.depth_samples() as f64 / self.rate;
        self.counters.snapshot(to_ms(depth), to_ms(self.target), self.estimator.jitter() * 1000.0)
    }

    fn classify(&self, now: Instant, info: &RtpInfo) -> Class {
        let Some(sec) = &self.section else {
            return Class::Start;
        };
        if info.ssrc != sec.ssrc {
            return Class::Discontinuity;
        }
        let delta = sec.extend_seq(info.seq) - sec.max_seq;
        if delta >= i64::from(self.cfg.resync_seq_jump) || -delta > i64::from(self.cfg.max_misorder)
        {
            return Class::Discontinuity;
        }
        let ext_seq = sec.max_seq + delta;
        let ext_ts = sec.extend_ts(info.timestamp);
        if sec.skew(ext_ts, now, self.rate).abs() > self.cfg.max_ts_skew.as_secs_f64() {
            return Class::Discontinuity;
        }
        Class::InSection(ext_seq, ext_ts)
    }

    /// Starts a section at `info` (flushing the previous one) and queues it.
    fn start_section(&mut self, arrival: Instant, info: &RtpInfo, payload: &[u8]) {
        self.counters.discarded += self.queue.len() as u64;
        self.queue.clear();
        self.section = Some(Section::new(arrival, info));
        self.estimator.reset_section();
        self.started = false;
        self.running = false;
        self.next_ts = i64::from(info.timestamp);
        self.last_played = None;
        self.played_mask = 0;
        self.boundary_seq = None;
        self.empty_run = 0;
        let (seq, ts) = (i64::from(info.seq), i64::from(info.timestamp));
        self.accept(arrival, seq, ts, info, payload);
    }

    /// A packet that does not fit the section: held until a second one confirms a new section.
    fn discontinuity(&mut self, now: Instant, info: &RtpInfo, payload: &[u8]) {
        let confirmed = match self.candidate.take() {
            Some(c) if self.continues(&c, now, info) => Some(c),
            Some(_) => {
                self.counters.discarded += 1;
                None
            }
            None => None,
        };
        let Some(c) = confirmed else {
            self.candidate =
                Some(Candidate { info: *info, payload: payload.to_vec(), arrival: now });
            return;
        };
        self.counters.resyncs += 1;
        self.start_section(c.arrival, &c.info, &c.payload);
        match self.classify(now, info) {
            Class::InSection(seq, ts) => self.accept(now, seq, ts, info, payload),
            _ => self.counters.discarded += 1,
        }
    }

    /// Whether `info` (arriving at `now`) continues the stream the candidate starts.
    fn continues(&self, c: &Candidate, now: Instant, info: &RtpInfo) -> bool {
        let dseq = i64::from(info.seq.wrapping_sub(c.info.seq) as i16);
        let dts = f64::from(info.timestamp.wrapping_sub(c.info.timestamp) as i32) / self.rate;
        let skew = dts - signed_secs(now, c.arrival);
        info.ssrc == c.info.ssrc
            && dseq != 0
            && dseq.abs() <= CONFIRM_SPAN
            && skew.abs() <= self.cfg.max_ts_skew.as_secs_f64()
    }

    /// Queues a packet of the current section unless duplicate or late.
    fn accept(&mut self, now: Instant, seq: i64, ts: i64, info: &RtpInfo, payload: &[u8]) {
        let Some(sec) = self.section.as_mut() else {
            return;
        };
        let transit = sec.transit(ts, now, self.rate);
        let behind = seq < sec.max_seq;
        sec.advance(seq, info, ts, now);
        if self.was_played(seq) || self.queue.contains_key(&seq) {
            self.counters.duplicates += 1;
            return;
        }
        self.estimator.observe(transit);
        let slot_passed = ts < self.next_ts - self.step / 2;
        let seq_passed = self.last_played.is_some_and(|(s, _)| seq <= s);
        if self.started && (slot_passed || seq_passed) {
            self.counters.late += 1;
            return;
        }
        if behind {
            self.counters.reordered += 1;
        }
        let queued = Queued { ts, marker: info.marker, payload: payload.to_vec() };
        self.queue.insert(seq, queued);
        self.enforce_cap();
    }

    /// Drops the oldest packets beyond `max_packets`; the clock catches up over them.
    fn enforce_cap(&mut self) {
        while self.queue.len() > self.cfg.max_packets {
            let Some((_, dropped)) = self.queue.pop_first() else {
                break;
            };
            self.counters.discarded += 1;
            if self.running && dropped.ts >= self.next_ts - self.step / 2 {
                self.next_ts = dropped.ts + self.step;
                self.offset -= self.step as f64 / self.rate;
            }
        }
    }

    fn was_played(&self, seq: i64) -> bool {
        let Some((last, _)) = self.last_played else {
            return false;
        };
        let back = last - seq;
        (0..64).contains(&back) && (self.played_mask >> back) & 1 == 1
    }

    /// The frame for the slot due now (or `None` when the clock pauses instead).
    fn next_frame(&mut self, now: Instant) -> Option<Frame> {
        if !self.running {
            let (&seq, head) = self.queue.first_key_value()?;
            self.next_ts = head.ts;
            self.boundary_seq = Some(seq);
            self.running = true;
            self.empty_run = 0;
            self.event_at = None;
            self.boundary();
        }
        let half = self.step / 2;
        loop {
            let head = self.queue.first_key_value().map(|(&s, q)| (s, q.ts, q.marker));
            let Some((seq, ts, marker)) = head else {
                if self.event_at.is_some() {
                    self.running = false;
                    return None;
                }
                return Some(self.lost_in_silence());
            };
            if ts < self.next_ts - half {
                self.queue.pop_first();
                self.counters.late += 1;
                continue;
            }
            if ts > self.next_ts + half {
                return self.gap(ts);
            }
            if marker && self.started && self.boundary_seq != Some(seq) {
                self.boundary_seq = Some(seq);
                self.next_ts = ts;
                self.boundary();
                if self.slot_instant(ts, self.offset).is_some_and(|due| due > now) {
                    return None;
                }
            }
            return Some(self.play(seq));
        }
    }

    /// The head packet is later than the next slot: conceal, or pause on a long gap.
    fn gap(&mut self, head_ts: i64) -> Option<Frame> {
        let gap = (head_ts - self.next_ts) as f64 / self.rate;
        if gap > self.cfg.max_delay.as_secs_f64() || self.event_at.is_some() {
            self.running = false;
            return None;
        }
        Some(self.lost())
    }

    /// A `Lost` frame with nothing queued; the clock stops after `max_conceal` of them.
    fn lost_in_silence(&mut self) -> Frame {
        self.empty_run += 1;
        if self.empty_run >= self.cfg.max_conceal {
            self.running = false;
        }
        self.lost()
    }

    fn lost(&mut self) -> Frame {
        let ts = self.next_ts;
        self.next_ts += self.step;
        self.counters.lost += 1;
        self.adapt();
        Frame::Lost { timestamp: ts as u32 }
    }

    fn play(&mut self, seq: i64) -> Frame {
        let Some(q) = self.queue.remove(&seq) else {
            return self.lost();
        };
        if let Some((last_seq, last_ts)) = self.last_played {
            if seq == last_seq + 1 {
                self.learn_step(q.ts - last_ts);
            }
            let shift = seq - last_seq;
            self.played_mask = if (1..64).contains(&shift) { self.played_mask << shift } else { 0 };
        }
        self.played_mask |= 1;
        self.last_played = Some((seq, q.ts));
        if self.event_at.is_some_and(|e| (q.ts as u32).wrapping_sub(e) as i32 >= 0) {
            // audio from after the event's start: this source sends audio alongside its
            // events, a gap in it is loss again
            self.event_at = None;
        }
        self.next_ts = q.ts + self.step;
        self.started = true;
        self.empty_run = 0;
        self.adapt();
        Frame::Audio { seq: seq as u16, timestamp: q.ts as u32, payload: q.payload }
    }

    /// Adopts a timestamp delta between consecutive packets once seen twice in a row.
    fn learn_step(&mut self, delta: i64) {
        let plausible = delta > 0 && (delta as f64) <= MAX_LEARNT_FRAME * self.rate;
        if plausible && delta == self.seen_step {
            self.step = delta;
        }
        self.seen_step = delta;
    }

    /// The estimator's proposal within `[min_delay, max_delay]`.
    fn proposal(&self) -> Option<f64> {
        let (min, max) = (self.cfg.min_delay.as_secs_f64(), self.cfg.max_delay.as_secs_f64());
        self.estimator.proposal().map(|p| p.clamp(min, max))
    }

    fn ideal_offset(&self, target: f64) -> f64 {
        self.estimator.min_transit() + target
    }

    /// Talk-spurt boundary: target and clock offset jump to their ideal values.
    fn boundary(&mut self) {
        if let Some(p) = self.proposal() {
            self.target = p;
        }
        self.offset = self.ideal_offset(self.target);
    }

    /// Per-frame adaptation: bounded steps of target and offset toward their ideal values.
    fn adapt(&mut self) {
        let grow = self.cfg.grow_step.as_secs_f64();
        let shrink = self.cfg.shrink_step.as_secs_f64();
        if let Some(p) = self.proposal() {
            self.target = if p > self.target {
                p.min(self.target + grow)
            } else {
                p.max(self.target - shrink)
            };
        }
        let delta = self.ideal_offset(self.target) - self.offset;
        self.offset += delta.clamp(-shrink, grow);
    }

    fn slot_instant(&self, ts: i64, offset: f64) -> Option<Instant> {
        self.section.as_ref().map(|sec| sec.instant(ts, offset, self.rate))
    }

    /// Sets `Timer::MediaTick` to the next slot (running) or the head packet's slot (waiting).
    fn rearm(&mut self) {
        let due = if self.running {
            self.slot_instant(self.next_ts, self.offset)
        } else {
            let target = self.proposal().unwrap_or(self.target);
            let offset = self.ideal_offset(target);
            self.queue.first_key_value().and_then(|(_, q)| self.slot_instant(q.ts, offset))
        };
        match due {
            Some(t) => self.timers.set(Timer::MediaTick, t),
            None => self.timers.stop(Timer::MediaTick),
        }
    }

    /// Queued audio ahead of the playout point, in timestamp units.
    fn depth_samples(&self) -> i64 {
        let (Some((_, first)), Some((_, last))) =
            (self.queue.first_key_value(), self.queue.last_key_value())
        else {
            return 0;
        };
        let from = if self.running { self.next_ts } else { first.ts };
        (last.ts + self.step - from).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const SSRC: u32 = 0x5EED_0001;
    const MS: Duration = Duration::from_millis(1);

    fn info(ssrc: u32, seq: u16, ts: u32, marker: bool) -> RtpInfo {
        RtpInfo {
            ssrc,
            seq,
            timestamp: ts,
            payload_type: 0,
            marker,
            payload_len: 160,
            payload_offset: 12,
        }
    }

    #[derive(Clone)]
    struct Arrival {
        at: Instant,
        info: RtpInfo,
        payload: Vec<u8>,
    }

    /// Packet `i` of a 20 ms stream, sent at `t0 + i·20 ms`, arriving `delay(i)` later.
    fn stream(
        t0: Instant,
        range: std::ops::Range<usize>,
        ssrc: u32,
        seq0: u16,
        ts0: u32,
        mut delay: impl FnMut(usize) -> Duration,
    ) -> Vec<Arrival> {
        range
            .map(|i| Arrival {
                at: t0 + 20 * MS * i as u32 + delay(i),
                info: info(
                    ssrc,
                    seq0.wrapping_add(i as u16),
                    ts0.wrapping_add(160 * i as u32),
                    false,
                ),
                payload: (i as u32).to_be_bytes().to_vec(),
            })
            .collect()
    }

    struct Out {
        at: Instant,
        frame: Frame,
        target_ms: u32,
    }

    /// Drives the buffer on a fake clock: arrivals are pushed at their instants, frames are
    /// polled whenever the buffer says one is due.
    fn run(buf: &mut JitterBuffer, mut arrivals: Vec<Arrival>, until: Instant) -> Vec<Out> {
        arrivals.sort_by_key(|a| a.at);
        let mut out = Vec::new();
        let mut next = 0;
        let mut now = arrivals.first().map_or(until, |a| a.at);
        for _ in 0..1_000_000 {
            while let Some(a) = arrivals.get(next).filter(|a| a.at <= now) {
                buf.push(now, &a.info, &a.payload);
                next += 1;
            }
            while let Some(frame) = buf.poll_frame(now) {
                let target_ms = buf.stats().target_ms;
                out.push(Out { at: now, frame, target_ms });
            }
            let wake = [arrivals.get(next).map(|a| a.at), buf.poll_timeout()];
            match wake.into_iter().flatten().min() {
                Some(t) if t <= until => now = now.max(t),
                _ => return out,
            }
        }
        panic!("simulation did not settle");
    }

    #[test]
    fn a_telephone_event_pauses_the_clock_without_lost_frames() {
        for note in [true, false] {
            let t0 = Instant::now();
            let mut buf = JitterBuffer::default();
            // audio 0..10, a key press in place of packets 10..15, audio again from 15
            let before = stream(t0, 0..10, SSRC, 100, 0, |_| 5 * MS);
            let mut after = stream(t0, 15..40, SSRC, 100, 0, |_| 5 * MS);
            after[0].info.marker = true;
            let mut out = run(&mut buf, before, t0 + 205 * MS);
            if note {
                buf.note_event(10 * 160);
            }
            out.extend(run(&mut buf, after, t0 + 2000 * MS));
            let lost = lost_inside(&out);
            let mut seqs = audio_seqs(&out);
            seqs.dedup();
            assert_eq!(seqs.len(), 35, "every audio packet plays");
            if note {
                assert!(lost.is_empty(), "the key press was concealed: {lost:?}");
                assert_eq!(buf.stats().lost, 3, "only the tail after the stream ends");
            } else {
                assert!(!lost.is_empty(), "without the event the gap is concealed");
            }
        }
    }

    #[test]
    fn audio_sent_alongside_an_event_is_still_concealed_when_lost() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        // audio never stops; a key press starts at packet 10; packet 30 is lost
        let mut all = stream(t0, 0..50, SSRC, 100, 0, |_| 5 * MS);
        all.remove(30);
        let (before, after): (Vec<Arrival>, Vec<Arrival>) =
            all.into_iter().partition(|a| a.at < t0 + 205 * MS);
        let mut out = run(&mut buf, before, t0 + 205 * MS);
        buf.note_event(10 * 160);
        out.extend(run(&mut buf, after, t0 + 2000 * MS));
        assert_eq!(lost_inside(&out), vec![30 * 160], "the lost packet is concealed in place");
    }

    fn audio_seqs(out: &[Out]) -> Vec<u16> {
        out.iter()
            .filter_map(|o| match o.frame {
                Frame::Audio { seq, .. } => Some(seq),
                Frame::Lost { .. } => None,
            })
            .collect()
    }

    /// `Lost` frames released before the last audio frame (the tail after the stream ends
    /// is concealed too, up to `max_conceal`).
    fn lost_inside(out: &[Out]) -> Vec<u32> {
        let last_audio =
            out.iter().rposition(|o| matches!(o.frame, Frame::Audio { .. })).unwrap_or(0);
        out[..last_audio]
            .iter()
            .filter_map(|o| match o.frame {
                Frame::Lost { timestamp } => Some(timestamp),
                Frame::Audio { .. } => None,
            })
            .collect()
    }

    fn near(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_micros(100)
    }

    #[test]
    fn in_order_stream_plays_with_constant_delay() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        assert_eq!(buf.poll_timeout(), None);
        let arrivals = stream(t0, 0..200, SSRC, 1000, 5000, |_| Duration::ZERO);
        let out = run(&mut buf, arrivals.clone(), t0 + 5 * 1000 * MS);
        assert_eq!(audio_seqs(&out), (1000..1200).collect::<Vec<u16>>());
        assert!(lost_inside(&out).is_empty());
        // Held for the initial 40 ms, then settled at the 20 ms minimum.
        assert!(near(out[0].at - t0, 40 * MS));
        for (i, o) in out.iter().enumerate().take(200).skip(40) {
            assert!(near(o.at - arrivals[i].at, 20 * MS), "frame {i}");
            assert!(near(o.at - out[i - 1].at, 20 * MS), "frame {i}");
        }
        let s = buf.stats();
        assert_eq!((s.received, s.late, s.duplicates, s.reordered, s.resyncs), (200, 0, 0, 0, 0));
        assert_eq!(s.target_ms, 20);
        assert!(s.jitter_ms < 1e-6);
        // The tail: three frames concealed, then the clock stops.
        assert_eq!(s.lost, 3);
        assert_eq!(buf.poll_timeout(), None);
        match &out[0].frame {
            Frame::Audio { timestamp, payload, .. } => {
                assert_eq!(*timestamp, 5000);
                assert_eq!(payload, &0u32.to_be_bytes());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reorders_100_packets_within_the_window() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            min_delay: 100 * MS,
            initial_delay: 100 * MS,
            ..JitterConfig::default()
        };
        let mut buf = JitterBuffer::new(cfg);
        let mut rng = SmallRng::seed_from_u64(1);
        let arrivals = stream(t0, 0..100, SSRC, 7, 0, |_| MS * rng.gen_range(0..80));
        let out = run(&mut buf, arrivals, t0 + 4000 * MS);
        assert_eq!(audio_seqs(&out), (7..107).collect::<Vec<u16>>());
        assert!(lost_inside(&out).is_empty());
        let s = buf.stats();
        assert!(s.reordered > 10, "{s:?}");
        assert_eq!((s.late, s.duplicates), (0, 0));
        assert!(s.jitter_ms > 5.0);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let mut arrivals = stream(t0, 0..50, SSRC, 0, 0, |_| Duration::ZERO);
        let doubled = stream(t0, 0..50, SSRC, 0, 0, |_| 3 * MS);
        arrivals.extend(doubled);
        // Packet 5 again long after it was played.
        arrivals.extend(stream(t0, 5..6, SSRC, 0, 0, |_| 300 * MS));
        let out = run(&mut buf, arrivals, t0 + 2000 * MS);
        assert_eq!(audio_seqs(&out), (0..50).collect::<Vec<u16>>());
        let s = buf.stats();
        assert_eq!((s.received, s.duplicates, s.late), (101, 51, 0));
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let ts0 = u32::MAX - 160 * 30;
        let arrivals = stream(t0, 0..100, SSRC, 65_500, ts0, |_| Duration::ZERO);
        let out = run(&mut buf, arrivals, t0 + 3000 * MS);
        let expected: Vec<u16> = (0..100u16).map(|i| 65_500u16.wrapping_add(i)).collect();
        assert_eq!(audio_seqs(&out), expected);
        assert!(lost_inside(&out).is_empty());
        assert_eq!(buf.stats().resyncs, 0);
        let Frame::Audio { timestamp, .. } = out[99].frame else {
            panic!("not audio");
        };
        assert_eq!(timestamp, ts0.wrapping_add(160 * 99));
    }

    fn assert_resynced_once(buf: &JitterBuffer, out: &[Out]) {
        let s = buf.stats();
        assert_eq!(s.resyncs, 1, "{s:?}");
        assert!(audio_seqs(out).len() >= 97, "{s:?}");
        assert!(lost_inside(out).len() <= 3, "{s:?}");
        assert!(out.len() < 110);
    }

    #[test]
    fn sequence_jumps_resync_instead_of_concealing() {
        for jump in [3000u16, 3000u16.wrapping_neg(), 20_000] {
            let t0 = Instant::now();
            let mut buf = JitterBuffer::default();
            let mut arrivals = stream(t0, 0..50, SSRC, 100, 0, |_| Duration::ZERO);
            arrivals.extend(stream(t0, 50..100, SSRC, 100u16.wrapping_add(jump), 0, |_| {
                Duration::ZERO
            }));
            let out = run(&mut buf, arrivals, t0 + 3000 * MS);
            assert_resynced_once(&buf, &out);
            let seqs = audio_seqs(&out);
            assert_eq!(*seqs.last().unwrap(), 199u16.wrapping_add(jump));
        }
    }

    #[test]
    fn ssrc_change_resyncs_but_a_stray_packet_does_not() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let mut arrivals = stream(t0, 0..50, SSRC, 100, 0, |_| Duration::ZERO);
        arrivals.extend(stream(t0, 50..100, 0xABCD, 9000, 777_777, |_| Duration::ZERO));
        let out = run(&mut buf, arrivals, t0 + 3000 * MS);
        assert_resynced_once(&buf, &out);
        assert_eq!(*audio_seqs(&out).last().unwrap(), 9099);

        let mut buf = JitterBuffer::default();
        let mut arrivals = stream(t0, 0..100, SSRC, 100, 0, |_| Duration::ZERO);
        arrivals.extend(stream(t0, 40..41, 0xABCD, 9000, 777_777, |_| 5 * MS));
        let out = run(&mut buf, arrivals, t0 + 3000 * MS);
        assert_eq!(audio_seqs(&out), (100..200).collect::<Vec<u16>>());
        let s = buf.stats();
        assert_eq!((s.resyncs, s.discarded), (0, 0));
    }

    #[test]
    fn timestamp_jump_of_2_pow_31_resyncs() {
        for jump in [1u32 << 31, (1u32 << 31) + 160, (1u32 << 31) - 160, 80_000] {
            let t0 = Instant::now();
            let mut buf = JitterBuffer::default();
            let mut arrivals = stream(t0, 0..50, SSRC, 100, 0, |_| Duration::ZERO);
            arrivals.extend(stream(t0, 50..100, SSRC, 100, jump, |_| Duration::ZERO));
            let out = run(&mut buf, arrivals, t0 + 3000 * MS);
            assert_resynced_once(&buf, &out);
            let Some(Frame::Audio { timestamp, .. }) = out
                .iter()
                .rev()
                .find(|o| matches!(o.frame, Frame::Audio { .. }))
                .map(|o| o.frame.clone())
            else {
                panic!("no audio");
            };
            assert_eq!(timestamp, jump.wrapping_add(160 * 99), "jump {jump}");
        }
    }

    #[test]
    fn jitter_burst_grows_target_within_max_then_shrinks() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let mut rng = SmallRng::seed_from_u64(500);
        // 12 s of audio; packets sent between 2 s and 2.5 s are delayed by up to 500 ms.
        let arrivals = stream(t0, 0..600, SSRC, 0, 0, |i| {
            let base = 30 * MS + Duration::from_micros(rng.gen_range(0..4000));
            if (100..125).contains(&i) {
                base + MS * rng.gen_range(0..500)
            } else {
                base
            }
        });
        let out = run(&mut buf, arrivals, t0 + 13_000 * MS);
        let before: Vec<u32> =
            out.iter().filter(|o| o.at < t0 + 2000 * MS).map(|o| o.target_ms).collect();
        let peak = out.iter().map(|o| o.target_ms).max().unwrap();
        assert!(*before.last().unwrap() <= 30, "calm target {before:?}");
        assert!(peak >= 150, "target did not grow: {peak}");
        assert!(out.iter().all(|o| o.target_ms <= 200));
        let s = buf.stats();
        assert!(s.target_ms <= 40, "target did not shrink back: {s:?}");
        // Once calm again, no more losses.
        let calm = out.iter().filter(|o| o.at > t0 + 6000 * MS && o.at < t0 + 11_900 * MS);
        assert!(calm.clone().count() > 250);
        assert!(calm.clone().all(|o| matches!(o.frame, Frame::Audio { .. })));
        // Successive frames never jump by more than the step bounds outside boundaries.
        let audio: Vec<&Out> = out.iter().filter(|o| o.at > t0 + 6000 * MS).collect();
        for w in audio.windows(2).take(200) {
            let gap = w[1].at - w[0].at;
            assert!(gap >= 18 * MS && gap <= 26 * MS, "interval {gap:?}");
        }
    }

    #[test]
    fn marker_bit_is_a_talk_spurt_boundary() {
        let t0 = Instant::now();
        let cfg = JitterConfig {
            grow_step: Duration::from_micros(100),
            shrink_step: Duration::from_micros(100),
            ..JitterConfig::default()
        };
        let mut buf = JitterBuffer::new(cfg);
        let mut rng = SmallRng::seed_from_u64(80);
        let mut arrivals = stream(t0, 0..100, SSRC, 0, 0, |i| {
            if i < 50 || i == 80 {
                Duration::ZERO
            } else {
                MS * rng.gen_range(0..80)
            }
        });
        arrivals[80].info.marker = true;
        let out = run(&mut buf, arrivals, t0 + 4000 * MS);
        let at80 =
            out.iter().position(|o| matches!(o.frame, Frame::Audio { seq: 80, .. })).unwrap();
        let (before, after) = (out[at80 - 1].target_ms, out[at80].target_ms);
        assert!(after >= before + 20, "target {before} -> {after} ms");
        // Growing at the boundary pauses the clock: the marker frame comes late.
        assert!(out[at80].at - out[at80 - 1].at >= 40 * MS);
        // After it, the larger delay absorbs the jitter.
        assert!(out[at80..].iter().take(19).all(|o| matches!(o.frame, Frame::Audio { .. })));
    }

    #[test]
    fn losses_become_lost_frames_with_their_timestamps() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let arrivals: Vec<Arrival> = stream(t0, 0..60, SSRC, 0, 1000, |_| Duration::ZERO)
            .into_iter()
            .filter(|a| ![10, 30, 31].contains(&a.info.seq))
            .collect();
        let out = run(&mut buf, arrivals, t0 + 3000 * MS);
        assert_eq!(lost_inside(&out), vec![1000 + 1600, 1000 + 4800, 1000 + 4960]);
        assert_eq!(audio_seqs(&out).len(), 57);
        assert_eq!(buf.stats().lost, 3 + 3);
        // Slots keep the 20 ms cadence through the losses.
        for w in out[25..40].windows(2) {
            assert!(near(w[1].at - w[0].at, 20 * MS));
        }
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let arrivals =
            stream(t0, 0..60, SSRC, 0, 0, |i| if i == 20 { 400 * MS } else { Duration::ZERO });
        let out = run(&mut buf, arrivals, t0 + 3000 * MS);
        assert_eq!(audio_seqs(&out).len(), 59);
        assert_eq!(lost_inside(&out).len(), 1);
        assert_eq!(buf.stats().late, 1);
    }

    #[test]
    fn silence_between_talk_spurts_is_not_concealed_for_long() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        let mut arrivals = stream(t0, 0..50, SSRC, 0, 0, |_| Duration::ZERO);
        // Second spurt after 2 s of silence: contiguous seq, timestamps advanced, marker set.
        let mut second =
            stream(t0 + 2000 * MS, 0..50, SSRC, 50, 16_000 + 160 * 50, |_| Duration::ZERO);
        second[0].info.marker = true;
        arrivals.extend(second);
        let out = run(&mut buf, arrivals, t0 + 5000 * MS);
        assert_eq!(audio_seqs(&out), (0..100).collect::<Vec<u16>>());
        assert_eq!(lost_inside(&out).len(), 3);
        let s = buf.stats();
        assert_eq!((s.late, s.resyncs), (0, 0));
    }

    #[test]
    fn frame_duration_is_learnt_from_timestamps() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        // 30 ms packets (240 samples).
        let arrivals: Vec<Arrival> = (0..50u32)
            .map(|i| Arrival {
                at: t0 + 30 * MS * i,
                info: info(SSRC, i as u16, 240 * i, false),
                payload: vec![0xFF; 240],
            })
            .collect();
        let out = run(&mut buf, arrivals, t0 + 3000 * MS);
        assert_eq!(audio_seqs(&out).len(), 50);
        assert!(lost_inside(&out).is_empty());
        for w in out[10..49].windows(2) {
            assert!((w[1].at - w[0].at).abs_diff(30 * MS) <= 2 * MS);
        }
        assert_eq!(buf.step, 240);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut buf = JitterBuffer::default();
        for i in 0..200u16 {
            buf.push(t0, &info(SSRC, i, u32::from(i) * 160, false), &[0; 160]);
            assert!(buf.queue.len() <= 50);
        }
        let s = buf.stats();
        assert_eq!(s.discarded, 150);
        assert_eq!(s.depth_ms, 1000);
        let mut frames = 0;
        let mut now = t0;
        while let Some(t) = buf.poll_timeout() {
            now = now.max(t);
            while buf.poll_frame(now).is_some() {
                frames += 1;
            }
            assert!(frames < 1000);
        }
        assert!(frames >= 50);
        assert_eq!(buf.stats().depth_ms, 0);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(0xBAD);
        let configs = [
            JitterConfig::default(),
            JitterConfig {
                clock_rate: 0,
                frame_ms: 0,
                min_delay: Duration::from_secs(5),
                max_delay: Duration::ZERO,
                initial_delay: Duration::from_secs(100),
                max_packets: 0,
                window: 0,
                k: f64::NAN,
                resync_seq_jump: 0,
                max_misorder: 0,
                max_ts_skew: Duration::ZERO,
                max_conceal: 0,
                grow_step: Duration::from_secs(1000),
                shrink_step: Duration::ZERO,
            },
        ];
        for cfg in configs {
            let mut buf = JitterBuffer::new(cfg);
            let t0 = Instant::now();
            let mut now = t0;
            let mut seq = 0u16;
            let mut ts = 0u32;
            for _ in 0..20_000 {
                now += Duration::from_micros(rng.gen_range(0..40_000));
                match rng.gen_range(0..10) {
                    0 => seq = rng.gen(),
                    1 => ts = rng.gen(),
                    _ => {
                        seq = seq.wrapping_add(rng.gen_range(0..3));
                        ts = ts.wrapping_add(rng.gen_range(0..400));
                    }
                }
                let ssrc = rng.gen_range(1..4);
                let len = rng.gen_range(0..3000);
                let payload = vec![0x55; len];
                let mut inf = info(ssrc, seq, ts, rng.gen_bool(0.1));
                inf.payload_len = rng.gen();
                inf.payload_offset = rng.gen();
                buf.push(now, &inf, &payload);
                while buf.poll_frame(now).is_some() {}
                assert!(buf.queue.len() <= buf.config().max_packets);
                if let Some(t) = buf.poll_timeout() {
                    assert!(t > now);
                }
                let s = buf.stats();
                assert!(s.target_ms <= buf.config().max_delay.as_millis() as u32);
            }
        }
    }
}
