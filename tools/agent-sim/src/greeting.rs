//! The greeting spoken in `prompt` mode: a WAV file (mono, 16-bit PCM, 8 kHz) read with
//! `hound`. The built-in one is the appliance's high-demand recording, embedded here as a file
//! (not through the appliance's prompt code).

use std::io::Cursor;

/// The built-in greeting ("We are experiencing high demand...", 4.2 s).
pub const BUILT_IN: &[u8] = include_bytes!("../../../firmware/prompts/high-demand.wav");

/// The only rate accepted (the simulator converts from 8 kHz as it needs).
const RATE: u32 = 8000;

/// Why a greeting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GreetingError {
    #[error("greeting WAV: {0}")]
    Wav(#[from] hound::Error),
    #[error("greeting WAV must be mono 16-bit PCM at 8000 Hz, not {channels} channel(s), {bits}-bit, {rate} Hz")]
    Format { channels: u16, bits: u16, rate: u32 },
    #[error("greeting WAV has no samples")]
    Empty,
}

/// The samples of a WAV file's bytes.
pub fn from_wav(bytes: &[u8]) -> Result<Vec<i16>, GreetingError> {
    let reader = hound::WavReader::new(Cursor::new(bytes))?;
    let spec = reader.spec();
    let pcm16 = spec.sample_format == hound::SampleFormat::Int && spec.bits_per_sample == 16;
    if spec.channels != 1 || !pcm16 || spec.sample_rate != RATE {
        return Err(GreetingError::Format {
            channels: spec.channels,
            bits: spec.bits_per_sample,
            rate: spec.sample_rate,
        });
    }
    let samples = reader.into_samples::<i16>().collect::<Result<Vec<i16>, _>>()?;
    if samples.is_empty() {
        return Err(GreetingError::Empty);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_greeting_is_a_few_seconds_of_speech() {
        let g = from_wav(BUILT_IN).unwrap();
        let secs = g.len() as f64 / f64::from(RATE);
        assert!((3.0..6.0).contains(&secs), "{secs} s");
        assert!(g.iter().any(|&s| s.unsigned_abs() > 4000), "not silence");
    }

    #[test]
    fn other_formats_are_refused() {
        let mut bytes = Vec::new();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(Cursor::new(&mut bytes), spec).unwrap();
        w.write_sample(1i16).unwrap();
        w.write_sample(1i16).unwrap();
        w.finalize().unwrap();
        assert!(matches!(from_wav(&bytes), Err(GreetingError::Format { channels: 2, .. })));
        assert!(matches!(from_wav(b"RIFF"), Err(GreetingError::Wav(_))));
    }
}
