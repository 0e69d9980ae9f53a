//! Carrier trunks: inbound source ACLs, OPTIONS health probing, and registration.
