//! Carrier trunk policies, sans-IO: the inbound source ACL, OPTIONS health probing, client
//! registration with digest auth, and the retry backoff they share. These decide *when* to
//! send and interpret results; the endpoint builds the SIP messages and runs the transactions.

pub mod acl;
pub mod backoff;
pub mod probe;
pub mod register;

pub use acl::InboundAcl;
pub use backoff::Backoff;
pub use probe::{ProbeOutput, ProbeSettings, Prober};
pub use register::{RegisterOutput, RegisterSettings, Registrar};
