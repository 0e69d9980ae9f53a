//! Per-call media statistics for monitoring, with an E-model MOS estimate.
//!
//! Owns: [`CallMediaStats`], the serializable snapshot built from the jitter buffer's
//! [`JitterStats`] and the RTCP session's [`RtcpStats`], and the simplified ITU-T G.107
//! E-model ([`e_model`], [`mos_from_r`]).
//!
//! # E-model (simplified G.107)
//!
//! `R = 93.2 - Id - Ie_eff` (the default `R0 - Is` with `A = 0`), where
//!
//! - `Id = 0.024·d + 0.11·(d - 177.3)·H(d - 177.3)` for a one-way delay `d` in ms (the usual
//!   approximation of G.107's delay impairment, Cole & Rosenbluth 2001);
//! - `Ie_eff = Ie + (95 - Ie)·Ppl / (Ppl/BurstR + Bpl)` with `Ppl` the loss in percent and
//!   `BurstR = 1` (random loss);
//! - `MOS = 1 + 0.035·R + R·(R - 60)·(100 - R)·7·10⁻⁶` for `0 < R < 100`, clamped to
//!   `[1, 4.5]` (1 below, 4.5 above).
//!
//! Codec values ([`MosCodec`]):
//!
//! | codec | Ie | Bpl | source |
//! |---|---|---|---|
//! | G.711 with PLC | 0 | 25.1 | G.113 Appendix I (PLC per G.711 Appendix I) |
//! | G.711 without PLC | 0 | 4.3 | G.113 Appendix I (random loss) |
//! | Opus | 5 | 20 | our choice: G.113 has no Opus row; narrowband-equivalent, a small base impairment for the transcoding on the telephone leg and typical PLC without FEC |
//!
//! # Two directions
//!
//! A call is scored per direction, and the worse one is the call's `mos` (the headline in
//! `/api/status`, the status page, `/metrics` and the call records):
//!
//! - **Inbound** (caller → box, `mos_inbound`), from the RTP the box receives: loss is what
//!   the network lost (RTCP sequence-number count; RFC 4733 key presses take sequence numbers
//!   and are counted as received) plus packets too late to play; the one-way delay is
//!   `RTT/2 + jitter-buffer target + 20 ms` packetization (network delay 0 until an RTT is
//!   known).
//! - **Outbound** (box → caller, `mos_outbound`), from the carrier's RTCP receiver reports
//!   (the share of our packets it lost, cumulative) plus the box's own send underruns: 20 ms
//!   slots inside the agent's speech that had no audio to send in time
//!   ([`SendUnderruns`]), over the frames sent; the one-way delay is `RTT/2 + 20 ms`.
//!
//! A direction without media has no score (`None`, `null` in JSON): no RTP received, or
//! none sent. `media` says which directions carried any ([`MediaFlow`]); a call with no
//! media at all has no `mos`.

use serde::Serialize;

use crate::core::media::jitter::JitterStats;
use crate::core::media::rtcp::RtcpStats;

/// Default `R0 - Is` of G.107.
pub const R_DEFAULT: f64 = 93.2;
/// Packetization delay assumed in the delay estimate, ms.
pub const FRAME_MS: f64 = 20.0;

/// Codec impairment class for the E-model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MosCodec {
    /// G.711 (PCMU/PCMA) with packet loss concealment.
    G711,
    /// G.711 without concealment.
    G711NoPlc,
    /// Opus.
    Opus,
}

impl MosCodec {
    /// Equipment impairment factor Ie.
    pub fn ie(self) -> f64 {
        match self {
            MosCodec::G711 | MosCodec::G711NoPlc => 0.0,
            MosCodec::Opus => 5.0,
        }
    }

    /// Packet-loss robustness factor Bpl.
    pub fn bpl(self) -> f64 {
        match self {
            MosCodec::G711 => 25.1,
            MosCodec::G711NoPlc => 4.3,
            MosCodec::Opus => 20.0,
        }
    }
}

/// E-model result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EModel {
    /// Transmission rating factor R.
    pub r: f64,
    /// Estimated MOS (conversational quality), 1 to 4.5.
    pub mos: f64,
}

/// Delay impairment Id for a one-way delay in ms.
pub fn delay_impairment(one_way_ms: f64) -> f64 {
    let d = one_way_ms.max(0.0);
    0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 }
}

/// Effective equipment impairment Ie_eff for a loss in percent (random loss).
pub fn loss_impairment(codec: MosCodec, loss_percent: f64) -> f64 {
    let ppl = loss_percent.clamp(0.0, 100.0);
    let ie = codec.ie();
    ie + (95.0 - ie) * ppl / (ppl + codec.bpl())
}

/// MOS from R (G.107 Annex B), clamped to [1, 4.5].
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
}

/// The simplified E-model for a codec, a loss in percent and a one-way delay in ms.
pub fn e_model(codec: MosCodec, loss_percent: f64, one_way_delay_ms: f64) -> EModel {
    let r = R_DEFAULT - delay_impairment(one_way_delay_ms) - loss_impairment(codec, loss_percent);
    EModel { r, mos: mos_from_r(r) }
}

/// Which directions of a call carried RTP audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaFlow {
    /// No RTP either way.
    None,
    /// Only caller → box.
    InboundOnly,
    /// Only box → caller.
    OutboundOnly,
    /// Both ways.
    Both,
}

impl MediaFlow {
    fn of(inbound: bool, outbound: bool) -> MediaFlow {
        match (inbound, outbound) {
            (false, false) => MediaFlow::None,
            (true, false) => MediaFlow::InboundOnly,
            (false, true) => MediaFlow::OutboundOnly,
            (true, true) => MediaFlow::Both,
        }
    }
}

/// Longest run of empty send slots inside the agent's speech counted as an underrun (100 ms);
/// a longer one is a pause of the agent.
pub const MAX_UNDERRUN_FRAMES: u32 = 5;

/// Counts the box's send underruns: 20 ms slots without agent audio between two slots with
/// it (at most [`MAX_UNDERRUN_FRAMES`] in a row, no barge-in flush in between). The caller
/// heard a hole (or comfort noise) where the agent was speaking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendUnderruns {
    /// Empty slots since the last slot with agent audio (None before any, or after a flush).
    pending: Option<u32>,
    frames: u64,
}

impl SendUnderruns {
    /// One send slot; `agent_audio`: whether it carried audio from the agent.
    pub fn slot(&mut self, agent_audio: bool) {
        match (agent_audio, self.pending) {
            (true, Some(gap)) => {
                if (1..=MAX_UNDERRUN_FRAMES).contains(&gap) {
                    self.frames += u64::from(gap);
                }
                self.pending = Some(0);
            }
            (true, None) => self.pending = Some(0),
            (false, Some(gap)) => self.pending = Some(gap.saturating_add(1)),
            (false, None) => {}
        }
    }

    /// The agent's audio was flushed (barge-in): the silence that follows is not an underrun.
    pub fn flushed(&mut self) {
        self.pending = None;
    }

    /// Frames missed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// A snapshot of a call's media quality, for logs and the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallMediaStats {
    /// Codec class used for the MOS.
    pub codec: MosCodec,
    /// RTP packets received (duplicates included).
    pub packets_received: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Packets lost in the network (expected minus received, at least 0).
    pub packets_lost: u64,
    /// Packets that arrived after their playout slot.
    pub packets_late: u64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// RFC 3550 interarrival jitter of the received stream, ms.
    pub jitter_ms: f64,
    /// Audio queued in the jitter buffer, ms.
    pub jitter_buffer_depth_ms: u32,
    /// Jitter buffer target delay, ms.
    pub jitter_buffer_target_ms: u32,
    /// Audio concealed (PLC or silence), ms.
    pub concealed_ms: u64,
    /// Round-trip time from RTCP, ms.
    pub rtt_ms: Option<f64>,
    /// Loss the remote reports for the stream we send, percent.
    pub remote_loss_percent: Option<f64>,
    /// Jitter the remote reports for the stream we send, ms.
    pub remote_jitter_ms: Option<f64>,
    /// Loss heard by the listener (concealed frames over frames due), percent.
    pub loss_percent: f64,
    /// One-way delay estimate used by the E-model, ms.
    pub one_way_delay_ms: f64,
    /// E-model R factor of the inbound direction (caller → box).
    pub r_factor: f64,
    /// Which directions carried RTP audio.
    pub media: MediaFlow,
    /// The call's MOS: the worse of the two directions; `None` without any media.
    pub mos: Option<f64>,
    /// E-model MOS of caller → box (the RTP the box receives); `None` before any arrived.
    pub mos_inbound: Option<f64>,
    /// E-model MOS of box → caller (the carrier's receiver reports and the box's send
    /// underruns); `None` while nothing was sent.
    pub mos_outbound: Option<f64>,
    /// Loss on box → caller: our packets the carrier reports lost plus send underruns, percent.
    pub outbound_loss_percent: f64,
    /// 20 ms slots inside the agent's speech with no audio ready to send.
    pub send_underrun_frames: u64,
}

impl CallMediaStats {
    /// Builds the snapshot from the jitter buffer and RTCP counters, the concealed time, the
    /// send underruns and the comfort-noise frames sent (packets that carried nothing to
    /// score: a box that sent only those has no box -> caller score).
    pub fn collect(
        codec: MosCodec,
        jitter: &JitterStats,
        rtcp: &RtcpStats,
        concealed_ms: u64,
        send_underrun_frames: u64,
        comfort_frames: u64,
    ) -> CallMediaStats {
        let rtt_ms = rtcp.rtt.map(|d| d.as_secs_f64() * 1000.0);
        let loss_percent = effective_loss_percent(jitter, rtcp);
        let one_way_delay_ms = rtt_ms.unwrap_or(0.0) / 2.0 + f64::from(jitter.target_ms) + FRAME_MS;
        let em = e_model(codec, loss_percent, one_way_delay_ms);
        let inbound = jitter.received.max(rtcp.packets_received) > 0;
        let outbound = rtcp.packets_sent > comfort_frames;
        let outbound_loss = outbound_loss_percent(rtcp, send_underrun_frames);
        let out_delay_ms = rtt_ms.unwrap_or(0.0) / 2.0 + FRAME_MS;
        let mos_inbound = inbound.then(|| round2(em.mos));
        let mos_outbound =
            outbound.then(|| round2(e_model(codec, outbound_loss, out_delay_ms).mos));
        CallMediaStats {
            codec,
            packets_received: jitter.received.max(rtcp.packets_received),
            packets_sent: rtcp.packets_sent,
            packets_lost: rtcp.cumulative_lost.max(0) as u64,
            packets_late: jitter.late,
            duplicates: jitter.duplicates,
            jitter_ms: round2(jitter.jitter_ms),
            jitter_buffer_depth_ms: jitter.depth_ms,
            jitter_buffer_target_ms: jitter.target_ms,
            concealed_ms,
            rtt_ms: rtt_ms.map(round2),
            remote_loss_percent: rtcp.remote.map(|r| round2(r.fraction_lost * 100.0)),
            remote_jitter_ms: rtcp.remote.map(|r| round2(r.jitter_ms)),
            loss_percent: round2(loss_percent),
            one_way_delay_ms: round2(one_way_delay_ms),
            r_factor: round2(em.r),
            media: MediaFlow::of(inbound, outbound),
            mos: [mos_inbound, mos_outbound].into_iter().flatten().reduce(f64::min),
            mos_inbound,
            mos_outbound,
            outbound_loss_percent: round2(outbound_loss),
            send_underrun_frames,
        }
    }
}

/// Loss on box → caller, percent: the packets the carrier's receiver reports say it lost
/// (cumulative, over what we sent), plus the slots the box had nothing to send in time.
fn outbound_loss_percent(r: &RtcpStats, underrun_frames: u64) -> f64 {
    let sent = r.packets_sent;
    let reported = r.remote.map_or(0, |rr| rr.cumulative_lost.max(0) as u64).min(sent);
    let due = sent + underrun_frames;
    if due == 0 {
        return 0.0;
    }
    ((reported + underrun_frames) as f64 * 100.0 / due as f64).min(100.0)
}

/// The E-model's effective packet loss: packets the network lost (RTCP's sequence-number
/// count, so the pauses of a caller that suppresses silence are not counted as loss) plus
/// packets that arrived too late to play, over packets expected. Without RTCP sequence data
/// (nothing received yet), the jitter buffer's concealed frames stand in.
fn effective_loss_percent(j: &JitterStats, r: &RtcpStats) -> f64 {
    if r.packets_expected == 0 {
        return heard_loss_percent(j);
    }
    let lost = r.cumulative_lost.max(0) as u64 + j.late + j.discarded;
    (lost as f64 * 100.0 / r.packets_expected as f64).min(100.0)
}

/// Concealed frames over frames due (played from a packet or concealed), percent.
fn heard_loss_percent(j: &JitterStats) -> f64 {
    let played = j.received.saturating_sub(j.duplicates + j.late + j.discarded);
    let due = played + j.lost;
    if due == 0 {
        0.0
    } else {
        j.lost as f64 * 100.0 / due as f64
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::rtcp::RemoteReport;
    use std::time::{Duration, Instant};

    #[test]
    fn clean_g711_is_about_4_4() {
        let m = e_model(MosCodec::G711, 0.0, 0.0);
        assert!((m.r - 93.2).abs() < 1e-9);
        assert!((m.mos - 4.41).abs() < 0.01, "{}", m.mos);
        let low_delay = e_model(MosCodec::G711, 0.0, 60.0);
        assert!(low_delay.mos > 4.35 && low_delay.mos < 4.41, "{}", low_delay.mos);
    }

    #[test]
    fn known_points() {
        // 1 % loss: Ie_eff = 95/26.1 = 3.64, R = 89.56.
        let m = e_model(MosCodec::G711, 1.0, 0.0);
        assert!((m.r - 89.56).abs() < 0.01, "{}", m.r);
        assert!((m.mos - 4.33).abs() < 0.01, "{}", m.mos);
        // 5 % loss: R = 93.2 - 475/30.1 = 77.42, MOS about 3.92.
        let m = e_model(MosCodec::G711, 5.0, 0.0);
        assert!((m.r - 77.42).abs() < 0.01, "{}", m.r);
        assert!((m.mos - 3.92).abs() < 0.01, "{}", m.mos);
        // Delay knee at 177.3 ms.
        assert!((delay_impairment(100.0) - 2.4).abs() < 1e-9);
        assert!((delay_impairment(277.3) - (0.024 * 277.3 + 11.0)).abs() < 1e-9);
        // PLC makes loss hurt less; Opus starts lower.
        assert!(e_model(MosCodec::G711NoPlc, 2.0, 0.0).mos < e_model(MosCodec::G711, 2.0, 0.0).mos);
        assert!(e_model(MosCodec::Opus, 0.0, 0.0).mos < e_model(MosCodec::G711, 0.0, 0.0).mos);
    }

    #[test]
    fn mos_decreases_with_loss_and_delay_and_stays_clamped() {
        for codec in [MosCodec::G711, MosCodec::G711NoPlc, MosCodec::Opus] {
            for delay in [0.0, 50.0, 150.0, 300.0, 600.0] {
                let mut last = f64::INFINITY;
                for loss10 in 0..=500 {
                    let m = e_model(codec, f64::from(loss10) / 10.0, delay).mos;
                    assert!((1.0..=4.5).contains(&m));
                    assert!(m <= last + 1e-12, "{codec:?} delay {delay} loss {loss10}");
                    last = m;
                }
            }
            for loss in [0.0, 1.0, 5.0, 20.0] {
                let mut last = f64::INFINITY;
                for delay in (0..=1000).step_by(5) {
                    let m = e_model(codec, loss, f64::from(delay)).mos;
                    assert!((1.0..=4.5).contains(&m));
                    assert!(m <= last + 1e-12, "{codec:?} loss {loss} delay {delay}");
                    last = m;
                }
            }
        }
        let mut last = 0.0;
        for r10 in -200..=1200 {
            let m = mos_from_r(f64::from(r10) / 10.0);
            assert!((1.0..=4.5).contains(&m) && m >= last - 1e-12, "R {}", r10 as f64 / 10.0);
            last = m;
        }
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert_eq!(mos_from_r(150.0), 4.5);
        assert_eq!(e_model(MosCodec::G711, 100.0, 2000.0).mos, 1.0);
        assert_eq!(e_model(MosCodec::G711, -5.0, -5.0).mos, e_model(MosCodec::G711, 0.0, 0.0).mos);
    }

    #[test]
    fn collect_combines_jitter_and_rtcp() {
        let jitter = JitterStats {
            received: 1000,
            duplicates: 5,
            late: 10,
            lost: 25,
            discarded: 10,
            depth_ms: 40,
            target_ms: 60,
            jitter_ms: 3.456,
            ..Default::default()
        };
        let rtcp = RtcpStats {
            packets_sent: 990,
            packets_received: 1000,
            cumulative_lost: 15,
            rtt: Some(Duration::from_millis(80)),
            remote: Some(RemoteReport {
                fraction_lost: 0.25,
                cumulative_lost: 3,
                highest_seq: 9,
                jitter_ms: 2.5,
                at: Instant::now(),
            }),
            ..Default::default()
        };
        let s = CallMediaStats::collect(MosCodec::G711, &jitter, &rtcp, 500, 0, 0);
        assert_eq!((s.packets_received, s.packets_sent, s.packets_lost), (1000, 990, 15));
        assert_eq!((s.packets_late, s.duplicates, s.concealed_ms), (10, 5, 500));
        assert_eq!((s.jitter_buffer_depth_ms, s.jitter_buffer_target_ms), (40, 60));
        assert_eq!(s.jitter_ms, 3.46);
        assert_eq!(s.rtt_ms, Some(80.0));
        assert_eq!(s.remote_loss_percent, Some(25.0));
        assert_eq!(s.loss_percent, 2.5, "25 concealed of 975 played + 25");
        assert_eq!(s.one_way_delay_ms, 120.0, "40 + 60 + 20");
        let expect = e_model(MosCodec::G711, 2.5, 120.0);
        assert_eq!(s.mos_inbound, Some(round2(expect.mos)));
        // outbound: 3 of our 990 packets reported lost, 40 + 20 ms one way
        let out = e_model(MosCodec::G711, 300.0 / 990.0, 60.0);
        assert_eq!(s.mos_outbound, Some(round2(out.mos)));
        assert_eq!(s.mos, s.mos_inbound, "the worse direction is the headline");
        assert_eq!(s.media, MediaFlow::Both);
        let mos = s.mos.unwrap();
        assert!(mos > 3.9 && mos < 4.3, "{mos}");

        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["codec"], "g711");
        assert_eq!(json["rtt_ms"], 80.0);
        assert_eq!(json["mos"], mos);
        assert_eq!(json["media"], "both");

        // Nothing yet: no loss, no RTT, a MOS for the buffer delay alone.
        let empty = CallMediaStats::collect(
            MosCodec::Opus,
            &JitterStats::default(),
            &RtcpStats::default(),
            0,
            0,
            0,
        );
        assert_eq!((empty.loss_percent, empty.rtt_ms, empty.packets_lost), (0.0, None, 0));
        assert_eq!(serde_json::to_value(&empty).unwrap()["rtt_ms"], serde_json::Value::Null);
    }

    #[test]
    fn a_call_without_media_has_no_score() {
        let none = CallMediaStats::collect(
            MosCodec::G711,
            &JitterStats::default(),
            &RtcpStats::default(),
            0,
            0,
            0,
        );
        assert_eq!((none.mos, none.mos_inbound, none.mos_outbound), (None, None, None));
        assert_eq!(none.media, MediaFlow::None);
        let json = serde_json::to_value(&none).unwrap();
        assert_eq!(json["mos"], serde_json::Value::Null);
        assert_eq!(json["media"], "none");
        // the box talks, the caller sends nothing: only the outbound direction is scored
        let sending = RtcpStats { packets_sent: 500, ..Default::default() };
        let one_way =
            CallMediaStats::collect(MosCodec::G711, &JitterStats::default(), &sending, 0, 0, 0);
        assert_eq!(one_way.media, MediaFlow::OutboundOnly);
        assert_eq!(one_way.mos_inbound, None);
        assert_eq!(one_way.mos, one_way.mos_outbound);
        assert!(one_way.mos.is_some());
    }

    #[test]
    fn the_worse_direction_is_the_headline() {
        let jitter = JitterStats { received: 1000, target_ms: 40, ..Default::default() };
        let clean = RtcpStats {
            packets_sent: 1000,
            packets_received: 1000,
            packets_expected: 1000,
            ..Default::default()
        };
        let good = CallMediaStats::collect(MosCodec::G711, &jitter, &clean, 0, 0, 0);
        assert!(good.mos_outbound > good.mos_inbound, "no buffer delay on the way out");
        assert_eq!(good.mos, good.mos_inbound);
        // 50 underrun frames against 1000 sent: about 4.8 % outbound loss
        let starved = CallMediaStats::collect(MosCodec::G711, &jitter, &clean, 0, 50, 0);
        assert!((starved.outbound_loss_percent - 4.76).abs() < 0.01, "{starved:?}");
        assert!(starved.mos_outbound < starved.mos_inbound);
        assert_eq!(starved.mos, starved.mos_outbound);
        assert!(starved.mos.unwrap() < 4.0, "{starved:?}");
        // the carrier reports 8 % of our packets lost
        let reported = RtcpStats {
            remote: Some(RemoteReport {
                fraction_lost: 0.1,
                cumulative_lost: 80,
                highest_seq: 1000,
                jitter_ms: 4.0,
                at: Instant::now(),
            }),
            ..clean
        };
        let lossy = CallMediaStats::collect(MosCodec::G711, &jitter, &reported, 0, 0, 0);
        assert_eq!(lossy.outbound_loss_percent, 8.0);
        assert_eq!(lossy.mos, lossy.mos_outbound);
    }

    #[test]
    fn send_underruns_count_holes_inside_speech_only() {
        let mut u = SendUnderruns::default();
        let slots = |u: &mut SendUnderruns, pattern: &str| {
            for c in pattern.chars() {
                u.slot(c == 'a');
            }
        };
        // silence before the agent speaks is no underrun
        slots(&mut u, "....aaaa");
        assert_eq!(u.frames(), 0);
        // holes of 1 and 3 frames inside speech
        slots(&mut u, ".aa...aa");
        assert_eq!(u.frames(), 4);
        // a pause longer than 100 ms is the agent pausing
        slots(&mut u, "......aa");
        assert_eq!(u.frames(), 4);
        // a barge-in flush: the silence after it is expected
        u.flushed();
        slots(&mut u, "..aa");
        assert_eq!(u.frames(), 4);
        // a trailing hole never resumed is not counted
        slots(&mut u, "...");
        assert_eq!(u.frames(), 4);
    }
}
