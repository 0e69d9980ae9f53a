//! What an authenticated operator can do to a running endpoint: drain (take no new calls,
//! finish the current ones), and take a carrier or an AI endpoint out of service and back.

use serde::Serialize;

use super::Endpoint;
use crate::core::ai::Endpoint as AiRole;

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// New INVITEs get 503 (with Retry-After) so carriers route elsewhere; calls in progress go on.
    Drain(bool),
    /// A carrier out of service: its INVITEs get 503 and it is not probed or counted healthy.
    CarrierInService { name: String, in_service: bool },
    /// An AI endpoint out of service: no call is bridged to it until it is put back.
    AiEndpointInService { name: String, in_service: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no carrier named {0:?}")]
    NoSuchCarrier(String),
    #[error("no AI endpoint named {0:?}")]
    NoSuchAiEndpoint(String),
}

/// The operator-controlled switches, for the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AdminState {
    pub draining: bool,
    pub carriers_out_of_service: Vec<String>,
    pub ai_endpoints_out_of_service: Vec<String>,
}

impl Endpoint {
    pub fn admin(&mut self, command: AdminCommand) -> Result<(), AdminError> {
        tracing::info!(?command, "operator command");
        match command {
            AdminCommand::Drain(on) => self.draining = on,
            AdminCommand::CarrierInService { name, in_service } => {
                let i = self
                    .cfg
                    .carriers
                    .iter()
                    .position(|c| c.name == name)
                    .ok_or(AdminError::NoSuchCarrier(name))?;
                self.carriers_out[i] = !in_service;
            }
            AdminCommand::AiEndpointInService { name, in_service } => {
                let hub =
                    self.ai.as_mut().ok_or_else(|| AdminError::NoSuchAiEndpoint(name.clone()))?;
                let role = if hub.primary.name == name {
                    AiRole::Primary
                } else if hub.standby.as_ref().is_some_and(|s| s.name == name) {
                    AiRole::Standby
                } else {
                    return Err(AdminError::NoSuchAiEndpoint(name));
                };
                if let Some(b) = hub.breakers.get_mut(role) {
                    b.set_in_service(in_service);
                }
            }
        }
        Ok(())
    }

    pub fn admin_state(&self) -> AdminState {
        let carriers_out_of_service = self
            .cfg
            .carriers
            .iter()
            .zip(&self.carriers_out)
            .filter(|(_, out)| **out)
            .map(|(c, _)| c.name.clone())
            .collect();
        let ai_endpoints_out_of_service = self
            .ai
            .as_ref()
            .map(|h| {
                let mut v = Vec::new();
                if !h.breakers.primary.in_service() {
                    v.push(h.primary.name.clone());
                }
                if let (Some(s), Some(b)) = (&h.standby, &h.breakers.standby) {
                    if !b.in_service() {
                        v.push(s.name.clone());
                    }
                }
                v
            })
            .unwrap_or_default();
        AdminState { draining: self.draining, carriers_out_of_service, ai_endpoints_out_of_service }
    }

    /// Whether a new INVITE from `carrier` must be turned away (503) by the operator's switches.
    pub(super) fn refused_by_admin(&self, carrier: usize) -> bool {
        self.draining || self.carriers_out.get(carrier).copied().unwrap_or(false)
    }
}
