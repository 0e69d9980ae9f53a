//! SDP offer/answer (RFC 3264) for the codecs the appliance speaks: PCMU, PCMA, telephone-event, opus/48000/2.
//!
//! Parsing and serialization go through `rtc-sdp`; this module owns the policy: which audio
//! stream is accepted, which codec is chosen, what the answer says. One audio stream is
//! accepted per call; every other m-line is rejected with port 0, as RFC 3264 section 6 asks.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaDescription, MediaName, RangedPort};
use rtc_sdp::description::session::{Origin, TimeDescription, Timing};
use rtc_sdp::SessionDescription;

/// Packetization interval we send and announce (`a=ptime`).
pub const PTIME_MS: u32 = 20;
/// DTMF events we accept with telephone-event (RFC 4733): digits, `*`, `#`, A-D, flash.
pub const DTMF_EVENTS: &str = "0-16";
/// Payload type we use for telephone-event in our own offers.
pub const OFFER_DTMF_PAYLOAD_TYPE: u8 = 101;
/// Name on our `o=` and `s=` lines.
const SESSION_NAME: &str = "trunkguard";

/// An audio codec we can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecName {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus, always announced as opus/48000/2 (RFC 7587).
    Opus,
}

impl CodecName {
    /// Encoding name as written in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            CodecName::Pcmu => "PCMU",
            CodecName::Pcma => "PCMA",
            CodecName::Opus => "opus",
        }
    }

    /// True for the G.711 codecs we can play natively.
    pub fn is_g711(self) -> bool {
        matches!(self, CodecName::Pcmu | CodecName::Pcma)
    }
}

/// A negotiated codec: what goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Which codec.
    pub name: CodecName,
    /// RTP payload type, as the offerer numbered it.
    pub payload_type: u8,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channels as announced in `a=rtpmap` (1 for G.711, 2 for Opus).
    pub channels: u8,
}

impl Codec {
    /// PCMU on its static payload type.
    pub const PCMU: Codec =
        Codec { name: CodecName::Pcmu, payload_type: 0, clock_rate: 8000, channels: 1 };
    /// PCMA on its static payload type.
    pub const PCMA: Codec =
        Codec { name: CodecName::Pcma, payload_type: 8, clock_rate: 8000, channels: 1 };

    /// Opus on a dynamic payload type.
    pub fn opus(payload_type: u8) -> Codec {
        Codec { name: CodecName::Opus, payload_type, clock_rate: 48_000, channels: 2 }
    }

    /// The value of this codec's `a=rtpmap` line.
    fn rtpmap(&self) -> String {
        let name = self.name.encoding_name();
        if self.channels > 1 {
            format!("{} {}/{}/{}", self.payload_type, name, self.clock_rate, self.channels)
        } else {
            format!("{} {}/{}", self.payload_type, name, self.clock_rate)
        }
    }
}

/// The outcome of answering an offer: what to send, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The one codec we send and expect.
    pub codec: Codec,
    /// telephone-event payload type, when the offer had one at the codec's clock rate.
    pub dtmf_payload_type: Option<u8>,
    /// Where the offerer receives RTP (its `c=` address and `m=` port).
    pub remote_rtp: SocketAddr,
    /// Packetization interval we send and announced.
    pub ptime_ms: u32,
    /// The offer's `a=fmtp` parameters for the chosen codec (Opus: stereo, useinbandfec, ...).
    pub fmtp: Option<String>,
}

/// Our side of the answer (or offer): the RTP address we listen on, and the `o=` identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerParams {
    /// Address put in `c=` and `o=`.
    pub local_ip: IpAddr,
    /// RTP port put in `m=`.
    pub local_port: u16,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version; increment it for each new SDP in the same dialog.
    pub session_version: u64,
}

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not parseable SDP.
    #[error("unparseable SDP: {0}")]
    Parse(String),
    /// No audio stream we could take (none, all rejected with port 0, or not RTP/AVP).
    #[error("no usable audio stream in offer")]
    NoAudio,
    /// Audio offered, but no codec we support.
    #[error("no codec in common")]
    NoCommonCodec,
    /// The chosen stream has no usable connection address (missing, or not an IP literal).
    #[error("missing or unusable connection address")]
    BadConnection,
}

impl SdpError {
    /// SIP status for rejecting the INVITE that carried this offer.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Parse(_) => 400,
            SdpError::NoAudio | SdpError::NoCommonCodec | SdpError::BadConnection => 488,
        }
    }
}

/// Stream direction attribute (RFC 3264 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attributes(attrs: &[Attribute]) -> Option<Direction> {
        attrs.iter().find_map(|a| match a.key.as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        })
    }

    /// The direction an answerer puts opposite this offered one.
    fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// The codec (and DTMF) chosen in one offered m-line.
#[derive(Debug, Clone, Copy)]
struct Selection {
    codec: Codec,
    dtmf_payload_type: Option<u8>,
}

/// Answer an offer. Codec choice: the first codec in the offer's order that we support, but
/// prefer PCMU/PCMA over Opus (until the transcoding media engine lands we play G.711 natively).
pub fn answer(offer: &[u8], p: &AnswerParams) -> Result<(Negotiated, String), SdpError> {
    let sdp = parse(offer)?;
    let (index, selection) = choose_stream(&sdp)?;
    let chosen = &sdp.media_descriptions[index];
    let remote_rtp = remote_address(&sdp, chosen)?;
    let offered_direction = Direction::from_attributes(&chosen.attributes)
        .or_else(|| Direction::from_attributes(&sdp.attributes))
        .unwrap_or(Direction::SendRecv);

    let mut desc = session_skeleton(p);
    for (i, md) in sdp.media_descriptions.iter().enumerate() {
        let answered = if i == index {
            accepted_media(md, p.local_port, &selection, offered_direction.answer())
        } else {
            rejected_media(md)
        };
        desc.media_descriptions.push(answered);
    }
    let negotiated = Negotiated {
        codec: selection.codec,
        dtmf_payload_type: selection.dtmf_payload_type,
        remote_rtp,
        ptime_ms: PTIME_MS,
        fmtp: fmtp_of(chosen, selection.codec.payload_type),
    };
    Ok((negotiated, desc.marshal()))
}

/// The `a=fmtp:<pt> ...` parameters of payload type `pt` in a media description.
fn fmtp_of(md: &MediaDescription, pt: u8) -> Option<String> {
    let prefix = format!("{pt} ");
    md.attributes
        .iter()
        .filter(|a| a.key == "fmtp")
        .filter_map(|a| a.value.as_deref())
        .find_map(|v| v.strip_prefix(&prefix).map(|rest| rest.trim().to_string()))
}

/// Our offer (for outbound calls / re-INVITE without SDP): PCMU, PCMA, telephone-event.
pub fn offer(p: &AnswerParams) -> String {
    let mut desc = session_skeleton(p);
    let offered = MediaDescription {
        media_name: MediaName {
            media: "audio".to_owned(),
            port: port(p.local_port),
            protos: vec!["RTP".to_owned(), "AVP".to_owned()],
            formats: vec![
                Codec::PCMU.payload_type.to_string(),
                Codec::PCMA.payload_type.to_string(),
                OFFER_DTMF_PAYLOAD_TYPE.to_string(),
            ],
        },
        attributes: vec![
            value_attr("rtpmap", Codec::PCMU.rtpmap()),
            value_attr("rtpmap", Codec::PCMA.rtpmap()),
            value_attr("rtpmap", format!("{OFFER_DTMF_PAYLOAD_TYPE} telephone-event/8000")),
            value_attr("fmtp", format!("{OFFER_DTMF_PAYLOAD_TYPE} {DTMF_EVENTS}")),
            value_attr("ptime", PTIME_MS.to_string()),
            flag_attr(Direction::SendRecv.attribute()),
        ],
        ..Default::default()
    };
    desc.media_descriptions.push(offered);
    desc.marshal()
}

/// Reads the answer to our [`offer`] (outbound calls): the codec the answerer chose (the first
/// one we support in its m-line), its telephone-event payload type and where it receives RTP.
pub fn accept_answer(answer: &[u8]) -> Result<Negotiated, SdpError> {
    let sdp = parse(answer)?;
    let (index, selection) = choose_stream(&sdp)?;
    let chosen = &sdp.media_descriptions[index];
    Ok(Negotiated {
        codec: selection.codec,
        dtmf_payload_type: selection.dtmf_payload_type,
        remote_rtp: remote_address(&sdp, chosen)?,
        ptime_ms: PTIME_MS,
        fmtp: fmtp_of(chosen, selection.codec.payload_type),
    })
}

fn parse(offer: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(offer).map_err(|e| SdpError::Parse(e.to_string()))?;
    let sdp = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| SdpError::Parse(e.to_string()))?;
    Ok(sdp)
}

/// Picks the first usable audio m-line that has a codec we support.
fn choose_stream(sdp: &SessionDescription) -> Result<(usize, Selection), SdpError> {
    let mut saw_audio = false;
    for (i, md) in sdp.media_descriptions.iter().enumerate() {
        if !is_usable_audio(md) {
            continue;
        }
        saw_audio = true;
        if let Some(selection) = select_codec(md) {
            return Ok((i, selection));
        }
    }
    Err(if saw_audio { SdpError::NoCommonCodec } else { SdpError::NoAudio })
}

/// Audio, not rejected (port 0), over plain RTP (no SRTP).
fn is_usable_audio(md: &MediaDescription) -> bool {
    let proto = md.media_name.protos.join("/").to_ascii_uppercase();
    md.media_name.media == "audio"
        && md.media_name.port.value > 0
        && (proto == "RTP/AVP" || proto == "RTP/AVPF")
}

/// Payload types of an m-line, in offer order, skipping anything that is not 0..=127.
fn payload_types(md: &MediaDescription) -> impl Iterator<Item = u8> + '_ {
    md.media_name.formats.iter().filter_map(|f| f.parse::<u8>().ok()).filter(|pt| *pt < 128)
}

fn select_codec(md: &MediaDescription) -> Option<Selection> {
    let rtpmaps = md.codecs();
    let mut opus = None;
    let mut g711 = None;
    for pt in payload_types(md) {
        match classify(pt, rtpmaps.get(&pt)) {
            Some(c) if c.name.is_g711() => {
                g711 = Some(c);
                break;
            }
            Some(c) => {
                opus = opus.or(Some(c));
            }
            None => {}
        }
    }
    let codec = g711.or(opus)?;
    let dtmf_payload_type = payload_types(md).find(|pt| {
        rtpmaps.get(pt).is_some_and(|m| {
            m.name.eq_ignore_ascii_case("telephone-event") && m.clock_rate == codec.clock_rate
        })
    });
    Some(Selection { codec, dtmf_payload_type })
}

/// Maps one offered payload type to a codec we support, from its rtpmap or the static table.
fn classify(pt: u8, rtpmap: Option<&rtc_sdp::util::Codec>) -> Option<Codec> {
    let Some(map) = rtpmap.filter(|m| !m.name.is_empty()) else {
        return match pt {
            0 => Some(Codec::PCMU),
            8 => Some(Codec::PCMA),
            _ => None,
        };
    };
    let mono = matches!(map.encoding_parameters.as_str(), "" | "1");
    let name = map.name.to_ascii_lowercase();
    match (name.as_str(), map.clock_rate) {
        ("pcmu", 8000) if mono => Some(Codec { payload_type: pt, ..Codec::PCMU }),
        ("pcma", 8000) if mono => Some(Codec { payload_type: pt, ..Codec::PCMA }),
        ("opus", 48_000) if map.encoding_parameters == "2" => Some(Codec::opus(pt)),
        _ => None,
    }
}

/// The chosen stream's RTP address: media-level `c=` over session-level, plus the `m=` port.
fn remote_address(sdp: &SessionDescription, md: &MediaDescription) -> Result<SocketAddr, SdpError> {
    let conn = md
        .connection_information
        .as_ref()
        .or(sdp.connection_information.as_ref())
        .ok_or(SdpError::BadConnection)?;
    let raw = conn.address.as_ref().ok_or(SdpError::BadConnection)?;
    // Multicast addresses may carry /ttl and /count; the address is before the first '/'.
    let literal = raw.address.split('/').next().unwrap_or_default();
    let ip: IpAddr = literal.parse().map_err(|_| SdpError::BadConnection)?;
    let family_matches = match conn.address_type.as_str() {
        "IP4" => ip.is_ipv4(),
        "IP6" => ip.is_ipv6(),
        _ => false,
    };
    let port = u16::try_from(md.media_name.port.value).map_err(|_| SdpError::BadConnection)?;
    if !family_matches || port == 0 {
        return Err(SdpError::BadConnection);
    }
    Ok(SocketAddr::new(ip, port))
}

fn address_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

/// `v=`, `o=`, `s=`, `c=`, `t=` for our SDP.
fn session_skeleton(p: &AnswerParams) -> SessionDescription {
    SessionDescription {
        version: 0,
        origin: Origin {
            username: SESSION_NAME.to_owned(),
            session_id: p.session_id,
            session_version: p.session_version,
            network_type: "IN".to_owned(),
            address_type: address_type(p.local_ip).to_owned(),
            unicast_address: p.local_ip.to_string(),
        },
        session_name: SESSION_NAME.to_owned(),
        connection_information: Some(ConnectionInformation {
            network_type: "IN".to_owned(),
            address_type: address_type(p.local_ip).to_owned(),
            address: Some(Address { address: p.local_ip.to_string(), ttl: None, range: None }),
        }),
        time_descriptions: vec![TimeDescription {
            timing: Timing { start_time: 0, stop_time: 0 },
            repeat_times: vec![],
        }],
        ..Default::default()
    }
}

fn port(value: u16) -> RangedPort {
    // Lossless: isize is at least 32 bits on every target we build for.
    RangedPort { value: value as isize, range: None }
}

fn value_attr(key: &str, value: String) -> Attribute {
    Attribute::new(key.to_owned(), Some(value))
}

fn flag_attr(key: &str) -> Attribute {
    Attribute::new(key.to_owned(), None)
}

/// The answer's m-line for the stream we accept: the chosen codec, DTMF, ptime, direction.
fn accepted_media(
    offered: &MediaDescription,
    local_port: u16,
    selection: &Selection,
    direction: Direction,
) -> MediaDescription {
    let codec = selection.codec;
    let mut formats = vec![codec.payload_type.to_string()];
    let mut attributes = vec![value_attr("rtpmap", codec.rtpmap())];
    if let Some(pt) = selection.dtmf_payload_type {
        formats.push(pt.to_string());
        attributes.push(value_attr("rtpmap", format!("{pt} telephone-event/{}", codec.clock_rate)));
        attributes.push(value_attr("fmtp", format!("{pt} {DTMF_EVENTS}")));
    }
    attributes.push(value_attr("ptime", PTIME_MS.to_string()));
    attributes.push(flag_attr(direction.attribute()));
    MediaDescription {
        media_name: MediaName {
            media: offered.media_name.media.clone(),
            port: port(local_port),
            protos: offered.media_name.protos.clone(),
            formats,
        },
        attributes,
        ..Default::default()
    }
}

/// A rejected stream: same media, proto and formats, port 0, nothing else (RFC 3264 section 6).
fn rejected_media(offered: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media_name: MediaName {
            media: offered.media_name.media.clone(),
            port: port(0),
            protos: offered.media_name.protos.clone(),
            formats: offered.media_name.formats.clone(),
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn params() -> AnswerParams {
        AnswerParams {
            local_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            local_port: 40_000,
            session_id: 4242,
            session_version: 7,
        }
    }

    fn crlf(s: &str) -> Vec<u8> {
        s.trim_start().lines().map(|l| format!("{}\r\n", l.trim())).collect::<String>().into_bytes()
    }

    fn sdp_with(media: &str) -> Vec<u8> {
        crlf(&format!(
            "v=0\no=- 1 1 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n{}",
            media.trim()
        ))
    }

    /// Lines of the answer's m-sections, each starting with its `m=` line.
    fn media_sections(answer: &str) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for line in answer.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with("m=") {
                out.push(vec![line.to_owned()]);
            } else if let Some(last) = out.last_mut() {
                last.push(line.to_owned());
            }
        }
        out
    }

    const SIPP_UAC: &str = "
        v=0
        o=user1 53655765 2353687637 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=audio 6000 RTP/AVP 0
        a=rtpmap:0 PCMU/8000
    ";

    #[test]
    fn sipp_default_offer() {
        let (neg, sdp) = answer(&crlf(SIPP_UAC), &params()).unwrap();
        assert_eq!(neg.codec, Codec::PCMU);
        assert_eq!(neg.dtmf_payload_type, None);
        assert_eq!(neg.remote_rtp, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(neg.ptime_ms, 20);
        assert!(sdp.starts_with("v=0\r\no=trunkguard 4242 7 IN IP4 192.0.2.10\r\ns=trunkguard\r\n"));
        assert!(sdp.contains("\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"));
        let sections = media_sections(&sdp);
        assert_eq!(
            sections,
            vec![vec![
                "m=audio 40000 RTP/AVP 0".to_owned(),
                "a=rtpmap:0 PCMU/8000".to_owned(),
                "a=ptime:20".to_owned(),
                "a=sendrecv".to_owned(),
            ]]
        );
        assert!(sdp.ends_with("\r\n"));
    }

    #[test]
    fn static_payload_type_without_rtpmap() {
        let offer = sdp_with("m=audio 6000 RTP/AVP 8 0");
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.codec, Codec::PCMA);
        assert!(sdp.contains("m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"));
    }

    #[test]
    fn opus_first_offer_prefers_g711_and_echoes_dtmf() {
        let offer = sdp_with(
            "m=audio 20000 RTP/AVP 111 0 8 101
             a=rtpmap:111 opus/48000/2
             a=fmtp:111 minptime=10; useinbandfec=1
             a=rtpmap:0 PCMU/8000
             a=rtpmap:8 PCMA/8000
             a=rtpmap:101 telephone-event/8000
             a=fmtp:101 0-16
             a=ptime:20
             a=sendrecv",
        );
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.codec, Codec::PCMU);
        assert_eq!(neg.dtmf_payload_type, Some(101));
        assert_eq!(neg.remote_rtp, "198.51.100.1:20000".parse().unwrap());
        let m = &media_sections(&sdp)[0];
        assert_eq!(m[0], "m=audio 40000 RTP/AVP 0 101");
        assert!(m.contains(&"a=rtpmap:101 telephone-event/8000".to_owned()));
        assert!(m.contains(&"a=fmtp:101 0-16".to_owned()));
        assert!(!sdp.contains("opus"));
    }

    #[test]
    fn g711_order_follows_the_offer() {
        let offer = sdp_with("m=audio 20000 RTP/AVP 111 8 0\na=rtpmap:111 opus/48000/2");
        assert_eq!(answer(&offer, &params()).unwrap().0.codec, Codec::PCMA);
    }

    #[test]
    fn opus_only_offer_takes_opus_and_matching_dtmf_clock() {
        let offer = sdp_with(
            "m=audio 20000 RTP/AVP 96 101 110
             a=rtpmap:96 OPUS/48000/2
             a=rtpmap:101 telephone-event/8000
             a=rtpmap:110 telephone-event/48000",
        );
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.codec, Codec::opus(96));
        assert_eq!(neg.codec.channels, 2);
        assert_eq!(neg.dtmf_payload_type, Some(110));
        let m = &media_sections(&sdp)[0];
        assert_eq!(m[0], "m=audio 40000 RTP/AVP 96 110");
        assert!(m.contains(&"a=rtpmap:96 opus/48000/2".to_owned()));
        assert!(m.contains(&"a=rtpmap:110 telephone-event/48000".to_owned()));
    }

    #[test]
    fn opus_with_only_8k_dtmf_has_no_dtmf() {
        let offer = sdp_with(
            "m=audio 20000 RTP/AVP 96 101
             a=rtpmap:96 opus/48000/2
             a=rtpmap:101 telephone-event/8000",
        );
        let (neg, _) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.dtmf_payload_type, None);
    }

    #[test]
    fn pcma_only_carrier_offer_with_media_level_connection() {
        let offer = crlf(
            "v=0
             o=SBC 1234567890 1 IN IP4 203.0.113.5
             s=SBC call
             t=0 0
             m=audio 16384 RTP/AVP 8 96
             c=IN IP4 203.0.113.77
             b=AS:64
             a=rtpmap:8 PCMA/8000
             a=rtpmap:96 telephone-event/8000
             a=fmtp:96 0-15
             a=ptime:20
             a=maxptime:40
             a=sendrecv",
        );
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.codec, Codec::PCMA);
        assert_eq!(neg.dtmf_payload_type, Some(96));
        assert_eq!(neg.remote_rtp, "203.0.113.77:16384".parse().unwrap());
        assert!(sdp.contains("m=audio 40000 RTP/AVP 8 96\r\n"));
        assert!(sdp.contains("a=fmtp:96 0-16\r\n"));
    }

    #[test]
    fn media_connection_overrides_session_connection() {
        let offer = sdp_with("m=audio 7000 RTP/AVP 0\nc=IN IP4 10.9.8.7");
        let (neg, _) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.remote_rtp, "10.9.8.7:7000".parse().unwrap());
    }

    #[test]
    fn dynamic_pcmu_name_is_case_insensitive() {
        let offer = sdp_with("m=audio 7000 RTP/AVP 97\na=rtpmap:97 pcmu/8000");
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.codec, Codec { payload_type: 97, ..Codec::PCMU });
        assert!(sdp.contains("a=rtpmap:97 PCMU/8000"));
    }

    #[test]
    fn video_and_audio_rejects_video_with_port_zero() {
        let offer = sdp_with(
            "m=video 9000 RTP/AVP 96 31
             a=rtpmap:96 H264/90000
             m=audio 9002 RTP/AVP 0 101
             a=rtpmap:101 telephone-event/8000",
        );
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.remote_rtp.port(), 9002);
        let sections = media_sections(&sdp);
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0], vec!["m=video 0 RTP/AVP 96 31".to_owned()]);
        assert_eq!(sections[1][0], "m=audio 40000 RTP/AVP 0 101");
    }

    #[test]
    fn rejected_and_extra_audio_streams_get_port_zero() {
        let offer = sdp_with(
            "m=audio 0 RTP/AVP 0
             m=audio 5000 RTP/AVP 18
             m=audio 5002 RTP/AVP 8
             m=audio 5004 RTP/AVP 0",
        );
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.codec, Codec::PCMA);
        assert_eq!(neg.remote_rtp.port(), 5002);
        let lines: Vec<String> = media_sections(&sdp).into_iter().map(|s| s[0].clone()).collect();
        assert_eq!(
            lines,
            vec![
                "m=audio 0 RTP/AVP 0",
                "m=audio 0 RTP/AVP 18",
                "m=audio 40000 RTP/AVP 8",
                "m=audio 0 RTP/AVP 0"
            ]
        );
    }

    #[test]
    fn only_rejected_or_secure_audio_is_no_audio() {
        let all_zero = sdp_with("m=audio 0 RTP/AVP 0");
        assert_eq!(answer(&all_zero, &params()).unwrap_err(), SdpError::NoAudio);
        let savp =
            sdp_with("m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc");
        assert_eq!(answer(&savp, &params()).unwrap_err(), SdpError::NoAudio);
        let video = sdp_with("m=video 5000 RTP/AVP 31");
        assert_eq!(answer(&video, &params()).unwrap_err(), SdpError::NoAudio);
        let none = crlf("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0");
        assert_eq!(answer(&none, &params()).unwrap_err(), SdpError::NoAudio);
        assert_eq!(SdpError::NoAudio.status_code(), 488);
    }

    #[test]
    fn no_common_codec_is_488() {
        let offer = sdp_with(
            "m=audio 5000 RTP/AVP 18 9 101
             a=rtpmap:18 G729/8000
             a=rtpmap:9 G722/8000
             a=rtpmap:101 telephone-event/8000",
        );
        let err = answer(&offer, &params()).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec);
        assert_eq!(err.status_code(), 488);
        // A remapped static payload type does not count as PCMU.
        let remapped = sdp_with("m=audio 5000 RTP/AVP 0\na=rtpmap:0 G729/8000");
        assert_eq!(answer(&remapped, &params()).unwrap_err(), SdpError::NoCommonCodec);
        // Opus must be 48000/2.
        let mono_opus = sdp_with("m=audio 5000 RTP/AVP 96\na=rtpmap:96 opus/48000");
        assert_eq!(answer(&mono_opus, &params()).unwrap_err(), SdpError::NoCommonCodec);
    }

    #[test]
    fn direction_is_mirrored() {
        for (offered, expected) in [
            ("sendonly", "recvonly"),
            ("recvonly", "sendonly"),
            ("inactive", "inactive"),
            ("sendrecv", "sendrecv"),
        ] {
            let offer = sdp_with(&format!("m=audio 5000 RTP/AVP 0\na={offered}"));
            let (_, sdp) = answer(&offer, &params()).unwrap();
            let m = &media_sections(&sdp)[0];
            assert_eq!(m.last().unwrap(), &format!("a={expected}"), "offered {offered}");
            let directions = ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"];
            let count = sdp.split("\r\n").filter(|l| directions.contains(l)).count();
            assert_eq!(count, 1, "exactly one direction attribute");
        }
    }

    #[test]
    fn session_level_direction_applies_unless_media_overrides() {
        let session_hold = crlf(
            "v=0\no=- 1 2 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\na=sendonly\nm=audio 5000 RTP/AVP 0",
        );
        let (_, sdp) = answer(&session_hold, &params()).unwrap();
        assert!(sdp.contains("a=recvonly\r\n"));
        let overridden = crlf(
            "v=0\no=- 1 2 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\na=sendonly\nm=audio 5000 RTP/AVP 0\na=sendrecv",
        );
        let (_, sdp) = answer(&overridden, &params()).unwrap();
        assert!(sdp.contains("a=sendrecv\r\n"));
        assert!(!sdp.contains("a=recvonly"));
    }

    #[test]
    fn ipv6_offer_and_answer() {
        let offer = crlf(
            "v=0\no=- 1 1 IN IP6 2001:db8::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\nm=audio 6000 RTP/AVP 0",
        );
        let mut p = params();
        p.local_ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
        let (neg, sdp) = answer(&offer, &p).unwrap();
        assert_eq!(neg.remote_rtp, "[2001:db8::1]:6000".parse().unwrap());
        assert!(sdp.contains("o=trunkguard 4242 7 IN IP6 2001:db8::10\r\n"));
        assert!(sdp.contains("c=IN IP6 2001:db8::10\r\n"));
    }

    #[test]
    fn bad_connection_addresses() {
        let fqdn = crlf(
            "v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IP4 media.example.com\nt=0 0\nm=audio 6000 RTP/AVP 0",
        );
        assert_eq!(answer(&fqdn, &params()).unwrap_err(), SdpError::BadConnection);
        let missing = crlf("v=0\no=- 1 1 IN IP4 a\ns=-\nt=0 0\nm=audio 6000 RTP/AVP 0");
        assert_eq!(answer(&missing, &params()).unwrap_err(), SdpError::BadConnection);
        let wrong_family =
            crlf("v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IP4 ::1\nt=0 0\nm=audio 6000 RTP/AVP 0");
        assert_eq!(answer(&wrong_family, &params()).unwrap_err(), SdpError::BadConnection);
        let ttl = crlf(
            "v=0\no=- 1 1 IN IP4 a\ns=-\nc=IN IP4 224.2.1.1/127\nt=0 0\nm=audio 6000 RTP/AVP 0",
        );
        assert_eq!(
            answer(&ttl, &params()).unwrap().0.remote_rtp,
            "224.2.1.1:6000".parse().unwrap()
        );
    }

    #[test]
    fn hold_address_zero_is_accepted() {
        let offer = crlf(
            "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 6000 RTP/AVP 0",
        );
        let (neg, _) = answer(&offer, &params()).unwrap();
        assert_eq!(neg.remote_rtp, "0.0.0.0:6000".parse().unwrap());
    }

    #[test]
    fn lf_only_line_endings_parse() {
        let offer = SIPP_UAC.trim().lines().map(|l| format!("{}\n", l.trim())).collect::<String>();
        assert_eq!(answer(offer.as_bytes(), &params()).unwrap().0.codec, Codec::PCMU);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for bad in [
            &b""[..],
            b"hello world",
            b"v=1\r\n",
            b"\xff\xfe\x00garbage",
            b"v=0\r\no=- x y IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio notaport RTP/AVP 0\r\n",
        ] {
            let err = answer(bad, &params()).unwrap_err();
            assert!(matches!(err, SdpError::Parse(_)), "{bad:?} gave {err:?}");
            assert_eq!(err.status_code(), 400);
        }
    }

    #[test]
    fn truncations_and_random_bytes_never_panic() {
        let offer = sdp_with(
            "m=video 9000 RTP/AVP 96\na=rtpmap:96 H264/90000
             m=audio 20000 RTP/AVP 111 0 101
             a=rtpmap:111 opus/48000/2
             a=rtpmap:101 telephone-event/8000
             a=fmtp:101 0-16
             a=sendonly",
        );
        assert!(answer(&offer, &params()).is_ok());
        for n in 0..offer.len() {
            let _ = answer(&offer[..n], &params());
        }
        let mut rng = SmallRng::seed_from_u64(3264);
        for _ in 0..2_000 {
            let mut mutated = offer.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..mutated.len());
                mutated[i] = rng.gen();
            }
            let _ = answer(&mutated, &params());
            let len = rng.gen_range(0..200);
            let noise: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = answer(&noise, &params());
        }
    }

    #[test]
    fn answer_reparses_and_renegotiates_the_same_codec() {
        let offer = sdp_with(
            "m=audio 20000 RTP/AVP 111 8 101
             a=rtpmap:111 opus/48000/2
             a=rtpmap:101 telephone-event/8000",
        );
        let (neg, sdp) = answer(&offer, &params()).unwrap();
        let (again, _) = answer(sdp.as_bytes(), &params()).unwrap();
        assert_eq!(again.codec, neg.codec);
        assert_eq!(again.dtmf_payload_type, neg.dtmf_payload_type);
        assert_eq!(again.remote_rtp, "192.0.2.10:40000".parse().unwrap());
    }

    #[test]
    fn our_offer_is_answerable_and_lists_g711_and_dtmf() {
        let sdp = offer(&params());
        assert!(sdp.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"));
        assert!(sdp.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(sdp.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(sdp.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
        assert!(sdp.contains("a=ptime:20\r\na=sendrecv\r\n"));
        let (neg, _) = answer(sdp.as_bytes(), &params()).unwrap();
        assert_eq!(neg.codec, Codec::PCMU);
        assert_eq!(neg.dtmf_payload_type, Some(101));
        assert_eq!(neg.remote_rtp, "192.0.2.10:40000".parse().unwrap());
    }
}

#[cfg(test)]
mod fmtp_tests {
    use super::*;

    #[test]
    fn the_chosen_codecs_fmtp_is_carried() {
        let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
            m=audio 7000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\n\
            a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n\
            a=fmtp:101 0-16\r\n";
        let p = AnswerParams {
            local_ip: "127.0.0.1".parse().unwrap(),
            local_port: 20000,
            session_id: 1,
            session_version: 1,
        };
        let (n, _) = answer(offer.as_bytes(), &p).unwrap();
        assert_eq!(n.codec.name, CodecName::Opus);
        assert_eq!(n.fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
        assert_eq!(n.dtmf_payload_type, Some(101));
    }
}
