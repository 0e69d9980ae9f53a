//! Jitter buffer counters and gauges, as reported by [`super::JitterBuffer::stats`].

/// A snapshot of the jitter buffer's counters (since creation) and gauges (now).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Packets pushed.
    pub received: u64,
    /// Packets already queued or already played.
    pub duplicates: u64,
    /// Packets that arrived after their slot was played out or concealed.
    pub late: u64,
    /// `Lost` frames released (frames the caller concealed).
    pub lost: u64,
    /// Packets that arrived after a packet with a higher sequence number, still in time.
    pub reordered: u64,
    /// New stream sections started after an SSRC change or a sequence/timestamp jump.
    pub resyncs: u64,
    /// Packets dropped otherwise: queue overflow, flushed at a resync, unconfirmed strays.
    pub discarded: u64,
    /// Audio queued ahead of the playout point, in ms.
    pub depth_ms: u32,
    /// Current target delay, in ms.
    pub target_ms: u32,
    /// RFC 3550 interarrival jitter, in ms.
    pub jitter_ms: f64,
}

/// The counters the buffer updates as packets and frames go by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub reordered: u64,
    pub resyncs: u64,
    pub discarded: u64,
}

impl Counters {
    /// The snapshot with the given gauges.
    pub fn snapshot(&self, depth_ms: u32, target_ms: u32, jitter_ms: f64) -> JitterStats {
        JitterStats {
            received: self.received,
            duplicates: self.duplicates,
            late: self.late,
            lost: self.lost,
            reordered: self.reordered,
            resyncs: self.resyncs,
            discarded: self.discarded,
            depth_ms,
            target_ms,
            jitter_ms,
        }
    }
}
