//! Playout buffer for audio coming back from the AI (sans-IO).
//!
//! Owns: queuing 16-bit PCM that arrives in bursts (faster than real time), releasing it as
//! 20 ms frames at the caller's media clock (`Timer::MediaTick`, driven by the caller), the
//! count of samples really played, named marks that come back once the audio queued before
//! them has been played (Twilio `mark`, OpenAI `truncate.audio_end_ms`), and the barge-in
//! flush that drops everything queued at once.
//!
//! Positions are absolute sample counts since creation: audio pushed gets positions
//! `[written, written + n)`; a mark pushed then sits at `written`. Samples leave the queue
//! either played ([`PlayoutBuffer::next_frame`]) or dropped ([`PlayoutBuffer::flush`]); a
//! mark is returned by [`PlayoutBuffer::poll_mark`] once every sample before it has left by
//! being played, or in the flush report when it was dropped.
//!
//! When fewer samples than a frame are queued, the frame carries what there is followed by
//! silence ([`FrameKind::Partial`]); an empty queue gives a silent frame ([`FrameKind::Silence`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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
    /// The end of the queued audio, padded with silence.
    Partial {
        /// Samples of real audio at the start of the frame.
        audio_samples: usize,
    },
    /// Nothing queued: silence.
    Silence,
}

/// One 20 ms frame for the media path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame20ms {
    /// Exactly one frame of samples (rate / 50).
    pub samples: Vec<i16>,
    /// Whether the samples are audio, partly audio, or silence.
    pub kind: FrameKind,
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
    /// Frames padded with silence at the end of the queued audio.
    pub partial_frames: u64,
    /// Silent frames (nothing queued).
    pub silent_frames: u64,
    /// Pushes refused for lack of room.
    pub overflows: u64,
}

#[derive(Debug, Clone)]
struct PendingMark {
    name: String,
    /// Absolute sample position: ready when `consumed >= position`.
    position: u64,
}

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
            stats: PlayoutStats::default(),
        })
    }

    /// Queues `samples` after what is already queued; all or nothing.
    pub fn push(&mut self, samples: &[i16]) -> Result<(), PlayoutError> {
        let free = self.capacity - self.queue.len();
        if samples.len() > free {
            self.stats.overflows += 1;
            return Err(PlayoutError::Overflow {
                pushed: samples.len(),
                free,
                capacity: self.capacity,
            });
        }
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
        let n = self.frame_samples.min(self.queue.len());
        let mut samples: Vec<i16> = self.queue.drain(..n).collect();
        samples.resize(self.frame_samples, 0);
        self.consumed += n as u64;
        self.stats.played_samples += n as u64;
        let kind = if n == self.frame_samples {
            FrameKind::Audio
        } else if n > 0 {
            FrameKind::Partial { audio_samples: n }
        } else {
            FrameKind::Silence
        };
        match kind {
            FrameKind::Audio => self.stats.audio_frames += 1,
            FrameKind::Partial { .. } => {
                self.stats.audio_frames += 1;
                self.stats.partial_frames += 1;
            }
            FrameKind::Silence => self.stats.silent_frames += 1,
        }
        self.release_marks(Some(now));
        Frame20ms { samples, kind }
    }

    /// A mark whose audio has been played, oldest first.
    pub fn poll_mark(&mut self) -> Option<PlayedMark> {
        self.ready.pop_front()
    }

    /// Barge-in: drops every queued sample and the marks behind them, at once.
    pub fn flush(&mut self) -> FlushReport {
        let dropped = self.queue.len();
        self.queue.clear();
        self.consumed += dropped as u64;
        self.stats.flushed_samples += dropped as u64;
        let dropped_marks: Vec<String> = self.marks.drain(..).map(|m| m.name).collect();
        if dropped > 0 || !dropped_marks.is_empty() {
            self.stats.flushes += 1;
        }
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

    /// Samples per 20 ms frame.
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Capacity in samples.
    pub fn capacity_samples(&self) -> usize {
        self.capacity
    }

    /// Counters since creation.
    pub fn stats(&self) -> PlayoutStats {
        self.stats
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

    const RATE: u32 = 8000;
    const FRAME: usize = 160;

    fn buf() -> PlayoutBuffer {
        PlayoutBuffer::new(RATE, PlayoutBuffer::DEFAULT_CAPACITY).unwrap()
    }

    fn ramp(start: i16, n: usize) -> Vec<i16> {
        (0..n).map(|i| start.wrapping_add(i as i16)).collect()
    }

    fn tick(t0: Instant, i: u32) -> Instant {
        t0 + Duration::from_millis(20) * i
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
    fn burst_plays_out_in_order_one_frame_per_tick() {
        let t0 = Instant::now();
        let mut b = buf();
        let audio = ramp(1, FRAME * 5 + 40);
        b.push(&audio[..300]).unwrap();
        b.push(&audio[300..]).unwrap();
        assert_eq!(b.buffered_ms(), 105);
        let mut out = Vec::new();
        for i in 0..5 {
            let f = b.next_frame(tick(t0, i));
            assert_eq!(f.kind, FrameKind::Audio);
            out.extend(f.samples);
        }
        let f = b.next_frame(tick(t0, 5));
        assert_eq!(f.kind, FrameKind::Partial { audio_samples: 40 });
        assert_eq!(f.samples.len(), FRAME);
        assert!(f.samples[40..].iter().all(|&s| s == 0));
        out.extend_from_slice(&f.samples[..40]);
        assert_eq!(out, audio);
        let f = b.next_frame(tick(t0, 6));
        assert!(f.is_silence() && f.samples == vec![0; FRAME]);
        assert_eq!(b.played_samples(), audio.len() as u64);
        assert_eq!(b.played_ms(), 105);
        let st = b.stats();
        assert_eq!((st.audio_frames, st.partial_frames, st.silent_frames), (6, 1, 1));
    }

    #[test]
    fn silence_when_empty_does_not_count_as_played() {
        let t0 = Instant::now();
        let mut b = buf();
        for i in 0..10 {
            assert!(b.next_frame(tick(t0, i)).is_silence());
        }
        assert_eq!(b.played_samples(), 0);
        b.push(&[7; FRAME]).unwrap();
        assert_eq!(b.next_frame(tick(t0, 10)).samples, vec![7; FRAME]);
        assert_eq!(b.played_samples(), FRAME as u64);
    }

    #[test]
    fn marks_come_back_after_their_audio_played() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(&[1; FRAME * 2]).unwrap();
        b.push_mark("a").unwrap();
        b.push(&[2; FRAME]).unwrap();
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
        b.push(&[1; 100]).unwrap();
        b.push_mark("m").unwrap();
        b.push(&[2; 500]).unwrap();
        b.next_frame(t0);
        let m = b.poll_mark().unwrap();
        assert_eq!(m.played_samples, 160, "reported at the end of the frame that played it");
    }

    #[test]
    fn flush_drops_everything_at_once_for_barge_in() {
        let t0 = Instant::now();
        let mut b = buf();
        b.push(&[5; FRAME * 10]).unwrap();
        b.push_mark("turn-1").unwrap();
        b.push(&[6; FRAME * 3]).unwrap();
        b.push_mark("turn-2").unwrap();
        b.next_frame(t0);
        b.next_frame(tick(t0, 1));
        let report = b.flush();
        assert_eq!(report.dropped_samples, FRAME * 11);
        assert_eq!(report.dropped_marks, vec!["turn-1", "turn-2"]);
        assert_eq!(b.poll_mark(), None, "dropped marks are not also returned as played");
        assert!(b.is_empty());
        assert_eq!(b.played_samples(), 2 * FRAME as u64, "what OpenAI truncate needs");
        assert!(b.next_frame(tick(t0, 2)).is_silence());
        // New audio and marks after the flush work normally.
        b.push(&[9; FRAME]).unwrap();
        b.push_mark("turn-3").unwrap();
        assert_eq!(b.next_frame(tick(t0, 3)).samples, vec![9; FRAME]);
        assert_eq!(b.poll_mark().unwrap().name, "turn-3");
        assert_eq!(b.played_samples(), 3 * FRAME as u64);
        assert_eq!(b.flush(), FlushReport::default());
        let st = b.stats();
        assert_eq!((st.flushes, st.flushed_samples), (1, (FRAME * 11) as u64));
    }

    #[test]
    fn overflow_is_typed_and_all_or_nothing() {
        let t0 = Instant::now();
        let mut b = PlayoutBuffer::new(RATE, Duration::from_millis(100)).unwrap();
        assert_eq!(b.capacity_samples(), 800);
        b.push(&[1; 700]).unwrap();
        assert_eq!(
            b.push(&[2; 101]),
            Err(PlayoutError::Overflow { pushed: 101, free: 100, capacity: 800 })
        );
        assert_eq!(b.buffered_samples(), 700);
        b.push(&[2; 100]).unwrap();
        b.next_frame(t0);
        b.push(&[3; FRAME]).unwrap();
        assert_eq!(b.stats().overflows, 1);
        // The default buffer holds 60 s, not more.
        let mut big = buf();
        big.push(&vec![0; 480_000]).unwrap();
        assert!(matches!(big.push(&[0]), Err(PlayoutError::Overflow { free: 0, .. })));
    }

    #[test]
    fn too_many_marks_is_an_error() {
        let mut b = buf();
        b.push(&[1; FRAME]).unwrap();
        for i in 0..PlayoutBuffer::MAX_MARKS {
            b.push_mark(format!("m{i}")).unwrap();
        }
        assert_eq!(b.push_mark("x"), Err(PlayoutError::TooManyMarks(PlayoutBuffer::MAX_MARKS)));
        b.next_frame(Instant::now());
        assert_eq!(std::iter::from_fn(|| b.poll_mark()).count(), PlayoutBuffer::MAX_MARKS);
    }

    #[test]
    fn a_burst_of_seconds_is_flushed_whole_between_two_ticks() {
        let t0 = Instant::now();
        let mut b = buf();
        // 5 s arrive at once (a bursty agent), then 1 s is played on the 20 ms clock
        b.push(&[7; FRAME * 250]).unwrap();
        b.push_mark("turn").unwrap();
        for i in 0..50 {
            assert_eq!(b.next_frame(tick(t0, i)).kind, FrameKind::Audio);
        }
        assert_eq!(b.buffered_ms(), 4000);
        // the clear arrives between two ticks: the very next frame is silence
        let report = b.flush();
        assert_eq!(report.dropped_samples, FRAME * 200);
        assert_eq!(report.dropped_marks, vec!["turn"]);
        for i in 50..250 {
            assert!(b.next_frame(tick(t0, i)).is_silence(), "frame {i} after the flush");
        }
        assert_eq!(b.played_ms(), 1000, "what the caller heard, for the agent's truncate");
    }
}
