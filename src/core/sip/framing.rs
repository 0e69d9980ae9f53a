//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): split a byte stream into messages by Content-Length, skip CRLF keep-alives.
