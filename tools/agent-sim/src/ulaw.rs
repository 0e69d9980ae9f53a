//! G.711 μ-law (ITU-T G.711, the 8 kHz telephone format of Twilio Media Streams and OpenAI
//! `audio/pcmu`), written here from the standard's segment table so the simulator does not
//! borrow the appliance's codec: a 14-bit magnitude plus a bias of 0x84 is split into a 3-bit
//! segment (the position of its highest bit) and a 4-bit step, and the whole byte is inverted.

/// Added to the magnitude so every segment starts on a power of two.
const BIAS: i32 = 0x84;
/// Largest magnitude that still fits the top segment once biased.
const CLIP: i32 = 32635;

/// One linear sample to its μ-law byte.
pub fn encode(sample: i16) -> u8 {
    let value = i32::from(sample);
    let sign: i32 = if value < 0 { 0x80 } else { 0 };
    let magnitude = value.abs().min(CLIP) + BIAS;
    // The biased magnitude is at least 0x84, so its highest bit is bit 7 or above.
    let highest = 31 - (magnitude as u32).leading_zeros() as i32;
    let segment = (highest - 7).clamp(0, 7);
    let step = (magnitude >> (segment + 3)) & 0x0F;
    !(sign | (segment << 4) | step) as u8
}

/// One μ-law byte to its linear sample (the middle of the step's range).
pub fn decode(code: u8) -> i16 {
    let code = !code;
    let segment = i32::from((code >> 4) & 0x07);
    let step = i32::from(code & 0x0F);
    let magnitude = (((step << 3) + BIAS) << segment) - BIAS;
    if code & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Linear samples to μ-law bytes.
pub fn encode_all(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode(s)).collect()
}

/// μ-law bytes to linear samples.
pub fn decode_all(codes: &[u8]) -> Vec<i16> {
    codes.iter().map(|&c| decode(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_from_the_standard() {
        assert_eq!(encode(0), 0xFF, "positive zero");
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0, "negative zero decodes to 0");
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
    }

    #[test]
    fn round_trip_error_stays_within_half_a_step() {
        for s in (-32000i32..=32000).step_by(7) {
            let s = s as i16;
            let back = decode(encode(s));
            // the step of the top segment is 1024, so half of it bounds the error
            let err = (i32::from(back) - i32::from(s)).abs();
            let bound = (i32::from(s).abs() / 16).max(8);
            assert!(err <= bound, "{s} -> {back}");
        }
        for code in 0..=255u8 {
            let sample = decode(code);
            let again = encode(sample);
            assert_eq!(decode(again), sample, "code {code:#04x} is stable");
        }
    }
}
