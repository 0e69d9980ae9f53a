//! RFC 4733 telephone-events (DTMF digits and flash) carried in RTP (sans-IO).
//!
//! Owns: the 4-byte event payload ([`TelephoneEvent`]), turning a stream of received event
//! packets into one [`DtmfEvent`] per key press ([`DtmfReceiver`]), and producing the packets
//! for a key press we send ([`DtmfSender`], wrapped into RTP by [`build_rtp`]).
//!
//! # Receiving
//!
//! One key press is one RTP timestamp: a start packet (marker bit), updates with a growing
//! duration, then (usually three) end packets with the E bit. The receiver reports the press
//! once, when it knows the final duration: on the first end packet, when a packet of a newer
//! event arrives (the end packets were lost), or when no packet came for
//! [`DtmfReceiver::TIMEOUT`] (`Timer::DtmfTimeout`, polled with [`DtmfReceiver::poll_event`]).
//! A lost start packet does not matter: any packet with a new timestamp starts the event.
//! Repeats and late packets of a press already reported are counted and ignored. A press
//! longer than the 16-bit duration field (RFC 4733 §2.5.1.3: a new segment with a new
//! timestamp and no marker) is reported once, with the total duration.
//!
//! # Sending
//!
//! [`DtmfSender::send_digit`] queues a press. [`DtmfSender::poll_packet`] then yields, at the
//! caller's clock: the start packet (marker, duration 0), an update every 50 ms with the
//! duration so far, and three end packets (E bit, final duration) 20 ms apart; the next
//! queued press starts 50 ms after. [`DtmfSender::poll_timeout`] (`Timer::DtmfSend`) says when
//! the next packet is due. Every packet of a press has the same RTP timestamp: the stream's
//! timestamp when the press started, which the caller passes to `poll_packet` (it owns the
//! stream's SSRC, sequence numbers and timestamp clock; audio should pause while
//! [`DtmfSender::is_active`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_rtp::header::Header;
use rtc_rtp::packet::Packet;
use rtc_shared::marshal::Marshal;

use crate::core::media::rtp::RtpInfo;
use crate::core::timer::{Timer, TimerTable};

/// Size of one telephone-event payload.
pub const EVENT_LEN: usize = 4;
/// Highest event code this module handles (16 = hook flash).
pub const MAX_EVENT: u8 = 16;

/// Why a telephone-event payload or request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// Fewer than 4 payload bytes.
    #[error("telephone-event payload too short: {0} bytes")]
    Short(usize),
    /// An event code other than 0-16 (DTMF digits and flash).
    #[error("unsupported telephone-event code {0}")]
    UnsupportedEvent(u8),
    /// A character that is not a DTMF key (`0-9 * # A-D`, `!` for flash).
    #[error("not a DTMF key: {0:?}")]
    BadKey(char),
    /// The send queue is full.
    #[error("DTMF send queue full ({0} presses)")]
    QueueFull(usize),
    /// The RTP packet could not be serialized.
    #[error("cannot build RTP packet: {0}")]
    Rtp(String),
}

/// A DTMF key or hook flash (event codes 0-16 of RFC 4733 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfKey(u8);

impl DtmfKey {
    /// Hook flash (event 16).
    pub const FLASH: DtmfKey = DtmfKey(16);

    /// The key for an event code, if it is 0-16.
    pub fn from_code(code: u8) -> Option<DtmfKey> {
        (code <= MAX_EVENT).then_some(DtmfKey(code))
    }

    /// The key for `0-9 * # A-D` (case-insensitive) or `!` (flash).
    pub fn from_char(c: char) -> Option<DtmfKey> {
        let code = match c.to_ascii_uppercase() {
            d @ '0'..='9' => d as u8 - b'0',
            '*' => 10,
            '#' => 11,
            l @ 'A'..='D' => 12 + (l as u8 - b'A'),
            '!' => 16,
            _ => return None,
        };
        Some(DtmfKey(code))
    }

    /// RFC 4733 event code.
    pub fn code(self) -> u8 {
        self.0
    }

    /// `0-9 * # A-D`, or `!` for flash.
    pub fn as_char(self) -> char {
        match self.0 {
            d @ 0..=9 => char::from(b'0' + d),
            10 => '*',
            11 => '#',
            l @ 12..=15 => char::from(b'A' + l - 12),
            _ => '!',
        }
    }

    /// True for hook flash.
    pub fn is_flash(self) -> bool {
        self.0 == 16
    }
}

/// The telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code.
    pub event: u8,
    /// E bit: the event has ended.
    pub end: bool,
    /// Power level, 0 to 63 meaning 0 to -63 dBm0.
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first event of `payload`; extra bytes are ignored.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        let [event, flags, d0, d1] = match payload.get(..EVENT_LEN) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => return Err(DtmfError::Short(payload.len())),
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4 bytes on the wire (R bit zero).
    pub fn to_bytes(self) -> [u8; EVENT_LEN] {
        let flags = (u8::from(self.end) << 7) | (self.volume & 0x3F);
        let d = self.duration.to_be_bytes();
        [self.event, flags, d[0], d[1]]
    }
}

/// How the receiver learnt that a press ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// An end packet (E bit).
    EndBit,
    /// A packet of a newer event arrived first.
    NextEvent,
    /// No packet for [`DtmfReceiver::TIMEOUT`].
    Timeout,
}

/// One received key press, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The key.
    pub key: DtmfKey,
    /// SSRC of the stream that carried it.
    pub ssrc: u32,
    /// RTP timestamp of the press (its first segment).
    pub timestamp: u32,
    /// Duration in timestamp units.
    pub duration_samples: u32,
    /// Duration in time, at the receiver's clock rate.
    pub duration: Duration,
    /// Power level, 0 to 63 meaning 0 to -63 dBm0.
    pub volume: u8,
    /// How the end was learnt.
    pub cause: EndCause,
}

/// Receiver counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtmfReceiverStats {
    /// Event packets accepted.
    pub packets: u64,
    /// Presses reported.
    pub events: u64,
    /// Packets of a press already reported (end retransmissions, late updates).
    pub duplicates: u64,
    /// Packets older than the current press that belong to no known press.
    pub stale: u64,
    /// Packets refused ([`DtmfError`]).
    pub errors: u64,
}

/// The press being received.
#[derive(Debug, Clone, Copy)]
struct Active {
    ssrc: u32,
    /// Timestamp of the first segment.
    first_ts: u32,
    /// Timestamp of the current segment.
    segment_ts: u32,
    /// Duration of the earlier segments.
    base: u32,
    /// Largest duration seen in the current segment.
    duration: u16,
    key: DtmfKey,
    volume: u8,
}

impl Active {
    fn total(&self) -> u32 {
        self.base.saturating_add(u32::from(self.duration))
    }
}

/// Turns received telephone-event packets into one [`DtmfEvent`] per press.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    active: Option<Active>,
    /// (SSRC, segment timestamp) of presses seen (reported or active), newest last.
    done: VecDeque<(u32, u32)>,
    ready: VecDeque<DtmfEvent>,
    timers: TimerTable,
    stats: DtmfReceiverStats,
}

impl DtmfReceiver {
    /// A press without any packet for this long is reported as ended.
    pub const TIMEOUT: Duration = Duration::from_millis(500);
    /// How many reported presses are remembered to ignore their repeats.
    const REMEMBERED: usize = 16;

    /// A receiver for events with the given RTP clock rate (8000 for narrowband).
    pub fn new(clock_rate: u32) -> DtmfReceiver {
        DtmfReceiver {
            clock_rate: clock_rate.max(1),
            active: None,
            done: VecDeque::with_capacity(Self::REMEMBERED),
            ready: VecDeque::new(),
            timers: TimerTable::default(),
            stats: DtmfReceiverStats::default(),
        }
    }

    /// Handles one received telephone-event packet (the caller filters on payload type).
    /// Returns the press that ended with it, if any; a second one (rare: a newer press that
    /// ended at once) waits in [`poll_event`](Self::poll_event).
    pub fn on_packet(
        &mut self,
        now: Instant,
        info: &RtpInfo,
        payload: &[u8],
    ) -> Result<Option<DtmfEvent>, DtmfError> {
        let ev = TelephoneEvent::parse(payload).inspect_err(|_| self.stats.errors += 1)?;
        let Some(key) = DtmfKey::from_code(ev.event) else {
            self.stats.errors += 1;
            return Err(DtmfError::UnsupportedEvent(ev.event));
        };
        self.stats.packets += 1;
        self.handle(now, info, key, ev);
        Ok(self.ready.pop_front())
    }

    /// A press ready to report: left over from [`on_packet`](Self::on_packet), or ended by
    /// timeout at `now`.
    pub fn poll_event(&mut self, now: Instant) -> Option<DtmfEvent> {
        if self.timers.is_expired(Timer::DtmfTimeout, now) {
            self.finish(EndCause::Timeout);
        }
        self.ready.pop_front()
    }

    /// When the press being received times out (`Timer::DtmfTimeout`). Presses left over
    /// from [`on_packet`](Self::on_packet) are ready at once: drain [`poll_event`](Self::poll_event)
    /// after each packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Counters since creation.
    pub fn stats(&self) -> DtmfReceiverStats {
        self.stats
    }

    fn handle(&mut self, now: Instant, info: &RtpInfo, key: DtmfKey, ev: TelephoneEvent) {
        let same_press = |a: &Active| a.ssrc == info.ssrc && a.segment_ts == info.timestamp;
        if self.active.as_ref().is_some_and(same_press) {
            self.update(now, key, ev);
            return;
        }
        if self.done.contains(&(info.ssrc, info.timestamp)) {
            self.stats.duplicates += 1;
            return;
        }
        if let Some(active) = self.active {
            let same_stream = active.ssrc == info.ssrc;
            let newer = ts_newer(info.timestamp, active.segment_ts);
            if same_stream && !newer {
                self.stats.stale += 1;
                return;
            }
            if same_stream && self.is_next_segment(&active, info, key, ev) {
                self.next_segment(now, info, ev);
                return;
            }
            self.finish(EndCause::NextEvent);
        }
        self.start(now, info, key, ev);
    }

    /// RFC 4733 §2.5.1.3: a long press continues with a new timestamp and no marker, after a
    /// segment whose duration reached the 16-bit maximum.
    fn is_next_segment(
        &self,
        a: &Active,
        info: &RtpInfo,
        key: DtmfKey,
        _ev: TelephoneEvent,
    ) -> bool {
        const NEAR_MAX: u16 = u16::MAX - 2 * 1600;
        !info.marker
            && key == a.key
            && a.duration >= NEAR_MAX
            && info.timestamp.wrapping_sub(a.segment_ts) <= u32::from(u16::MAX) + 1
    }

    fn next_segment(&mut self, now: Instant, info: &RtpInfo, ev: TelephoneEvent) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        a.base = a.base.saturating_add(info.timestamp.wrapping_sub(a.segment_ts));
        a.segment_ts = info.timestamp;
        a.duration = ev.duration;
        self.remember(info.ssrc, info.timestamp);
        self.after_packet(now, ev.end);
    }

    fn start(&mut self, now: Instant, info: &RtpInfo, key: DtmfKey, ev: TelephoneEvent) {
        self.active = Some(Active {
            ssrc: info.ssrc,
            first_ts: info.timestamp,
            segment_ts: info.timestamp,
            base: 0,
            duration: ev.duration,
            key,
            volume: ev.volume,
        });
        self.remember(info.ssrc, info.timestamp);
        self.after_packet(now, ev.end);
    }

    fn update(&mut self, now: Instant, key: DtmfKey, ev: TelephoneEvent) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        // Out-of-order updates carry a smaller duration: keep the largest.
        a.duration = a.duration.max(ev.duration);
        a.key = key;
        a.volume = ev.volume;
        self.after_packet(now, ev.end);
    }

    fn after_packet(&mut self, now: Instant, end: bool) {
        if end {
            self.finish(EndCause::EndBit);
        } else {
            self.timers.set(Timer::DtmfTimeout, now + Self::TIMEOUT);
        }
    }

    /// Reports the active press (its segments stay remembered so repeats are ignored).
    fn finish(&mut self, cause: EndCause) {
        self.timers.stop(Timer::DtmfTimeout);
        let Some(a) = self.active.take() else { return };
        let samples = a.total();
        self.stats.events += 1;
        self.ready.push_back(DtmfEvent {
            key: a.key,
            ssrc: a.ssrc,
            timestamp: a.first_ts,
            duration_samples: samples,
            duration: samples_to_duration(samples, self.clock_rate),
            volume: a.volume,
            cause,
        });
    }

    fn remember(&mut self, ssrc: u32, ts: u32) {
        if self.done.len() == Self::REMEMBERED {
            self.done.pop_front();
        }
        self.done.push_back((ssrc, ts));
    }
}

/// True if timestamp `a` is after `b`, modulo 2^32.
fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

fn samples_to_duration(samples: u32, clock_rate: u32) -> Duration {
    Duration::from_micros(u64::from(samples) * 1_000_000 / u64::from(clock_rate.max(1)))
}

fn duration_to_samples(d: Duration, clock_rate: u32) -> u64 {
    (d.as_micros() * u128::from(clock_rate) / 1_000_000).min(u128::from(u64::MAX)) as u64
}

/// One telephone-event packet to send; the caller adds SSRC and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// The negotiated telephone-event payload type.
    pub payload_type: u8,
    /// Marker bit: set on the first packet of a press.
    pub marker: bool,
    /// RTP timestamp (the same for every packet of a press).
    pub timestamp: u32,
    /// The event payload.
    pub event: TelephoneEvent,
}

impl DtmfPacket {
    /// The 4-byte payload.
    pub fn payload(&self) -> [u8; EVENT_LEN] {
        self.event.to_bytes()
    }
}

/// Serializes `packet` as a full RTP packet with the call's `ssrc` and `seq`.
pub fn build_rtp(packet: &DtmfPacket, ssrc: u32, seq: u16) -> Result<Vec<u8>, DtmfError> {
    let rtp = Packet {
        header: Header {
            version: 2,
            marker: packet.marker,
            payload_type: packet.payload_type & 0x7F,
            sequence_number: seq,
            timestamp: packet.timestamp,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(&packet.payload()),
    };
    rtp.marshal().map(|b| b.to_vec()).map_err(|e| DtmfError::Rtp(e.to_string()))
}

/// Where the press being sent is.
#[derive(Debug, Clone, Copy)]
struct Sending {
    key: DtmfKey,
    /// Total duration in timestamp units (at most 0xFFFF, one segment).
    total: u16,
    started: Instant,
    timestamp: Option<u32>,
    /// Updates sent so far (the start packet is update 0).
    updates: u32,
    /// End packets sent so far.
    ends: u8,
}

/// Produces the RFC 4733 packets for key presses we send.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    payload_type: u8,
    clock_rate: u32,
    volume: u8,
    queue: VecDeque<(DtmfKey, Duration)>,
    current: Option<Sending>,
    /// First timestamp the next press may use (after the end of the previous one).
    min_next_ts: Option<u32>,
    timers: TimerTable,
}

impl DtmfSender {
    /// Interval between updates of a press in progress.
    pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);
    /// Interval between the three end packets.
    pub const END_SPACING: Duration = Duration::from_millis(20);
    /// End packets sent per press.
    pub const END_PACKETS: u8 = 3;
    /// Silence between two queued presses.
    pub const INTER_DIGIT_GAP: Duration = Duration::from_millis(50);
    /// Presses that may wait in the queue.
    pub const QUEUE_CAPACITY: usize = 64;
    /// Shortest press sent.
    pub const MIN_DURATION: Duration = Duration::from_millis(40);

    /// A sender for the negotiated telephone-event payload type and its clock rate.
    pub fn new(payload_type: u8, clock_rate: u32) -> DtmfSender {
        DtmfSender {
            payload_type: payload_type & 0x7F,
            clock_rate: clock_rate.max(1),
            volume: 10,
            queue: VecDeque::new(),
            current: None,
            min_next_ts: None,
            timers: TimerTable::default(),
        }
    }

    /// Power level for later presses, 0 to 63 meaning 0 to -63 dBm0 (default 10).
    pub fn set_volume(&mut self, volume: u8) {
        self.volume = volume.min(63);
    }

    /// Queues a press of `key` lasting `duration` (at least 40 ms, at most one 16-bit
    /// segment: about 8 s at 8000 Hz). It starts at `now` if nothing is being sent.
    pub fn send_digit(
        &mut self,
        now: Instant,
        key: DtmfKey,
        duration: Duration,
    ) -> Result<(), DtmfError> {
        if self.queue.len() >= Self::QUEUE_CAPACITY {
            return Err(DtmfError::QueueFull(self.queue.len()));
        }
        self.queue.push_back((key, duration.max(Self::MIN_DURATION)));
        if self.current.is_none() && !self.timers.is_set(Timer::DtmfSend) {
            self.timers.set(Timer::DtmfSend, now);
        }
        Ok(())
    }

    /// Queues every key of `digits` (see [`send_digit`](Self::send_digit)); nothing is queued
    /// if one character is not a key.
    pub fn send_digits(
        &mut self,
        now: Instant,
        digits: &str,
        duration: Duration,
    ) -> Result<(), DtmfError> {
        let keys: Vec<DtmfKey> = digits
            .chars()
            .map(|c| DtmfKey::from_char(c).ok_or(DtmfError::BadKey(c)))
            .collect::<Result<_, _>>()?;
        if self.queue.len() + keys.len() > Self::QUEUE_CAPACITY {
            return Err(DtmfError::QueueFull(self.queue.len()));
        }
        keys.into_iter().try_for_each(|k| self.send_digit(now, k, duration))
    }

    /// The next packet due at `now`, if any. `stream_timestamp` is the call's RTP timestamp
    /// at `now`; it becomes the timestamp of a press that starts with this packet. Call again
    /// until `None`.
    pub fn poll_packet(&mut self, now: Instant, stream_timestamp: u32) -> Option<DtmfPacket> {
        if !self.timers.is_expired(Timer::DtmfSend, now) {
            return None;
        }
        if self.current.is_none() {
            let (key, duration) = self.queue.pop_front()?;
            let total =
                duration_to_samples(duration, self.clock_rate).min(u64::from(u16::MAX)) as u16;
            self.current =
                Some(Sending { key, total, started: now, timestamp: None, updates: 0, ends: 0 });
        }
        let packet = self.next_of_current(now, stream_timestamp);
        self.schedule(now);
        packet
    }

    /// When the next packet is due (`Timer::DtmfSend`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// True while a press is being sent (the caller pauses audio on the stream).
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Presses waiting behind the current one.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn next_of_current(&mut self, now: Instant, stream_timestamp: u32) -> Option<DtmfPacket> {
        let min_next = self.min_next_ts;
        let volume = self.volume;
        let cur = self.current.as_mut()?;
        let ts = *cur.timestamp.get_or_insert_with(|| match min_next {
            Some(min) if !ts_newer(stream_timestamp, min) && stream_timestamp != min => min,
            _ => stream_timestamp,
        });
        let elapsed =
            duration_to_samples(now.saturating_duration_since(cur.started), self.clock_rate);
        let marker = cur.updates == 0 && cur.ends == 0;
        let end = elapsed >= u64::from(cur.total) || cur.ends > 0;
        let duration = if end { cur.total } else { elapsed as u16 };
        if end {
            cur.ends += 1;
        } else {
            cur.updates += 1;
        }
        Some(DtmfPacket {
            payload_type: self.payload_type,
            marker,
            timestamp: ts,
            event: TelephoneEvent { event: cur.key.code(), end, volume, duration },
        })
    }

    /// Sets `Timer::DtmfSend` for the next packet of the press, or the next press.
    fn schedule(&mut self, now: Instant) {
        let Some(cur) = self.current else {
            self.timers.stop(Timer::DtmfSend);
            return;
        };
        if cur.ends >= Self::END_PACKETS {
            let ts = cur.timestamp.unwrap_or(0);
            self.min_next_ts = Some(ts.wrapping_add(u32::from(cur.total)).wrapping_add(1));
            self.current = None;
            if self.queue.is_empty() {
                self.timers.stop(Timer::DtmfSend);
            } else {
                self.timers.set(Timer::DtmfSend, now + Self::INTER_DIGIT_GAP);
            }
            return;
        }
        let next = if cur.ends > 0 {
            now + Self::END_SPACING
        } else {
            let end_at = cur.started + samples_to_duration(u32::from(cur.total), self.clock_rate);
            (cur.started + Self::UPDATE_INTERVAL * cur.updates).min(end_at)
        };
        self.timers.set(Timer::DtmfSend, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::rtp::inspect;

    const PT: u8 = 101;
    const SSRC: u32 = 0x1234_5678;

    /// Runs the sender on a 10 ms fake clock until idle; returns (sent at, RTP bytes).
    fn run_sender(sender: &mut DtmfSender, t0: Instant) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        let mut seq = 100u16;
        for step in 0..2000u32 {
            let now = t0 + Duration::from_millis(10) * step;
            let stream_ts = 80 * step;
            while let Some(p) = sender.poll_packet(now, stream_ts) {
                out.push((now, build_rtp(&p, SSRC, seq).unwrap()));
                seq = seq.wrapping_add(1);
            }
            if sender.poll_timeout().is_none() {
                break;
            }
        }
        out
    }

    fn feed(rx: &mut DtmfReceiver, at: Instant, wire: &[u8]) -> Option<DtmfEvent> {
        let info = inspect(wire).unwrap();
        let payload = &wire[info.payload_offset..info.payload_offset + info.payload_len];
        rx.on_packet(at, &info, payload).unwrap()
    }

    fn info(ts: u32, seq: u16, marker: bool) -> RtpInfo {
        RtpInfo {
            ssrc: SSRC,
            seq,
            timestamp: ts,
            payload_type: PT,
            marker,
            payload_len: 4,
            payload_offset: 12,
        }
    }

    fn ev(event: u8, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent { event, end, volume: 10, duration }.to_bytes()
    }

    #[test]
    fn keys_map_both_ways() {
        for (i, c) in "0123456789*#ABCD!".chars().enumerate() {
            let k = DtmfKey::from_char(c).unwrap();
            assert_eq!(k.code() as usize, i);
            assert_eq!(k.as_char(), c);
            assert_eq!(DtmfKey::from_code(i as u8), Some(k));
        }
        assert_eq!(DtmfKey::from_char('a'), DtmfKey::from_char('A'));
        assert!(DtmfKey::from_char('x').is_none());
        assert!(DtmfKey::from_code(17).is_none());
        assert!(DtmfKey::FLASH.is_flash());
    }

    #[test]
    fn payload_round_trip_and_short_payload() {
        let e = TelephoneEvent { event: 11, end: true, volume: 63, duration: 0xABCD };
        assert_eq!(e.to_bytes(), [11, 0xBF, 0xAB, 0xCD]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Ok(e));
        for n in 0..4 {
            assert_eq!(
                TelephoneEvent::parse(&[1, 2, 3][..n.min(3)]),
                Err(DtmfError::Short(n.min(3)))
            );
        }
    }

    #[test]
    fn sender_timeline_start_updates_three_ends() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(PT, 8000);
        tx.send_digit(t0, DtmfKey::from_char('5').unwrap(), Duration::from_millis(120)).unwrap();
        assert_eq!(tx.poll_timeout(), Some(t0));
        let sent = run_sender(&mut tx, t0);
        let infos: Vec<(u64, RtpInfo, TelephoneEvent)> = sent
            .iter()
            .map(|(at, w)| {
                let i = inspect(w).unwrap();
                let e = TelephoneEvent::parse(&w[i.payload_offset..]).unwrap();
                (at.duration_since(t0).as_millis() as u64, i, e)
            })
            .collect();
        let times: Vec<u64> = infos.iter().map(|x| x.0).collect();
        assert_eq!(times, vec![0, 50, 100, 120, 140, 160]);
        let durations: Vec<u16> = infos.iter().map(|x| x.2.duration).collect();
        assert_eq!(durations, vec![0, 400, 800, 960, 960, 960]);
        let ends: Vec<bool> = infos.iter().map(|x| x.2.end).collect();
        assert_eq!(ends, vec![false, false, false, true, true, true]);
        assert!(infos[0].1.marker);
        assert!(infos[1..].iter().all(|x| !x.1.marker));
        assert!(infos
            .iter()
            .all(|x| x.1.timestamp == 0 && x.1.ssrc == SSRC && x.1.payload_type == PT));
        assert!(infos.iter().all(|x| x.2.event == 5));
        let seqs: Vec<u16> = infos.iter().map(|x| x.1.seq).collect();
        assert_eq!(seqs, (100..106).collect::<Vec<_>>());
        assert!(!tx.is_active());
    }

    #[test]
    fn round_trip_sender_to_receiver_reports_each_digit_once() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(PT, 8000);
        tx.send_digits(t0, "12#*9D!", Duration::from_millis(100)).unwrap();
        let sent = run_sender(&mut tx, t0);
        let mut rx = DtmfReceiver::new(8000);
        let mut got = Vec::new();
        for (at, w) in &sent {
            got.extend(feed(&mut rx, *at, w));
        }
        let keys: String = got.iter().map(|e| e.key.as_char()).collect();
        assert_eq!(keys, "12#*9D!");
        assert!(got
            .iter()
            .all(|e| e.duration == Duration::from_millis(100) && e.duration_samples == 800));
        assert!(got.iter().all(|e| e.cause == EndCause::EndBit));
        // Distinct, increasing timestamps per press.
        assert!(got.windows(2).all(|w| ts_newer(w[1].timestamp, w[0].timestamp)));
        assert_eq!(rx.stats().duplicates, 14, "two repeated end packets per press");
        assert_eq!(rx.stats().events, 7);
    }

    #[test]
    fn same_stream_timestamp_does_not_merge_presses() {
        // A caller that does not advance the stream timestamp still gets distinct presses.
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(PT, 8000);
        tx.send_digits(t0, "11", Duration::from_millis(60)).unwrap();
        let mut rx = DtmfReceiver::new(8000);
        let mut got = Vec::new();
        for step in 0..100u32 {
            let now = t0 + Duration::from_millis(10) * step;
            while let Some(p) = tx.poll_packet(now, 5000) {
                got.extend(feed(&mut rx, now, &build_rtp(&p, SSRC, step as u16).unwrap()));
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].timestamp, 5000);
        assert_eq!(got[1].timestamp, 5000 + 480 + 1);
    }

    #[test]
    fn duplicates_and_repeated_ends_are_ignored() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(t0, &info(1000, 1, true), &ev(3, false, 0)), Ok(None));
        assert_eq!(rx.on_packet(t0, &info(1000, 1, true), &ev(3, false, 0)), Ok(None));
        assert_eq!(rx.on_packet(t0, &info(1000, 2, false), &ev(3, false, 400)), Ok(None));
        let e = rx.on_packet(t0, &info(1000, 3, false), &ev(3, true, 800)).unwrap().unwrap();
        assert_eq!((e.key.as_char(), e.duration_samples, e.timestamp), ('3', 800, 1000));
        for seq in 4..10 {
            assert_eq!(rx.on_packet(t0, &info(1000, seq, false), &ev(3, true, 800)), Ok(None));
        }
        // A late update of the finished press is not a new press either.
        assert_eq!(rx.on_packet(t0, &info(1000, 2, false), &ev(3, false, 400)), Ok(None));
        assert_eq!(rx.poll_event(t0 + Duration::from_secs(5)), None);
        assert_eq!(rx.stats().events, 1);
        assert_eq!(rx.stats().duplicates, 7);
    }

    #[test]
    fn lost_start_packet_still_reports() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(t0, &info(2000, 2, false), &ev(9, false, 400)), Ok(None));
        let e = rx.on_packet(t0, &info(2000, 3, false), &ev(9, true, 640)).unwrap().unwrap();
        assert_eq!(
            (e.key.as_char(), e.duration, e.cause),
            ('9', Duration::from_millis(80), EndCause::EndBit)
        );
        // Only an end packet arrives: reported from it alone.
        let e = rx.on_packet(t0, &info(9000, 9, false), &ev(1, true, 800)).unwrap().unwrap();
        assert_eq!((e.key.as_char(), e.duration_samples), ('1', 800));
    }

    #[test]
    fn out_of_order_updates_keep_the_largest_duration() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(t0, &info(500, 3, false), &ev(7, false, 800)), Ok(None));
        assert_eq!(rx.on_packet(t0, &info(500, 1, true), &ev(7, false, 0)), Ok(None));
        assert_eq!(rx.on_packet(t0, &info(500, 2, false), &ev(7, false, 400)), Ok(None));
        // End lost; the next press ends this one, with the largest duration seen.
        let e = rx.on_packet(t0, &info(5000, 9, true), &ev(8, false, 0)).unwrap().unwrap();
        assert_eq!((e.key.as_char(), e.duration_samples, e.cause), ('7', 800, EndCause::NextEvent));
        // A packet older than the current press, of no known press, is stale.
        assert_eq!(rx.on_packet(t0, &info(400, 0, false), &ev(7, true, 80)), Ok(None));
        assert_eq!(rx.stats().stale, 1);
    }

    #[test]
    fn newer_press_that_ends_at_once_queues_second_event() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(t0, &info(100, 1, true), &ev(1, false, 0)), Ok(None));
        let first = rx.on_packet(t0, &info(2000, 5, false), &ev(2, true, 800)).unwrap().unwrap();
        assert_eq!(first.key.as_char(), '1');
        let second = rx.poll_event(t0).unwrap();
        assert_eq!(second.key.as_char(), '2');
        assert_eq!(rx.poll_event(t0), None);
    }

    #[test]
    fn all_end_packets_lost_times_out() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(t0, &info(100, 1, true), &ev(0, false, 0)), Ok(None));
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(rx.on_packet(t1, &info(100, 2, false), &ev(0, false, 400)), Ok(None));
        assert_eq!(rx.poll_timeout(), Some(t1 + DtmfReceiver::TIMEOUT));
        assert_eq!(rx.poll_event(t1 + Duration::from_millis(499)), None);
        let e = rx.poll_event(t1 + DtmfReceiver::TIMEOUT).unwrap();
        assert_eq!((e.key.as_char(), e.duration_samples, e.cause), ('0', 400, EndCause::Timeout));
        assert_eq!(rx.poll_timeout(), None);
        // A late end packet of it is a duplicate.
        assert_eq!(rx.on_packet(t1, &info(100, 3, false), &ev(0, true, 800)), Ok(None));
        assert_eq!(rx.stats().events, 1);
    }

    #[test]
    fn long_press_segments_are_one_event() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(t0, &info(0, 1, true), &ev(4, false, 65_000)), Ok(None));
        assert_eq!(rx.on_packet(t0, &info(0, 2, false), &ev(4, false, 65_535)), Ok(None));
        assert_eq!(rx.on_packet(t0, &info(65_535, 3, false), &ev(4, false, 400)), Ok(None));
        let e = rx.on_packet(t0, &info(65_535, 4, false), &ev(4, true, 800)).unwrap().unwrap();
        assert_eq!((e.timestamp, e.duration_samples), (0, 65_535 + 800));
        assert_eq!(rx.stats().events, 1);
    }

    #[test]
    fn garbage_payload_is_an_error_not_a_panic() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        for n in 0..4 {
            assert_eq!(
                rx.on_packet(t0, &info(1, 1, false), &[0xFF; 3][..n]),
                Err(DtmfError::Short(n))
            );
        }
        assert_eq!(
            rx.on_packet(t0, &info(1, 1, false), &[200, 0, 0, 0]),
            Err(DtmfError::UnsupportedEvent(200))
        );
        assert_eq!(rx.stats().errors, 5);
        let mut state = 0x1234_5678u32;
        for i in 0..5000u32 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let bytes = state.to_be_bytes();
            let _ = rx.on_packet(
                t0,
                &info(state >> 3, i as u16, i % 7 == 0),
                &bytes[..(i % 5) as usize],
            );
            let _ = rx.poll_event(t0 + Duration::from_millis(u64::from(i)));
        }
    }

    #[test]
    fn send_digits_rejects_bad_keys_and_full_queue() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(PT, 8000);
        assert_eq!(
            tx.send_digits(t0, "12x", Duration::from_millis(100)),
            Err(DtmfError::BadKey('x'))
        );
        assert_eq!(tx.queued(), 0);
        let many = "1".repeat(DtmfSender::QUEUE_CAPACITY);
        tx.send_digits(t0, &many, Duration::from_millis(100)).unwrap();
        assert!(matches!(
            tx.send_digit(t0, DtmfKey::FLASH, Duration::from_millis(100)),
            Err(DtmfError::QueueFull(_))
        ));
    }
}
