//! RFC 4475 (SIP torture messages) and RFC 5118 (IPv6 torture messages) against trunkguard's
//! parser and UAS checks, one table row per file so a regression names the file; plus a
//! no-panic test over truncated and mutated copies of every message.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use trunkguard::core::sip::framing::StreamFramer;
use trunkguard::core::sip::headers::Contact;
use trunkguard::core::sip::validate::{check_request, check_request_with, Policy, Rejection};
use trunkguard::core::sip::{parse_headers_lenient, parse_message, SipHeaders, SipMessage};

/// What must happen to a message at message level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Parses; a request also passes `check_request`.
    Accept,
    /// Parses (a request), and `check_request` refuses it with this status.
    Refuse(u16),
    /// `parse_message` fails; for a request `ParseError::status()` is this and the lenient
    /// head is enough to answer it. For a response the status is ignored (responses are dropped).
    ParseFail(u16),
}
use Expect::*;

/// (file, expectation, substring the parse error / rejection reason must contain, note).
type Row = (&'static str, Expect, &'static str, &'static str);

/// RFC 4475 expectations, with what the endpoint must additionally do beyond the message level.
const RFC4475: &[Row] = &[
    // 3.1.1 valid messages: all must parse and pass.
    ("wsinv.dat", Accept, "", "folding, odd whitespace, compact forms, escaped quotes"),
    ("intmeth.dat", Accept, "", "extension method made of every token char; 405/501 is the method layer's call"),
    ("esc01.dat", Accept, "", "escapes in URIs; compare URIs after unescaping"),
    ("escnull.dat", Accept, "", "%00 in URIs; registrar must treat the two Contacts as distinct"),
    ("esc02.dat", Accept, "", "RE%47IST%45R is an unknown method, not REGISTER; C%6Fntact is an unknown header"),
    ("lwsdisp.dat", Accept, "", "no LWS between display name and <"),
    ("longreq.dat", Accept, "", "long values, 34 Via lines; top Via has no branch (RFC 2543 matching)"),
    ("dblreq.dat", Accept, "", "two requests in one datagram: only the first (REGISTER) is processed"),
    ("semiuri.dat", Accept, "", "; in the user part"),
    ("transports.dat", Accept, "", "unknown transports in lower Vias are not our concern"),
    ("mpart01.dat", Accept, "", "multipart binary body; MESSAGE is for the method layer"),
    ("unreason.dat", Accept, "", "UTF-8 reason phrase"),
    ("noreason.dat", Accept, "", "empty reason phrase"),
    // 3.1.2 invalid messages: parse error, or a 400 from check_request.
    ("badinv01.dat", ParseFail(400), "Via", "empty Via/Contact params"),
    ("clerr.dat", ParseFail(400), "BodyLength", "Content-Length beyond the datagram"),
    ("ncl.dat", ParseFail(400), "Content-Length", "negative Content-Length"),
    ("scalar02.dat", ParseFail(400), "CSeq", "CSeq beyond 2^32-1 (Max-Forwards 300 and huge expiries too)"),
    ("scalarlg.dat", ParseFail(0), "CSeq", "response with CSeq overflow: dropped"),
    ("quotbal.dat", ParseFail(400), "unbalanced quotes", "unterminated quoted display name"),
    ("ltgtruri.dat", ParseFail(400), "RequestUri", "Request-URI in <>"),
    ("lwsruri.dat", ParseFail(400), "StartLine", "LWS inside the Request-URI"),
    ("lwsstart.dat", ParseFail(400), "StartLine", "several SP between request-line elements"),
    ("trws.dat", ParseFail(400), "StartLine", "trailing SP after SIP/2.0"),
    ("escruri.dat", Refuse(400), "escaped headers", "escaped headers in the Request-URI"),
    ("baddate.dat", Refuse(400), "Date", "Date not in GMT"),
    ("regbadct.dat", ParseFail(400), "Contact", "Contact addr-spec with ? outside <>"),
    ("badaspec.dat", ParseFail(400), "inside <>", "LWS inside <>"),
    ("baddn.dat", ParseFail(400), "display name", "unquoted display name with a comma"),
    ("badvers.dat", ParseFail(505), "Version", "SIP/7.0: 505 Version Not Supported"),
    ("mismatch01.dat", ParseFail(400), "MethodMismatch", "CSeq method differs from the request method"),
    ("mismatch02.dat", ParseFail(400), "MethodMismatch", "unknown method with CSeq INVITE"),
    ("bigcode.dat", ParseFail(0), "StartLine", "response code 4294967301: dropped"),
    // 3.2.1 transaction: RFC allows 400 (statelessly) or RFC 2543 fallback; we answer 400.
    ("badbranch.dat", Refuse(400), "magic cookie", "branch is only z9hG4bK; answer statelessly, no transaction"),
    // 3.3 semantics
    ("insuf.dat", ParseFail(400), "Missing", "no To/From/Call-ID/Max-Forwards: 400 built from the lenient head"),
    ("unkscm.dat", Refuse(416), "", "unknown Request-URI scheme"),
    ("novelsc.dat", Refuse(416), "", "soap.beep Request-URI scheme"),
    ("unksm2.dat", Refuse(416), "", "REGISTER whose To (address-of-record) is isbn:"),
    ("bext01.dat", Refuse(420), "", "unknown Require tags -> 420 + Unsupported; Proxy-Require ignored by a UAS"),
    ("invut.dat", Refuse(415), "", "application/unknownformat body -> 415 + Accept"),
    ("regaut01.dat", Accept, "", "unknown Authorization scheme: a registrar that authenticates answers 401 with a Digest challenge"),
    ("multi01.dat", ParseFail(400), "Duplicate", "duplicate CSeq/Call-ID/To/From/Max-Forwards"),
    ("mcl01.dat", ParseFail(400), "Duplicate(\"Content-Length\")", "two Content-Length values (a stream would have to close)"),
    ("bcast.dat", Accept, "", "response with 255.255.255.255 in the 2nd Via: a UA matches the top Via only; never forward to broadcast"),
    ("zeromf.dat", Refuse(483), "", "Max-Forwards 0: 483 under the default (forwarding) policy; Policy::endpoint processes it"),
    ("cparam01.dat", Accept, "", "unknownparam is a Contact header param (no <>)"),
    ("cparam02.dat", Accept, "", "unknownparam is a URI param (inside <>)"),
    ("regescrt.dat", Accept, "", "Contact URI with escaped Route header: a registrar stores it verbatim"),
    ("sdp01.dat", Refuse(406), "", "Accept excludes application/sdp for an INVITE with an SDP offer"),
    // 3.4.1 backward compatibility
    ("inv2543.dat", Accept, "", "RFC 2543: no branch/tag/Max-Forwards/Content-Length; transactions match by 2543 rules, body to end of datagram"),
];

/// RFC 5118: every message parses except ipv6-bad (an unbracketed IPv6 Request-URI host).
const RFC5118: &[Row] = &[
    ("ipv6-good", Accept, "", "bracketed IPv6 Request-URI"),
    ("ipv6-bad", ParseFail(400), "RequestUri", "IPv6 host without brackets"),
    ("port-ambiguous", Accept, "", "[2001:db8::10:5070] is an address, no port"),
    ("port-unambiguous", Accept, "", "[2001:db8::10]:5070"),
    ("ipv6-bug-abnf-3-colons", Accept, "", "2001:db8:::192.0.2.1 accepted per RFC 3261 ABNF"),
    ("ipv6-correct-abnf-2-colons", Accept, "", "2001:db8::192.0.2.1"),
    ("ipv6-in-sdp", Accept, "", "IPv6 in SDP"),
    ("mult-ip-in-header", Accept, "", "IPv4 and IPv6 Vias"),
    ("mult-ip-in-sdp", Accept, "", "IPv4 and IPv6 in SDP"),
    ("ipv4-mapped-ipv6", Accept, "", "::ffff:192.0.2.10"),
    ("via-received-param-with-delim", Accept, "", "received=[...] tolerated"),
    ("via-received-param-no-delim", Accept, "", "received=2001:... per ABNF"),
];

fn data(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir)
}

fn manifest() -> Vec<(String, String)> {
    let text = fs::read_to_string(data("rfc4475").join("MANIFEST.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect()
}

/// Checks one message, and that a refusal names `cause`; `Err` says what went wrong.
fn check(bytes: &[u8], expect: Expect, cause: &str) -> Result<(), String> {
    let why = match parse_message(bytes) {
        Err(e) => format!("{e:?}"),
        Ok(SipMessage::Request(r)) => check_request(&r).err().map(|e| e.reason).unwrap_or_default(),
        Ok(SipMessage::Response(_)) => String::new(),
    };
    if !why.contains(cause) {
        return Err(format!(
            "refused for the wrong reason: {why:?}, expected it to mention {cause:?}"
        ));
    }
    let parsed = parse_message(bytes);
    match (expect, parsed) {
        (Accept, Ok(SipMessage::Request(r))) => {
            check_request(&r).map_err(|e| format!("refused: {e:?}"))
        }
        (Accept, Ok(SipMessage::Response(_))) => Ok(()),
        (Refuse(code), Ok(SipMessage::Request(r))) => match check_request(&r) {
            Err(Rejection { status, .. }) if status == code => Ok(()),
            other => Err(format!("expected {code}, got {other:?}")),
        },
        (ParseFail(code), Err(e)) => {
            let is_response = bytes.starts_with(b"SIP/");
            let head = parse_headers_lenient(bytes);
            match (is_response, head) {
                (true, None) => Ok(()),
                (true, Some(_)) => Err("lenient head offered for a response".into()),
                (false, None) => Err(format!("cannot answer: no lenient head ({e})")),
                (false, Some(h)) => {
                    let resp = Rejection::from(&e).response_for(&h, Some("tg"));
                    if e.status() != code || resp.status != code || resp.headers.count("Via") == 0 {
                        Err(format!("expected {code}, got {} ({e})", e.status()))
                    } else {
                        Ok(())
                    }
                }
            }
        }
        (_, Ok(m)) => Err(format!("unexpectedly parsed: {:?}", m.headers().get("CSeq"))),
        (_, Err(e)) => Err(format!("parse error: {e}")),
    }
}

fn read(dir: &str, file: &str) -> Vec<u8> {
    fs::read(data(dir).join(file)).unwrap_or_else(|e| panic!("{dir}/{file}: {e}"))
}

#[test]
fn rfc4475_per_file() {
    let table: BTreeMap<&str, (Expect, &str, &str)> =
        RFC4475.iter().map(|(f, e, c, n)| (*f, (*e, *c, *n))).collect();
    let mut failures = Vec::new();
    let mut per_class: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let rows = manifest();
    assert_eq!(rows.len(), 49, "MANIFEST.tsv rows");
    for (file, class) in &rows {
        let Some((expect, cause, note)) = table.get(file.as_str()) else {
            failures.push(format!("{file}: no expectation in the table"));
            continue;
        };
        let stat = per_class.entry(class.clone()).or_default();
        stat.1 += 1;
        match check(&read("rfc4475", file), *expect, cause) {
            Ok(()) => stat.0 += 1,
            Err(why) => failures.push(format!("{file} [{class}] {expect:?} ({note}): {why}")),
        }
    }
    for (class, (ok, n)) in &per_class {
        println!("rfc4475 {class}: {ok}/{n}");
    }
    assert!(failures.is_empty(), "RFC 4475 failures:\n{}", failures.join("\n"));
}

#[test]
fn rfc5118_per_file() {
    let mut failures = Vec::new();
    let mut files: Vec<String> = fs::read_dir(data("rfc5118"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| !f.ends_with(".tsv") && !f.starts_with("README"))
        .collect();
    files.sort();
    assert_eq!(files.len(), RFC5118.len(), "every RFC 5118 file has a row");
    for (file, expect, cause, note) in RFC5118 {
        if let Err(why) = check(&read("rfc5118", file), *expect, cause) {
            failures.push(format!("{file} {expect:?} ({note}): {why}"));
        }
    }
    println!("rfc5118: {}/{}", RFC5118.len() - failures.len(), RFC5118.len());
    assert!(failures.is_empty(), "RFC 5118 failures:\n{}", failures.join("\n"));
}

fn request(dir: &str, file: &str) -> trunkguard::core::sip::Request {
    match parse_message(&read(dir, file)).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("{file} is a response"),
    }
}

/// Details the table cannot express.
#[test]
fn rfc4475_details() {
    let wsinv = request("rfc4475", "wsinv.dat");
    assert_eq!(wsinv.cseq().unwrap().seq, 9);
    assert_eq!(wsinv.max_forwards(), Some(Ok(68)));
    assert_eq!(wsinv.top_via().unwrap().branch(), Some("390skdjuw"));
    assert_eq!(wsinv.to_hdr().unwrap().tag(), Some("1918181833n"));
    assert_eq!(wsinv.from_hdr().unwrap().display_name().as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(wsinv.body.len(), 150);

    let dbl = request("rfc4475", "dblreq.dat");
    assert_eq!(dbl.method.as_str(), "REGISTER");
    assert!(dbl.body.is_empty());

    let esc02 = request("rfc4475", "esc02.dat");
    assert_eq!(esc02.method.as_str(), "RE%47IST%45R");
    assert_eq!(esc02.headers.count("Contact"), 2);

    let bext = check_request(&request("rfc4475", "bext01.dat")).unwrap_err();
    assert_eq!(bext.headers[0].name, "Unsupported");
    assert_eq!(bext.headers[0].value, "nothingSupportsThis, nothingSupportsThisEither");

    let invut = check_request(&request("rfc4475", "invut.dat")).unwrap_err();
    assert_eq!(
        (invut.headers[0].name.as_str(), invut.headers[0].value.as_str()),
        ("Accept", "application/sdp")
    );

    let zeromf = request("rfc4475", "zeromf.dat");
    assert_eq!(check_request_with(&zeromf, &Policy::endpoint()), Ok(()));

    let c1 = request("rfc4475", "cparam01.dat").contact().unwrap();
    assert_eq!(c1.uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(c1.params.get("unknownparam"), Some(None));
    let c2 = request("rfc4475", "cparam02.dat").contact().unwrap();
    assert_eq!(c2.uri, "sip:+19725552222@gw1.example.net;unknownparam");
    assert!(c2.params.0.is_empty());

    let regescrt = request("rfc4475", "regescrt.dat").contact().unwrap();
    let uri = regescrt.parsed_uri().unwrap();
    assert_eq!(uri.as_sip().unwrap().headers[0].0, "Route");

    let escnull = request("rfc4475", "escnull.dat");
    let Some(Contact::List(l)) = escnull.contacts().unwrap() else { panic!() };
    assert_eq!(l.len(), 2);

    let inv = request("rfc4475", "inv2543.dat");
    assert_eq!(inv.top_via().unwrap().branch(), None);
    assert_eq!(inv.max_forwards(), None);
    assert_eq!(inv.from_hdr().unwrap().tag(), None);
    assert_eq!(inv.body.len(), 105);

    // insuf: the lenient head recovers Via and CSeq for the 400.
    let raw = read("rfc4475", "insuf.dat");
    let head = parse_headers_lenient(&raw).unwrap();
    assert_eq!(head.get("CSeq"), Some("193942 INVITE"));
    assert!(head.get("Via").is_some());

    // badvers: the 505 can be routed although the Via says SIP/7.0.
    let raw = read("rfc4475", "badvers.dat");
    let err = parse_message(&raw).unwrap_err();
    let resp = Rejection::from(&err).response_for(&parse_headers_lenient(&raw).unwrap(), Some("t"));
    assert_eq!(resp.status, 505);
}

#[test]
fn rfc5118_details() {
    let good = request("rfc5118", "port-ambiguous");
    assert!(good.uri.contains("[2001:db8::10:5070]"));
    let v = request("rfc5118", "mult-ip-in-header");
    assert_eq!(v.top_via().unwrap().host, "[2001:db8::9:1]");
    assert_eq!(v.top_via().unwrap().port, Some(6050));
    let r = request("rfc5118", "via-received-param-no-delim");
    assert_eq!(r.top_via().unwrap().params.value("received"), Some("2001:db8::9:255"));
}

fn all_messages() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let mut names: Vec<_> =
            fs::read_dir(data(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            if p.extension().is_some_and(|e| e == "tsv") {
                continue;
            }
            out.push(fs::read(p).unwrap());
        }
    }
    out
}

/// Everything that sees untrusted bytes, exercised together.
fn exercise(bytes: &[u8]) {
    if let Ok(SipMessage::Request(r)) = parse_message(bytes) {
        let _ = check_request(&r);
        let _ = r.contacts();
    }
    if let Some(h) = parse_headers_lenient(bytes) {
        let _ = Rejection::new(400, "Bad Request").response_for(&h, Some("t"));
    }
    let mut f = StreamFramer::new(4096);
    f.push(bytes);
    while let Some(m) = f.next_message() {
        if let Ok(m) = m {
            let _ = parse_message(&m);
        }
    }
}

#[test]
fn mutated_messages_never_panic() {
    let msgs = all_messages();
    assert!(msgs.len() >= 61);
    for (i, msg) in msgs.iter().enumerate() {
        for cut in 0..=msg.len() {
            exercise(&msg[..cut]);
        }
        let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + i as u64);
        for _ in 0..300 {
            let mut m = msg.clone();
            for _ in 0..rng.gen_range(1..=4) {
                if m.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..m.len());
                match rng.gen_range(0..4) {
                    0 => m[at] = rng.gen(),
                    1 => m[at] = *b"\r\n :;,<>\"%@[]\\/".get(rng.gen_range(0..16)).unwrap_or(&b' '),
                    2 => {
                        m.remove(at);
                    }
                    _ => m.insert(at, rng.gen()),
                }
            }
            exercise(&m);
        }
    }
}
