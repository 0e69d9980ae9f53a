//! One call's media, sans-IO: received RTP goes through the adaptive jitter buffer and the
//! decoder (with concealment) towards the AI side; what the caller hears (the canned prompt, or
//! audio from the AI through the playout buffer and its cushion) is encoded in the negotiated
//! codec and sent on a 20 ms clock; telephone-events both ways; RTCP reports; symmetric RTP.
//!
//! The caller-bound stream never stops while the session is started: when there is nothing to
//! say (between responses, after a barge-in flush, while the ladder waits for a key, while an
//! agent connects) a low-level comfort-noise frame goes out in the call's codec, with
//! continuous sequence numbers and timestamps; the marker bit is set only on the first packet
//! of a real talk spurt (a prompt, or agent audio starting after quiet).
//!
//! Drive it like the endpoint: `on_rtp` / `on_rtcp` / `handle_timeout(now)`, then drain
//! `poll_transmit` and `poll_event`; `poll_timeout` says when to come back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::codec::opus::{OpusFmtp, OpusTuning};
use super::codec::pipeline::{AiFormat, Transcoder};
use super::codec::{CodecError, Rate};
use super::dtmf::{DtmfEvent, DtmfReceiver, DtmfSender};
use super::g711::Law;
use super::jitter::{Frame, JitterBuffer, JitterConfig};
use super::playout::{PlayoutBuffer, PlayoutError, PlayoutStats};
use super::prompt::Prompt;
use super::rtcp::{RtcpConfig, RtcpSession};
use super::rtp::inspect;
use super::rtp_out::RtpOut;
use super::source::SourceGuard;
use super::stats::{CallMediaStats, MosCodec, SendUnderruns};
use crate::core::sdp::{CodecName, Negotiated};
use crate::core::timer::{Timer, TimerTable};

/// The frame clock of the call.
pub const FRAME: Duration = Duration::from_millis(20);
/// Decoded caller frames kept for the AI side before the oldest is dropped (200 ms); frames
/// released together by one `handle_timeout` are all kept, only older ones are dropped.
const CALLER_QUEUE_FRAMES: usize = 10;
/// A late wake-up sends at most this many frames at once, then skips ahead.
const MAX_CATCH_UP_FRAMES: usize = 10;
/// Prompt audio is 8 kHz: 160 samples per frame.
const PROMPT_FRAME: usize = 160;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Playout(#[from] PlayoutError),
}

/// Everything a media session is built from.
#[derive(Debug, Clone)]
pub struct MediaParams {
    pub negotiated: Negotiated,
    /// The audio format of the AI side (what decoded caller audio becomes, and what the
    /// playout buffer holds).
    pub ai_format: AiFormat,
    /// Jitter buffer tuning; its clock rate is taken from the negotiated codec.
    pub jitter: JitterConfig,
    /// Opus encoder complexity and bitrate (used when Opus is negotiated).
    pub opus: OpusTuning,
    pub ssrc: u32,
    pub initial_seq: u16,
    pub initial_timestamp: u32,
    pub cname: String,
    /// Wall-clock time at `now` in NTP format (RTCP sender reports), supplied by the shell.
    pub ntp_now: u64,
    pub seed: u64,
}

/// Where a media datagram goes: the call's RTP or RTCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTransmit {
    pub rtcp: bool,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The caller pressed a key (RFC 4733), reported once when the press ends.
    Dtmf { digit: char, duration: Duration },
    /// The prompt has been sent completely.
    PromptFinished,
}

/// What was received and sent, and what was thrown away and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaCounters {
    pub rtp_received: u64,
    pub rtp_invalid: u64,
    /// RTP refused because of its source address (strict source).
    pub rtp_wrong_source: u64,
    /// RTCP refused because of its source address.
    pub rtcp_wrong_source: u64,
    pub rtp_unknown_payload_type: u64,
    pub decode_errors: u64,
    pub concealed_frames: u64,
    /// Lost Opus frames rebuilt from the next packet's in-band FEC (also counted as
    /// concealed): only when that packet really carries FEC data (its LBRR flag).
    pub fec_recovered: u64,
    pub caller_frames: u64,
    pub caller_frames_unconsumed: u64,
    pub rtp_sent: u64,
    pub rtcp_received: u64,
    pub rtcp_invalid: u64,
    pub dtmf_received: u64,
    /// Agent audio ran out mid-speech and came back: the caller heard a gap (per call).
    pub ai_underruns: u64,
    /// 20 ms frames of comfort noise sent because there was nothing to say.
    pub comfort_frames: u64,
    /// The agent-audio cushion the next talk spurt builds, in ms (from the agent's jitter).
    pub ai_cushion_ms: u64,
}

/// Arrival times of the last received packets, by sequence number (for latency).
const ARRIVALS: usize = 256;

/// A latency the session measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaLatency {
    /// A caller packet's arrival → its frame handed to the AI side.
    RtpToAi(Duration),
    /// Agent audio pushed → its first sample sent to the caller.
    AiToRtp(Duration),
}

/// One 20 ms frame of caller audio for the AI side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerFrame {
    /// Linear PCM at the AI rate.
    Pcm(Vec<i16>),
    /// G.711 codes in the AI side's law: the caller's own bytes when no transcoding is needed
    /// (bit-exact passthrough).
    G711(Law, Vec<u8>),
}

/// Prompt playback position.
#[derive(Debug, Clone)]
struct PromptCursor {
    prompt: Prompt,
    position: usize,
}

impl PromptCursor {
    /// The next 20 ms of the prompt at 8 kHz (the last frame padded with silence).
    fn next_frame(&mut self, out: &mut Vec<i16>) -> bool {
        let samples = self.prompt.samples();
        if self.position >= samples.len() {
            return false;
        }
        let end = (self.position + PROMPT_FRAME).min(samples.len());
        out.clear();
        out.extend_from_slice(&samples[self.position..end]);
        out.resize(PROMPT_FRAME, 0);
        self.position = end;
        true
    }
}

/// One call's media state (see the module docs).
pub struct MediaSession {
    codec_name: CodecName,
    payload_type: u8,
    dtmf_payload_type: Option<u8>,
    /// RTP clock ticks per 20 ms frame.
    frame_ticks: u32,
    transcoder: Transcoder,
    jitter: JitterBuffer,
    playout: PlayoutBuffer,
    rtp_out: RtpOut,
    rtcp: RtcpSession,
    dtmf_rx: DtmfReceiver,
    dtmf_tx: Option<DtmfSender>,
    prompt: Option<PromptCursor>,
    /// Where media may come from and where it goes (strict source, latching once).
    source: SourceGuard,
    timers: TimerTable,
    out: VecDeque<MediaTransmit>,
    events: VecDeque<MediaEvent>,
    caller_audio: VecDeque<CallerFrame>,
    arrivals: Box<[Option<(u16, Instant)>; ARRIVALS]>,
    /// Agent audio pushes not yet started playing: (first sample's position, when pushed).
    ai_pushes: VecDeque<(u64, Instant)>,
    ai_pushed: u64,
    /// Underruns already reported by [`MediaSession::take_new_underruns`].
    underruns_reported: u64,
    /// Seeded generator of the comfort noise.
    noise: u32,
    latencies: Vec<MediaLatency>,
    counters: MediaCounters,
    underruns: SendUnderruns,
    scratch_pcm: Vec<i16>,
    scratch_payload: Vec<u8>,
}

impl MediaSession {
    pub fn new(p: MediaParams, now: Instant) -> Result<MediaSession, MediaError> {
        let codec = p.negotiated.codec;
        let fmtp = OpusFmtp::parse(p.negotiated.fmtp.as_deref().unwrap_or(""));
        let transcoder = Transcoder::tuned(&codec, &fmtp, p.ai_format, p.opus)?;
        let jitter = JitterBuffer::new(JitterConfig {
            clock_rate: codec.clock_rate,
            frame_ms: 20,
            ..p.jitter
        });
        let playout = PlayoutBuffer::new(p.ai_format.rate().hz(), PlayoutBuffer::DEFAULT_CAPACITY)?;
        let mut rtcp_cfg = RtcpConfig::new(p.ssrc, p.cname);
        rtcp_cfg.clock_rate = codec.clock_rate;
        let remote_rtp = p.negotiated.remote_rtp;
        Ok(MediaSession {
            codec_name: codec.name,
            payload_type: codec.payload_type,
            dtmf_payload_type: p.negotiated.dtmf_payload_type,
            frame_ticks: codec.clock_rate / 50,
            transcoder,
            jitter,
            playout,
            rtp_out: RtpOut::new(codec.payload_type, p.ssrc, p.initial_seq, p.initial_timestamp),
            rtcp: RtcpSession::new(rtcp_cfg, now, p.ntp_now, p.seed),
            dtmf_rx: DtmfReceiver::new(codec.clock_rate),
            dtmf_tx: p.negotiated.dtmf_payload_type.map(|pt| DtmfSender::new(pt, codec.clock_rate)),
            prompt: None,
            source: SourceGuard::new(remote_rtp),
            timers: TimerTable::default(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            caller_audio: VecDeque::with_capacity(CALLER_QUEUE_FRAMES),
            arrivals: Box::new([None; ARRIVALS]),
            ai_pushes: VecDeque::new(),
            ai_pushed: 0,
            underruns_reported: 0,
            noise: (p.seed as u32) | 1,
            latencies: Vec::new(),
            counters: MediaCounters::default(),
            underruns: SendUnderruns::default(),
            scratch_pcm: Vec::with_capacity(PROMPT_FRAME),
            scratch_payload: Vec::with_capacity(512),
        })
    }

    /// Starts the 20 ms send clock (at the ACK: media may flow).
    pub fn start(&mut self, now: Instant) {
        if !self.timers.is_set(Timer::MediaTick) {
            self.timers.set(Timer::MediaTick, now);
        }
    }

    /// Plays `prompt` from the next frame on, in the negotiated codec.
    pub fn play_prompt(&mut self, prompt: Prompt) {
        self.prompt = Some(PromptCursor { prompt, position: 0 });
        self.rtp_out.mark_spurt();
    }

    /// Stops the prompt now (e.g. the agent started speaking over the filler).
    pub fn stop_prompt(&mut self) {
        if self.prompt.take().is_some() {
            self.rtp_out.mark_spurt();
        }
    }

    pub fn is_playing_prompt(&self) -> bool {
        self.prompt.is_some()
    }

    /// Audio from the AI side (or a bridged human), in the session's AI format, arrived at
    /// `now`, queued for the caller behind the cushion.
    pub fn push_ai_audio(&mut self, now: Instant, pcm: &[i16]) -> Result<(), MediaError> {
        self.playout.push(now, pcm)?;
        self.ai_pushed += pcm.len() as u64;
        Ok(())
    }

    /// As [`Self::push_ai_audio`], measuring how long until it starts playing.
    pub fn push_ai_audio_at(&mut self, now: Instant, pcm: &[i16]) -> Result<(), MediaError> {
        // positions count samples pushed since the last flush realigned them with `played`
        let start = self.ai_pushed.max(self.playout.played_samples());
        self.push_ai_audio(now, pcm)?;
        if self.ai_pushes.len() < 1024 {
            self.ai_pushes.push_back((start, now));
        }
        Ok(())
    }

    /// Latencies measured since the last call.
    pub fn take_latencies(&mut self) -> Vec<MediaLatency> {
        std::mem::take(&mut self.latencies)
    }

    /// Barge-in: drops queued AI audio at once; returns the samples dropped.
    pub fn flush_ai_audio(&mut self) -> usize {
        self.ai_pushes.clear();
        self.underruns.flushed();
        let dropped = self.playout.flush().dropped_samples;
        self.ai_pushed = self.playout.played_samples();
        dropped
    }

    /// Samples of AI audio the caller has really been sent.
    pub fn ai_samples_played(&self) -> u64 {
        self.playout.played_samples()
    }

    /// Underruns of the agent audio since the last call (for the endpoint's totals).
    pub fn take_new_underruns(&mut self) -> u64 {
        let total = self.playout.stats().underruns;
        let new = total - self.underruns_reported;
        self.underruns_reported = total;
        new
    }

    /// Sends `digits` (0-9, *, #, A-D) as RFC 4733 events; false when the peer has no
    /// telephone-event payload type or a digit is not valid.
    pub fn send_digits(&mut self, now: Instant, digits: &str, each: Duration) -> bool {
        match self.dtmf_tx.as_mut() {
            Some(tx) => tx.send_digits(now, digits, each).is_ok(),
            None => false,
        }
    }

    /// The oldest decoded caller frame (AI format), for the AI bridge.
    pub fn poll_caller_audio(&mut self) -> Option<Vec<i16>> {
        match self.caller_audio.pop_front()? {
            CallerFrame::Pcm(pcm) => Some(pcm),
            CallerFrame::G711(law, codes) => Some(law.decode(&codes)),
        }
    }

    /// The oldest caller frame in the AI side's own format (G.711 bytes pass through untouched).
    pub fn poll_caller_frame(&mut self) -> Option<CallerFrame> {
        self.caller_audio.pop_front()
    }

    /// A datagram on the RTP port.
    pub fn on_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let info = match inspect(data) {
            Ok(info) => info,
            Err(_) => {
                self.counters.rtp_invalid += 1;
                return;
            }
        };
        if !self.source.rtp_allowed(from) {
            self.counters.rtp_wrong_source += 1;
            return;
        }
        let payload =
            data.get(info.payload_offset..info.payload_offset + info.payload_len).unwrap_or(&[]);
        if Some(info.payload_type) == self.dtmf_payload_type {
            self.latch(from);
            self.counters.rtp_received += 1;
            // a key press replaces audio: not loss, nothing to conceal
            self.rtcp.on_event_received(&info);
            self.jitter.note_event(info.timestamp);
            match self.dtmf_rx.on_packet(now, &info, payload) {
                Ok(Some(ev)) => self.dtmf_event(ev),
                Ok(None) => {}
                Err(_) => self.counters.rtp_invalid += 1,
            }
            return;
        }
        if info.payload_type != self.payload_type {
            self.counters.rtp_unknown_payload_type += 1;
            return;
        }
        self.latch(from);
        self.counters.rtp_received += 1;
        self.rtcp.on_rtp_received(now, &info);
        self.arrivals[usize::from(info.seq) % ARRIVALS] = Some((info.seq, now));
        self.jitter.push(now, &info, payload);
    }

    /// A datagram on the RTCP port.
    pub fn on_rtcp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if !self.source.rtcp_allowed(from) {
            self.counters.rtcp_wrong_source += 1;
            return;
        }
        match self.rtcp.on_rtcp(now, data) {
            Ok(_) => {
                self.counters.rtcp_received += 1;
                self.source.latch_rtcp(from);
            }
            Err(_) => self.counters.rtcp_invalid += 1,
        }
    }

    /// The peer moved its media (a new offer: re-INVITE / UPDATE): send there, and let the
    /// source latch once more.
    pub fn set_remote(&mut self, rtp: SocketAddr) {
        self.source.reoffer(rtp);
    }

    /// Networks a NATed peer's media may be latched from besides the SDP's IP (the carrier's
    /// `inbound_from`).
    pub fn allow_latch_from(&mut self, nets: Vec<ipnet::IpNet>) {
        self.source.set_latch_nets(nets);
    }

    /// Strict source: after the first valid packet from an allowed address, send to where it
    /// came from and accept no other source until a new offer.
    fn latch(&mut self, from: SocketAddr) {
        self.source.latch_rtp(from);
    }

    fn dtmf_event(&mut self, ev: DtmfEvent) {
        self.counters.dtmf_received += 1;
        self.events.push_back(MediaEvent::Dtmf { digit: ev.key.as_char(), duration: ev.duration });
    }

    /// Runs everything due at `now`: received frames out of the jitter buffer, frames to send,
    /// telephone-events, RTCP.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drain_jitter(now);
        while let Some(ev) = self.dtmf_rx.poll_event(now) {
            self.dtmf_event(ev);
        }
        if self.timers.is_expired(Timer::MediaTick, now) {
            self.send_due_frames(now);
        }
        while let Some(report) = self.rtcp.poll_report(now) {
            self.out.push_back(MediaTransmit {
                rtcp: true,
                to: self.source.rtcp_target(),
                data: report,
            });
        }
    }

    fn drain_jitter(&mut self, now: Instant) {
        let mut released = 0;
        while let Some(frame) = self.jitter.poll_frame(now) {
            released += 1;
            let (seq, payload) = match frame {
                Frame::Lost { timestamp } => {
                    self.conceal_lost(timestamp, released);
                    continue;
                }
                Frame::Audio { seq, payload, .. } => (seq, payload),
            };
            if let Some((s, at)) = self.arrivals[usize::from(seq) % ARRIVALS] {
                if s == seq {
                    self.latencies.push(MediaLatency::RtpToAi(now.saturating_duration_since(at)));
                }
            }
            match self.decode_for_ai(Some(&payload)) {
                Some(out) => self.queue_caller_audio(out, released),
                None => self.counters.decode_errors += 1,
            }
        }
    }

    /// A lost frame: when the packet after it already waits in the buffer, Opus rebuilds the
    /// frame from that packet's in-band FEC and G.711 interpolates towards it; else plain
    /// concealment.
    fn conceal_lost(&mut self, timestamp: u32, released: usize) {
        self.counters.concealed_frames += 1;
        let next_ts = timestamp.wrapping_add(self.frame_ticks);
        let next =
            self.jitter.peek_next().filter(|(ts, _)| *ts == next_ts).map(|(_, p)| p.to_vec());
        let fec = self.codec_name == CodecName::Opus
            && next.as_deref().is_some_and(super::codec::opus::OpusDecoder::has_fec);
        let ai = self.transcoder.ai_format();
        match self
            .transcoder
            .caller_to_ai_lost(next.as_deref())
            .ok()
            .map(|p| to_caller_frame(ai, p))
        {
            Some(out) => {
                self.counters.fec_recovered += u64::from(fec);
                self.queue_caller_audio(out, released);
            }
            None => self.counters.decode_errors += 1,
        }
    }

    /// One caller frame (`None`: lost, conceal it) in the AI side's format.
    fn decode_for_ai(&mut self, payload: Option<&[u8]>) -> Option<CallerFrame> {
        match (self.transcoder.ai_format(), payload) {
            (AiFormat::G711(law), Some(p)) => self
                .transcoder
                .caller_to_ai_bytes(Some(p))
                .ok()
                .map(|b| CallerFrame::G711(law, b.to_vec())),
            (ai, None) => {
                self.transcoder.caller_to_ai_lost(None).ok().map(|p| to_caller_frame(ai, p))
            }
            (AiFormat::Pcm(_), Some(p)) => {
                self.transcoder.caller_to_ai(Some(p)).ok().map(|p| CallerFrame::Pcm(p.to_vec()))
            }
        }
    }

    /// Queues a decoded frame, the `released`-th of the current release. A release larger
    /// than the queue (the jitter buffer catching up after a stall) is kept whole: only frames
    /// the AI side left unconsumed from earlier releases are dropped.
    fn queue_caller_audio(&mut self, frame: CallerFrame, released: usize) {
        self.counters.caller_frames += 1;
        while self.caller_audio.len() >= CALLER_QUEUE_FRAMES.max(released) {
            self.caller_audio.pop_front();
            self.counters.caller_frames_unconsumed += 1;
        }
        self.caller_audio.push_back(frame);
    }

    /// Sends every frame whose slot has come, scheduling from the previous deadline so the
    /// clock does not drift; a very late wake-up skips ahead instead of bursting.
    fn send_due_frames(&mut self, now: Instant) {
        let mut due = self.timers.get(Timer::MediaTick).unwrap_or(now);
        let mut sent = 0;
        while due <= now && sent < MAX_CATCH_UP_FRAMES {
            self.send_frame(now);
            due += FRAME;
            sent += 1;
        }
        if due <= now {
            due = now + FRAME;
        }
        self.timers.set(Timer::MediaTick, due);
    }

    /// One 20 ms slot: telephone-events pause the audio; otherwise the prompt, else AI audio.
    fn send_frame(&mut self, now: Instant) {
        if self.send_dtmf(now) {
            return;
        }
        let mut payload = std::mem::take(&mut self.scratch_payload);
        payload.clear();
        let said = self.next_audio_payload(now, &mut payload);
        // a frame from the playout (no prompt left) that carried agent speech, or a hole
        self.underruns.slot(self.prompt.is_none() && said == Some(Said::Speech));
        let packet = match said {
            Some(Said::Speech) => Some(self.rtp_out.packet(&payload, self.frame_ticks)),
            Some(Said::Comfort) => Some(self.rtp_out.packet_unmarked(&payload, self.frame_ticks)),
            // the codec refused: keep the timestamp running so the next packet lines up
            None => None,
        };
        match packet {
            Some(packet) => self.sent_packet(now, payload.len(), packet),
            None => self.rtp_out.skip(self.frame_ticks),
        }
        self.scratch_payload = payload;
    }

    /// The payload of the next frame: the prompt, else agent audio, else comfort noise.
    fn next_audio_payload(&mut self, now: Instant, payload: &mut Vec<u8>) -> Option<Said> {
        if self.prompt.is_some() {
            if let Some(encoded) = self.prompt_payload(payload) {
                return encoded.then_some(Said::Speech);
            }
        }
        let frame = self.playout.next_frame(now);
        if frame.spurt_start {
            self.rtp_out.mark_spurt();
        }
        if frame.is_silence() {
            return self.comfort_noise(payload).then_some(Said::Comfort);
        }
        let after = self.playout.played_samples();
        while self.ai_pushes.front().is_some_and(|(pos, _)| *pos < after) {
            if let Some((_, at)) = self.ai_pushes.pop_front() {
                self.latencies.push(MediaLatency::AiToRtp(now.saturating_duration_since(at)));
            }
        }
        self.transcoder.ai_to_caller_into(&frame.samples, payload).is_ok().then_some(Said::Speech)
    }

    /// The next prompt frame: `Some(encoded)` while it plays, `None` once it has finished.
    fn prompt_payload(&mut self, payload: &mut Vec<u8>) -> Option<bool> {
        if let Some(cursor) = self.prompt.as_mut() {
            let mut pcm = std::mem::take(&mut self.scratch_pcm);
            let more = cursor.next_frame(&mut pcm);
            let result = if more {
                self.transcoder.encode_prompt_frame_into(&pcm, payload).is_ok()
            } else {
                false
            };
            self.scratch_pcm = pcm;
            if more {
                return Some(result);
            }
            self.prompt = None;
            self.events.push_back(MediaEvent::PromptFinished);
        }
        None
    }

    /// One frame of low-level noise (about -78 dBov) at the AI rate, through the same encoder
    /// path as agent audio so the resampler stays continuous; never marked.
    fn comfort_noise(&mut self, payload: &mut Vec<u8>) -> bool {
        self.counters.comfort_frames += 1;
        let mut pcm = std::mem::take(&mut self.scratch_pcm);
        pcm.clear();
        for _ in 0..self.playout.frame_samples() {
            // xorshift32: cheap, seeded, never zero
            self.noise ^= self.noise << 13;
            self.noise ^= self.noise >> 17;
            self.noise ^= self.noise << 5;
            pcm.push((self.noise % 9) as i16 - 4);
        }
        let ok = self.transcoder.ai_to_caller_into(&pcm, payload).is_ok();
        self.scratch_pcm = pcm;
        ok
    }

    fn send_dtmf(&mut self, now: Instant) -> bool {
        let ts = self.rtp_out.timestamp();
        let Some(tx) = self.dtmf_tx.as_mut() else { return false };
        if !tx.is_active() && tx.queued() == 0 {
            return false;
        }
        let mut any = false;
        while let Some(p) = tx.poll_packet(now, ts) {
            let data = self.rtp_out.packet_at(p.payload_type, &p.payload(), p.timestamp, p.marker);
            self.out.push_back(MediaTransmit { rtcp: false, to: self.source.rtp_target(), data });
            self.counters.rtp_sent += 1;
            any = true;
        }
        if !tx.is_active() {
            self.rtp_out.skip(self.frame_ticks);
            self.rtp_out.mark_spurt();
        }
        any || tx.is_active()
    }

    fn sent_packet(&mut self, now: Instant, payload_len: usize, packet: Vec<u8>) {
        self.rtcp.on_rtp_sent(
            now,
            self.rtp_out.timestamp().wrapping_sub(self.frame_ticks),
            payload_len,
        );
        self.counters.rtp_sent += 1;
        self.out.push_back(MediaTransmit {
            rtcp: false,
            to: self.source.rtp_target(),
            data: packet,
        });
    }

    /// Ends the session: an RTCP BYE to the peer.
    pub fn close(&mut self, now: Instant, reason: &str) {
        if let Some(bye) = self.rtcp.bye(now, reason) {
            self.out.push_back(MediaTransmit {
                rtcp: true,
                to: self.source.rtcp_target(),
                data: bye,
            });
        }
        self.timers.stop_all();
    }

    pub fn poll_transmit(&mut self) -> Option<MediaTransmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.timers.next_timeout();
        // telephone-events leave on the frame clock (send_frame): a press due between two
        // ticks waits for the next one, so it must not ask to be woken before it
        let dtmf_tx = self.dtmf_tx.as_ref().and_then(DtmfSender::poll_timeout);
        let dtmf_tx = match (dtmf_tx, self.timers.get(Timer::MediaTick)) {
            (Some(due), Some(tick)) => Some(due.max(tick)),
            (due, _) => due,
        };
        let dtmf = [self.dtmf_rx.poll_timeout(), dtmf_tx];
        [own, self.jitter.poll_timeout(), self.rtcp.poll_timeout()]
            .into_iter()
            .chain(dtmf)
            .flatten()
            .min()
    }

    pub fn remote_rtp(&self) -> SocketAddr {
        self.source.rtp_target()
    }

    pub fn counters(&self) -> MediaCounters {
        let mut c = self.counters;
        c.ai_underruns = self.playout.stats().underruns;
        c.ai_cushion_ms = self.playout.target().as_millis() as u64;
        c
    }

    /// The agent-audio playout's counters (spurts, underruns, cushion frames).
    pub fn playout_stats(&self) -> PlayoutStats {
        self.playout.stats()
    }

    /// Loss, jitter, buffer depth, concealment and the MOS estimate per direction.
    pub fn stats(&self) -> CallMediaStats {
        let codec = match self.codec_name {
            CodecName::Opus => MosCodec::Opus,
            _ => MosCodec::G711,
        };
        let concealed_ms = self.counters.concealed_frames * 20;
        let (jitter, rtcp) = (self.jitter.stats(), self.rtcp.stats());
        let (underruns, comfort) = (self.underruns.frames(), self.counters.comfort_frames);
        CallMediaStats::collect(codec, &jitter, &rtcp, concealed_ms, underruns, comfort)
    }

    /// The AI-side rate of this session.
    pub fn ai_rate(&self) -> Rate {
        self.transcoder.ai_format().rate()
    }
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("codec", &self.codec_name)
            .field("ssrc", &self.rtp_out.ssrc())
            .field("remote_rtp", &self.source.rtp_target())
            .field("latched", &self.source.rtp_latched())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// What a frame's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    /// A prompt or agent audio: a talk spurt may start with it (marker bit).
    Speech,
    /// Comfort noise: nothing to say, never marked.
    Comfort,
}

/// PCM at the AI rate as a frame in the AI side's format.
fn to_caller_frame(ai: AiFormat, pcm: &[i16]) -> CallerFrame {
    match ai {
        AiFormat::G711(law) => {
            let mut codes = Vec::with_capacity(pcm.len());
            law.encode_into(pcm, &mut codes);
            CallerFrame::G711(law, codes)
        }
        AiFormat::Pcm(_) => CallerFrame::Pcm(pcm.to_vec()),
    }
}

/// RTCP goes to the port above RTP (RFC 3550 §11), unless the peer's RTCP arrives elsewhere.
#[cfg(test)]
mod tests;
