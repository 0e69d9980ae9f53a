//! HTTP digest authentication (RFC 2617, and the MD5 subset of RFC 7616 / RFC 8760) for REGISTER
//! and INVITE challenges: parsing a `WWW-Authenticate` / `Proxy-Authenticate` challenge,
//! computing the `Authorization` / `Proxy-Authorization` value, and a server-side verifier.
//!
//! Supported: algorithm `MD5` (default when absent) and `MD5-sess`; `qop=auth` when offered,
//! otherwise the RFC 2069 form without qop. `auth-int` alone and other algorithms are errors.

use md5::{Digest as _, Md5};
use thiserror::Error;

/// Why a challenge could not be parsed or answered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DigestError {
    #[error("authentication scheme is not Digest")]
    NotDigest,
    #[error("malformed digest parameters")]
    Malformed,
    #[error("digest parameter `{0}` is missing")]
    MissingParam(&'static str),
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    #[error("no supported qop in `{0}` (only `auth`)")]
    UnsupportedQop(String),
}

/// The digest hash algorithm named by a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    /// Anything else (e.g. `SHA-256`); kept so the caller can pick another challenge.
    Other(String),
}

impl Algorithm {
    fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("MD5") {
            Algorithm::Md5
        } else if s.eq_ignore_ascii_case("MD5-sess") {
            Algorithm::Md5Sess
        } else {
            Algorithm::Other(s.to_string())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Other(s) => s,
        }
    }
}

/// A parsed `Digest` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `None` when the challenge omitted `algorithm` (which means MD5).
    pub algorithm: Option<Algorithm>,
    /// The offered qop tokens, lower-cased; empty when absent (RFC 2069 mode).
    pub qop: Vec<String>,
    pub stale: bool,
}

impl Challenge {
    /// Parses a `WWW-Authenticate` or `Proxy-Authenticate` header value.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let params = parse_digest_params(value)?;
        let get = |name: &str| find(&params, name).map(str::to_string);
        let qop = find(&params, "qop")
            .map(|q| {
                q.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::MissingParam("realm"))?,
            nonce: get("nonce").ok_or(DigestError::MissingParam("nonce"))?,
            opaque: get("opaque"),
            algorithm: find(&params, "algorithm").map(Algorithm::parse),
            qop,
            stale: find(&params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    fn effective_algorithm(&self) -> &Algorithm {
        self.algorithm.as_ref().unwrap_or(&Algorithm::Md5)
    }
}

/// Computes the `Authorization` (or `Proxy-Authorization`) header value answering `ch`.
///
/// `nc` is the nonce count for this nonce (first use = 1); it is only sent when qop is used.
pub fn authorization(
    ch: &Challenge,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    let algorithm = ch.effective_algorithm();
    if let Algorithm::Other(name) = algorithm {
        return Err(DigestError::UnsupportedAlgorithm(name.clone()));
    }
    let use_qop = match ch.qop.as_slice() {
        [] => false,
        offered if offered.iter().any(|q| q == "auth") => true,
        offered => return Err(DigestError::UnsupportedQop(offered.join(","))),
    };
    let nc_hex = format!("{nc:08x}");
    let qop = use_qop.then_some(("auth", nc_hex.as_str(), cnonce));
    let response =
        compute_response(algorithm, user, &ch.realm, password, &ch.nonce, method, uri, qop);

    let mut out = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\"",
        quote(user),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri),
        response
    );
    if let Some(alg) = &ch.algorithm {
        out.push_str(&format!(", algorithm={}", alg.as_str()));
    }
    if use_qop {
        out.push_str(&format!(", cnonce=\"{}\", qop=auth, nc={nc_hex}", quote(cnonce)));
    }
    if let Some(opaque) = &ch.opaque {
        out.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
    }
    Ok(out)
}

/// Server-side check of an `Authorization` value: the realm matches and the response is right
/// for `password`. The nonce itself is not validated (no server nonce state here).
pub fn verify(authorization: &str, method: &str, password: &str, expected_realm: &str) -> bool {
    let Ok(params) = parse_digest_params(authorization) else {
        return false;
    };
    let field = |name: &str| find(&params, name);
    let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) =
        (field("username"), field("realm"), field("nonce"), field("uri"), field("response"))
    else {
        return false;
    };
    if realm != expected_realm {
        return false;
    }
    let algorithm = field("algorithm").map_or(Algorithm::Md5, Algorithm::parse);
    if matches!(algorithm, Algorithm::Other(_)) {
        return false;
    }
    let qop = match field("qop") {
        None => None,
        Some(q) if q.eq_ignore_ascii_case("auth") => match (field("nc"), field("cnonce")) {
            (Some(nc), Some(cnonce)) => Some(("auth", nc, cnonce)),
            _ => return false,
        },
        Some(_) => return false,
    };
    let expected = compute_response(&algorithm, user, realm, password, nonce, method, uri, qop);
    expected.eq_ignore_ascii_case(response)
}

fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

/// The request-digest; `qop` is `(qop, nc, cnonce)` when qop is in use.
#[allow(clippy::too_many_arguments)]
fn compute_response(
    algorithm: &Algorithm,
    user: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let mut ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    if *algorithm == Algorithm::Md5Sess {
        let cnonce = qop.map_or("", |(_, _, c)| c);
        ha1 = md5_hex(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some((qop, nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

fn find<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Splits `Digest k=v, k="v", ...` into unquoted (name, value) pairs.
fn parse_digest_params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            name.push(c);
        }
        let name = name.trim().to_string();
        if chars.next() != Some('=') || name.is_empty() || name.contains(char::is_whitespace) {
            return Err(DigestError::Malformed);
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let val = if chars.peek() == Some(&'"') {
            chars.next();
            read_quoted(&mut chars)?
        } else {
            let mut token = String::new();
            while let Some(c) = chars.next_if(|c| *c != ',') {
                token.push(c);
            }
            token.trim().to_string()
        };
        params.push((name, val));
    }
    Ok(params)
}

fn read_quoted(chars: &mut impl Iterator<Item = char>) -> Result<String, DigestError> {
    let mut out = String::new();
    loop {
        match chars.next() {
            Some('"') => return Ok(out),
            Some('\\') => out.push(chars.next().ok_or(DigestError::Malformed)?),
            Some(c) => out.push(c),
            None => return Err(DigestError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC2617_CHALLENGE: &str = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
        nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

    #[test]
    fn parses_a_full_challenge() {
        let ch = Challenge::parse(
            "Digest realm=\"sip.example.com\", nonce=\"abc, def\", qop=\"auth,auth-int\", \
             opaque=\"xyz\", algorithm=MD5, stale=TRUE",
        )
        .unwrap();
        assert_eq!(ch.realm, "sip.example.com");
        assert_eq!(ch.nonce, "abc, def");
        assert_eq!(ch.qop, vec!["auth", "auth-int"]);
        assert_eq!(ch.opaque.as_deref(), Some("xyz"));
        assert_eq!(ch.algorithm, Some(Algorithm::Md5));
        assert!(ch.stale);
    }

    #[test]
    fn rejects_bad_challenges() {
        assert_eq!(Challenge::parse("Basic realm=\"x\""), Err(DigestError::NotDigest));
        assert_eq!(Challenge::parse("Digest nonce=\"n\""), Err(DigestError::MissingParam("realm")));
        assert_eq!(
            Challenge::parse("Digest realm=\"unterminated, nonce=\"n\""),
            Err(DigestError::Malformed)
        );
        assert!(Challenge::parse("").is_err());
        assert!(Challenge::parse("Digest ,,, = ").is_err());
        assert_eq!(Challenge::parse("Digest realm=\"r\", nonce"), Err(DigestError::Malformed));
    }

    #[test]
    fn rfc2617_section_3_5_example() {
        let ch = Challenge::parse(RFC2617_CHALLENGE).unwrap();
        let auth =
            authorization(&ch, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1)
                .unwrap();
        assert!(auth.contains("response=\"6629fae49393a05397450978507c4ef1\""), "{auth}");
        assert!(auth.contains("qop=auth, nc=00000001"), "{auth}");
        assert!(auth.contains("cnonce=\"0a4f113b\""), "{auth}");
        assert!(auth.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""), "{auth}");
        assert!(!auth.contains("algorithm"), "{auth}");
        assert!(verify(&auth, "GET", "Circle Of Life", "testrealm@host.com"));
        assert!(!verify(&auth, "GET", "wrong", "testrealm@host.com"));
        assert!(!verify(&auth, "POST", "Circle Of Life", "testrealm@host.com"));
        assert!(!verify(&auth, "GET", "Circle Of Life", "other"));
    }

    #[test]
    fn rfc2069_form_without_qop() {
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
        )
        .unwrap();
        let auth = authorization(&ch, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "x", 1)
            .unwrap();
        // MD5(HA1:nonce:HA2), computed independently (Python hashlib) for this input.
        assert!(auth.contains("response=\"670fd8c2df070c60b045671b8b24ff02\""), "{auth}");
        assert!(!auth.contains("qop") && !auth.contains("nc=") && !auth.contains("cnonce"));
        assert!(verify(&auth, "GET", "Circle Of Life", "testrealm@host.com"));
    }

    #[test]
    fn md5_sess_round_trips_and_differs_from_md5() {
        let base = "Digest realm=\"r\", nonce=\"n\", qop=auth";
        let md5 = Challenge::parse(base).unwrap();
        let sess = Challenge::parse(&format!("{base}, algorithm=MD5-sess")).unwrap();
        let a = authorization(&md5, "REGISTER", "sip:r", "u", "p", "c", 2).unwrap();
        let b = authorization(&sess, "REGISTER", "sip:r", "u", "p", "c", 2).unwrap();
        assert!(b.contains("algorithm=MD5-sess"));
        assert!(verify(&a, "REGISTER", "p", "r"));
        assert!(verify(&b, "REGISTER", "p", "r"));
        let resp = |s: &str| s.split("response=\"").nth(1).unwrap()[..32].to_string();
        assert_ne!(resp(&a), resp(&b));
    }

    #[test]
    fn unsupported_algorithm_and_qop_are_errors() {
        let sha = Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256").unwrap();
        assert_eq!(
            authorization(&sha, "REGISTER", "sip:r", "u", "p", "c", 1),
            Err(DigestError::UnsupportedAlgorithm("SHA-256".into()))
        );
        let int = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"").unwrap();
        assert!(matches!(
            authorization(&int, "REGISTER", "sip:r", "u", "p", "c", 1),
            Err(DigestError::UnsupportedQop(_))
        ));
    }

    #[test]
    fn quotes_are_escaped_and_verify_rejects_garbage() {
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\\\"q\", qop=auth").unwrap();
        assert_eq!(ch.nonce, "n\"q");
        let auth = authorization(&ch, "INVITE", "sip:a@b", "we\"ird", "p", "c", 1).unwrap();
        assert!(verify(&auth, "INVITE", "p", "r"));
        assert!(!verify("Digest username=\"u\"", "INVITE", "p", "r"));
        assert!(!verify("garbage", "INVITE", "p", "r"));
    }
}
