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
    let secs = if secs.is_finite() {
        secs.clamp(-1e7, 1e7)
    } else {
        0.0
    };
    let d = Duration::from_secs_f64(secs.abs());
    let t = if secs >= 0.0 {
        base.checked_add(d)
    } else {
        base.checked_sub(d)
    };
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

    /// When the next frame is due; `None` while nothing is queued and the clock is stopped.
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
        self.counters.snapshot(
            to_ms(depth),
            to_ms(self.target),
            self.estimator.jitter() * 1000.0,
        )
    }

    fn classify(&self, now: Instant, info: &RtpInfo) -> Class {
        let Some(sec) = &self.section else {
            return Class::Start;
        };
        if info.ssrc != sec.ssrc {
            return Class::Discontinuity;
        }
        let ext_seq = sec.extend_seq(info.seq);
        if (ext_seq - sec.max_seq).abs() >= i64::from(self.cfg.resync_seq_jump) {
            return Class::Discontinuity;
        }
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
            self.candidate = Some(Candidate {
                info: *info,
                payload: payload.to_vec(),
                arrival: now,
            });
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
        let queued = Queued {
            ts,
            marker: info.marker,
            payload: payload.to_vec(),
        };
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
            self.boundary();
        }
        let half = self.step / 2;
        loop {
            let head = self.queue.first_key_value().map(|(&s, q)| (s, q.ts, q.marker));
            let Some((seq, ts, marker)) = head else {
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
        if gap > self.cfg.max_delay.as_secs_f64() {
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
        Frame::Lost {
            timestamp: ts as u32,
        }
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
            self.played_mask = if (1..64).contains(&shift) {
                self.played_mask << shift
            } else {
                0
            };
        }
        self.played_mask |= 1;
        self.last_played = Some((seq, q.ts));
        self.next_ts = q.ts + self.step;
        self.started = true;
        self.empty_run = 0;
        self.adapt();
        Frame::Audio {
            seq: seq as u16,
            timestamp: q.ts as u32,
            payload: q.payload,
        }
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
        self.section
            .as_ref()
            .map(|sec| sec.instant(ts, offset, self.rate))
    }

    /// Sets `Timer::MediaTick` to the next slot (running) or the head packet's slot (waiting).
    fn rearm(&mut self) {
        let due = if self.running {
            self.slot_instant(self.next_ts, self.offset)
        } else {
            let target = self.proposal().unwrap_or(self.target);
            let offset = self.ideal_offset(target);
            self.queue
                .first_key_value()
                .and_then(|(_, q)| self.slot_instant(q.ts, offset))
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
        let from = if self.running {
            self.next_ts
        } else {
            first.ts
        };
        (last.ts + self.step - from).max(0)
    }
}
