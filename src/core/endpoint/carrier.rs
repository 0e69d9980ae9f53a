//! One carrier trunk as the endpoint runs it: its OPTIONS prober and optional registrar, and
//! the requests they ask for, built with a stable Call-ID and a rising CSeq.

use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;

use super::build::{self, host_port, OutOfDialog};
use crate::core::carrier::probe::{ProbeSettings, Prober};
use crate::core::carrier::register::{RegisterSettings, Registrar};
use crate::core::sip::message::{Method, Request};
use crate::core::sip::Peer;

/// A carrier as configured, in core terms.
#[derive(Debug, Clone)]
pub struct CarrierSettings {
    pub name: String,
    /// Where OPTIONS and REGISTER go; `None` for inbound-only IP-authenticated peering.
    pub proxy: Option<Peer>,
    pub inbound_from: Vec<IpNet>,
    pub probe: ProbeSettings,
    pub register: Option<RegisterSettings>,
    /// Domain for From/To/Request-URI of REGISTER; defaults to the proxy's host.
    pub domain: Option<String>,
    /// User part of our Contact in REGISTER.
    pub contact_user: String,
    /// How a call from this carrier is handed to the human.
    pub transfer: TransferMode,
}

/// `[[carrier]] transfer` in core terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferMode {
    /// A bridged outbound INVITE through the healthiest carrier.
    #[default]
    Invite,
    /// SIP REFER on the caller's dialog; the carrier connects the human.
    Refer,
}

pub struct CarrierLink {
    pub settings: CarrierSettings,
    pub prober: Option<Prober>,
    pub registrar: Option<Registrar>,
    pub register_call_id: String,
    pub register_from_tag: String,
    pub register_cseq: u32,
}

impl CarrierLink {
    pub fn new(settings: CarrierSettings, now: Instant, call_id: String, from_tag: String) -> Self {
        let prober = settings.proxy.map(|_| Prober::new(settings.probe, now));
        let registrar = match (&settings.proxy, &settings.register) {
            (Some(_), Some(reg)) => Some(Registrar::new(reg.clone(), now)),
            _ => None,
        };
        CarrierLink {
            settings,
            prober,
            registrar,
            register_call_id: call_id,
            register_from_tag: from_tag,
            register_cseq: 0,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.prober.as_ref().and_then(Prober::poll_timeout);
        let r = self.registrar.as_ref().and_then(Registrar::poll_timeout);
        [p, r].into_iter().flatten().min()
    }

    /// The domain we register in.
    pub fn domain(&self) -> String {
        match (&self.settings.domain, &self.settings.proxy) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => host_port(p.addr),
            (None, None) => String::new(),
        }
    }

    /// An OPTIONS probe to the proxy.
    pub fn options(
        &self,
        local: SocketAddr,
        via: String,
        call_id: &str,
        from_tag: &str,
        user_agent: &str,
    ) -> Option<Request> {
        let proxy = self.settings.proxy?;
        let target = format!("sip:{}", host_port(proxy.addr));
        Some(build::out_of_dialog(OutOfDialog {
            method: Method::Options,
            request_uri: target.clone(),
            from_uri: format!("sip:trunkguard@{}", host_port(local)),
            from_tag,
            to_uri: target,
            call_id,
            cseq: 1,
            via,
            contact: None,
            user_agent,
        }))
    }

    /// A REGISTER for `user` with `expires`, plus the Authorization header when answering a
    /// challenge. The Call-ID stays the same across refreshes and CSeq rises (RFC 3261 §10.2).
    pub fn register(
        &mut self,
        local: SocketAddr,
        via: String,
        expires: u32,
        authorization: Option<(String, String)>,
        user_agent: &str,
    ) -> Option<Request> {
        let user = self.settings.register.as_ref()?.user.clone();
        let domain = self.domain();
        self.register_cseq += 1;
        let aor = format!("sip:{user}@{domain}");
        let contact =
            format!("<sip:{}@{}>;expires={expires}", self.settings.contact_user, host_port(local));
        let mut req = build::out_of_dialog(OutOfDialog {
            method: Method::Register,
            request_uri: self
                .registrar
                .as_ref()
                .map(|r| r.uri_for_digest().to_string())
                .unwrap_or_else(|| format!("sip:{domain}")),
            from_uri: aor.clone(),
            from_tag: &self.register_from_tag,
            to_uri: aor,
            call_id: &self.register_call_id,
            cseq: self.register_cseq,
            via,
            contact: Some(contact),
            user_agent,
        });
        req.headers.push("Expires", expires.to_string());
        if let Some((name, value)) = authorization {
            req.headers.push(name, value);
        }
        Some(req)
    }
}
