//! The sending side of one RTP stream: SSRC, sequence numbers and timestamps that wrap, the
//! marker bit at the start of a talk spurt, and marshalling through `rtc-rtp`.

use bytes::Bytes;
use rtc_rtp::{Header, Packet};
use rtc_shared::marshal::Marshal;

/// One outgoing RTP stream.
#[derive(Debug, Clone)]
pub struct RtpOut {
    payload_type: u8,
    ssrc: u32,
    next_seq: u16,
    next_timestamp: u32,
    sent_packets: u64,
    sent_octets: u64,
    start_of_spurt: bool,
}

impl RtpOut {
    pub fn new(payload_type: u8, ssrc: u32, initial_seq: u16, initial_timestamp: u32) -> Self {
        RtpOut {
            payload_type,
            ssrc,
            next_seq: initial_seq,
            next_timestamp: initial_timestamp,
            sent_packets: 0,
            sent_octets: 0,
            start_of_spurt: true,
        }
    }

    /// A packet carrying `payload` at the current timestamp; the timestamp then advances by
    /// `duration_ticks` (samples per channel at the RTP clock rate).
    pub fn packet(&mut self, payload: &[u8], duration_ticks: u32) -> Vec<u8> {
        let timestamp = self.next_timestamp;
        self.next_timestamp = self.next_timestamp.wrapping_add(duration_ticks);
        self.packet_at(self.payload_type, payload, timestamp, false)
    }

    /// As [`Self::packet`], never marked and leaving a pending talk-spurt start for the next
    /// marked packet (comfort noise between spurts).
    pub fn packet_unmarked(&mut self, payload: &[u8], duration_ticks: u32) -> Vec<u8> {
        let pending = std::mem::take(&mut self.start_of_spurt);
        let packet = self.packet(payload, duration_ticks);
        self.start_of_spurt = pending;
        packet
    }

    /// A packet with an explicit payload type, timestamp and marker (telephone-events reuse the
    /// stream's SSRC and sequence space but keep their event's timestamp).
    pub fn packet_at(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        timestamp: u32,
        marker: bool,
    ) -> Vec<u8> {
        let packet = Packet {
            header: Header {
                version: 2,
                marker: marker || std::mem::take(&mut self.start_of_spurt),
                payload_type,
                sequence_number: self.next_seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.sent_packets += 1;
        self.sent_octets += payload.len() as u64;
        // marshal() sizes its own buffer; a plain header without extensions cannot fail, and an
        // empty packet is never sent.
        packet.marshal().map(|b| b.to_vec()).unwrap_or_default()
    }

    /// Advances the timestamp over `ticks` in which nothing was sent (the next packet then
    /// starts a talk spurt).
    pub fn skip(&mut self, ticks: u32) {
        self.next_timestamp = self.next_timestamp.wrapping_add(ticks);
        self.start_of_spurt = true;
    }

    /// The next packet starts a talk spurt (marker bit), e.g. after a pause.
    pub fn mark_spurt(&mut self) {
        self.start_of_spurt = true;
    }

    /// The timestamp the next media packet will carry.
    pub fn timestamp(&self) -> u32 {
        self.next_timestamp
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn sent_packets(&self) -> u64 {
        self.sent_packets
    }

    pub fn sent_octets(&self) -> u64 {
        self.sent_octets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::media::rtp::inspect;

    #[test]
    fn sequence_and_timestamp_advance_and_wrap_marker_only_first() {
        let mut out = RtpOut::new(0, 0xdead_beef, 65535, u32::MAX - 100);
        let a = inspect(&out.packet(&[0xff; 160], 160)).unwrap();
        let b = inspect(&out.packet(&[0xff; 160], 160)).unwrap();
        assert_eq!((a.seq, b.seq), (65535, 0));
        assert_eq!(b.timestamp, (u32::MAX - 100).wrapping_add(160));
        assert!(a.marker && !b.marker);
        assert_eq!((a.ssrc, a.payload_type, a.payload_len), (0xdead_beef, 0, 160));
        assert_eq!(out.sent_packets(), 2);
        assert_eq!(out.sent_octets(), 320);
        out.mark_spurt();
        assert!(inspect(&out.packet(&[1; 10], 160)).unwrap().marker);
    }

    #[test]
    fn unmarked_packets_keep_the_pending_spurt_start_for_the_next_one() {
        let mut out = RtpOut::new(0, 1, 10, 1000);
        let cn = inspect(&out.packet_unmarked(&[0xff; 160], 160)).unwrap();
        let speech = inspect(&out.packet(&[1; 160], 160)).unwrap();
        assert!(!cn.marker && speech.marker);
        assert_eq!((cn.seq, speech.seq), (10, 11));
        assert_eq!((cn.timestamp, speech.timestamp), (1000, 1160));
    }
}
