//! Transaction layer tests on a fake clock: `t0` plus explicit durations, timers driven by
//! stepping to each `poll_timeout()`.

use std::time::{Duration, Instant};

use super::*;
use crate::core::sip::message::reason_phrase;
use crate::core::sip::parse::{parse_message, SipHeaders};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn peer(transport: Transport) -> Peer {
    Peer { transport, addr: "192.0.2.10:5060".parse().unwrap() }
}

fn udp() -> Peer {
    peer(Transport::Udp)
}

fn layer() -> TransactionLayer {
    TransactionLayer::new(SipTimers::default())
}

/// A request from alice; `branch: None` makes an RFC 2543-style Via.
fn request(method: &str, branch: Option<&str>, cseq: u32, to_tag: Option<&str>) -> Request {
    let branch = branch.map(|b| format!(";branch={b}")).unwrap_or_default();
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>{to_tag}\r\n\
         Call-ID: call-1@192.0.2.10\r\n\
         CSeq: {cseq} {method}\r\n\r\n"
    );
    match parse_message(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn reply(req: &Request, status: u16, to_tag: Option<&str>) -> Response {
    let mut resp = response_to(req, status, reason_phrase(status));
    if let Some(tag) = to_tag {
        let to = resp.to_hdr().unwrap().with_tag(tag);
        resp.headers.set("To", to.to_string());
    }
    resp
}

fn transmits(l: &mut TransactionLayer) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| l.poll_transmit()).map(|(_, b)| b).collect()
}

fn events(l: &mut TransactionLayer) -> Vec<TxEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn parsed(bytes: &[u8]) -> SipMessage {
    parse_message(bytes).unwrap()
}

/// Steps through every deadline up to `end`; returns (offset from `from`, transmits) per step.
fn run_until(l: &mut TransactionLayer, from: Instant, end: Instant) -> Vec<(u128, usize)> {
    let mut fired = Vec::new();
    while let Some(deadline) = l.poll_timeout().filter(|d| *d <= end) {
        l.handle_timeout(deadline);
        fired.push(((deadline - from).as_millis(), transmits(l).len()));
    }
    fired
}

fn retransmit_offsets(fired: &[(u128, usize)]) -> Vec<u128> {
    fired.iter().filter(|(_, n)| *n > 0).map(|(d, _)| *d).collect()
}

#[test]
fn invite_client_udp_doubles_a_until_b() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, udp(), request("INVITE", Some("z9hG4bKc1"), 1, None));
    assert_eq!(transmits(&mut l).len(), 1);
    let fired = run_until(&mut l, t0, t0 + secs(60));
    assert_eq!(retransmit_offsets(&fired), vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(fired.last(), Some(&(32_000, 0)));
    assert_eq!(events(&mut l), vec![TxEvent::Timeout { id }]);
    assert_eq!((l.len(), l.poll_timeout()), (0, None));
}

#[test]
fn invite_client_tcp_never_retransmits() {
    let t0 = Instant::now();
    let mut l = layer();
    let id =
        l.send_request(t0, peer(Transport::Tcp), request("INVITE", Some("z9hG4bKc2"), 1, None));
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(run_until(&mut l, t0, t0 + secs(60)), vec![(32_000, 0)]);
    assert_eq!(events(&mut l), vec![TxEvent::Timeout { id }]);
    assert_eq!(l.len(), 0);
}

#[test]
fn non_invite_client_e_caps_at_t2_then_f() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, udp(), request("OPTIONS", Some("z9hG4bKn1"), 1, None));
    assert_eq!(transmits(&mut l).len(), 1);
    let fired = run_until(&mut l, t0, t0 + secs(60));
    let expected = vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500];
    assert_eq!(retransmit_offsets(&fired), expected);
    assert_eq!(fired.last(), Some(&(32_000, 0)));
    assert_eq!(events(&mut l), vec![TxEvent::Timeout { id }]);
    assert_eq!(l.len(), 0);
}

#[test]
fn non_invite_client_final_then_k_over_udp_zero_over_tcp() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("OPTIONS", Some("z9hG4bKn2"), 1, None);
    let id = l.send_request(t0, udp(), req.clone());
    l.handle_response(t0 + ms(100), udp(), reply(&req, 200, Some("b")));
    l.handle_response(t0 + ms(200), udp(), reply(&req, 200, Some("b")));
    let ev = events(&mut l);
    assert!(
        matches!(ev.as_slice(), [TxEvent::Response { id: i, resp }] if *i == id && resp.status == 200)
    );
    assert_eq!(l.poll_timeout(), Some(t0 + ms(100) + secs(5)));
    run_until(&mut l, t0, t0 + secs(10));
    assert_eq!(l.len(), 0);

    let req = request("OPTIONS", Some("z9hG4bKn3"), 2, None);
    l.send_request(t0, peer(Transport::Tcp), req.clone());
    l.handle_response(t0 + ms(100), peer(Transport::Tcp), reply(&req, 200, Some("b")));
    assert_eq!(l.len(), 0);
}

#[test]
fn provisional_stops_a_and_b_non_2xx_is_acked_and_absorbed() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKp1"), 7, None);
    let id = l.send_request(t0, udp(), req.clone());
    transmits(&mut l);
    l.handle_response(t0 + ms(100), udp(), reply(&req, 180, Some("b9")));
    assert!(
        matches!(events(&mut l).as_slice(), [TxEvent::Response { resp, .. }] if resp.status == 180)
    );
    // Neither A retransmissions nor B while Proceeding; only the Timer C guard remains.
    assert_eq!(l.poll_timeout(), Some(t0 + ms(100) + secs(180)));
    assert!(run_until(&mut l, t0, t0 + secs(60)).is_empty());

    l.handle_response(t0 + secs(60), udp(), reply(&req, 486, Some("b9")));
    let sent = transmits(&mut l);
    assert_eq!(sent.len(), 1);
    let SipMessage::Request(ack) = parsed(&sent[0]) else { panic!("ACK expected") };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, req.uri);
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKp1"));
    assert_eq!(ack.to_hdr().unwrap().tag(), Some("b9"));
    assert_eq!(ack.cseq().unwrap().to_string(), "7 ACK");
    assert!(
        matches!(events(&mut l).as_slice(), [TxEvent::Response { id: i, resp }] if *i == id && resp.status == 486)
    );

    l.handle_response(t0 + secs(61), udp(), reply(&req, 486, Some("b9")));
    assert_eq!(transmits(&mut l), sent, "the retransmitted final gets the same ACK");
    assert!(events(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(t0 + secs(92)));
    run_until(&mut l, t0, t0 + secs(100));
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_client_timer_c_ends_a_stuck_proceeding() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKp2"), 1, None);
    let id = l.send_request(t0, udp(), req.clone());
    l.handle_response(t0 + ms(100), udp(), reply(&req, 100, None));
    events(&mut l);
    run_until(&mut l, t0, t0 + secs(200));
    assert_eq!(events(&mut l), vec![TxEvent::Timeout { id }]);
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_client_over_tcp_acks_and_ends_at_once() {
    let t0 = Instant::now();
    let mut l = layer();
    let tcp = peer(Transport::Tcp);
    let req = request("INVITE", Some("z9hG4bKp3"), 1, None);
    l.send_request(t0, tcp, req.clone());
    transmits(&mut l);
    l.handle_response(t0 + ms(50), tcp, reply(&req, 503, Some("x")));
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.len(), 0);
}

#[test]
fn two_xx_retransmission_after_client_end_is_delivered_then_forgotten() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKok"), 1, None);
    let id = l.send_request(t0, udp(), req.clone());
    transmits(&mut l);
    l.handle_response(t0 + ms(100), udp(), reply(&req, 200, Some("b1")));
    assert_eq!(l.len(), 0);
    l.handle_response(t0 + ms(600), udp(), reply(&req, 200, Some("b1")));
    l.handle_response(t0 + ms(700), udp(), reply(&req, 200, Some("forked")));
    let ev = events(&mut l);
    assert_eq!(ev.len(), 3);
    assert!(ev
        .iter()
        .all(|e| matches!(e, TxEvent::Response { id: i, resp } if *i == id && resp.status == 200)));
    assert!(transmits(&mut l).is_empty(), "the TU ACKs 2xx, not the transaction");
    assert_eq!(l.dropped_responses(), 0);

    l.handle_response(t0 + ms(100) + secs(33), udp(), reply(&req, 200, Some("b1")));
    assert!(events(&mut l).is_empty());
    assert_eq!(l.dropped_responses(), 1);
}

#[test]
fn unmatched_responses_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut l = layer();
    let opts = request("OPTIONS", Some("z9hG4bKnone"), 1, None);
    l.handle_response(t0, udp(), reply(&opts, 200, Some("x")));
    let inv = request("INVITE", Some("z9hG4bKnone2"), 1, None);
    l.handle_response(t0, udp(), reply(&inv, 200, Some("x")));
    // Right branch, wrong CSeq method.
    let live = request("OPTIONS", Some("z9hG4bKlive"), 1, None);
    l.send_request(t0, udp(), live.clone());
    let mut wrong = reply(&live, 200, Some("x"));
    wrong.headers.set("CSeq", "1 INFO");
    l.handle_response(t0, udp(), wrong);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.dropped_responses(), 3);
    assert_eq!(l.len(), 1);
}

#[test]
fn non_invite_server_absorbs_retransmissions_and_resends_last_response() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("OPTIONS", Some("z9hG4bKs1"), 1, None);
    l.handle_request(t0, udp(), req.clone());
    l.handle_request(t0 + ms(500), udp(), req.clone());
    assert!(
        matches!(events(&mut l).as_slice(), [TxEvent::Request { req: r, .. }] if r.method == Method::Options)
    );
    assert!(transmits(&mut l).is_empty(), "nothing to resend in Trying");

    l.send_response(t0 + ms(600), reply(&req, 200, Some("s"))).unwrap();
    let sent = transmits(&mut l);
    assert_eq!(sent.len(), 1);
    l.handle_request(t0 + ms(1500), udp(), req.clone());
    assert_eq!(transmits(&mut l), sent);
    assert!(events(&mut l).is_empty());
    assert_eq!(
        l.send_response(t0 + ms(1600), reply(&req, 500, Some("s"))),
        Err(TxError::AlreadyFinal)
    );

    assert_eq!(l.poll_timeout(), Some(t0 + ms(600) + secs(32)));
    run_until(&mut l, t0, t0 + secs(40));
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_sends_100_trying_when_the_tu_is_slow() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKt1"), 1, None);
    l.handle_request(t0, udp(), req.clone());
    assert_eq!(l.poll_timeout(), Some(t0 + ms(200)));
    l.handle_timeout(t0 + ms(200));
    let sent = transmits(&mut l);
    let SipMessage::Response(trying) = parsed(&sent[0]) else { panic!("response expected") };
    assert_eq!((trying.status, trying.to_hdr().unwrap().tag()), (100, None));
    assert_eq!(trying.top_via().unwrap().branch(), Some("z9hG4bKt1"));
    l.handle_request(t0 + ms(500), udp(), req);
    assert_eq!(transmits(&mut l), sent, "an INVITE retransmission gets the 100 again");
}

#[test]
fn invite_server_no_trying_when_the_tu_answers_in_time() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKt2"), 1, None);
    l.handle_request(t0, udp(), req.clone());
    l.send_response(t0 + ms(50), reply(&req, 180, Some("s"))).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.poll_timeout(), None);
    assert_eq!(l.len(), 1);
}

#[test]
fn invite_server_non_2xx_g_until_ack_then_i() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKg1"), 1, None);
    l.handle_request(t0, udp(), req.clone());
    events(&mut l);
    l.send_response(t0 + ms(100), reply(&req, 486, Some("s"))).unwrap();
    let sent = transmits(&mut l);
    let fired = run_until(&mut l, t0 + ms(100), t0 + ms(100) + secs(9));
    assert_eq!(retransmit_offsets(&fired), vec![500, 1500, 3500, 7500]);
    l.handle_request(t0 + secs(10), udp(), req.clone());
    assert_eq!(transmits(&mut l), sent, "INVITE retransmission gets the final again");

    let ack = request("ACK", Some("z9hG4bKg1"), 1, Some("s"));
    l.handle_request(t0 + secs(10), udp(), ack.clone());
    l.handle_request(t0 + secs(11), udp(), ack);
    assert!(events(&mut l).is_empty(), "the ACK of a non-2xx is absorbed");
    assert_eq!(l.poll_timeout(), Some(t0 + secs(15)), "Timer I = T4, G and H stopped");
    assert_eq!(run_until(&mut l, t0, t0 + secs(60)), vec![(15_000, 0)]);
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_h_fires_ack_timeout() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKh1"), 1, None);
    l.handle_request(t0, udp(), req.clone());
    events(&mut l);
    l.send_response(t0, reply(&req, 603, Some("s"))).unwrap();
    transmits(&mut l);
    let fired = run_until(&mut l, t0, t0 + secs(60));
    assert_eq!(retransmit_offsets(&fired).len(), 10, "G at 0.5, 1.5, 3.5, then every 4 s");
    assert_eq!(fired.last(), Some(&(32_000, 0)));
    assert_eq!(events(&mut l), vec![TxEvent::AckTimeout { call_id: "call-1@192.0.2.10".into() }]);
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_over_tcp_has_no_g_and_no_i() {
    let t0 = Instant::now();
    let mut l = layer();
    let tcp = peer(Transport::Tcp);
    let req = request("INVITE", Some("z9hG4bKtcp"), 1, None);
    l.handle_request(t0, tcp, req.clone());
    l.send_response(t0, reply(&req, 486, Some("s"))).unwrap();
    assert_eq!(l.poll_timeout(), Some(t0 + secs(32)), "only H");
    l.handle_request(t0 + ms(10), tcp, request("ACK", Some("z9hG4bKtcp"), 1, Some("s")));
    assert_eq!(l.len(), 0);
}

#[test]
fn invite_server_2xx_goes_accepted_absorbing_retransmissions() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("INVITE", Some("z9hG4bKa1"), 1, None);
    l.handle_request(t0, udp(), req.clone());
    events(&mut l);
    l.send_response(t0 + ms(10), reply(&req, 200, Some("s"))).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    l.handle_request(t0 + ms(500), udp(), req.clone());
    assert!(events(&mut l).is_empty() && transmits(&mut l).is_empty());
    l.send_response(t0 + ms(510), reply(&req, 200, Some("s"))).unwrap();
    assert_eq!(transmits(&mut l).len(), 1, "TU 2xx retransmission passes");
    assert_eq!(
        l.send_response(t0 + ms(520), reply(&req, 486, Some("s"))),
        Err(TxError::AlreadyFinal)
    );

    let ack = request("ACK", Some("z9hG4bKnewbranch"), 1, Some("s"));
    l.handle_request(t0 + ms(600), udp(), ack);
    assert!(
        matches!(events(&mut l).as_slice(), [TxEvent::Request { req, .. }] if req.method == Method::Ack)
    );
    assert_eq!(l.poll_timeout(), Some(t0 + ms(10) + secs(32)));
    run_until(&mut l, t0, t0 + secs(40));
    assert_eq!(l.len(), 0);
}

#[test]
fn cancel_is_a_new_request_and_both_get_answered() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", Some("z9hG4bKx1"), 1, None);
    let cancel = request("CANCEL", Some("z9hG4bKx1"), 1, None);
    l.handle_request(t0, udp(), invite.clone());
    l.handle_request(t0 + ms(100), udp(), cancel.clone());
    let methods: Vec<Method> = events(&mut l)
        .into_iter()
        .map(|e| match e {
            TxEvent::Request { req, .. } => req.method,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(methods, vec![Method::Invite, Method::Cancel]);
    assert!(l.cancel_matches_pending_invite(&cancel));
    assert_eq!(l.len(), 2);

    l.send_response(t0 + ms(110), reply(&cancel, 200, Some("s"))).unwrap();
    l.send_response(t0 + ms(110), reply(&invite, 487, Some("s"))).unwrap();
    assert!(!l.cancel_matches_pending_invite(&cancel));
    let statuses: Vec<u16> = transmits(&mut l)
        .iter()
        .map(|b| match parsed(b) {
            SipMessage::Response(r) => r.status,
            SipMessage::Request(r) => panic!("unexpected {}", r.method),
        })
        .collect();
    assert_eq!(statuses, vec![200, 487]);
    l.handle_request(t0 + ms(200), udp(), request("ACK", Some("z9hG4bKx1"), 1, Some("s")));
    assert!(events(&mut l).is_empty());
    run_until(&mut l, t0, t0 + secs(60));
    assert_eq!(l.len(), 0);
}

#[test]
fn rfc2543_requests_match_without_the_cookie() {
    let t0 = Instant::now();
    let mut l = layer();
    let invite = request("INVITE", None, 1, None);
    l.handle_request(t0, udp(), invite.clone());
    l.handle_request(t0 + ms(500), udp(), invite.clone());
    assert_eq!(events(&mut l).len(), 1, "retransmission absorbed");
    // An old-style branch without the cookie is matched the same way.
    let options = request("OPTIONS", Some("oldbranch1"), 2, None);
    l.handle_request(t0, udp(), options.clone());
    l.handle_request(t0 + ms(100), udp(), options.clone());
    assert_eq!(events(&mut l).len(), 1);
    l.send_response(t0 + ms(200), reply(&options, 200, Some("o"))).unwrap();

    l.send_response(t0 + ms(600), reply(&invite, 404, Some("s"))).unwrap();
    assert_eq!(transmits(&mut l).len(), 2);
    l.handle_request(t0 + ms(700), udp(), invite.clone());
    assert_eq!(transmits(&mut l).len(), 1, "final resent");

    l.handle_request(t0 + ms(800), udp(), request("ACK", None, 1, Some("other")));
    assert_eq!(events(&mut l).len(), 1, "ACK with a foreign To tag matches nothing");
    l.handle_request(t0 + ms(900), udp(), request("ACK", None, 1, Some("s")));
    assert!(events(&mut l).is_empty(), "ACK with the response's To tag is absorbed");
    assert!(transmits(&mut l).is_empty(), "Confirmed: G stopped");
    run_until(&mut l, t0, t0 + secs(60));
    assert_eq!(l.len(), 0);
}

#[test]
fn send_response_without_transaction_is_an_error() {
    let t0 = Instant::now();
    let mut l = layer();
    let req = request("BYE", Some("z9hG4bKnope"), 3, Some("s"));
    assert_eq!(l.send_response(t0, reply(&req, 200, None)), Err(TxError::NoServerTransaction));
    l.handle_request(t0, udp(), req.clone());
    assert_eq!(l.send_response(t0, reply(&req, 99, None)), Err(TxError::BadStatus(99)));
}

#[test]
fn requests_that_cannot_start_a_transaction_time_out_at_once() {
    let t0 = Instant::now();
    let mut l = layer();
    let ack = request("ACK", Some("z9hG4bKack"), 1, Some("s"));
    assert_eq!(l.try_send_request(t0, udp(), ack.clone()), Err(TxError::AckHasNoTransaction));
    let id = l.send_request(t0, udp(), ack.clone());
    assert_eq!(events(&mut l), vec![TxEvent::Timeout { id }]);
    let opts = request("OPTIONS", Some("z9hG4bKdup"), 1, None);
    l.send_request(t0, udp(), opts.clone());
    assert_eq!(l.try_send_request(t0, udp(), opts), Err(TxError::DuplicateBranch));
    l.send_stateless(udp(), SipMessage::Request(ack));
    assert_eq!(transmits(&mut l).len(), 2);
    assert_eq!(l.len(), 1);
}

#[test]
fn transport_error_ends_a_client_transaction() {
    let t0 = Instant::now();
    let mut l = layer();
    let id = l.send_request(t0, udp(), request("OPTIONS", Some("z9hG4bKte"), 1, None));
    l.handle_transport_error(t0 + ms(1), id);
    assert_eq!(events(&mut l), vec![TxEvent::Timeout { id }]);
    assert_eq!((l.len(), l.poll_timeout()), (0, None));
}

#[test]
fn mixed_load_drains_to_zero() {
    let t0 = Instant::now();
    let mut l = layer();
    for i in 0..20u32 {
        let b = format!("z9hG4bKload{i}");
        let req = request("OPTIONS", Some(&b), i, None);
        l.handle_request(t0, udp(), req.clone());
        l.send_response(t0, reply(&req, 200, Some("s"))).unwrap();
        l.send_request(t0, udp(), request("INVITE", Some(&format!("{b}c")), i, None));
    }
    assert_eq!(l.len(), 40);
    run_until(&mut l, t0, t0 + secs(120));
    assert_eq!(l.len(), 0);
    assert_eq!(events(&mut l).iter().filter(|e| matches!(e, TxEvent::Timeout { .. })).count(), 20);
}
