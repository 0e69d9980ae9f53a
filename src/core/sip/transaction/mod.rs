//! The SIP transaction layer (RFC 3261 §17): client and server, INVITE and non-INVITE.
