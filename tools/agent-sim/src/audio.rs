//! Audio helpers of the agent simulator: the two wire formats (μ-law 8 kHz, PCM16 24 kHz
//! little-endian, as the protocols' documents define them), crude 3x rate conversion between
//! them, a test beep, and a simple energy voice detector.

use std::time::Duration;

use crate::ulaw;

/// An audio format on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// G.711 μ-law, 8 kHz (Twilio; OpenAI `audio/pcmu`).
    Ulaw8k,
    /// PCM16 little-endian, 24 kHz (OpenAI `audio/pcm`).
    Pcm24k,
}

/// PCM16 payload with an odd number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PCM16 audio has an odd number of bytes")]
pub struct OddPcm;

impl Format {
    pub fn rate(self) -> u32 {
        match self {
            Format::Ulaw8k => 8000,
            Format::Pcm24k => 24000,
        }
    }

    /// Wire bytes per sample.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Format::Ulaw8k => 1,
            Format::Pcm24k => 2,
        }
    }

    /// Wire bytes to linear samples.
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<i16>, OddPcm> {
        match self {
            Format::Ulaw8k => Ok(ulaw::decode_all(bytes)),
            Format::Pcm24k if !bytes.len().is_multiple_of(2) => Err(OddPcm),
            Format::Pcm24k => {
                Ok(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
            }
        }
    }

    /// Linear samples to wire bytes.
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Format::Ulaw8k => ulaw::encode_all(samples),
            Format::Pcm24k => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        }
    }
}

/// Converts samples between the two formats' rates: linear interpolation up (8 → 24 kHz),
/// averaging of sample triples down (24 → 8 kHz). Good enough for a simulator.
pub fn convert(samples: &[i16], from: Format, to: Format) -> Vec<i16> {
    match (from.rate(), to.rate()) {
        (8000, 24000) => upsample3(samples),
        (24000, 8000) => downsample3(samples),
        _ => samples.to_vec(),
    }
}

fn upsample3(samples: &[i16]) -> Vec<i16> {
    let mut out = Vec::with_capacity(samples.len() * 3);
    for (i, &s0) in samples.iter().enumerate() {
        let s1 = samples.get(i + 1).copied().unwrap_or(s0);
        let (a, b) = (i32::from(s0), i32::from(s1));
        out.push(s0);
        out.push(clamp(a + (b - a) / 3));
        out.push(clamp(a + 2 * (b - a) / 3));
    }
    out
}

fn downsample3(samples: &[i16]) -> Vec<i16> {
    samples
        .chunks(3)
        .map(|c| clamp(c.iter().map(|&s| i32::from(s)).sum::<i32>() / c.len() as i32))
        .collect()
}

fn clamp(v: i32) -> i16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// A 1 kHz tone of `duration` at `format`'s rate (the answer to a DTMF digit).
pub fn beep(format: Format, duration: Duration) -> Vec<i16> {
    tone(format.rate(), 1000.0, 8000.0, duration)
}

/// A sine tone.
pub fn tone(rate: u32, hz: f64, amplitude: f64, duration: Duration) -> Vec<i16> {
    let n = (duration.as_secs_f64() * f64::from(rate)).round() as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

/// What the voice detector noticed, with the position in the input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStarted { at_ms: u64 },
    SpeechStopped { at_ms: u64 },
}

/// RMS above which a 10 ms window counts as speech (about -36 dBFS).
const SPEECH_RMS: f64 = 500.0;
/// Speech windows in a row that start an utterance.
const START_WINDOWS: u32 = 3;
/// Silent windows in a row that end one.
const STOP_WINDOWS: u32 = 30;

/// Energy voice-activity detector over 10 ms windows: an utterance starts after 30 ms of
/// speech and ends after 300 ms of silence, so a start always follows silence.
#[derive(Debug, Clone)]
pub struct Vad {
    window: usize,
    sum_sq: f64,
    filled: usize,
    windows: u64,
    speaking: bool,
    run: u32,
    run_start: u64,
}

impl Vad {
    pub fn new(rate: u32) -> Vad {
        Vad {
            window: (rate as usize / 100).max(1),
            sum_sq: 0.0,
            filled: 0,
            windows: 0,
            speaking: false,
            run: 0,
            run_start: 0,
        }
    }

    /// Feeds samples; returns the transitions they complete.
    pub fn feed(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for &s in samples {
            self.sum_sq += f64::from(s) * f64::from(s);
            self.filled += 1;
            if self.filled == self.window {
                let rms = (self.sum_sq / self.window as f64).sqrt();
                events.extend(self.on_window(rms > SPEECH_RMS));
                self.sum_sq = 0.0;
                self.filled = 0;
            }
        }
        events
    }

    fn on_window(&mut self, voiced: bool) -> Option<VadEvent> {
        let index = self.windows;
        self.windows += 1;
        if voiced == self.speaking {
            self.run = 0;
            return None;
        }
        if self.run == 0 {
            self.run_start = index;
        }
        self.run += 1;
        let needed = if self.speaking { STOP_WINDOWS } else { START_WINDOWS };
        if self.run < needed {
            return None;
        }
        self.run = 0;
        self.speaking = !self.speaking;
        let at_ms = self.run_start * 10;
        Some(if self.speaking {
            VadEvent::SpeechStarted { at_ms }
        } else {
            VadEvent::SpeechStopped { at_ms }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip() {
        let pcm = [0i16, 1000, -1000, 32767, -32768];
        assert_eq!(Format::Pcm24k.decode(&Format::Pcm24k.encode(&pcm)).unwrap(), pcm);
        assert_eq!(Format::Pcm24k.decode(&[1, 2, 3]), Err(OddPcm));
        let ulaw = Format::Ulaw8k.encode(&[0, 8000, -8000]);
        let back = Format::Ulaw8k.decode(&ulaw).unwrap();
        assert!(back.iter().zip([0i16, 8000, -8000]).all(|(a, b)| (a - b).abs() < 300));
    }

    #[test]
    fn conversion_triples_or_thirds_the_length() {
        let x: Vec<i16> = (0..160).map(|i| i * 10).collect();
        let up = convert(&x, Format::Ulaw8k, Format::Pcm24k);
        assert_eq!(up.len(), 480);
        assert_eq!(&up[..4], &[0, 3, 6, 10]);
        let down = convert(&up, Format::Pcm24k, Format::Ulaw8k);
        assert_eq!(down.len(), 160);
        assert!(down.iter().zip(&x).all(|(a, b)| (a - b).abs() <= 10));
        assert_eq!(convert(&x, Format::Ulaw8k, Format::Ulaw8k), x);
    }

    #[test]
    fn vad_starts_after_silence_and_stops_after_300ms() {
        let mut vad = Vad::new(8000);
        let silence = vec![0i16; 8000 / 2];
        let speech = tone(8000, 440.0, 8000.0, Duration::from_millis(500));
        assert!(vad.feed(&silence).is_empty());
        assert_eq!(vad.feed(&speech), vec![VadEvent::SpeechStarted { at_ms: 500 }]);
        // A 100 ms pause does not end the utterance.
        assert!(vad.feed(&silence[..800]).is_empty());
        assert!(vad.feed(&speech).is_empty());
        assert_eq!(vad.feed(&silence), vec![VadEvent::SpeechStopped { at_ms: 1600 }]);
        assert_eq!(vad.feed(&speech), vec![VadEvent::SpeechStarted { at_ms: 2100 }]);
    }

    #[test]
    fn beep_is_loud_and_the_right_length() {
        let b = beep(Format::Pcm24k, Duration::from_millis(200));
        assert_eq!(b.len(), 4800);
        assert!(b.iter().any(|&s| s > 7000));
    }
}
