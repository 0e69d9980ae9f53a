//! The simulated agent's outgoing audio: a bounded queue of audio and mark cues, each due at
//! an instant, played out in messages timed and sized by the `--audio` mode
//! ([`crate::pacing::AudioMode`]): 20 ms at real time by default, jittered, in bursts, in odd
//! sizes, or not at all.
//!
//! Driven with an explicit `now` so it can be tested on a fake clock; the connection loop
//! sleeps until [`Player::next_deadline`] and then drains [`Player::poll`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::audio::Format;
use crate::pacing::AudioMode;

/// How long the queue must stay empty after audio before [`Played::Drained`] is reported, so
/// that caller audio arriving in real time does not end a burst between two frames.
pub const DRAIN_GRACE: Duration = Duration::from_millis(100);
/// Lateness after which the real-time schedule restarts instead of catching up.
const RESTART_AFTER: Duration = Duration::from_millis(20);

/// Something queued for playout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cue {
    /// Samples at the player's rate.
    Audio(Vec<i16>),
    /// A named marker: played once all audio queued before it was played.
    Mark(String),
}

/// What the player wants sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Played {
    /// One message of audio (20 ms, or the odd size).
    Audio(Vec<i16>),
    Mark(String),
    /// The queue ran dry after audio that no mark followed: the end of a burst.
    Drained,
}

#[derive(Debug)]
struct Queued {
    due: Instant,
    cue: Cue,
}

/// When the next message may leave, per [`AudioMode`].
#[derive(Debug)]
struct Pacer {
    mode: AudioMode,
    rng: SmallRng,
    /// The real-time schedule: when the audio sent so far has been heard in full.
    next_send: Option<Instant>,
    /// `jitter`: the next message's send instant (the schedule moved by its offset).
    send_at: Option<Instant>,
    /// `burst`: a burst is under way until the schedule reaches this instant.
    burst_end: Option<Instant>,
}

impl Pacer {
    fn new(mode: AudioMode, seed: u64) -> Pacer {
        Pacer {
            mode,
            rng: SmallRng::seed_from_u64(seed),
            next_send: None,
            send_at: None,
            burst_end: None,
        }
    }

    /// The earliest instant the next message may leave (`None`: at once).
    fn wake_at(&self) -> Option<Instant> {
        match self.mode {
            AudioMode::Jitter(_) => self.send_at.or(self.next_send),
            AudioMode::Burst(_) if self.burst_end.is_some() => None,
            _ => self.next_send,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.mode != AudioMode::Mute && self.wake_at().is_none_or(|t| t <= now)
    }

    /// A message of `dur` left at `now`: advance the schedule.
    fn sent(&mut self, now: Instant, dur: Duration) {
        let jitter = match self.mode {
            AudioMode::Jitter(j) => j,
            _ => Duration::ZERO,
        };
        // Keep the exact cadence when woken slightly late; restart it after a gap.
        let base = match self.next_send {
            Some(t) if now.saturating_duration_since(t) < RESTART_AFTER + jitter => t,
            _ => now,
        };
        if let (AudioMode::Burst(span), None) = (self.mode, self.burst_end) {
            self.burst_end = Some(base + span);
        }
        let next = base + dur;
        self.next_send = Some(next);
        if self.burst_end.is_some_and(|end| next >= end) {
            self.burst_end = None;
        }
        if !jitter.is_zero() {
            let span = jitter.as_micros() as i64;
            let offset = self.rng.gen_range(-span..=span);
            let moved = Duration::from_micros(offset.unsigned_abs());
            self.send_at = Some(if offset < 0 {
                next.checked_sub(moved).unwrap_or(next)
            } else {
                next + moved
            });
        }
    }

    /// How far the audio sent is ahead of real time at `now`.
    fn ahead(&self, now: Instant) -> Option<Duration> {
        self.next_send.filter(|t| *t > now).map(|t| t - now)
    }

    /// The far end dropped what it had (barge-in): start the schedule afresh.
    fn reset(&mut self) {
        self.next_send = None;
        self.send_at = None;
        self.burst_end = None;
    }
}

/// Paced, bounded playout queue.
#[derive(Debug)]
pub struct Player {
    rate: u32,
    frame: usize,
    max_samples: usize,
    queue: VecDeque<Queued>,
    queued_samples: usize,
    pacer: Pacer,
    first_audio_hold: Option<Duration>,
    hold_until: Option<Instant>,
    unmarked: bool,
    empty_since: Option<Instant>,
    dropped_samples: u64,
}

impl Player {
    /// Audio in `format`; `max_queue` bounds the queued audio; `first_audio_hold` delays the
    /// very first message (the `slow-first-audio` fault); `mode` and `seed` time the messages.
    pub fn new(
        format: Format,
        max_queue: Duration,
        first_audio_hold: Option<Duration>,
        mode: AudioMode,
        seed: u64,
    ) -> Player {
        let rate = format.rate();
        let frame = match mode {
            AudioMode::OddSize(bytes) => bytes / format.bytes_per_sample(),
            _ => rate as usize / 50,
        };
        Player {
            rate,
            frame: frame.max(1),
            max_samples: (max_queue.as_secs_f64() * f64::from(rate)) as usize,
            queue: VecDeque::new(),
            queued_samples: 0,
            pacer: Pacer::new(mode, seed),
            first_audio_hold,
            hold_until: None,
            unmarked: false,
            empty_since: None,
            dropped_samples: 0,
        }
    }

    /// Queues audio due at `due`; what does not fit the bound is dropped (and counted). A
    /// `mute` player drops everything.
    pub fn push_audio(&mut self, due: Instant, mut samples: Vec<i16>) {
        if self.pacer.mode == AudioMode::Mute {
            return;
        }
        let room = self.max_samples.saturating_sub(self.queued_samples);
        if samples.len() > room {
            tracing::debug!(dropped = samples.len() - room, "agent-sim: playout queue full");
            self.dropped_samples += (samples.len() - room) as u64;
            samples.truncate(room);
        }
        if samples.is_empty() {
            return;
        }
        self.queued_samples += samples.len();
        self.empty_since = None;
        self.queue.push_back(Queued { due, cue: Cue::Audio(samples) });
    }

    /// Queues a mark after everything queued so far (not in `mute`: no audio, no marks).
    pub fn push_mark(&mut self, due: Instant, name: String) {
        if self.pacer.mode == AudioMode::Mute {
            return;
        }
        self.empty_since = None;
        self.queue.push_back(Queued { due, cue: Cue::Mark(name) });
    }

    /// Whether the agent is speaking at `now`: audio queued, or audio sent that real time has
    /// not yet caught up with (a burst the far end is still playing).
    pub fn speaking(&self, now: Instant) -> bool {
        self.queued_samples > 0 || self.pacer.ahead(now).is_some()
    }

    /// Drops everything queued (barge-in). Returns `None` when the agent was not speaking,
    /// else how far the audio already sent was ahead of real time (what the far end still
    /// held, if it plays at real time).
    pub fn clear(&mut self, now: Instant) -> Option<Duration> {
        let speaking = self.speaking(now);
        let ahead = self.pacer.ahead(now).unwrap_or_default();
        self.queue.clear();
        self.queued_samples = 0;
        self.unmarked = false;
        self.empty_since = None;
        self.pacer.reset();
        speaking.then_some(ahead)
    }

    /// Samples dropped because the queue was full.
    #[cfg(test)]
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    /// When [`Player::poll`] may next return something.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.queue.front() {
            Some(Queued { due, cue: Cue::Audio(_) }) => {
                let mut at = *due;
                for t in [self.pacer.wake_at(), self.hold_until].into_iter().flatten() {
                    at = at.max(t);
                }
                Some(at)
            }
            Some(Queued { due, .. }) => Some(*due),
            None if self.unmarked => self.empty_since.map(|t| t + DRAIN_GRACE),
            None => None,
        }
    }

    /// The next thing to send at `now`, if any. Call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Played> {
        let front = match self.queue.front() {
            Some(front) => front,
            None => return self.poll_drained(now),
        };
        if front.due > now {
            return None;
        }
        if let Cue::Mark(_) = front.cue {
            self.unmarked = false;
            return match self.queue.pop_front().map(|q| q.cue) {
                Some(Cue::Mark(name)) => Some(Played::Mark(name)),
                _ => None,
            };
        }
        if !self.paced_ok(now) {
            return None;
        }
        let frame = self.take_frame(now);
        let dur = Duration::from_secs_f64(frame.len() as f64 / f64::from(self.rate));
        self.pacer.sent(now, dur);
        self.unmarked = true;
        if self.queue.is_empty() {
            self.empty_since = Some(now);
        }
        Some(Played::Audio(frame))
    }

    /// Whether pacing (and the first-audio hold) allow a message at `now`.
    fn paced_ok(&mut self, now: Instant) -> bool {
        if let Some(hold) = self.first_audio_hold.take() {
            self.hold_until = Some(now + hold);
        }
        if self.hold_until.is_some_and(|t| t > now) {
            return false;
        }
        self.pacer.ready(now)
    }

    /// Up to one frame of samples from the due audio cues at the front.
    fn take_frame(&mut self, now: Instant) -> Vec<i16> {
        let mut frame = Vec::with_capacity(self.frame);
        while frame.len() < self.frame {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.due > now {
                break;
            }
            let Cue::Audio(samples) = &mut front.cue else {
                break;
            };
            let n = (self.frame - frame.len()).min(samples.len());
            frame.extend(samples.drain(..n));
            self.queued_samples -= n;
            if samples.is_empty() {
                self.queue.pop_front();
            }
        }
        frame
    }

    fn poll_drained(&mut self, now: Instant) -> Option<Played> {
        let since = self.empty_since?;
        if !self.unmarked || now < since + DRAIN_GRACE {
            return None;
        }
        self.unmarked = false;
        self.empty_since = None;
        Some(Played::Drained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn paced() -> Player {
        player(AudioMode::Paced)
    }

    fn player(mode: AudioMode) -> Player {
        Player::new(Format::Ulaw8k, Duration::from_secs(60), None, mode, 7)
    }

    /// Every audio message sent when polled each millisecond for `ms`: (ms, samples).
    fn sends(p: &mut Player, t0: Instant, ms: u32) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        for step in 0..=ms {
            while let Some(played) = p.poll(t0 + step * MS) {
                if let Played::Audio(f) = played {
                    out.push((step, f.len()));
                }
            }
        }
        out
    }

    fn drain(p: &mut Player, now: Instant) -> Vec<Played> {
        std::iter::from_fn(|| p.poll(now)).collect()
    }

    #[test]
    fn plays_due_audio_in_paced_20ms_frames_then_marks() {
        let t0 = Instant::now();
        let mut p = paced();
        p.push_audio(t0 + 200 * MS, vec![1; 400]);
        p.push_mark(t0 + 200 * MS, "m1".into());
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.next_deadline(), Some(t0 + 200 * MS));
        let mut t = t0 + 200 * MS;
        let mut frames = Vec::new();
        for _ in 0..10 {
            let out = drain(&mut p, t);
            frames.extend(out);
            match p.next_deadline() {
                Some(next) => t = next,
                None => break,
            }
        }
        assert_eq!(
            frames,
            vec![
                Played::Audio(vec![1; 160]),
                Played::Audio(vec![1; 160]),
                Played::Audio(vec![1; 80]),
                Played::Mark("m1".into()),
            ]
        );
        // Three frames need at least 40 ms between first and last.
        assert!(t >= t0 + 240 * MS);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn never_faster_than_real_time() {
        let t0 = Instant::now();
        let mut p = paced();
        p.push_audio(t0, vec![0; 8000]);
        // Polling far too often must still yield one frame per 20 ms.
        let (mut sent, mut last) = (0, 0);
        for step in 0..=2000u32 {
            if let Some(Played::Audio(f)) = p.poll(t0 + step * MS) {
                sent += f.len();
                last = step;
            }
        }
        assert_eq!(sent, 8000);
        assert_eq!(last, 980); // 50 frames at 0, 20, …, 980 ms
    }

    #[test]
    fn reports_drained_after_a_grace() {
        let t0 = Instant::now();
        let mut p = paced();
        p.push_audio(t0, vec![5; 160]);
        assert_eq!(p.poll(t0), Some(Played::Audio(vec![5; 160])));
        assert_eq!(p.poll(t0 + 50 * MS), None);
        assert_eq!(p.next_deadline(), Some(t0 + DRAIN_GRACE));
        assert_eq!(p.poll(t0 + DRAIN_GRACE), Some(Played::Drained));
        assert_eq!(p.poll(t0 + 2 * DRAIN_GRACE), None);
    }

    #[test]
    fn first_audio_hold_and_bounds_and_clear() {
        let t0 = Instant::now();
        let mut p = Player::new(
            Format::Ulaw8k,
            Duration::from_millis(100),
            Some(300 * MS),
            AudioMode::Paced,
            0,
        );
        p.push_audio(t0, vec![1; 1000]);
        assert_eq!(p.dropped_samples(), 200);
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.next_deadline(), Some(t0 + 300 * MS));
        assert!(matches!(p.poll(t0 + 300 * MS), Some(Played::Audio(_))));
        assert!(p.clear(t0 + 300 * MS).is_some());
        assert!(p.clear(t0 + 300 * MS).is_none());
        assert_eq!(p.poll(t0 + 400 * MS), None);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn burst_sends_its_span_at_once_then_waits_for_real_time() {
        let t0 = Instant::now();
        let mut p = player(AudioMode::Burst(Duration::from_millis(1000)));
        p.push_audio(t0, vec![1; 8000 * 3]);
        let sent = sends(&mut p, t0, 2999);
        // 50 messages (1 s) at 0 ms, the next 50 at 1000 ms, the last 50 at 2000 ms
        assert_eq!(sent.len(), 150);
        assert!(sent[..50].iter().all(|&(at, n)| at == 0 && n == 160));
        assert!(sent[50..100].iter().all(|&(at, _)| at == 1000));
        assert!(sent[100..].iter().all(|&(at, _)| at == 2000));
        assert!(p.speaking(t0 + 2500 * MS), "the far end still plays the last burst");
        assert!(!p.speaking(t0 + 3000 * MS));
    }

    #[test]
    fn clear_after_a_burst_reports_what_the_far_end_still_holds() {
        let t0 = Instant::now();
        let mut p = player(AudioMode::Burst(Duration::from_millis(5000)));
        p.push_audio(t0, vec![1; 8000 * 8]);
        assert_eq!(sends(&mut p, t0, 0).len(), 250, "5 s at once");
        let ahead = p.clear(t0 + 1000 * MS).expect("speaking: 4 s are still playing");
        assert_eq!(ahead, Duration::from_secs(4));
        assert_eq!(p.poll(t0 + 1000 * MS), None);
        assert_eq!(p.next_deadline(), None);
        assert!(!p.speaking(t0 + 1000 * MS));
    }

    #[test]
    fn jitter_moves_each_message_within_its_span_and_keeps_real_time_on_average() {
        let t0 = Instant::now();
        let mut p = player(AudioMode::Jitter(Duration::from_millis(15)));
        p.push_audio(t0, vec![1; 8000 * 2]);
        let sent = sends(&mut p, t0, 2100);
        assert_eq!(sent.len(), 100);
        let mut moved = 0;
        for (k, &(at, n)) in sent.iter().enumerate() {
            assert_eq!(n, 160);
            let on_time = 20 * k as i64;
            let off = i64::from(at) - on_time;
            assert!((-16..=16).contains(&off), "message {k} at {at} ms");
            moved += u32::from(off.abs() > 2);
        }
        assert!(moved > 30, "most messages are moved, {moved} were");
        // the same seed gives the same timing
        let mut again = player(AudioMode::Jitter(Duration::from_millis(15)));
        again.push_audio(t0, vec![1; 8000 * 2]);
        assert_eq!(sends(&mut again, t0, 2100), sent);
    }

    #[test]
    fn odd_size_messages_carry_that_many_bytes_at_real_time() {
        let t0 = Instant::now();
        let mut p = player(AudioMode::OddSize(333));
        p.push_audio(t0, vec![1; 8000]);
        let sent = sends(&mut p, t0, 1100);
        assert!(sent[..sent.len() - 1].iter().all(|&(_, n)| n == 333));
        assert_eq!(sent.iter().map(|&(_, n)| n).sum::<usize>(), 8000);
        // 333 samples = 41.625 ms each: the 24 messages span about 1 s
        assert_eq!(sent.len(), 25);
        assert!((950..=1000).contains(&sent[24].0), "{:?}", sent[24]);
        let pcm =
            Player::new(Format::Pcm24k, Duration::from_secs(1), None, AudioMode::OddSize(333), 0);
        assert_eq!(pcm.frame, 166, "whole PCM16 samples");
    }

    #[test]
    fn mute_sends_nothing() {
        let t0 = Instant::now();
        let mut p = player(AudioMode::Mute);
        p.push_audio(t0, vec![1; 8000]);
        p.push_mark(t0, "m".into());
        assert!(sends(&mut p, t0, 500).is_empty());
        assert_eq!(p.poll(t0 + 500 * MS), None);
        assert_eq!(p.next_deadline(), None);
        assert!(!p.speaking(t0));
    }
}
