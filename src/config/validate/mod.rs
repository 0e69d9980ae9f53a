//! Turns the raw file into a typed [`Config`]: applies defaults, checks every value, and records
//! every problem with its field path (lines are attached later from the source map).

mod ai;
mod carrier;
mod checks;
mod connections;
mod ladder;
mod lengths;
mod sections;

use super::error::FieldPath;
use super::raw::RawConfig;
use super::Config;

/// Problems found, each with the path of the field at fault.
pub(crate) type Problems = Vec<(FieldPath, String)>;

/// Collects problems while validating.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    problems: Problems,
}

impl Checker {
    pub(crate) fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.problems.push((path.clone(), message.into()));
    }
}

/// Validates the whole file; `Err` carries every problem found.
/// `table` is the same document untyped, for the length bounds of every value.
pub(crate) fn validate(raw: RawConfig, table: &toml::Table) -> Result<Config, Problems> {
    let mut c = Checker::default();
    lengths::check(table, &mut c);
    let root = FieldPath::root();
    let sip = sections::sip(raw.sip, &root.key("sip"), &mut c);
    let media = sections::media(raw.media, &root.key("media"), &mut c);
    let status = sections::status(raw.status, &root.key("status"), &mut c);
    let prompts = sections::prompts(raw.prompts, &root.key("prompts"), &mut c);
    let call = sections::call(raw.call, &root.key("call"), &mut c);
    let carriers = carrier::carriers(raw.carrier, &root.key("carrier"), &mut c);
    let ai = ai::ai(raw.ai, &root.key("ai"), &mut c);
    let ai_endpoints = ai::endpoints(raw.ai_endpoint, &root.key("ai_endpoint"), &mut c);
    let limits = ai::limits(raw.limits, &root.key("limits"), &mut c);
    let state = sections::state(raw.state, &root.key("state"), &mut c);
    let fallback = ladder::fallback(raw.fallback, &root.key("fallback"), &mut c);
    let callback = ladder::callback(raw.callback, &root.key("callback"), &mut c);
    let outbound = ladder::outbound(raw.outbound, &root.key("outbound"), &mut c);
    let connections = connections::connections(raw.connections, &root.key("connections"), &mut c);
    if let (Some(f), Some(o), Some(k)) = (&fallback, &outbound, &carriers) {
        ladder::check_vs_carriers(f, o, k, &root, &mut c);
    }
    if let (Some(sip), Some(media)) = (&sip, &media) {
        sections::check_rtp_vs_sip(sip, media, &mut c);
    }
    if let (Some(sip), Some(status)) = (&sip, &status) {
        sections::check_status_vs_sip(sip, status, &mut c);
    }
    let (Some(fallback), Some(callback), Some(outbound), Some(connections)) =
        (fallback, callback, outbound, connections)
    else {
        return Err(c.problems);
    };
    match (sip, media, status, prompts, call, carriers, ai, ai_endpoints, limits, state) {
        (
            Some(sip),
            Some(media),
            Some(status),
            Some(prompts),
            Some(call),
            Some(carriers),
            Some(ai),
            Some(ai_endpoints),
            Some(limits),
            Some(state),
        ) if c.problems.is_empty() => Ok(Config {
            sip,
            media,
            status,
            prompts,
            call,
            carriers,
            ai,
            ai_endpoints,
            limits,
            state,
            fallback,
            callback,
            outbound,
            connections,
        }),
        _ => Err(c.problems),
    }
}
