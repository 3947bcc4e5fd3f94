//! Negotiating permessage-deflate (RFC 7692 §5, §7.1).
//!
//! The server reads the client's offers in order and accepts the first it can: an offer
//! with a malformed, duplicate or unknown parameter, or a window size outside 8..15, is
//! declined (§5.1: the server must not accept an offer it does not fully understand), and
//! a later offer may still be taken. The client checks the server's response the same
//! way and fails the connection on anything it did not offer or cannot parse (§5.2).

use super::{DeflateConfig, EXTENSION};
use crate::handshake::HandshakeError;

/// The negotiated parameters, as they appear in the server's response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    /// The server resets its compressor after each message (§7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (§7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The largest window the server compresses with, 8..15; `None`: 15 (§7.1.2.1).
    pub server_max_window_bits: Option<u8>,
    /// The largest window the client compresses with, 8..15; `None`: 15 (§7.1.2.2).
    pub client_max_window_bits: Option<u8>,
}

impl Params {
    /// The server's window size in bits (15 when not limited).
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The client's window size in bits (15 when not limited).
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(15)
    }

    /// The `Sec-WebSocket-Extensions` value of a server's response accepting an offer.
    pub fn to_header(&self) -> String {
        let mut out = EXTENSION.to_owned();
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// One element of an extension list (RFC 6455 §9.1): a name and its parameters, quoted
/// values unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<String>)>,
}

/// RFC 7230 §3.2.6 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A parameter value: a token, or a quoted string (backslash escapes allowed) whose
/// content is a token, as §7.1 requires for this extension's values.
fn value(raw: &str) -> Result<String, String> {
    let unquoted = match raw.strip_prefix('"') {
        None => raw.to_owned(),
        Some(rest) => {
            let inner = rest
                .strip_suffix('"')
                .ok_or_else(|| format!("unterminated quoted value {raw}"))?;
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().ok_or("a quoted value ends in a backslash")?),
                    '"' => return Err(format!("stray quote in {raw}")),
                    c => out.push(c),
                }
            }
            out
        }
    };
    if !is_token(&unquoted) {
        return Err(format!("parameter value {raw} is not a token"));
    }
    Ok(unquoted)
}

/// Parses `name *( ";" param [ "=" value ] )` with optional whitespace around separators.
fn parse_element(s: &str) -> Result<Element<'_>, String> {
    let mut parts = s.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !is_token(name) {
        return Err(format!("extension name {name:?} is not a token"));
    }
    let mut params = Vec::new();
    for part in parts {
        let (key, val) = match part.split_once('=') {
            None => (part, None),
            Some((k, v)) => (k.trim_end(), Some(value(v.trim_start())?)),
        };
        if !is_token(key) {
            return Err(format!("parameter name {key:?} is not a token"));
        }
        params.push((key, val));
    }
    Ok(Element { name, params })
}

/// A window size: "8" to "15", no sign, no leading zero (§7.1.2: `1*DIGIT` 8..15).
fn window_bits(name: &str, val: &str) -> Result<u8, String> {
    match val {
        "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15" => {
            val.parse().map_err(|_| format!("{name}={val}"))
        }
        _ => Err(format!("{name}={val} is not a window size from 8 to 15")),
    }
}

/// The parameters of an offer (or of a response, where every window size has a value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value (the client accepts any limit).
    client_max_window_bits: Option<Option<u8>>,
}

/// Reads the parameters of a permessage-deflate element; any unknown, duplicate or
/// malformed one makes the whole element unacceptable (§7, §7.1).
fn read_params(params: &[(&str, Option<String>)], response: bool) -> Result<Offer, String> {
    let mut offer = Offer::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, val) in params {
        let lower = key.to_ascii_lowercase();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(key)) {
            return Err(format!("parameter {key} appears twice"));
        }
        seen.push(key);
        match (lower.as_str(), val) {
            ("server_no_context_takeover", None) => offer.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => offer.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => {
                offer.server_max_window_bits = Some(window_bits(key, v)?);
            }
            ("client_max_window_bits", Some(v)) => {
                offer.client_max_window_bits = Some(Some(window_bits(key, v)?));
            }
            // §7.1.2.2: a client may offer it without a value; a response must give one.
            ("client_max_window_bits", None) if !response => {
                offer.client_max_window_bits = Some(None);
            }
            ("server_no_context_takeover" | "client_no_context_takeover", Some(v)) => {
                return Err(format!("{key} takes no value, got {v}"));
            }
            ("server_max_window_bits" | "client_max_window_bits", None) => {
                return Err(format!("{key} needs a value"));
            }
            _ => return Err(format!("unknown parameter {key}")),
        }
    }
    Ok(offer)
}

/// The server's choice: the first acceptable permessage-deflate offer among `offers` (the
/// elements of the client's `Sec-WebSocket-Extensions`, in order), answered as `config`
/// prefers. `None` when there is none: the connection goes on uncompressed.
pub fn negotiate(offers: &[String], config: &DeflateConfig) -> Option<Params> {
    if !config.enabled {
        return None;
    }
    offers.iter().find_map(|raw| {
        let element = parse_element(raw).ok()?;
        if !element.name.eq_ignore_ascii_case(EXTENSION) {
            return None;
        }
        let offer = read_params(&element.params, false).ok()?;
        Some(accept(&offer, config))
    })
}

/// The response to an acceptable offer.
fn accept(offer: &Offer, config: &DeflateConfig) -> Params {
    let own = config.max_window_bits.clamp(9, 15);
    // §7.1.2.1: an offered limit must be answered with it or less; unasked, the server
    // may still declare a smaller window so the client allocates less.
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(limit) => Some(limit.min(own)),
        None => (own < 15).then_some(own),
    };
    // §7.1.2.2: only if offered, and only to ask for less than the client would use.
    let client_max_window_bits = offer.client_max_window_bits.and_then(|offered| {
        let cap = offered.unwrap_or(15);
        let want = config.peer_max_window_bits.clamp(8, 15).min(cap);
        (want < cap).then_some(want)
    });
    Params {
        // §7.1.1.1 lets the server declare it unasked; an offered one must be honoured.
        server_no_context_takeover: offer.server_no_context_takeover || !config.context_takeover,
        // §7.1.1.2 lets the server ask for it whether or not the client offered it.
        client_no_context_takeover: !config.peer_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    }
}

/// The client's `Sec-WebSocket-Extensions` offer for `config`. When it asks the server to
/// drop its context or limit its window, a plain offer follows, so a server that declines
/// those requests can still compress.
pub fn offer(config: &DeflateConfig) -> String {
    let mut own = format!("{EXTENSION}; client_max_window_bits");
    if config.max_window_bits < 15 {
        own.push_str(&format!("={}", config.max_window_bits.clamp(9, 15)));
    }
    if !config.context_takeover {
        own.push_str("; client_no_context_takeover");
    }
    let mut first = own.clone();
    if !config.peer_context_takeover {
        first.push_str("; server_no_context_takeover");
    }
    if config.peer_max_window_bits < 15 {
        let bits = config.peer_max_window_bits.clamp(8, 15);
        first.push_str(&format!("; server_max_window_bits={bits}"));
    }
    if first == own {
        first
    } else {
        format!("{first}, {own}")
    }
}

/// The client's check of the server's `Sec-WebSocket-Extensions` (its elements, in order).
/// `offered` is the configuration the offer was made from, `None` if none was made. An
/// extension that was not offered, permessage-deflate twice, or a parameter that is
/// unknown, duplicate, malformed or out of range fails the handshake (RFC 6455 §4.1,
/// RFC 7692 §5.2, §7.1).
pub fn check_response(
    elements: &[String],
    offered: Option<&DeflateConfig>,
) -> Result<Option<Params>, HandshakeError> {
    let fail = |why: String| Err(HandshakeError::Extension(why));
    let mut accepted = None;
    for raw in elements {
        let element = match parse_element(raw) {
            Ok(element) => element,
            Err(why) => return fail(why),
        };
        if offered.is_none() || !element.name.eq_ignore_ascii_case(EXTENSION) {
            return fail(format!("{} was not offered", element.name));
        }
        if accepted.is_some() {
            return fail(format!("{EXTENSION} answered twice"));
        }
        let response = match read_params(&element.params, true) {
            Ok(response) => response,
            Err(why) => return fail(why),
        };
        let client_bits = response.client_max_window_bits.flatten();
        if let (Some(bits), Some(config)) = (client_bits, offered) {
            if config.max_window_bits < 15 && bits > config.max_window_bits.clamp(9, 15) {
                return fail(format!(
                    "client_max_window_bits={bits} is above the {} offered",
                    config.max_window_bits
                ));
            }
        }
        accepted = Some(Params {
            server_no_context_takeover: response.server_no_context_takeover,
            client_no_context_takeover: response.client_no_context_takeover,
            server_max_window_bits: response.server_max_window_bits,
            client_max_window_bits: client_bits,
        });
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> DeflateConfig {
        DeflateConfig::enabled()
    }

    fn keep_all() -> DeflateConfig {
        DeflateConfig {
            context_takeover: true,
            peer_context_takeover: true,
            ..on()
        }
    }

    fn server(offers: &[&str], config: &DeflateConfig) -> Option<Params> {
        let offers: Vec<String> = offers.iter().map(|s| (*s).to_owned()).collect();
        negotiate(&offers, config)
    }

    fn client(response: &[&str]) -> Result<Option<Params>, HandshakeError> {
        let elements: Vec<String> = response.iter().map(|s| (*s).to_owned()).collect();
        check_response(&elements, Some(&on()))
    }

    #[test]
    fn rfc7692_7_default_server_answer_drops_both_contexts() {
        let p = server(&["permessage-deflate"], &on()).unwrap();
        assert_eq!(
            p.to_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            server(&["permessage-deflate"], &DeflateConfig::default()),
            None
        );
    }

    #[test]
    fn rfc7692_7_1_1_context_takeover_parameters() {
        // Offered server_no_context_takeover must be honoured even if we would keep ours.
        let p = server(
            &["permessage-deflate; server_no_context_takeover"],
            &keep_all(),
        )
        .unwrap();
        assert!(p.server_no_context_takeover);
        assert!(!p.client_no_context_takeover);
        let p = server(&["permessage-deflate"], &keep_all()).unwrap();
        assert_eq!(p, Params::default());
        assert_eq!(p.to_header(), "permessage-deflate");
        // client_no_context_takeover offered: the client allows it, we need not ask.
        let p = server(
            &["permessage-deflate; client_no_context_takeover"],
            &keep_all(),
        )
        .unwrap();
        assert!(!p.client_no_context_takeover);
    }

    #[test]
    fn rfc7692_7_1_2_window_bits_8_to_15() {
        for bits in 8..=15u8 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let p = server(&[&offer], &on()).unwrap();
            assert_eq!(p.server_max_window_bits, Some(bits), "{offer}");
            let quoted = format!("permessage-deflate; server_max_window_bits=\"{bits}\"");
            assert_eq!(server(&[&quoted], &on()), Some(p), "{quoted}");
            let offer = format!("permessage-deflate; client_max_window_bits={bits}");
            let p = server(&[&offer], &on()).unwrap();
            // We do not ask for less than the client offered to use.
            assert_eq!(p.client_max_window_bits, None, "{offer}");
            let limited = DeflateConfig {
                peer_max_window_bits: 10,
                max_window_bits: 12,
                ..on()
            };
            let p = server(&[&offer], &limited).unwrap();
            assert_eq!(
                p.client_max_window_bits,
                (bits > 10).then_some(10),
                "{offer}"
            );
            assert_eq!(p.server_max_window_bits, Some(12));
            // And the client accepts each value in a response.
            let response = format!("permessage-deflate; server_max_window_bits={bits}");
            assert_eq!(
                client(&[&response]).unwrap().unwrap().server_window_bits(),
                bits
            );
            let response = format!("permessage-deflate; client_max_window_bits={bits}");
            assert_eq!(
                client(&[&response]).unwrap().unwrap().client_window_bits(),
                bits
            );
        }
        // Bare client_max_window_bits: we may ask for a limit.
        let limited = DeflateConfig {
            peer_max_window_bits: 9,
            ..on()
        };
        let p = server(&["permessage-deflate; client_max_window_bits"], &limited).unwrap();
        assert_eq!(p.client_max_window_bits, Some(9));
        // Not offered: we must not send it.
        let p = server(&["permessage-deflate"], &limited).unwrap();
        assert_eq!(p.client_max_window_bits, None);
    }

    #[test]
    fn rfc7692_5_1_bad_offers_are_declined_and_a_later_one_taken() {
        let bad = [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; server_max_window_bits=\"9",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; Client_No_Context_Takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; mystery",
            "permessage-deflate; mystery=1",
            "permessage-deflate; ",
            "permessage-deflate; =9",
            "permessage deflate",
        ];
        for offer in bad {
            assert_eq!(server(&[offer], &on()), None, "{offer}");
            let p = server(
                &[offer, "permessage-deflate; client_max_window_bits"],
                &on(),
            );
            assert_eq!(p.map(|p| p.server_window_bits()), Some(15), "{offer}");
        }
        // Other extensions are skipped; names and parameters are case-insensitive.
        let p = server(
            &[
                "x-webkit-deflate-frame",
                "Permessage-Deflate; Server_Max_Window_Bits=11",
            ],
            &on(),
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, Some(11));
    }

    #[test]
    fn whitespace_around_separators() {
        let p = server(
            &["permessage-deflate ;server_max_window_bits = 10 ;  client_max_window_bits"],
            &on(),
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, Some(10));
    }

    #[test]
    fn rfc7692_5_2_bad_responses_fail_the_client() {
        let bad = [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=yes",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x=1",
            "x-other",
            "permessage-deflate; =",
        ];
        for response in bad {
            assert!(
                matches!(client(&[response]), Err(HandshakeError::Extension(_))),
                "{response}"
            );
        }
        assert!(client(&["permessage-deflate", "permessage-deflate"]).is_err());
        // Nothing offered: any extension in the response fails.
        assert!(check_response(&["permessage-deflate".to_owned()], None).is_err());
        assert_eq!(check_response(&[], None), Ok(None));
        assert_eq!(client(&[]), Ok(None));
        let p = client(&["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"])
            .unwrap()
            .unwrap();
        assert_eq!(
            p,
            Params {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(10),
                client_max_window_bits: Some(9),
            }
        );
        // A limit above the one our offer stated.
        let offered = DeflateConfig {
            max_window_bits: 10,
            ..on()
        };
        assert!(
            check_response(
                &["permessage-deflate; client_max_window_bits=12".to_owned()],
                Some(&offered)
            )
            .is_err()
        );
    }

    #[test]
    fn client_offers() {
        assert_eq!(
            offer(&on()),
            "permessage-deflate; client_max_window_bits; client_no_context_takeover; \
             server_no_context_takeover, permessage-deflate; client_max_window_bits; \
             client_no_context_takeover"
        );
        assert_eq!(
            offer(&keep_all()),
            "permessage-deflate; client_max_window_bits"
        );
        let limited = DeflateConfig {
            max_window_bits: 11,
            peer_max_window_bits: 8,
            ..keep_all()
        };
        assert_eq!(
            offer(&limited),
            "permessage-deflate; client_max_window_bits=11; server_max_window_bits=8, \
             permessage-deflate; client_max_window_bits=11"
        );
        // Our own server accepts what our client offers.
        for config in [on(), keep_all(), limited] {
            let offers: Vec<String> = offer(&config).split(", ").map(str::to_owned).collect();
            let p = negotiate(&offers, &config).unwrap();
            let back = check_response(&[p.to_header()], Some(&config)).unwrap();
            assert_eq!(back, Some(p));
        }
    }
}
