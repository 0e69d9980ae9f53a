//! Playout buffer for audio coming back from the AI (sans-IO): the agent-side twin of the RTP
//! jitter buffer.
//!
//! Owns: queuing 16-bit PCM that arrives in bursts or with jitter, releasing it as 20 ms
//! frames at the caller's media clock (`Timer::MediaTick`, driven by the caller), the
//! adaptive cushion built before each talk spurt (its size from [`CushionTarget`]), talk
//! spurts (a frame says when it starts one: the RTP marker bit), underruns (audio that ran out
//! in the middle of a spurt and came back), the count of samples really played, named marks
//! that come back once the audio queued before them has been played (Twilio `mark`, OpenAI
//! `truncate.audio_end_ms`), and the barge-in flush that drops everything queued at once.
//!
//! Positions are absolute sample counts since creation: audio pushed gets positions
//! `[written, written + n)`; a mark pushed then sits at `written`. Samples leave the queue
//! either played ([`PlayoutBuffer::next_frame`]) or dropped ([`PlayoutBuffer::flush`]); a
//! mark is returned by [`PlayoutBuffer::poll_mark`] once every sample before it has left by
//! being played, or in the flush report when it was dropped.
//!
//! A talk spurt: the first audio after quiet waits the cushion's time (or less when a burst
//! queued the cushion beyond its longest chunk at once), then plays a full frame per tick. When fewer
//! samples than a frame are queued mid-spurt the remainder is carried over (a silent frame is
//! sent instead, and the remainder plays with what follows); only when nothing follows within
//! the cushion time is the remainder played padded with silence ([`FrameKind::Partial`]). When
//! audio comes back within [`HANGOVER`] of running out, the spurt goes on (an underrun, no new
//! marker); after that the spurt has ended. The queue is bounded by its capacity and its
//! memory is given back once it drains.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::cushion::CushionTarget;

/// Why audio or a mark was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayoutError {
    /// The sample rate is not a positive multiple of 50 Hz (20 ms frames).
    #[error("sample rate {0} Hz does not give whole 20 ms frames")]
    BadRate(u32),
    /// The push would exceed the capacity; nothing was queued.
    #[error("playout buffer full: {pushed} samples pushed, {free} free of {capacity}")]
    Overflow {
        /// Samples in the refused push.
        pushed: usize,
        /// Free room, in samples.
        free: usize,
        /// Capacity, in samples.
        capacity: usize,
    },
    /// Too many marks are pending.
    #[error("too many pending marks ({0})")]
    TooManyMarks(usize),
}

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A full frame of queued audio.
    Audio,
    /// The end of a talk spurt's audio, padded with silence.
    Partial {
        /// Samples of real audio at the start of the frame.
        audio_samples: usize,
    },
    /// No audio to play (quiet, building the cushion, or an underrun): silence.
    Silence,
}

/// One 20 ms frame for the media path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame20ms {
    /// Exactly one frame of samples (rate / 50).
    pub samples: Vec<i16>,
    /// Whether the samples are audio, partly audio, or silence.
    pub kind: FrameKind,
    /// The first frame of a talk spurt (the RTP marker bit).
    pub spurt_start: bool,
}

impl Frame20ms {
    /// True when no queued audio is in the frame.
    pub fn is_silence(&self) -> bool {
        self.kind == FrameKind::Silence
    }
}

/// A mark whose audio has been played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayedMark {
    /// The name given to [`PlayoutBuffer::push_mark`].
    pub name: String,
    /// Samples played before it (its position in [`PlayoutBuffer::played_samples`] terms).
    pub played_samples: u64,
    /// The instant of the frame that completed it (the push instant if nothing was pending).
    pub at: Option<Instant>,
}

/// What [`PlayoutBuffer::flush`] dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Samples dropped unplayed.
    pub dropped_samples: usize,
    /// Marks dropped with them (their audio will never play), in order.
    pub dropped_marks: Vec<String>,
}

/// Counters since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    /// Samples pushed.
    pub pushed_samples: u64,
    /// Samples played.
    pub played_samples: u64,
    /// Samples dropped by flushes.
    pub flushed_samples: u64,
    /// Flushes that dropped something.
    pub flushes: u64,
    /// Frames with audio (full or partial).
    pub audio_frames: u64,
    /// Frames padded with silence at the end of a talk spurt.
    pub partial_frames: u64,
    /// Silent frames (quiet, cushion, underrun).
    pub silent_frames: u64,
    /// Pushes refused for lack of room.
    pub overflows: u64,
    /// Talk spurts started.
    pub spurts: u64,
    /// Times the audio ran out mid-spurt and came back (the caller heard a gap).
    pub underruns: u64,
    /// Silent frames those underruns put into speech.
    pub underrun_frames: u64,
    /// Frames spent building the cushion before spurts started.
    pub cushion_frames: u64,
}

#[derive(Debug, Clone)]
struct PendingMark {
    name: String,
    /// Absolute sample position: ready when `consumed >= position`.
    position: u64,
}

/// Where the buffer is in a talk spurt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spurt {
    /// Nothing to play.
    Quiet,
    /// Audio arrived at `since`: building the cushion (`largest`: the longest chunk so far).
    Cushion { since: Instant, largest: Duration },
    /// Playing a full frame per tick.
    Playing,
    /// Ran out mid-spurt at `since` after `frames` silent frames so far.
    Starved { since: Instant, frames: u64 },
}

/// Audio came back within this long of running out: the same spurt (an underrun).
pub const HANGOVER: Duration = Duration::from_millis(250);
/// Memory kept by an empty queue (1 s at 24 kHz); more is given back when it drains.
const RETAIN_SAMPLES: usize = 24_000;

/// Queues bursty PCM and plays it out one 20 ms frame per tick.
#[derive(Debug, Clone)]
pub struct PlayoutBuffer {
    sample_rate: u32,
    frame_samples: usize,
    capacity: usize,
    queue: VecDeque<i16>,
    /// Samples that left the queue (played or flushed): the position of its head.
    consumed: u64,
    marks: VecDeque<PendingMark>,
    ready: VecDeque<PlayedMark>,
    spurt: Spurt,
    cushion: CushionTarget,
    stats: PlayoutStats,
}

impl PlayoutBuffer {
    /// Pending marks allowed.
    pub const MAX_MARKS: usize = 4096;
    /// Default capacity.
    pub const DEFAULT_CAPACITY: Duration = Duration::from_secs(60);

    /// A buffer for mono PCM at `sample_rate` holding at most `capacity` of audio.
    pub fn new(sample_rate: u32, capacity: Duration) -> Result<PlayoutBuffer, PlayoutError> {
        if sample_rate == 0 || !sample_rate.is_multiple_of(50) {
            return Err(PlayoutError::BadRate(sample_rate));
        }
        let capacity = (capacity.as_millis() * u128::from(sample_rate) / 1000)
            .min(usize::MAX as u128) as usize;
        Ok(PlayoutBuffer {
            sample_rate,
            frame_samples: sample_rate as usize / 50,
            capacity,
            queue: VecDeque::new(),
            consumed: 0,
            marks: VecDeque::new(),
            ready: VecDeque::new(),
            spurt: Spurt::Quiet,
            cushion: CushionTarget::default(),
            stats: PlayoutStats::default(),
        })
    }

    /// Queues `samples`, arrived at `now`, after what is already queued; all or nothing.
    pub fn push(&mut self, now: Instant, samples: &[i16]) -> Result<(), PlayoutError> {
        let free = self.capacity - self.queue.len();
        if samples.len() > free {
            self.stats.overflows += 1;
            return Err(PlayoutError::Overflow {
                pushed: samples.len(),
                free,
                capacity: self.capacity,
            });
        }
        if samples.is_empty() {
            return Ok(());
        }
        let duration = self.duration_of(samples.len());
        match &mut self.spurt {
            Spurt::Quiet => {
                self.cushion.new_spurt();
                self.spurt = Spurt::Cushion { since: now, largest: duration };
            }
            Spurt::Cushion { largest, .. } => *largest = (*largest).max(duration),
            Spurt::Playing | Spurt::Starved { .. } => {}
        }
        self.cushion.on_chunk(now, duration);
        self.queue.extend(samples.iter().copied());
        self.stats.pushed_samples += samples.len() as u64;
        Ok(())
    }

    /// Places a mark after the audio queued so far. With nothing queued it is ready at once.
    pub fn push_mark(&mut self, name: impl Into<String>) -> Result<(), PlayoutError> {
        if self.marks.len() >= Self::MAX_MARKS {
            return Err(PlayoutError::TooManyMarks(self.marks.len()));
        }
        let position = self.written();
        self.marks.push_back(PendingMark { name: name.into(), position });
        self.release_marks(None);
        Ok(())
    }

    /// The next 20 ms frame at `now` (the caller's media tick).
    pub fn next_frame(&mut self, now: Instant) -> Frame20ms {
        let frame = match self.spurt {
            Spurt::Quiet => self.silence(),
            Spurt::Cushion { since, largest } => self.cushion_frame(now, since, largest),
            Spurt::Playing => self.playing_frame(now),
            Spurt::Starved { since, frames } => self.starved_frame(now, since, frames),
        };
        self.release_marks(Some(now));
        if self.queue.is_empty() {
            self.give_back_memory();
        }
        frame
    }

    /// A mark whose audio has been played, oldest first.
    pub fn poll_mark(&mut self) -> Option<PlayedMark> {
        self.ready.pop_front()
    }

    /// Barge-in: drops every queued sample and the marks behind them, at once. The next audio
    /// starts a new talk spurt.
    pub fn flush(&mut self) -> FlushReport {
        let dropped = self.queue.len();
        self.queue.clear();
        self.give_back_memory();
        self.consumed += dropped as u64;
        self.stats.flushed_samples += dropped as u64;
        let dropped_marks: Vec<String> = self.marks.drain(..).map(|m| m.name).collect();
        if dropped > 0 || !dropped_marks.is_empty() {
            self.stats.flushes += 1;
        }
        self.spurt = Spurt::Quiet;
        self.cushion.new_spurt();
        FlushReport { dropped_samples: dropped, dropped_marks }
    }

    /// Samples really played since creation (flushed ones excluded).
    pub fn played_samples(&self) -> u64 {
        self.stats.played_samples
    }

    /// [`played_samples`](Self::played_samples) in ms.
    pub fn played_ms(&self) -> u64 {
        self.stats.played_samples * 1000 / u64::from(self.sample_rate)
    }

    /// Samples queued.
    pub fn buffered_samples(&self) -> usize {
        self.queue.len()
    }

    /// Audio queued, in ms.
    pub fn buffered_ms(&self) -> u64 {
        self.queue.len() as u64 * 1000 / u64::from(self.sample_rate)
    }

    /// True when no audio is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True while a talk spurt is under way (cushion, playing, or an underrun).
    pub fn in_spurt(&self) -> bool {
        self.spurt != Spurt::Quiet
    }

    /// The cushion the next talk spurt will build.
    pub fn target(&self) -> Duration {
        self.cushion.target()
    }

    /// Samples per 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Capacity in samples.
    pub fn capacity_samples(&self) -> usize {
        self.capacity
    }

    /// Samples the queue has room for without allocating.
    pub fn allocated_samples(&self) -> usize {
        self.queue.capacity()
    }

    /// Counters since creation.
    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// Building the cushion: play once its time has passed since the first chunk arrived
    /// (then every later chunk has the cushion's margin, whatever the chunk size), or at once
    /// when the queue holds the cushion beyond the longest chunk (a burst ahead of real time).
    fn cushion_frame(&mut self, now: Instant, since: Instant, largest: Duration) -> Frame20ms {
        let target = self.cushion.target();
        let queued = self.duration_of(self.queue.len());
        if queued < target + largest && now.saturating_duration_since(since) < target {
            self.stats.cushion_frames += 1;
            return self.silence();
        }
        self.stats.spurts += 1;
        self.spurt = Spurt::Playing;
        let mut frame = self.playing_frame(now);
        frame.spurt_start = true;
        frame
    }

    fn playing_frame(&mut self, now: Instant) -> Frame20ms {
        if self.queue.len() >= self.frame_samples {
            return self.audio(self.frame_samples);
        }
        self.spurt = Spurt::Starved { since: now, frames: 1 };
        self.silence()
    }

    /// Ran out mid-spurt: audio coming back is an underrun; a remainder waits for what
    /// follows as long as the cushion; after the hangover the spurt has ended.
    fn starved_frame(&mut self, now: Instant, since: Instant, frames: u64) -> Frame20ms {
        if self.queue.len() >= self.frame_samples {
            self.stats.underruns += 1;
            self.stats.underrun_frames += frames;
            self.spurt = Spurt::Playing;
            return self.audio(self.frame_samples);
        }
        let waited = now.saturating_duration_since(since);
        if !self.queue.is_empty() && waited >= self.cushion.target() {
            // nothing followed the remainder: the end of the speech
            self.spurt = Spurt::Quiet;
            self.cushion.new_spurt();
            return self.audio(self.queue.len());
        }
        if waited >= HANGOVER {
            self.spurt = Spurt::Quiet;
            self.cushion.new_spurt();
        } else {
            self.spurt = Spurt::Starved { since, frames: frames + 1 };
        }
        self.silence()
    }

    /// Plays `n` queued samples (padded to a frame when fewer).
    fn audio(&mut self, n: usize) -> Frame20ms {
        let mut samples: Vec<i16> = self.queue.drain(..n).collect();
        samples.resize(self.frame_samples, 0);
        self.consumed += n as u64;
        self.stats.played_samples += n as u64;
        self.stats.audio_frames += 1;
        let kind = if n == self.frame_samples {
            FrameKind::Audio
        } else {
            self.stats.partial_frames += 1;
            FrameKind::Partial { audio_samples: n }
        };
        Frame20ms { samples, kind, spurt_start: false }
    }

    fn silence(&mut self) -> Frame20ms {
        self.stats.silent_frames += 1;
        Frame20ms {
            samples: vec![0; self.frame_samples],
            kind: FrameKind::Silence,
            spurt_start: false,
        }
    }

    fn duration_of(&self, samples: usize) -> Duration {
        Duration::from_micros(samples as u64 * 1_000_000 / u64::from(self.sample_rate))
    }

    /// An empty queue keeps at most [`RETAIN_SAMPLES`] of memory after a burst.
    fn give_back_memory(&mut self) {
        if self.queue.capacity() > 2 * RETAIN_SAMPLES {
            self.queue.shrink_to(RETAIN_SAMPLES);
        }
    }

    /// Absolute position after the last queued sample.
    fn written(&self) -> u64 {
        self.consumed + self.queue.len() as u64
    }

    fn release_marks(&mut self, at: Option<Instant>) {
        while self.marks.front().is_some_and(|m| m.position <= self.consumed) {
            let Some(m) = self.marks.pop_front() else {
                break;
            };
            self.ready.push_back(PlayedMark {
                name: m.name,
                played_samples: self.stats.played_samples,
                at,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const RATE: u32 = 8000;
    const FRAME: usize = 160;

    fn buf() -> PlayoutBuffer {
        PlayoutBuffer::new(RATE, PlayoutBuffer::DEFAULT_CAPACITY).unwrap()
    }

    fn ramp(start: i16, n: usize) -> Vec<i16> {
        (0..n).map(|i| start.wrapping_add(i as i16)).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn tick(t0: Instant, i: u32) -> Instant {
        t0 + Duration::from_millis(20) * i
    }

    /// Plays `pushes` (arrival offset, samples) against ticks every 20 ms from `t0` (a push at
    /// the same instant as a tick comes first), for `ticks` ticks.
    fn drive(
        b: &mut PlayoutBuffer,
        t0: Instant,
        pushes: &[(Duration, Vec<i16>)],
        ticks: u32,
    ) -> Vec<Frame20ms> {
        let mut next = 0;
        let mut frames = Vec::new();
        for i in 0..ticks {
            let at = tick(t0, i);
            while next < pushes.len() && t0 + pushes[next].0 <= at {
                b.push(t0 + pushes[next].0, &pushes[next].1).unwrap();
                next += 1;
            }
            frames.push(b.next_frame(at));
        }
        frames
    }

    /// The audio samples the frames carried, in order.
    fn heard(frames: &[Frame20ms]) -> Vec<i16> {
        let mut out = Vec::new();
        for f in frames {
            match f.kind {
                FrameKind::Audio => out.extend_from_slice(&f.samples),
                FrameKind::Partial { audio_samples } => {
                    out.extend_from_slice(&f.samples[..audio_samples])
                }
                FrameKind::Silence => {}
            }
        }
        out
    }

    /// Silent frames between the first and the last audio frame (holes in the speech).
    fn holes(frames: &[Frame20ms]) -> usize {
        let first = frames.iter().position(|f| !f.is_silence());
        let last = frames.iter().rposition(|f| !f.is_silence());
        match (first, last) {
            (Some(a), Some(b)) => frames[a..=b].iter().filter(|f| f.is_silence()).count(),
            _ => 0,
        }
    }

    /// An agent sending `total` samples at `rate` in chunks of `chunk` samples, each sent in
    /// real time, arriving late by a seeded uniform 0..`jitter_ms` (in order, as over TCP).
    fn jittered(
        rate: u32,
        total: usize,
        chunk: usize,
        jitter_ms: u64,
        seed: u64,
    ) -> Vec<(Duration, Vec<i16>)> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let audio = ramp(1, total);
        let mut out = Vec::new();
        let mut last = Duration::ZERO;
        for (i, c) in audio.chunks(chunk).enumerate() {
            let due = Duration::from_micros((i * chunk) as u64 * 1_000_000 / u64::from(rate));
            let late = if jitter_ms == 0 { 0 } else { rng.gen_range(0..=jitter_ms * 1000) };
            let at = (due + Duration::from_micros(late)).max(last);
            last = at;
            out.push((at, c.to_vec()));
        }
        out
    }

    #[test]
    fn rejects_rates_without_whole_frames() {
        assert_eq!(
            PlayoutBuffer::new(0, Duration::from_secs(1)).err(),
            Some(PlayoutError::BadRate(0))
        );
        assert_eq!(
            PlayoutBuffer::new(8001, Duration::from_secs(1)).err(),
            Some(PlayoutError::BadRate(8001))
        );
        let b = PlayoutBuffer::new(24_000, Duration::from_secs(60)).unwrap();
        assert_eq!((b.frame_samples(), b.capacity_samples()), (480, 1_440_000));
    }

    #[test]
    fn a_burst_waits_for_the_cushion_then_plays_in_order_with_one_marker() {
        let t0 = Instant::now();
        let mut b = buf();
        let audio = ramp(1, FRAME * 5 + 40);
        for chunk in audio.chunks(FRAME) {
            b.push(t0, chunk).unwrap();
        }
        assert_eq!(b.buffered_ms(), 105);
        let frames: Vec<Frame20ms> = (0..12).map(|i| b.next_frame(tick(t0, i))).collect();
        // 105 ms queued at once: more than the 40 ms cushion beyond a 20 ms chunk: at once
        assert!(frames[0].spurt_start && frames[0].kind == FrameKind::Audio);
        assert_eq!(frames.iter().filter(|f| f.spurt_start).count(), 1);
        assert!(frames[1..5].iter().all(|f| f.kind == FrameKind::Audio));
        // the 40-sample tail waits for more (the cushion's 40 ms), then plays padded
        assert!(frames[5].is_silence() && frames[6].is_silence());
        assert_eq!(frames[7].kind, FrameKind::Partial { audio_samples: 40 });
        assert!(frames[7].samples[40..].iter().all(|&s| s == 0));
        assert_eq!(heard(&frames), audio);
        assert_eq!(b.played_samples(), audio.len() as u64);
        assert_eq!(b.played_ms(), 105);
        let st = b.stats();
        assert_eq!((st.audio_frames, st.partial_frames, st.underruns), (6, 1, 0));
        assert!(!b.in_spurt());
    }

    #[test]
    fn the_first_chunk_waits_for_the_cushion() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(t0, &[1; FRAME]).unwrap();
        assert_eq!(b.target(), ms(40));
        assert!(b.next_frame(t0).is_silence(), "20 ms queued < 40 ms cushion");
        b.push(tick(t0, 1), &[2; FRAME]).unwrap();
        assert!(b.next_frame(tick(t0, 1)).is_silence(), "40 ms queued, 20 ms waited");
        let f = b.next_frame(tick(t0, 2));
        assert!(f.spurt_start && f.samples == vec![1; FRAME], "the cushion's 40 ms have passed");
        assert_eq!(b.stats().cushion_frames, 2);
    }

    #[test]
    fn a_remainder_is_carried_into_the_next_frame_never_padded_while_audio_follows() {
        // any message size at 8, 16 and 24 kHz (758-byte PCM16 messages at 16 kHz among them),
        // sent in real time with up to 15 ms of jitter: every sample is heard, in order, with
        // no hole and no padded frame before the very end
        for (rate, chunk) in
            [(8000, 137), (8000, 333), (16_000, 379), (16_000, 1001), (24_000, 379), (24_000, 1500)]
        {
            let t0 = Instant::now();
            let mut b = PlayoutBuffer::new(rate, PlayoutBuffer::DEFAULT_CAPACITY).unwrap();
            let total = rate as usize * 3; // 3 s
            let pushes = jittered(rate, total, chunk, 15, u64::from(rate) + chunk as u64);
            let frames = drive(&mut b, t0, &pushes, 200);
            let sent: Vec<i16> = pushes.iter().flat_map(|(_, c)| c.clone()).collect();
            assert_eq!(heard(&frames), sent, "{rate} Hz, {chunk}-sample chunks");
            assert_eq!(holes(&frames), 0, "{rate} Hz, {chunk}");
            let partials = frames.iter().filter(|f| matches!(f.kind, FrameKind::Partial { .. }));
            assert!(partials.count() <= 1, "{rate} Hz, {chunk}: only the very last frame");
            assert_eq!(b.stats().underruns, 0, "{rate} Hz, {chunk}");
            assert_eq!(frames.iter().filter(|f| f.spurt_start).count(), 1);
        }
    }

    #[test]
    fn a_late_chunk_is_an_underrun_without_a_new_marker_and_the_cushion_grows() {
        let t0 = Instant::now();
        let mut b = buf();
        let mut pushes: Vec<(Duration, Vec<i16>)> =
            (0..10).map(|i| (ms(20) * i, vec![1; FRAME])).collect();
        // the 11th chunk is 100 ms late, then real time again
        pushes.extend((10..20).map(|i| (ms(20) * i + ms(100), vec![2; FRAME])));
        let frames = drive(&mut b, t0, &pushes, 40);
        let st = b.stats();
        assert_eq!(st.underruns, 1);
        assert!(st.underrun_frames >= 3, "{st:?}");
        assert_eq!(frames.iter().filter(|f| f.spurt_start).count(), 1, "one spurt");
        assert!(b.target() >= ms(110), "{:?}", b.target());
        assert_eq!(heard(&frames).len(), 20 * FRAME);
    }

    #[test]
    fn quiet_longer_than_the_hangover_ends_the_spurt_and_the_next_audio_is_marked() {
        let t0 = Instant::now();
        let mut b = buf();
        let pushes = vec![(ms(0), vec![1; FRAME * 3]), (ms(600), vec![2; FRAME * 3])];
        let frames = drive(&mut b, t0, &pushes, 50);
        assert_eq!(frames.iter().filter(|f| f.spurt_start).count(), 2);
        assert_eq!(b.stats().underruns, 0, "a pause between responses is no underrun");
        assert_eq!(b.stats().spurts, 2);
    }

    #[test]
    fn seeded_jitter_of_30_ms_is_absorbed_after_the_first_late_chunks() {
        // ±30 ms around real time (0-60 ms late), 20 ms chunks, 60 s
        let t0 = Instant::now();
        let mut b = buf();
        let pushes = jittered(RATE, RATE as usize * 60, FRAME, 60, 7);
        let frames = drive(&mut b, t0, &pushes, 3100);
        let st = b.stats();
        assert_eq!(heard(&frames).len(), RATE as usize * 60);
        assert!(st.underruns <= 3, "the cushion adapts within a few chunks: {st:?}");
        assert!(b.target() >= ms(60), "{:?}", b.target());
        assert!(b.target() <= ms(100), "{:?}", b.target());
    }

    #[test]
    fn silence_when_empty_does_not_count_as_played() {
        let t0 = Instant::now();
        let mut b = buf();
        for i in 0..10 {
            assert!(b.next_frame(tick(t0, i)).is_silence());
        }
        assert_eq!(b.played_samples(), 0);
        for _ in 0..3 {
            b.push(tick(t0, 10), &[7; FRAME]).unwrap();
        }
        assert_eq!(b.next_frame(tick(t0, 10)).samples, vec![7; FRAME]);
        assert_eq!(b.played_samples(), FRAME as u64);
    }

    #[test]
    fn marks_come_back_after_their_audio_played() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(t0, &[1; FRAME]).unwrap();
        b.push(t0, &[1; FRAME]).unwrap();
        b.push_mark("a").unwrap();
        b.push(t0, &[2; FRAME]).unwrap();
        b.push_mark("b").unwrap();
        b.push_mark("c").unwrap();
        assert_eq!(b.poll_mark(), None);
        b.next_frame(tick(t0, 0));
        assert_eq!(b.poll_mark(), None, "a needs 2 frames");
        b.next_frame(tick(t0, 1));
        let a = b.poll_mark().unwrap();
        assert_eq!((a.name.as_str(), a.played_samples, a.at), ("a", 320, Some(tick(t0, 1))));
        assert_eq!(b.poll_mark(), None);
        b.next_frame(tick(t0, 2));
        let names: Vec<String> = std::iter::from_fn(|| b.poll_mark()).map(|m| m.name).collect();
        assert_eq!(names, vec!["b", "c"]);
        // Nothing queued: a mark is ready at once.
        b.push_mark("idle").unwrap();
        let m = b.poll_mark().unwrap();
        assert_eq!((m.name.as_str(), m.played_samples, m.at), ("idle", 480, None));
    }

    #[test]
    fn mark_mid_frame_waits_for_the_frame_that_plays_its_audio() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(t0, &[1; 100]).unwrap();
        b.push_mark("m").unwrap();
        b.push(t0, &[2; 500]).unwrap();
        b.next_frame(t0 + ms(40));
        let m = b.poll_mark().unwrap();
        assert_eq!(m.played_samples, 160, "reported at the end of the frame that played it");
    }

    #[test]
    fn flush_drops_everything_at_once_for_barge_in() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(t0, &[5; FRAME * 10]).unwrap();
        b.push_mark("turn-1").unwrap();
        b.push(t0, &[6; FRAME * 3]).unwrap();
        b.push_mark("turn-2").unwrap();
        b.next_frame(t0);
        b.next_frame(tick(t0, 1));
        let report = b.flush();
        assert_eq!(report.dropped_samples, FRAME * 11);
        assert_eq!(report.dropped_marks, vec!["turn-1", "turn-2"]);
        assert_eq!(b.poll_mark(), None, "dropped marks are not also returned as played");
        assert!(b.is_empty() && !b.in_spurt());
        assert_eq!(b.played_samples(), 2 * FRAME as u64, "what OpenAI truncate needs");
        assert!(b.next_frame(tick(t0, 2)).is_silence());
        // New audio after the flush is a new spurt (marked); marks work normally.
        for _ in 0..3 {
            b.push(tick(t0, 3), &[9; FRAME]).unwrap();
        }
        b.push_mark("turn-3").unwrap();
        let f = b.next_frame(tick(t0, 3));
        assert!(f.spurt_start && f.samples == vec![9; FRAME]);
        assert_eq!(b.played_samples(), 3 * FRAME as u64);
        b.next_frame(tick(t0, 4));
        b.next_frame(tick(t0, 5));
        assert_eq!(b.poll_mark().unwrap().name, "turn-3");
        assert_eq!(b.flush(), FlushReport::default());
        let st = b.stats();
        assert_eq!((st.flushes, st.flushed_samples), (1, (FRAME * 11) as u64));
    }

    #[test]
    fn a_five_second_burst_then_clear_plays_exactly_what_was_heard_and_gives_memory_back() {
        let t0 = Instant::now();
        let mut b = PlayoutBuffer::new(24_000, PlayoutBuffer::DEFAULT_CAPACITY).unwrap();
        let burst = ramp(0, 24_000 * 5);
        for chunk in burst.chunks(2400) {
            b.push(t0, chunk).unwrap();
        }
        assert!(b.allocated_samples() >= 24_000 * 5);
        for i in 0..25 {
            b.next_frame(tick(t0, i));
        }
        let report = b.flush();
        assert_eq!(b.played_samples(), 25 * 480, "500 ms heard: the truncate point");
        assert_eq!(report.dropped_samples, 24_000 * 5 - 25 * 480);
        assert!(b.allocated_samples() <= 2 * RETAIN_SAMPLES, "{}", b.allocated_samples());
        // the same once a burst has simply played out
        b.push(tick(t0, 30), &burst).unwrap();
        for i in 30..300 {
            b.next_frame(tick(t0, i));
        }
        assert!(b.is_empty());
        assert!(b.allocated_samples() <= 2 * RETAIN_SAMPLES, "{}", b.allocated_samples());
    }

    #[test]
    fn overflow_is_typed_and_all_or_nothing() {
        let t0 = Instant::now();
        let mut b = PlayoutBuffer::new(RATE, Duration::from_millis(100)).unwrap();
        assert_eq!(b.capacity_samples(), 800);
        b.push(t0, &[1; 700]).unwrap();
        assert_eq!(
            b.push(t0, &[2; 101]),
            Err(PlayoutError::Overflow { pushed: 101, free: 100, capacity: 800 })
        );
        assert_eq!(b.buffered_samples(), 700);
        b.push(t0, &[2; 100]).unwrap();
        b.next_frame(t0 + ms(40)); // the cushion's time: one frame plays and frees room
        b.push(t0 + ms(40), &[3; FRAME]).unwrap();
        assert_eq!(b.stats().overflows, 1);
        // The default buffer holds 60 s, not more: a bursty agent cannot grow it further.
        let mut big = buf();
        big.push(t0, &vec![0; 480_000]).unwrap();
        assert!(matches!(big.push(t0, &[0]), Err(PlayoutError::Overflow { free: 0, .. })));
    }

    #[test]
    fn too_many_marks_is_an_error() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(t0, &[1; FRAME * 3]).unwrap();
        for i in 0..PlayoutBuffer::MAX_MARKS {
            b.push_mark(format!("m{i}")).unwrap();
        }
        assert_eq!(b.push_mark("x"), Err(PlayoutError::TooManyMarks(PlayoutBuffer::MAX_MARKS)));
        for i in 0..5 {
            b.next_frame(tick(t0, i));
        }
        assert_eq!(std::iter::from_fn(|| b.poll_mark()).count(), PlayoutBuffer::MAX_MARKS);
    }

    #[test]
    fn a_burst_of_seconds_is_flushed_whole_between_two_ticks() {
        let t0 = Instant::now();
        let mut b = buf();
        // 5 s arrive at once (a bursty agent), then about 1 s is played on the 20 ms clock
        // (the cushion may hold the first frames back)
        b.push(t0, &[7; FRAME * 250]).unwrap();
        b.push_mark("turn").unwrap();
        let audio = (0..50).filter(|&i| b.next_frame(tick(t0, i)).kind == FrameKind::Audio).count();
        assert!(audio >= 45, "{audio} audio frames of 50");
        let played = b.played_ms();
        assert_eq!(played, audio as u64 * 20);
        assert_eq!(b.buffered_ms(), 5000 - played);
        // the clear arrives between two ticks: the very next frame is silence
        let report = b.flush();
        assert_eq!(report.dropped_samples, FRAME * (250 - audio));
        assert_eq!(report.dropped_marks, vec!["turn"]);
        for i in 50..250 {
            assert!(b.next_frame(tick(t0, i)).is_silence(), "frame {i} after the flush");
        }
        assert_eq!(b.played_ms(), played, "what the caller heard, for the agent's truncate");
    }
}
