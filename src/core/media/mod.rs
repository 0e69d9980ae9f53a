//! Media for the call path: G.711 codecs, the canned prompt, and RTP packetization.
