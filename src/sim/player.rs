//! The simulated agent's outgoing audio: a bounded queue of audio and mark cues, each due at
//! an instant, played out in frames of at most 20 ms paced at real time (never faster).
//!
//! Driven with an explicit `now` so it can be tested on a fake clock; the connection loop
//! sleeps until [`Player::next_deadline`] and then drains [`Player::poll`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long the queue must stay empty after audio before [`Played::Drained`] is reported, so
/// that caller audio arriving in real time does not end a burst between two frames.
pub const DRAIN_GRACE: Duration = Duration::from_millis(100);

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
    /// One frame of at most 20 ms.
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

/// Paced, bounded playout queue.
#[derive(Debug)]
pub struct Player {
    rate: u32,
    frame: usize,
    max_samples: usize,
    queue: VecDeque<Queued>,
    queued_samples: usize,
    next_send: Option<Instant>,
    first_audio_hold: Option<Duration>,
    hold_until: Option<Instant>,
    unmarked: bool,
    empty_since: Option<Instant>,
    dropped_samples: u64,
}

impl Player {
    /// `rate` in Hz; `max_queue` bounds the queued audio; `first_audio_hold` delays the very
    /// first frame (the `slow-first-audio` fault).
    pub fn new(rate: u32, max_queue: Duration, first_audio_hold: Option<Duration>) -> Player {
        Player {
            rate,
            frame: (rate as usize / 50).max(1),
            max_samples: (max_queue.as_secs_f64() * f64::from(rate)) as usize,
            queue: VecDeque::new(),
            queued_samples: 0,
            next_send: None,
            first_audio_hold,
            hold_until: None,
            unmarked: false,
            empty_since: None,
            dropped_samples: 0,
        }
    }

    /// Queues audio due at `due`; what does not fit the bound is dropped (and counted).
    pub fn push_audio(&mut self, due: Instant, mut samples: Vec<i16>) {
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

    /// Queues a mark after everything queued so far.
    pub fn push_mark(&mut self, due: Instant, name: String) {
        self.empty_since = None;
        self.queue.push_back(Queued { due, cue: Cue::Mark(name) });
    }

    /// Drops everything queued (barge-in); returns whether anything was pending.
    pub fn clear(&mut self) -> bool {
        let had = !self.queue.is_empty();
        self.queue.clear();
        self.queued_samples = 0;
        self.unmarked = false;
        self.empty_since = None;
        had
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
                for t in [self.next_send, self.hold_until].into_iter().flatten() {
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
        // Keep the exact cadence when woken slightly late; restart it after a gap.
        let base = match self.next_send {
            Some(t) if now.saturating_duration_since(t) < Duration::from_millis(20) => t,
            _ => now,
        };
        self.next_send = Some(base + dur);
        self.unmarked = true;
        if self.queue.is_empty() {
            self.empty_since = Some(now);
        }
        Some(Played::Audio(frame))
    }

    /// Whether pacing (and the first-audio hold) allow a frame at `now`.
    fn paced_ok(&mut self, now: Instant) -> bool {
        if let Some(hold) = self.first_audio_hold.take() {
            self.hold_until = Some(now + hold);
        }
        if self.hold_until.is_some_and(|t| t > now) {
            return false;
        }
        self.next_send.is_none_or(|t| t <= now)
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

    fn drain(p: &mut Player, now: Instant) -> Vec<Played> {
        std::iter::from_fn(|| p.poll(now)).collect()
    }

    #[test]
    fn plays_due_audio_in_paced_20ms_frames_then_marks() {
        let t0 = Instant::now();
        let mut p = Player::new(8000, Duration::from_secs(10), None);
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
        let mut p = Player::new(8000, Duration::from_secs(10), None);
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
        let mut p = Player::new(8000, Duration::from_secs(10), None);
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
        let mut p = Player::new(8000, Duration::from_millis(100), Some(300 * MS));
        p.push_audio(t0, vec![1; 1000]);
        assert_eq!(p.dropped_samples(), 200);
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.next_deadline(), Some(t0 + 300 * MS));
        assert!(matches!(p.poll(t0 + 300 * MS), Some(Played::Audio(_))));
        assert!(p.clear());
        assert!(!p.clear());
        assert_eq!(p.poll(t0 + 400 * MS), None);
        assert_eq!(p.next_deadline(), None);
    }
}
