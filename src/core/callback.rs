//! Callback requests: what the degradation ladder hands the I/O shell when a caller is to be
//! called back (the caller pressed 1, the menu got no answer, the human did not answer). The
//! shell stores each request durably and delivers it to the configured webhook; the core only
//! says who, why and what failed (it has no wall clock: the shell stamps the time).

/// Why a callback was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackReason {
    /// The caller pressed 1 at the menu.
    CallerAsked,
    /// The menu was played without a usable key (no key, unknown keys).
    MenuNoAnswer,
    /// The human transfer was tried but nobody answered in time.
    HumanNoAnswer,
    /// The human could not be reached (every carrier refused or failed the outbound call).
    HumanUnavailable,
}

impl CallbackReason {
    /// The stable name used in the database and the webhook payload.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackReason::CallerAsked => "caller-pressed-1",
            CallbackReason::MenuNoAnswer => "menu-no-answer",
            CallbackReason::HumanNoAnswer => "human-no-answer",
            CallbackReason::HumanUnavailable => "human-unavailable",
        }
    }
}

/// One callback request, as the ladder decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRequest {
    /// SIP Call-ID of the inbound call (links the request to its call record).
    pub call_id: String,
    /// The caller's number or URI user part (From), as received.
    pub caller: String,
    /// The number that was called (To / Request-URI user part), as received.
    pub called: String,
    /// Name of the carrier the call came from.
    pub carrier: String,
    pub reason: CallbackReason,
    /// The failure that sent the call down the ladder (e.g. "no agent within the budget").
    pub failure: String,
}
