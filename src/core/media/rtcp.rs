//! RTCP for one call (RFC 3550 §6, sans-IO), serialized with `rtc-rtcp`.
//!
//! Owns: what we sent (packet and octet counts, last RTP timestamp), what we received from the
//! remote source (extended highest sequence number, cumulative loss, fraction lost since the
//! last report, interarrival jitter: RFC 3550 A.1, A.3, A.8), the LSR/DLSR bookkeeping for
//! received sender reports, the round-trip time computed from the reports the remote sends
//! about us, and the report schedule (`Timer::RtcpReport`).
//!
//! - [`RtcpSession::on_rtp_sent`] / [`RtcpSession::on_rtp_received`]: feed the media path.
//! - [`RtcpSession::poll_report`]: a compound SR or RR + SDES(CNAME) when the timer is due,
//!   every `interval` (5 s) randomized to `[0.5, 1.5]·interval` with the injected seed; the
//!   first one after half an interval (RFC 3550 §6.2, §6.3.1, without reconsideration).
//! - [`RtcpSession::on_rtcp`]: a received datagram (SR, RR, SDES, BYE; others are listed and
//!   skipped). Every sub-packet is checked (version, length, report count, padding) before
//!   `rtc-rtcp` parses it; a bad datagram is a typed [`RtcpError`], counted, and changes no
//!   state. Nothing a peer sends makes this panic.
//!
//! Wall-clock time (for NTP timestamps) is anchored once at creation: `ntp_now` at `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::packet::Packet as RtcpPacket;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use crate::core::media::rtp::RtpInfo;
use crate::core::timer::{Timer, TimerTable};

/// RTCP packet types handled here.
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// Size of one report block.
const BLOCK_LEN: usize = 24;
/// RFC 3550 A.1.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
/// Seconds from 1900 (NTP era 0) to 1970 (Unix epoch).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Why a received RTCP datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// No bytes.
    #[error("empty RTCP datagram")]
    Empty,
    /// Fewer than 4 bytes left for a header.
    #[error("RTCP header truncated at offset {offset}")]
    Truncated {
        /// Offset of the sub-packet in the datagram.
        offset: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {version} at offset {offset}")]
    BadVersion {
        /// Offset of the sub-packet in the datagram.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// The length field runs past the end of the datagram.
    #[error("RTCP length {length} words at offset {offset} overruns the datagram")]
    BadLength {
        /// Offset of the sub-packet in the datagram.
        offset: usize,
        /// The length field (32-bit words minus one).
        length: u16,
    },
    /// The report count does not fit in the packet.
    #[error("RTCP report count {count} does not fit the packet at offset {offset}")]
    BadCount {
        /// Offset of the sub-packet in the datagram.
        offset: usize,
        /// The count field.
        count: u8,
    },
    /// A padding count of zero or larger than the packet body.
    #[error("RTCP padding invalid at offset {offset}")]
    BadPadding {
        /// Offset of the sub-packet in the datagram.
        offset: usize,
    },
    /// Any other malformation found by the parser.
    #[error("malformed RTCP packet at offset {offset}: {reason}")]
    Malformed {
        /// Offset of the sub-packet in the datagram.
        offset: usize,
        /// The parser's message.
        reason: String,
    },
}

/// Session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpConfig {
    /// Our SSRC (the one on the RTP we send).
    pub ssrc: u32,
    /// Our CNAME (RFC 3550 §6.5.1), at most 255 bytes.
    pub cname: String,
    /// RTP clock rate of the media (8000 for G.711).
    pub clock_rate: u32,
    /// Mean report interval (RFC 3550 recommends 5 s minimum).
    pub interval: Duration,
}

impl RtcpConfig {
    /// Defaults for a G.711 call: 8000 Hz, 5 s.
    pub fn new(ssrc: u32, cname: impl Into<String>) -> RtcpConfig {
        RtcpConfig { ssrc, cname: cname.into(), clock_rate: 8000, interval: Duration::from_secs(5) }
    }
}

/// What the remote's last report said about the RTP we send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteReport {
    /// Fraction of our packets lost in its last interval, 0.0 to 1.0.
    pub fraction_lost: f64,
    /// Cumulative number of our packets lost (negative with duplicates).
    pub cumulative_lost: i32,
    /// Extended highest sequence number it received from us.
    pub highest_seq: u32,
    /// The interarrival jitter it measured on our stream, in ms.
    pub jitter_ms: f64,
    /// When the report arrived.
    pub at: Instant,
}

/// A snapshot of the session's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpStats {
    /// RTP packets we sent.
    pub packets_sent: u64,
    /// RTP payload octets we sent.
    pub octets_sent: u64,
    /// SSRC of the remote source, once RTP arrived.
    pub remote_ssrc: Option<u32>,
    /// RTP packets received from it (duplicates included, as RFC 3550 counts them).
    pub packets_received: u64,
    /// Packets expected from its sequence numbers.
    pub packets_expected: u64,
    /// Expected minus received (negative with duplicates).
    pub cumulative_lost: i64,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Fraction lost in our last report, 0 to 255 (/256).
    pub fraction_lost: u8,
    /// RFC 3550 interarrival jitter of the received stream, in ms.
    pub jitter_ms: f64,
    /// Last round-trip time computed from a report about us.
    pub rtt: Option<Duration>,
    /// The remote's last report about us.
    pub remote: Option<RemoteReport>,
    /// Compound reports we produced.
    pub reports_sent: u64,
    /// RTCP datagrams accepted.
    pub datagrams_received: u64,
    /// RTCP datagrams refused with an [`RtcpError`].
    pub malformed: u64,
    /// BYE packets received.
    pub byes_received: u64,
}

/// One sub-packet of an accepted datagram, summarized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpItem {
    /// A sender report.
    SenderReport {
        /// Sender SSRC.
        ssrc: u32,
        /// Sender's packet count.
        packet_count: u32,
        /// Sender's octet count.
        octet_count: u32,
        /// Number of report blocks.
        blocks: usize,
    },
    /// A receiver report.
    ReceiverReport {
        /// Reporter SSRC.
        ssrc: u32,
        /// Number of report blocks.
        blocks: usize,
    },
    /// A source description; the CNAME of each chunk that has one.
    Sdes {
        /// (SSRC, CNAME) pairs.
        cnames: Vec<(u32, String)>,
    },
    /// The sources are leaving.
    Bye {
        /// SSRCs leaving.
        sources: Vec<u32>,
        /// Optional reason text.
        reason: String,
    },
    /// Another packet type (APP, feedback, XR), not interpreted.
    Other {
        /// Its packet type.
        packet_type: u8,
    },
}

/// RFC 3550 A.1 / A.3 / A.8 state for the remote source.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Last transit time, in timestamp units (wrapping).
    transit: Option<u32>,
    /// Interarrival jitter, in timestamp units.
    jitter: f64,
    fraction_lost: u8,
}

impl Source {
    fn new(ssrc: u32, seq: u16) -> Source {
        Source {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base_seq: u32::from(seq),
            bad_seq: u32::MAX,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            fraction_lost: 0,
        }
    }

    /// RFC 3550 A.1 `update_seq` without probation; false when the packet is not counted.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the source restarted.
                *self = Source { jitter: self.jitter, ..Source::new(self.ssrc, seq) };
            } else {
                self.bad_seq = u32::from(seq.wrapping_add(1));
                return false;
            }
        }
        self.received += 1;
        true
    }

    /// RFC 3550 A.8, with the arrival time in timestamp units.
    fn update_jitter(&mut self, arrival: u32, timestamp: u32) {
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.transit {
            let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// RFC 3550 A.3: fills a report block and starts a new interval.
    fn report_block(&mut self, lsr: u32, dlsr: u32) -> ReceptionReport {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        self.fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let lost = self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF);
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost: self.fraction_lost,
            total_lost: (lost as i32 as u32) & 0xFF_FFFF,
            last_sequence_number: self.extended_max(),
            jitter: self.jitter as u32,
            last_sender_report: lsr,
            delay: dlsr,
        }
    }
}

/// What we sent.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    packets: u64,
    octets: u64,
    last_rtp_ts: u32,
    last_at: Option<Instant>,
}

/// RTCP state of one call.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    config: RtcpConfig,
    epoch: Instant,
    ntp_epoch: u64,
    rng: SmallRng,
    timers: TimerTable,
    sent: Sent,
    source: Option<Source>,
    /// Middle 32 bits of the last SR received from the remote source, and when.
    last_sr: Option<(u32, Instant)>,
    /// Middle 32 bits of the NTP timestamps of our recent SRs (to validate LSR echoes).
    our_srs: VecDeque<u32>,
    stats: RtcpStats,
}

impl RtcpSession {
    /// Our SRs remembered to match LSR echoes.
    const SR_HISTORY: usize = 8;

    /// A session starting at `now`, when the wall clock reads `ntp_now` (NTP 32.32 format, see
    /// [`ntp_from_unix`]). `seed` drives the report interval randomization.
    pub fn new(config: RtcpConfig, now: Instant, ntp_now: u64, seed: u64) -> RtcpSession {
        let mut session = RtcpSession {
            config,
            epoch: now,
            ntp_epoch: ntp_now,
            rng: SmallRng::seed_from_u64(seed),
            timers: TimerTable::default(),
            sent: Sent::default(),
            source: None,
            last_sr: None,
            our_srs: VecDeque::with_capacity(Self::SR_HISTORY),
            stats: RtcpStats::default(),
        };
        let first = session.randomized_interval() / 2;
        session.timers.set(Timer::RtcpReport, now + first);
        session
    }

    /// Records one RTP packet we sent: its timestamp and payload length.
    pub fn on_rtp_sent(&mut self, now: Instant, rtp_timestamp: u32, payload_len: usize) {
        self.sent.packets += 1;
        self.sent.octets += payload_len as u64;
        self.sent.last_rtp_ts = rtp_timestamp;
        self.sent.last_at = Some(now);
    }

    /// Records one RTP packet received from the remote source. A new SSRC replaces the source.
    pub fn on_rtp_received(&mut self, now: Instant, info: &RtpInfo) {
        let src = match &mut self.source {
            Some(s) if s.ssrc == info.ssrc => s,
            other => {
                self.last_sr = None;
                other.insert(Source::new(info.ssrc, info.seq))
            }
        };
        if src.update_seq(info.seq) {
            let arrival =
                rtp_units(now.saturating_duration_since(self.epoch), self.config.clock_rate);
            src.update_jitter(arrival, info.timestamp);
        }
    }

    /// Records one telephone-event packet (RFC 4733) of the remote source: it takes a sequence
    /// number of the stream, so it counts as received (not as a gap of lost audio), but its
    /// timestamp is the event's start, so it stays out of the interarrival jitter.
    pub fn on_event_received(&mut self, info: &RtpInfo) {
        match &mut self.source {
            Some(s) if s.ssrc == info.ssrc => {
                s.update_seq(info.seq);
            }
            Some(_) => {}
            None => {
                let mut src = Source::new(info.ssrc, info.seq);
                src.update_seq(info.seq);
                self.source = Some(src);
            }
        }
    }

    /// A compound report (SR or RR, then SDES CNAME) if one is due at `now`.
    pub fn poll_report(&mut self, now: Instant) -> Option<Vec<u8>> {
        if !self.timers.is_expired(Timer::RtcpReport, now) {
            return None;
        }
        let next = self.randomized_interval();
        self.timers.set(Timer::RtcpReport, now + next);
        self.build(now, None)
    }

    /// A final compound report ending with BYE, for when the call ends. Stops the schedule.
    pub fn bye(&mut self, now: Instant, reason: &str) -> Option<Vec<u8>> {
        self.timers.stop(Timer::RtcpReport);
        self.build(now, Some(reason))
    }

    /// When the next report is due (`Timer::RtcpReport`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RtcpStats {
        let mut s = self.stats;
        s.packets_sent = self.sent.packets;
        s.octets_sent = self.sent.octets;
        if let Some(src) = &self.source {
            s.remote_ssrc = Some(src.ssrc);
            s.packets_received = src.received;
            s.packets_expected = src.expected();
            s.cumulative_lost = src.cumulative_lost();
            s.extended_highest_seq = src.extended_max();
            s.fraction_lost = src.fraction_lost;
            s.jitter_ms = src.jitter * 1000.0 / f64::from(self.config.clock_rate.max(1));
        }
        s
    }

    /// Handles a received RTCP datagram. On error nothing changes but the `malformed` count.
    pub fn on_rtcp(&mut self, now: Instant, bytes: &[u8]) -> Result<Vec<RtcpItem>, RtcpError> {
        let parsed = match parse_compound(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        self.stats.datagrams_received += 1;
        Ok(parsed.into_iter().map(|p| self.apply(now, p)).collect())
    }

    fn apply(&mut self, now: Instant, packet: Parsed) -> RtcpItem {
        match packet {
            Parsed::Sr(sr) => {
                if self.source.is_some_and(|s| s.ssrc == sr.ssrc) || self.source.is_none() {
                    self.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
                }
                self.take_blocks(now, &sr.reports);
                RtcpItem::SenderReport {
                    ssrc: sr.ssrc,
                    packet_count: sr.packet_count,
                    octet_count: sr.octet_count,
                    blocks: sr.reports.len(),
                }
            }
            Parsed::Rr(rr) => {
                self.take_blocks(now, &rr.reports);
                RtcpItem::ReceiverReport { ssrc: rr.ssrc, blocks: rr.reports.len() }
            }
            Parsed::Sdes(sdes) => RtcpItem::Sdes { cnames: cnames(&sdes) },
            Parsed::Bye(bye) => {
                self.stats.byes_received += 1;
                RtcpItem::Bye {
                    sources: bye.sources,
                    reason: String::from_utf8_lossy(&bye.reason).into_owned(),
                }
            }
            Parsed::Other(packet_type) => RtcpItem::Other { packet_type },
        }
    }

    /// Uses the report blocks about our SSRC: remote view of our stream, and RTT.
    fn take_blocks(&mut self, now: Instant, blocks: &[ReceptionReport]) {
        let ours = self.config.ssrc;
        for b in blocks.iter().filter(|b| b.ssrc == ours) {
            let lost = ((b.total_lost << 8) as i32) >> 8; // 24-bit two's complement
            self.stats.remote = Some(RemoteReport {
                fraction_lost: f64::from(b.fraction_lost) / 256.0,
                cumulative_lost: lost,
                highest_seq: b.last_sequence_number,
                jitter_ms: f64::from(b.jitter) * 1000.0 / f64::from(self.config.clock_rate.max(1)),
                at: now,
            });
            if let Some(rtt) = self.rtt_from(now, b.last_sender_report, b.delay) {
                self.stats.rtt = Some(rtt);
            }
        }
    }

    /// RFC 3550 §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s, for an LSR that echoes our SR.
    fn rtt_from(&self, now: Instant, lsr: u32, dlsr: u32) -> Option<Duration> {
        if lsr == 0 || !self.our_srs.contains(&lsr) {
            return None;
        }
        let a = ntp_middle(self.ntp(now));
        let units = a.wrapping_sub(lsr).wrapping_sub(dlsr);
        if units as i32 >= 0 {
            Some(Duration::from_nanos(u64::from(units) * 1_000_000_000 / 65_536))
        } else {
            None
        }
    }

    fn build(&mut self, now: Instant, bye: Option<&str>) -> Option<Vec<u8>> {
        let blocks: Vec<ReceptionReport> = self.report_blocks(now).into_iter().collect();
        let ssrc = self.config.ssrc;
        let mut packets: Vec<Box<dyn RtcpPacket>> = Vec::with_capacity(3);
        if self.is_sender(now) {
            let ntp = self.ntp(now);
            self.remember_sr(ntp_middle(ntp));
            packets.push(Box::new(SenderReport {
                ssrc,
                ntp_time: ntp,
                rtp_time: self.rtp_now(now),
                packet_count: self.sent.packets as u32,
                octet_count: self.sent.octets as u32,
                reports: blocks,
                profile_extensions: Bytes::new(),
            }));
        } else {
            packets.push(Box::new(ReceiverReport {
                ssrc,
                reports: blocks,
                profile_extensions: Bytes::new(),
            }));
        }
        packets.push(Box::new(self.sdes()));
        if let Some(reason) = bye {
            let mut r = reason.as_bytes().to_vec();
            r.truncate(255);
            packets.push(Box::new(Goodbye { sources: vec![ssrc], reason: Bytes::from(r) }));
        }
        // Marshalling fails only for >31 blocks or a CNAME over 255 bytes (truncated below).
        let wire = rtc_rtcp::packet::marshal(&packets).ok()?.to_vec();
        self.stats.reports_sent += 1;
        Some(wire)
    }

    fn report_blocks(&mut self, now: Instant) -> Option<ReceptionReport> {
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, dlsr_units(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        let src = self.source.as_mut()?;
        Some(src.report_block(lsr, dlsr))
    }

    fn sdes(&self) -> SourceDescription {
        let mut cname = self.config.cname.as_bytes().to_vec();
        cname.truncate(255);
        SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: self.config.ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from(cname),
                }],
            }],
        }
    }

    /// RFC 3550 §6.4: we are a sender if we sent RTP within the last two report intervals.
    fn is_sender(&self, now: Instant) -> bool {
        self.sent
            .last_at
            .is_some_and(|at| now.saturating_duration_since(at) < 2 * self.config.interval)
    }

    /// The RTP timestamp matching `now` on our stream (last sent, advanced by elapsed time).
    fn rtp_now(&self, now: Instant) -> u32 {
        let since =
            self.sent.last_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.sent.last_rtp_ts.wrapping_add(rtp_units(since, self.config.clock_rate))
    }

    fn ntp(&self, now: Instant) -> u64 {
        self.ntp_epoch.wrapping_add(ntp_duration(now.saturating_duration_since(self.epoch)))
    }

    fn remember_sr(&mut self, mid: u32) {
        if self.our_srs.len() == Self::SR_HISTORY {
            self.our_srs.pop_front();
        }
        self.our_srs.push_back(mid);
    }

    fn randomized_interval(&mut self) -> Duration {
        self.config.interval.mul_f64(self.rng.gen_range(0.5..1.5))
    }
}

/// NTP 32.32 timestamp for a time since the Unix epoch (the I/O layer reads the wall clock).
pub fn ntp_from_unix(since_unix_epoch: Duration) -> u64 {
    ntp_duration(since_unix_epoch).wrapping_add(NTP_UNIX_OFFSET << 32)
}

/// A duration in NTP 32.32 fixed point.
fn ntp_duration(d: Duration) -> u64 {
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (d.as_secs() << 32).wrapping_add(frac)
}

/// The middle 32 bits of an NTP timestamp (LSR format).
fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in 1/65536 s (DLSR format), saturating.
fn dlsr_units(d: Duration) -> u32 {
    (d.as_nanos() * 65_536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32
}

/// A duration in RTP timestamp units, modulo 2^32.
fn rtp_units(d: Duration, clock_rate: u32) -> u32 {
    (d.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

fn cnames(sdes: &SourceDescription) -> Vec<(u32, String)> {
    sdes.chunks
        .iter()
        .filter_map(|c| {
            c.items
                .iter()
                .find(|i| i.sdes_type == SdesType::SdesCname)
                .map(|i| (c.source, String::from_utf8_lossy(&i.text).into_owned()))
        })
        .collect()
}

/// A checked and parsed sub-packet.
enum Parsed {
    Sr(SenderReport),
    Rr(ReceiverReport),
    Sdes(SourceDescription),
    Bye(Goodbye),
    Other(u8),
}

/// Splits and checks a datagram, then parses the sub-packets we interpret.
fn parse_compound(bytes: &[u8]) -> Result<Vec<Parsed>, RtcpError> {
    if bytes.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let len = check_packet(bytes, offset)?;
        out.push(parse_one(&bytes[offset..offset + len], offset)?);
        offset += len;
    }
    Ok(out)
}

/// RFC 3550 A.2-style checks of the sub-packet at `offset`; returns its length in bytes.
fn check_packet(bytes: &[u8], offset: usize) -> Result<usize, RtcpError> {
    let Some(&[b0, pt, l0, l1]) = bytes.get(offset..offset + 4) else {
        return Err(RtcpError::Truncated { offset });
    };
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion { offset, version });
    }
    let length = u16::from_be_bytes([l0, l1]);
    let len = (usize::from(length) + 1) * 4;
    if offset + len > bytes.len() {
        return Err(RtcpError::BadLength { offset, length });
    }
    // RFC 3550 puts padding on the last packet only, but some stacks (rtc-rtcp itself, for a
    // BYE reason) pad others: only the count is checked.
    let padding = if b0 & 0x20 != 0 {
        let count = usize::from(bytes[offset + len - 1]);
        if count == 0 || count > len - 4 {
            return Err(RtcpError::BadPadding { offset });
        }
        count
    } else {
        0
    };
    let count = b0 & 0x1F;
    let fixed = match pt {
        PT_SR => 28,
        PT_RR => 8,
        _ => return Ok(len),
    };
    if fixed + usize::from(count) * BLOCK_LEN > len - padding {
        return Err(RtcpError::BadCount { offset, count });
    }
    Ok(len)
}

fn parse_one(packet: &[u8], offset: usize) -> Result<Parsed, RtcpError> {
    let pt = packet[1];
    let malformed =
        |e: rtc_shared::error::Error| RtcpError::Malformed { offset, reason: e.to_string() };
    let mut buf = packet;
    let parsed = rtc_rtcp::packet::unmarshal(&mut buf).map_err(malformed)?;
    let Some(first) = parsed.first() else {
        return Err(RtcpError::Truncated { offset });
    };
    let any = first.as_any();
    let out = match pt {
        PT_SR => any.downcast_ref::<SenderReport>().cloned().map(Parsed::Sr),
        PT_RR => any.downcast_ref::<ReceiverReport>().cloned().map(Parsed::Rr),
        PT_SDES => any.downcast_ref::<SourceDescription>().cloned().map(Parsed::Sdes),
        PT_BYE => any.downcast_ref::<Goodbye>().cloned().map(Parsed::Bye),
        other => Some(Parsed::Other(other)),
    };
    out.ok_or(RtcpError::Malformed { offset, reason: format!("unexpected packet type {pt}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_shared::marshal::Marshal;

    const OURS: u32 = 0xAAAA_0001;
    const THEIRS: u32 = 0xBBBB_0002;
    const NTP0: u64 = (3_900_000_000u64 << 32) | 0x8000_0000;

    fn session(t0: Instant) -> RtcpSession {
        RtcpSession::new(RtcpConfig::new(OURS, "tg@example"), t0, NTP0, 7)
    }

    fn rtp(seq: u16, ts: u32) -> RtpInfo {
        RtpInfo {
            ssrc: THEIRS,
            seq,
            timestamp: ts,
            payload_type: 0,
            marker: false,
            payload_len: 160,
            payload_offset: 12,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Parses a datagram we produced with rtc-rtcp directly.
    fn decode(bytes: &[u8]) -> Vec<Box<dyn RtcpPacket>> {
        let mut b = bytes;
        rtc_rtcp::packet::unmarshal(&mut b).unwrap()
    }

    fn block(packet: &dyn RtcpPacket) -> ReceptionReport {
        let any = packet.as_any();
        any.downcast_ref::<SenderReport>()
            .map(|s| s.reports[0].clone())
            .or_else(|| any.downcast_ref::<ReceiverReport>().map(|r| r.reports[0].clone()))
            .unwrap()
    }

    fn due_report(s: &mut RtcpSession) -> (Instant, Vec<u8>) {
        let at = s.poll_timeout().unwrap();
        (at, s.poll_report(at).unwrap())
    }

    #[test]
    fn schedule_is_randomized_around_the_interval() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let first = s.poll_timeout().unwrap() - t0;
        assert!(first >= ms(1250) && first <= ms(3750), "{first:?}");
        assert_eq!(s.poll_report(t0 + first - ms(1)), None);
        let mut gaps = Vec::new();
        let mut last = t0 + first;
        assert!(s.poll_report(last).is_some());
        for _ in 0..50 {
            let (at, _) = due_report(&mut s);
            gaps.push(at - last);
            last = at;
        }
        assert!(gaps.iter().all(|g| *g >= ms(2500) && *g <= ms(7500)));
        assert!(gaps.windows(2).any(|w| w[0] != w[1]), "randomized");
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!(mean > ms(4000) && mean < ms(6000), "{mean:?}");
        assert_eq!(s.stats().reports_sent, 51);
    }

    #[test]
    fn receiver_only_sends_rr_with_sdes_and_no_block_before_rtp() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let (_, wire) = due_report(&mut s);
        let pkts = decode(&wire);
        assert_eq!(pkts.len(), 2);
        let rr = pkts[0].as_any().downcast_ref::<ReceiverReport>().unwrap();
        assert_eq!((rr.ssrc, rr.reports.len()), (OURS, 0));
        let sdes = pkts[1].as_any().downcast_ref::<SourceDescription>().unwrap();
        assert_eq!(cnames(sdes), vec![(OURS, "tg@example".to_string())]);
    }

    #[test]
    fn sender_report_counts_what_we_sent() {
        let t0 = Instant::now();
        let mut s = session(t0);
        for i in 0..50u32 {
            s.on_rtp_sent(t0 + ms(20) * i, 1000 + 160 * i, 160);
        }
        let (at, wire) = due_report(&mut s);
        let pkts = decode(&wire);
        let sr = pkts[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!((sr.ssrc, sr.packet_count, sr.octet_count), (OURS, 50, 8_000));
        let since_last = at - (t0 + ms(20) * 49);
        let advanced = (since_last.as_nanos() * 8000 / 1_000_000_000) as u32;
        assert_eq!(
            sr.rtp_time,
            1000 + 160 * 49 + advanced,
            "advanced at 8 kHz since the last packet"
        );
        assert_eq!(sr.ntp_time, NTP0 + ntp_duration(at - t0));
        assert!(sr.reports.is_empty());
        // Silent for more than two intervals: back to RR.
        let later = s.poll_timeout().unwrap().max(at + ms(10_001));
        let pkts = decode(&s.poll_report(later).unwrap());
        assert!(pkts[0].as_any().downcast_ref::<ReceiverReport>().is_some());
    }

    #[test]
    fn loss_fraction_and_extended_seq_across_wrap() {
        let t0 = Instant::now();
        let mut s = session(t0);
        // 100 packets from 65500 across the wrap, every 5th lost.
        let mut seq = 65_500u16;
        for i in 0..100u32 {
            if i % 5 != 3 {
                s.on_rtp_received(t0 + ms(20) * i, &rtp(seq, 160 * i));
            }
            seq = seq.wrapping_add(1);
        }
        let (_, wire) = due_report(&mut s);
        let b = block(decode(&wire)[0].as_ref());
        assert_eq!(b.ssrc, THEIRS);
        assert_eq!(b.last_sequence_number, 65_536 + 63, "one cycle plus last seq 63");
        assert_eq!(b.total_lost, 20);
        assert_eq!(b.fraction_lost, 51, "20/100 * 256");
        let st = s.stats();
        assert_eq!((st.packets_expected, st.packets_received, st.cumulative_lost), (100, 80, 20));
        // Next interval: no loss, fraction goes back to 0 while the cumulative count stays.
        for i in 100..150u32 {
            s.on_rtp_received(t0 + ms(20) * i, &rtp(seq, 160 * i));
            seq = seq.wrapping_add(1);
        }
        let (_, wire) = due_report(&mut s);
        let b = block(decode(&wire)[0].as_ref());
        assert_eq!((b.fraction_lost, b.total_lost), (0, 20));
    }

    #[test]
    fn duplicates_make_cumulative_loss_negative_and_encode_24_bit() {
        let t0 = Instant::now();
        let mut s = session(t0);
        for i in 0..10u16 {
            s.on_rtp_received(t0, &rtp(i, 0));
            s.on_rtp_received(t0, &rtp(i, 0));
        }
        assert_eq!(s.stats().cumulative_lost, -10);
        let (_, wire) = due_report(&mut s);
        let b = block(decode(&wire)[0].as_ref());
        assert_eq!(b.total_lost, 0xFF_FFF6);
        assert_eq!(b.fraction_lost, 0);
    }

    #[test]
    fn sequence_jump_needs_two_packets_to_restart() {
        let t0 = Instant::now();
        let mut s = session(t0);
        for i in 0..10u16 {
            s.on_rtp_received(t0, &rtp(i, 0));
        }
        s.on_rtp_received(t0, &rtp(30_000, 0)); // stray: not counted
        assert_eq!(s.stats().packets_received, 10);
        assert_eq!(s.stats().extended_highest_seq, 9);
        s.on_rtp_received(t0, &rtp(40_000, 0));
        s.on_rtp_received(t0, &rtp(40_001, 0)); // sequential: restart at 40001
        let st = s.stats();
        assert_eq!(
            (st.extended_highest_seq, st.packets_received, st.cumulative_lost),
            (40_001, 1, 0)
        );
    }

    #[test]
    fn interarrival_jitter_follows_a8() {
        let t0 = Instant::now();
        let mut s = session(t0);
        // Perfectly paced: zero jitter.
        for i in 0..50u32 {
            s.on_rtp_received(t0 + ms(20) * i, &rtp(i as u16, 160 * i));
        }
        assert!(s.stats().jitter_ms.abs() < 1e-9);
        // Every other packet 10 ms late: |D| = 10 ms = 80 units each time; J converges to 80.
        for i in 50..1050u32 {
            let skew = if i % 2 == 0 { ms(10) } else { Duration::ZERO };
            s.on_rtp_received(t0 + ms(20) * i + skew, &rtp(i as u16, 160 * i));
        }
        let j = s.stats().jitter_ms;
        assert!((j - 10.0).abs() < 0.1, "{j}");
        let (_, wire) = due_report(&mut s);
        let b = block(decode(&wire)[0].as_ref());
        assert!((b.jitter as i64 - 80).abs() <= 1, "{}", b.jitter);
    }

    /// An SR from the remote, NTP time `ntp`.
    fn remote_sr(ntp: u64, blocks: Vec<ReceptionReport>) -> Vec<u8> {
        let sr = SenderReport {
            ssrc: THEIRS,
            ntp_time: ntp,
            rtp_time: 5,
            packet_count: 9,
            octet_count: 99,
            reports: blocks,
            profile_extensions: Bytes::new(),
        };
        let sdes = SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: THEIRS,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from_static(b"carrier"),
                }],
            }],
        };
        let p: Vec<Box<dyn RtcpPacket>> = vec![Box::new(sr), Box::new(sdes)];
        rtc_rtcp::packet::marshal(&p).unwrap().to_vec()
    }

    fn remote_rr(blocks: Vec<ReceptionReport>) -> Vec<u8> {
        ReceiverReport { ssrc: THEIRS, reports: blocks, profile_extensions: Bytes::new() }
            .marshal()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn lsr_and_dlsr_echo_the_remote_sr() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.on_rtp_received(t0, &rtp(1, 0));
        let remote_ntp = 0x1234_5678_9ABC_DEF0u64;
        let items = s.on_rtcp(t0 + ms(100), &remote_sr(remote_ntp, vec![])).unwrap();
        assert_eq!(
            items[0],
            RtcpItem::SenderReport { ssrc: THEIRS, packet_count: 9, octet_count: 99, blocks: 0 }
        );
        assert_eq!(items[1], RtcpItem::Sdes { cnames: vec![(THEIRS, "carrier".into())] });
        let (at, wire) = due_report(&mut s);
        let b = block(decode(&wire)[0].as_ref());
        assert_eq!(b.last_sender_report, 0x5678_9ABC);
        let held = at - t0 - ms(100);
        assert_eq!(b.delay, dlsr_units(held));
        assert_eq!(u64::from(b.delay), held.as_nanos() as u64 * 65_536 / 1_000_000_000);
    }

    #[test]
    fn rtt_from_the_remote_rr_about_us() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.on_rtp_sent(t0, 0, 160);
        let (sent_at, wire) = due_report(&mut s);
        let sr = decode(&wire)[0].as_any().downcast_ref::<SenderReport>().unwrap().clone();
        // The remote holds our SR for 300 ms; the network adds 40 ms each way.
        let lsr = ntp_middle(sr.ntp_time);
        let dlsr = dlsr_units(ms(300));
        let arrives = sent_at + ms(40) + ms(300) + ms(40);
        let rb = ReceptionReport {
            ssrc: OURS,
            fraction_lost: 64,
            total_lost: 0xFF_FFFF,
            last_sequence_number: 77,
            jitter: 80,
            last_sender_report: lsr,
            delay: dlsr,
        };
        s.on_rtcp(arrives, &remote_rr(vec![rb.clone()])).unwrap();
        let st = s.stats();
        let rtt = st.rtt.unwrap();
        assert!(rtt >= ms(79) && rtt <= ms(81), "{rtt:?}");
        let remote = st.remote.unwrap();
        assert_eq!(
            (remote.fraction_lost, remote.cumulative_lost, remote.highest_seq),
            (0.25, -1, 77)
        );
        assert!((remote.jitter_ms - 10.0).abs() < 1e-9);
        // An LSR that is not one of our SRs gives no RTT; a block about someone else is ignored.
        let mut s2 = session(t0);
        s2.on_rtcp(
            arrives,
            &remote_rr(vec![ReceptionReport { last_sender_report: 0x0BAD_0BAD, ..rb.clone() }]),
        )
        .unwrap();
        assert_eq!(s2.stats().rtt, None);
        s2.on_rtcp(arrives, &remote_rr(vec![ReceptionReport { ssrc: 42, ..rb }])).unwrap();
        assert_eq!(s2.stats().remote.map(|r| r.highest_seq), Some(77), "from the first RR only");
    }

    #[test]
    fn thirty_one_report_blocks_parse() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let blocks: Vec<ReceptionReport> = (0..31u32)
            .map(|i| ReceptionReport {
                ssrc: if i == 30 { OURS } else { 1000 + i },
                last_sequence_number: i,
                ..Default::default()
            })
            .collect();
        let wire = remote_rr(blocks);
        assert_eq!(wire.len(), 8 + 31 * 24);
        let items = s.on_rtcp(t0, &wire).unwrap();
        assert_eq!(items, vec![RtcpItem::ReceiverReport { ssrc: THEIRS, blocks: 31 }]);
        assert_eq!(s.stats().remote.unwrap().highest_seq, 30);
        // Count 31 with only 30 blocks present.
        let short = &wire[..wire.len() - 24];
        let mut cut = short.to_vec();
        let words = ((cut.len() / 4) - 1) as u16;
        cut[2..4].copy_from_slice(&words.to_be_bytes());
        assert_eq!(s.on_rtcp(t0, &cut), Err(RtcpError::BadCount { offset: 0, count: 31 }));
    }

    #[test]
    fn bye_and_other_packet_types() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut wire = remote_rr(vec![]);
        // APP packet (204): 12 bytes.
        wire.extend_from_slice(&[0x80, 204, 0, 2, 0, 0, 0, 1, b'a', b'b', b'c', b'd']);
        let bye = Goodbye { sources: vec![THEIRS], reason: Bytes::from_static(b"done") };
        wire.extend_from_slice(&bye.marshal().unwrap());
        let items = s.on_rtcp(t0, &wire).unwrap();
        assert_eq!(items[1], RtcpItem::Other { packet_type: 204 });
        assert_eq!(items[2], RtcpItem::Bye { sources: vec![THEIRS], reason: "done".into() });
        assert_eq!(s.stats().byes_received, 1);
        // Our own BYE.
        let out = s.bye(t0, "hangup").unwrap();
        let pkts = decode(&out);
        let ours = pkts[2].as_any().downcast_ref::<Goodbye>().unwrap();
        assert_eq!((ours.sources.clone(), &ours.reason[..]), (vec![OURS], &b"hangup"[..]));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn malformed_datagrams_are_typed_and_counted() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let good = remote_rr(vec![ReceptionReport { ssrc: OURS, ..Default::default() }]);
        assert_eq!(s.on_rtcp(t0, &[]), Err(RtcpError::Empty));
        assert_eq!(s.on_rtcp(t0, &good[..3]), Err(RtcpError::Truncated { offset: 0 }));
        let mut v1 = good.clone();
        v1[0] = (v1[0] & 0x3F) | 0x40;
        assert_eq!(s.on_rtcp(t0, &v1), Err(RtcpError::BadVersion { offset: 0, version: 1 }));
        assert_eq!(
            s.on_rtcp(t0, &good[..good.len() - 4]),
            Err(RtcpError::BadLength { offset: 0, length: 7 })
        );
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0x81, 201]);
        assert_eq!(s.on_rtcp(t0, &trailing), Err(RtcpError::Truncated { offset: 32 }));
        let mut pad_first = good.clone();
        pad_first[0] |= 0x20;
        pad_first.extend_from_slice(&good);
        assert_eq!(s.on_rtcp(t0, &pad_first), Err(RtcpError::BadPadding { offset: 0 }));
        let mut count = good.clone();
        count[0] = 0x80 | 2;
        assert_eq!(s.on_rtcp(t0, &count), Err(RtcpError::BadCount { offset: 0, count: 2 }));
        let st = s.stats();
        assert_eq!(
            (st.malformed, st.datagrams_received, st.remote),
            (7, 0, None),
            "no state change"
        );
        assert!(s.on_rtcp(t0, &good).is_ok());
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut rng = SmallRng::seed_from_u64(0xC0FFEE);
        let mut seeds = vec![
            remote_sr(NTP0, vec![ReceptionReport { ssrc: OURS, ..Default::default() }]),
            remote_rr(vec![]),
        ];
        let mut bye = remote_rr(vec![]);
        bye.extend_from_slice(
            &Goodbye { sources: vec![1, 2], reason: Bytes::from_static(b"x") }.marshal().unwrap(),
        );
        seeds.push(bye);
        let mut ok = 0;
        for i in 0..30_000 {
            let mut buf = if i % 3 == 0 {
                let len = rng.gen_range(0..120);
                let mut v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if let Some(b) = v.first_mut() {
                    *b = (*b & 0x3F) | 0x80;
                }
                if v.len() > 1 {
                    v[1] = rng.gen_range(200..=204);
                }
                v
            } else {
                seeds[i % seeds.len()].clone()
            };
            for _ in 0..rng.gen_range(0..4) {
                if buf.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..buf.len());
                match rng.gen_range(0..3) {
                    0 => buf[at] = rng.gen(),
                    1 => buf.truncate(at),
                    _ => buf[at] ^= 1 << rng.gen_range(0..8),
                }
            }
            if s.on_rtcp(t0, &buf).is_ok() {
                ok += 1;
            }
        }
        let st = s.stats();
        assert!(ok > 0 && st.malformed > 0);
        assert_eq!(st.malformed + st.datagrams_received, 30_000);
    }

    #[test]
    fn ntp_conversion() {
        assert_eq!(ntp_from_unix(Duration::ZERO), NTP_UNIX_OFFSET << 32);
        assert_eq!(ntp_from_unix(Duration::from_millis(1500)) & 0xFFFF_FFFF, 0x8000_0000);
        assert_eq!(dlsr_units(Duration::from_secs(1)), 65_536);
    }
}
