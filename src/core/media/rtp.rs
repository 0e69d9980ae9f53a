//! Inspecting received RTP packets (RFC 3550) without trusting them: header fields and payload
//! bounds, or a typed error. Any byte string is accepted as input; none makes this panic.

use rtc_rtp::Packet;
use rtc_shared::error::Error as WireError;
use rtc_shared::marshal::Unmarshal;

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// What a received RTP packet says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpInfo {
    /// Synchronization source.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp, in the payload's clock rate.
    pub timestamp: u32,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Payload length, padding excluded.
    pub payload_len: usize,
    /// Where the payload starts in the inspected buffer (after CSRCs and header extension).
    pub payload_offset: usize,
}

/// Why a buffer is not an acceptable RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Fewer bytes than the header (fixed part, CSRC list, extension) claims.
    #[error("RTP packet too short: {0} bytes")]
    Short(usize),
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The padding count is zero or larger than the payload.
    #[error("RTP padding invalid")]
    BadPadding,
    /// Any other malformation reported by the RTP parser.
    #[error("malformed RTP packet: {0}")]
    Malformed(String),
}

/// Parses the header of `buf` and checks that the payload bounds make sense.
pub fn inspect(buf: &[u8]) -> Result<RtpInfo, RtpError> {
    if buf.len() < FIXED_HEADER_LEN {
        return Err(RtpError::Short(buf.len()));
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let mut cursor = buf;
    let packet = Packet::unmarshal(&mut cursor).map_err(|e| map_wire_error(e, buf.len()))?;
    let header_len = header_len(buf, &packet);
    let body_len = buf.len().saturating_sub(header_len);
    let padding_len = if packet.header.padding { padding_len(buf, body_len)? } else { 0 };
    Ok(RtpInfo {
        ssrc: packet.header.ssrc,
        seq: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        payload_type: packet.header.payload_type,
        marker: packet.header.marker,
        payload_len: body_len - padding_len,
        payload_offset: header_len,
    })
}

/// Header length as laid out on the wire: fixed part, CSRCs, and the extension block if any.
fn header_len(buf: &[u8], packet: &Packet) -> usize {
    let mut len = FIXED_HEADER_LEN + packet.header.csrc.len() * 4;
    if packet.header.extension {
        // The parser already checked these 4 bytes and the block they announce are present.
        let words =
            buf.get(len + 2..len + 4).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        len += 4 + words * 4;
    }
    len
}

/// RFC 3550 5.1: the last octet counts the padding, itself included, so it is at least 1 and
/// at most the bytes after the header.
fn padding_len(buf: &[u8], body_len: usize) -> Result<usize, RtpError> {
    match buf.last() {
        Some(&count) if count >= 1 && usize::from(count) <= body_len => Ok(usize::from(count)),
        _ => Err(RtpError::BadPadding),
    }
}

fn map_wire_error(e: WireError, len: usize) -> RtpError {
    match e {
        WireError::ErrHeaderSizeInsufficient | WireError::ErrHeaderSizeInsufficientForExtension => {
            RtpError::Short(len)
        }
        WireError::ErrShortPacket => RtpError::BadPadding,
        other => RtpError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        v[2..4].copy_from_slice(&seq.to_be_bytes());
        v[4..8].copy_from_slice(&ts.to_be_bytes());
        v[8..12].copy_from_slice(&ssrc.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reads_plain_packet() {
        let buf = packet(0x80 | 8, 0xABCD, 123_456, 0xDEAD_BEEF, &[0xD5; 160]);
        let info = inspect(&buf).unwrap();
        assert_eq!(
            info,
            RtpInfo {
                ssrc: 0xDEAD_BEEF,
                seq: 0xABCD,
                timestamp: 123_456,
                payload_type: 8,
                marker: true,
                payload_len: 160,
                payload_offset: 12,
            }
        );
    }

    #[test]
    fn header_only_packet_has_empty_payload() {
        let buf = packet(0, 1, 2, 3, &[]);
        assert_eq!(inspect(&buf).unwrap().payload_len, 0);
    }

    #[test]
    fn csrc_and_extension_move_the_payload() {
        let mut buf = packet(0, 1, 2, 3, &[]);
        buf[0] = 0x80 | 0x10 | 2; // X=1, CC=2
        buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-byte ext, 1 word
        buf.extend_from_slice(&[7; 20]);
        let info = inspect(&buf).unwrap();
        assert_eq!(info.payload_offset, 12 + 8 + 8);
        assert_eq!(info.payload_len, 20);
        assert_eq!(&buf[info.payload_offset..], &[7; 20]);
    }

    #[test]
    fn padding_is_stripped_and_checked() {
        let mut buf = packet(0, 1, 2, 3, &[1, 2, 3, 4, 5, 0, 0, 3]);
        buf[0] |= 0x20;
        assert_eq!(inspect(&buf).unwrap().payload_len, 5);
        let last = buf.len() - 1;
        buf[last] = 0;
        assert_eq!(inspect(&buf), Err(RtpError::BadPadding));
        buf[last] = 9;
        assert_eq!(inspect(&buf), Err(RtpError::BadPadding));
        let mut empty = packet(0, 1, 2, 3, &[]);
        empty[0] |= 0x20;
        assert_eq!(inspect(&empty), Err(RtpError::BadPadding));
    }

    #[test]
    fn rejects_wrong_version() {
        let mut buf = packet(0, 1, 2, 3, &[0; 10]);
        buf[0] = 0x40;
        assert_eq!(inspect(&buf), Err(RtpError::BadVersion(1)));
        buf[0] = 0x00;
        assert_eq!(inspect(&buf), Err(RtpError::BadVersion(0)));
    }

    #[test]
    fn rejects_short_and_truncated() {
        assert_eq!(inspect(&[]), Err(RtpError::Short(0)));
        assert_eq!(inspect(&[0x80; 11]), Err(RtpError::Short(11)));
        let mut csrc = packet(0, 1, 2, 3, &[]);
        csrc[0] |= 3; // claims 3 CSRCs, has none
        assert_eq!(inspect(&csrc), Err(RtpError::Short(12)));
        let mut ext = packet(0, 1, 2, 3, &[]);
        ext[0] |= 0x10;
        ext.extend_from_slice(&[0xBE, 0xDE, 0, 5]); // claims 5 words, has none
        assert!(matches!(inspect(&ext), Err(RtpError::Short(_))));
    }

    #[test]
    fn every_truncation_is_handled() {
        let mut full = packet(0x80, 9, 10, 11, &[]);
        full[0] = 0x80 | 0x20 | 0x10 | 1;
        full.extend_from_slice(&[0, 0, 0, 1]);
        full.extend_from_slice(&[0x10, 0x00, 0, 1, 0x05, 0x01, 0xFF, 0]); // two-byte ext
        full.extend_from_slice(&[1, 2, 3, 0, 0, 3]);
        assert!(inspect(&full).is_ok());
        for n in 0..full.len() {
            let _ = inspect(&full[..n]);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = SmallRng::seed_from_u64(0x5EED);
        let mut ok = 0;
        for _ in 0..20_000 {
            let len = rng.gen_range(0..80);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.7) && !buf.is_empty() {
                buf[0] = (buf[0] & 0x3F) | 0x80; // mostly version 2, to get past the first check
            }
            if let Ok(info) = inspect(&buf) {
                ok += 1;
                assert!(info.payload_offset + info.payload_len <= buf.len());
                assert!(info.payload_type < 128);
            }
        }
        assert!(ok > 0, "some random packets should parse");
    }
}
