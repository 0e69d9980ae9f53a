//! What the endpoint does with client transactions it started (OPTIONS probes, REGISTER,
//! BYE) and with the carriers' probers and registrars.

use super::*;

impl Endpoint {
    // ---- client transaction results ----------------------------------------------------

    pub(super) fn on_response(&mut self, now: Instant, id: ClientTxId, resp: Response) {
        let Some(pending) = self.pending.get(&id).copied() else {
            return;
        };
        if self.human_response(now, id, pending, &resp) {
            return;
        }
        if resp.is_provisional() {
            return;
        }
        self.pending.remove(&id);
        match pending {
            Pending::Probe { carrier, probe_id } => {
                if let Some(p) = self.carriers[carrier].prober.as_mut() {
                    p.on_response(now, probe_id, resp.status);
                }
            }
            Pending::Register { carrier, attempt_id } => {
                self.on_register_response(now, carrier, attempt_id, &resp)
            }
            Pending::Bye { call } => self.end_call(call, "local BYE"),
            Pending::Outbound { .. } | Pending::Refer { .. } | Pending::HumanBye { .. } => {}
        }
    }

    pub(super) fn on_client_timeout(&mut self, now: Instant, id: ClientTxId) {
        let Some(pending) = self.pending.remove(&id) else { return };
        if self.human_client_timeout(now, id, pending) {
            return;
        }
        match pending {
            Pending::Probe { carrier, probe_id } => {
                if let Some(p) = self.carriers[carrier].prober.as_mut() {
                    p.on_transport_error(now, probe_id);
                }
            }
            Pending::Register { carrier, attempt_id } => {
                let rng = &mut self.rng;
                if let Some(r) = self.carriers[carrier].registrar.as_mut() {
                    r.on_timeout(now, attempt_id, rng);
                }
            }
            Pending::Bye { call } => {
                self.note_failure(now, "bye-timeout", "a BYE got no answer".to_string());
                self.end_call(call, "BYE timed out")
            }
            Pending::Outbound { .. } | Pending::Refer { .. } | Pending::HumanBye { .. } => {}
        }
    }

    pub(super) fn on_register_response(
        &mut self,
        now: Instant,
        carrier: usize,
        attempt_id: u64,
        resp: &Response,
    ) {
        let granted = granted_expires(resp, &self.carriers[carrier].settings.contact_user);
        let www = resp.headers.get("WWW-Authenticate").map(str::to_string);
        let proxy = resp.headers.get("Proxy-Authenticate").map(str::to_string);
        let min_expires =
            resp.headers.get("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok());
        let rng = &mut self.rng;
        if let Some(r) = self.carriers[carrier].registrar.as_mut() {
            let granted = if resp.status == 423 { min_expires } else { granted };
            r.on_response(
                now,
                attempt_id,
                resp.status,
                www.as_deref(),
                proxy.as_deref(),
                granted,
                rng,
            );
        }
    }

    // ---- carriers ----------------------------------------------------------------------

    pub(super) fn carrier_timeouts(&mut self, now: Instant) {
        let rng = &mut self.rng;
        for link in &mut self.carriers {
            if let Some(p) = link.prober.as_mut() {
                if p.poll_timeout().is_some_and(|t| t <= now) {
                    p.handle_timeout(now);
                }
            }
            if let Some(r) = link.registrar.as_mut() {
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now, rng);
                }
            }
        }
    }

    /// Turns prober and registrar outputs into requests and events. True if anything happened.
    pub(super) fn carrier_outputs(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        for i in 0..self.carriers.len() {
            while let Some(out) = self.carriers[i].prober.as_mut().and_then(|p| p.poll_output()) {
                progressed = true;
                match out {
                    ProbeOutput::SendProbe { probe_id } => self.send_probe(now, i, probe_id),
                    ProbeOutput::StateChanged { up } => {
                        let carrier = self.carriers[i].settings.name.clone();
                        tracing::info!(%carrier, up, "carrier state changed");
                        if !up {
                            self.note_failure(
                                now,
                                "carrier-down",
                                format!("{carrier}: no answer to OPTIONS probes"),
                            );
                        }
                        self.out.push_back(Output::Event(Event::CarrierState { carrier, up }));
                    }
                }
            }
            while let Some(out) = self.carriers[i].registrar.as_mut().and_then(|r| r.poll_output())
            {
                progressed = true;
                self.on_register_output(now, i, out);
            }
        }
        progressed
    }

    pub(super) fn send_probe(&mut self, now: Instant, carrier: usize, probe_id: u64) {
        let Some(proxy) = self.carriers[carrier].settings.proxy else { return };
        let local = self.local_addr(proxy.transport);
        let via = build::via(proxy.transport, local, &new_branch(&mut self.rng));
        let call_id = format!("{}@trunkguard", random_token(&mut self.rng));
        let tag = random_token(&mut self.rng);
        let Some(req) =
            self.carriers[carrier].options(local, via, &call_id, &tag, &self.cfg.user_agent)
        else {
            return;
        };
        let tx = self.tx.send_request(now, proxy, req);
        self.pending.insert(tx, Pending::Probe { carrier, probe_id });
    }

    pub(super) fn on_register_output(&mut self, now: Instant, carrier: usize, out: RegisterOutput) {
        let name = self.carriers[carrier].settings.name.clone();
        match out {
            RegisterOutput::SendRegister { attempt_id, expires, authorization } => {
                let Some(proxy) = self.carriers[carrier].settings.proxy else { return };
                let local = self.local_addr(proxy.transport);
                let via = build::via(proxy.transport, local, &new_branch(&mut self.rng));
                let ua = self.cfg.user_agent.clone();
                if let Some(req) =
                    self.carriers[carrier].register(local, via, expires, authorization, &ua)
                {
                    let tx = self.tx.send_request(now, proxy, req);
                    self.pending.insert(tx, Pending::Register { carrier, attempt_id });
                }
            }
            RegisterOutput::Registered { expires } => {
                tracing::info!(carrier = %name, ?expires, "registered");
                self.out.push_back(Output::Event(Event::Registration {
                    carrier: name,
                    registered: true,
                }));
            }
            RegisterOutput::Failed { reason } => {
                tracing::warn!(carrier = %name, %reason, "registration failed");
                self.note_failure(now, "registration", format!("{name}: {reason}"));
                self.out.push_back(Output::Event(Event::Registration {
                    carrier: name,
                    registered: false,
                }));
            }
        }
    }
}
