//! What nodes tell each other on a channel's Redis topic, in the order Redis received it:
//! a publication (`P` + epoch + space + the publication's JSON, written by the publish
//! script), a join or a leave (`J`/`L` + the client's JSON, written by the presence
//! scripts), or an ephemeral publication (`E` + its JSON, offset 0). On a user's topic:
//! a private message (`M` + its JSON, written by the mailbox script).

use serde_json::value::RawValue;

use crate::protocol::{ClientInfo, PrivateMessage, Publication};

/// One event of a channel's topic.
#[derive(Debug)]
pub(crate) enum ChannelEvent {
    /// A stored publication with its stream position.
    Publication {
        /// The stream's epoch.
        epoch: String,
        /// The publication, its offset set.
        publication: Publication,
    },
    /// A user's first connection (anywhere in the group) subscribed.
    Join(ClientInfo),
    /// A user's last connection left (or its node died).
    Leave(ClientInfo),
    /// A publication outside the stream (offset 0).
    Ephemeral(Publication),
}

/// Reads a topic's payload; `None` for anything malformed (another program on the same
/// Redis with our prefix, or a newer node's event this one does not know).
pub(crate) fn decode(payload: &[u8]) -> Option<ChannelEvent> {
    let (&kind, rest) = payload.split_first()?;
    let rest = std::str::from_utf8(rest).ok()?;
    Some(match kind {
        b'P' => {
            let (epoch, json) = rest.split_once(' ')?;
            ChannelEvent::Publication {
                epoch: epoch.to_owned(),
                publication: serde_json::from_str(json).ok()?,
            }
        }
        b'J' => ChannelEvent::Join(serde_json::from_str(rest).ok()?),
        b'L' => ChannelEvent::Leave(serde_json::from_str(rest).ok()?),
        b'E' => ChannelEvent::Ephemeral(serde_json::from_str(rest).ok()?),
        _ => return None,
    })
}

/// Reads a user topic's payload: a private message.
pub(crate) fn decode_message(payload: &[u8]) -> Option<PrivateMessage> {
    let rest = payload.strip_prefix(b"M")?;
    serde_json::from_slice(rest).ok()
}

/// A join's payload.
pub(crate) fn join(info: &ClientInfo) -> String {
    tagged('J', info)
}

/// A leave's payload.
pub(crate) fn leave(info: &ClientInfo) -> String {
    tagged('L', info)
}

/// An ephemeral publication's payload.
pub(crate) fn ephemeral(data: &RawValue, info: Option<&ClientInfo>, time: u64) -> String {
    #[derive(serde::Serialize)]
    struct Ephemeral<'a> {
        offset: u64,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a ClientInfo>,
        time: u64,
    }
    tagged(
        'E',
        &Ephemeral {
            offset: 0,
            data,
            info,
            time,
        },
    )
}

fn tagged(tag: char, value: &impl serde::Serialize) -> String {
    let mut out = String::from(tag);
    // Serialising plain structs into a String cannot fail.
    out.push_str(&serde_json::to_string(value).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ClientInfo {
        ClientInfo {
            user: "ann".into(),
            client: "c1".into(),
            info: None,
        }
    }

    #[test]
    fn every_kind_reads_back() {
        let p = br#"Pab12 {"offset":7,"data":{"x":1},"time":5}"#;
        match decode(p) {
            Some(ChannelEvent::Publication { epoch, publication }) => {
                assert_eq!(epoch, "ab12");
                assert_eq!(publication.offset, 7);
                assert_eq!(publication.data.get(), r#"{"x":1}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(decode(join(&info()).as_bytes()), Some(ChannelEvent::Join(i)) if i.user == "ann")
        );
        assert!(
            matches!(decode(leave(&info()).as_bytes()), Some(ChannelEvent::Leave(i)) if i.client == "c1")
        );
        let data = RawValue::from_string("[1]".into()).unwrap();
        match decode(ephemeral(&data, Some(&info()), 9).as_bytes()) {
            Some(ChannelEvent::Ephemeral(p)) => assert_eq!((p.offset, p.time), (0, 9)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_payloads_are_ignored() {
        for bad in [
            &b""[..],
            b"P",
            b"Pnospace",
            b"P e {",
            b"J{",
            b"X{}",
            b"P\xff {}",
        ] {
            assert!(decode(bad).is_none(), "{bad:?}");
        }
    }
}
