//! ITU-T G.711 companding: 16-bit linear PCM to and from μ-law (PCMU) and A-law (PCMA).
//!
//! Table-free encoders (the classic segment search) and decoders; the decoders are `const fn`
//! and also exposed as 256-entry lookup tables built at compile time.

/// μ-law bias added to the magnitude before segment search (16-bit scale).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude μ-law can represent before the bias is added.
const ULAW_CLIP: i32 = 32635;

/// Encodes one linear sample as μ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign: u8 = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // biased is in 0x84..=0x7FFF, so (biased >> 7) is 1..=255: its top bit gives the segment.
    let exponent = (31 - (biased >> 7).leading_zeros()) as u8;
    let mantissa = ((biased >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// Decodes one μ-law byte to a linear sample.
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes one linear sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let shifted = i32::from(sample) >> 3;
    let (mask, magnitude) = if shifted >= 0 { (0xD5u8, shifted) } else { (0x55u8, -shifted - 1) };
    // magnitude is 0..=4095 (13-bit sample, sign removed).
    let segment = if magnitude < 0x20 { 0 } else { (31 - (magnitude >> 4).leading_zeros()) as u8 };
    let mantissa =
        if segment < 2 { (magnitude >> 1) & 0x0F } else { (magnitude >> segment) & 0x0F } as u8;
    ((segment << 4) | mantissa) ^ mask
}

/// Decodes one A-law byte to a linear sample.
pub const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mantissa = ((a & 0x0F) as i32) << 4;
    let segment = (a >> 4) & 0x07;
    let magnitude = match segment {
        0 => mantissa + 8,
        1 => mantissa + 0x108,
        s => (mantissa + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn build_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match law {
            Law::Ulaw => ulaw_to_linear(i as u8),
            Law::Alaw => alaw_to_linear(i as u8),
        };
        i += 1;
    }
    table
}

/// μ-law byte to linear sample, indexed by the code.
pub const ULAW_TO_LINEAR: [i16; 256] = build_table(Law::Ulaw);
/// A-law byte to linear sample, indexed by the code.
pub const ALAW_TO_LINEAR: [i16; 256] = build_table(Law::Alaw);

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// μ-law, RTP payload type 0 (PCMU).
    Ulaw,
    /// A-law, RTP payload type 8 (PCMA).
    Alaw,
}

impl Law {
    /// Encodes `samples`, appending one byte per sample to `out`.
    pub fn encode_into(self, samples: &[i16], out: &mut Vec<u8>) {
        let encode = match self {
            Law::Ulaw => linear_to_ulaw,
            Law::Alaw => linear_to_alaw,
        };
        out.extend(samples.iter().map(|&s| encode(s)));
    }

    /// Decodes `codes` to linear samples.
    pub fn decode(self, codes: &[u8]) -> Vec<i16> {
        let table = match self {
            Law::Ulaw => &ULAW_TO_LINEAR,
            Law::Alaw => &ALAW_TO_LINEAR,
        };
        codes.iter().map(|&c| table[usize::from(c)]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_known_codes() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
    }

    #[test]
    fn extreme_known_values() {
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn ulaw_round_trip_error_bound() {
        for x in i16::MIN..=i16::MAX {
            let y = ulaw_to_linear(linear_to_ulaw(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            let mag = i32::from(x).abs();
            // Half a quantization step: 4 in segment 0, growing to |x|/32 (plus clipping).
            let bound = (mag.min(ULAW_CLIP) + ULAW_BIAS) / 32 + 4 + (mag - ULAW_CLIP).max(0);
            assert!(err <= bound, "x={x} y={y} err={err} bound={bound}");
            // Same sign (or zero).
            assert!(i32::from(x) * i32::from(y) >= 0, "sign flip x={x} y={y}");
        }
    }

    #[test]
    fn alaw_round_trip_error_bound() {
        for x in i16::MIN..=i16::MAX {
            let y = alaw_to_linear(linear_to_alaw(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            let bound = i32::from(x).abs() / 32 + 16;
            assert!(err <= bound, "x={x} y={y} err={err} bound={bound}");
        }
    }

    #[test]
    fn codes_survive_decode_encode() {
        for c in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "A-law code {c:#04x}");
            // 0x7F is μ-law's negative zero; it decodes to 0, which encodes as 0xFF.
            let expect = if c == 0x7F { 0xFF } else { c };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), expect, "μ-law code {c:#04x}");
        }
    }

    #[test]
    fn decoders_are_monotonic_in_magnitude() {
        // Encoding is monotonic: a larger input never gives a smaller decoded output.
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for x in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(x));
            let a = alaw_to_linear(linear_to_alaw(x));
            assert!(u >= prev_u && a >= prev_a, "x={x}");
            prev_u = u;
            prev_a = a;
        }
    }

    #[test]
    fn law_slice_helpers_match_scalar() {
        let samples = [0i16, 1, -1, 1000, -1000, 32767, -32768];
        let mut out = Vec::new();
        Law::Ulaw.encode_into(&samples, &mut out);
        assert_eq!(out.len(), samples.len());
        let back = Law::Ulaw.decode(&out);
        for (s, b) in samples.iter().zip(&back) {
            assert_eq!(*b, ulaw_to_linear(linear_to_ulaw(*s)));
        }
        let mut out = Vec::new();
        Law::Alaw.encode_into(&samples, &mut out);
        assert_eq!(Law::Alaw.decode(&out)[0], 8);
    }
}
