//! HTTP digest authentication (RFC 2617 / RFC 8760 MD5) for REGISTER and INVITE challenges.
