//! The ringback tone a caller hears while the human leg rings: 440 + 480 Hz (the North
//! American ringback pair) at about -16 dBm0 per tone, 1 s on and 1 s off, so that the caller
//! is never left in silence for more than 1 s. Generated at 8 kHz as a [`Prompt`].

use crate::core::media::prompt::{Prompt, PromptError};

const RATE: usize = 8000;
/// Peak amplitude of each of the two tones.
const AMPLITUDE: f64 = 4000.0;

/// `cycles` periods of tone (1 s) and silence (1 s).
pub fn ringback(cycles: usize) -> Result<Prompt, PromptError> {
    let mut samples = Vec::with_capacity(cycles.max(1) * 2 * RATE);
    for _ in 0..cycles.max(1) {
        for n in 0..RATE {
            let t = n as f64 / RATE as f64;
            let v = AMPLITUDE
                * ((2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + (2.0 * std::f64::consts::PI * 480.0 * t).sin());
            samples.push(v.round() as i16);
        }
        samples.resize(samples.len() + RATE, 0);
    }
    Prompt::from_samples(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_on_one_second_off() {
        let p = ringback(3).unwrap();
        assert_eq!(p.duration_ms(), 6000);
        let s = p.samples();
        assert!(s[..RATE].iter().any(|v| v.unsigned_abs() > 6000));
        assert!(s[RATE..2 * RATE].iter().all(|v| *v == 0));
        assert!(s[2 * RATE..3 * RATE].iter().any(|v| *v != 0));
    }
}
