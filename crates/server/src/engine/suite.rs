//! One behaviour suite for every [`Store`]: each engine's tests call [`run_all`] with a
//! fresh store, so the engines cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::{HistoryQuery, MailboxLimits, MailboxQuota, PageLimit, Retention, Store, StoreError};
use crate::protocol::{ClientInfo, PrivateMessage, Publication, now_ms};

const LIMITS: MailboxLimits = MailboxLimits {
    size: 3,
    per_sender: 3,
    server_size: 3,
    ttl: Duration::from_secs(60),
};

const RETENTION: Retention = Retention {
    size: 10,
    ttl: Duration::from_secs(60),
};

/// A byte budget that loads whole histories in these tests.
const ALL: usize = usize::MAX;

pub(crate) fn data(text: &str) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(format!("{text:?}")).unwrap())
}

fn from(user: &str) -> Option<ClientInfo> {
    Some(ClientInfo {
        user: user.into(),
        client: format!("{user}-c1"),
        info: None,
    })
}

fn sender() -> Option<ClientInfo> {
    from("alice")
}

/// A publication accepted now: `time` is when the server accepted it, and a store may
/// expire history by it (the Redis engine does).
fn publication(offset: u64, text: &str) -> Arc<Publication> {
    Arc::new(Publication {
        offset,
        data: data(text),
        info: None,
        time: now_ms(),
    })
}

async fn pending(store: &dyn Store, user: &str) -> Vec<Arc<PrivateMessage>> {
    store
        .mailbox_page(user, 0, PageLimit::ALL)
        .await
        .unwrap()
        .messages
}

fn ids(messages: &[Arc<PrivateMessage>]) -> Vec<u64> {
    messages.iter().map(|m| m.id).collect()
}

/// Runs every check against `store` (which must start empty).
pub(crate) async fn run_all(store: &dyn Store) {
    mailbox_keeps_order_until_acked(store).await;
    full_mailbox_refuses(store).await;
    one_sender_cannot_fill_a_mailbox(store).await;
    server_messages_have_room_of_their_own(store).await;
    mailbox_pages_are_bounded(store).await;
    expired_messages_are_not_pending(store).await;
    channel_positions_continue(store).await;
    reads_create_nothing(store).await;
    history_ranges(store).await;
    snapshot_respects_its_byte_budget(store).await;
    assert!(!store.mailbox_epoch().is_empty());
    assert_eq!(store.mailbox_epoch(), store.mailbox_epoch());
    assert_eq!(store.health(), Ok(()));
}

async fn mailbox_keeps_order_until_acked(store: &dyn Store) {
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let m = store
            .mailbox_push("bob", sender(), data(text), LIMITS, false)
            .await
            .unwrap();
        ids.push(m.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let messages = pending(store, "bob").await;
    let texts: Vec<&str> = messages.iter().map(|m| m.data.get()).collect();
    assert_eq!(texts, [r#""one""#, r#""two""#, r#""three""#]);
    assert_eq!(messages[0].from.as_ref().unwrap().user, "alice");
    store.mailbox_ack("bob", ids[1]).await.unwrap();
    assert_eq!(super::suite::ids(&pending(store, "bob").await), [ids[2]]);
    store.mailbox_ack("bob", ids[2]).await.unwrap();
    assert!(pending(store, "bob").await.is_empty());
    // Other users' boxes are separate.
    assert!(pending(store, "carol").await.is_empty());
}

async fn full_mailbox_refuses(store: &dyn Store) {
    for i in 0..LIMITS.size {
        store
            .mailbox_push(
                "dave",
                from(&format!("u{i}")),
                data(&i.to_string()),
                LIMITS,
                false,
            )
            .await
            .unwrap();
    }
    let err = store
        .mailbox_push("dave", from("x"), data("x"), LIMITS, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Users,
            limit: LIMITS.size
        }
    );
    let before = pending(store, "dave").await;
    assert_eq!(before.len(), LIMITS.size);
    // An online user still gets a message (with a fresh id), but it is not kept.
    let live = store
        .mailbox_push("dave", from("x"), data("live"), LIMITS, true)
        .await
        .unwrap();
    assert!(before.iter().all(|m| m.id < live.id));
    assert_eq!(ids(&pending(store, "dave").await), ids(&before));
}

/// `mailbox.per_sender`: one sender fills only their own share of someone's mailbox.
async fn one_sender_cannot_fill_a_mailbox(store: &dyn Store) {
    let limits = MailboxLimits {
        size: 10,
        per_sender: 2,
        ..LIMITS
    };
    for i in 0..2 {
        store
            .mailbox_push("fay", from("spammer"), data(&i.to_string()), limits, false)
            .await
            .unwrap();
    }
    let err = store
        .mailbox_push("fay", from("spammer"), data("3"), limits, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Sender,
            limit: 2
        }
    );
    // Someone else still gets through.
    store
        .mailbox_push("fay", from("friend"), data("hi"), limits, false)
        .await
        .unwrap();
    assert_eq!(pending(store, "fay").await.len(), 3);
}

/// `mailbox.server_size`: users filling a mailbox never crowd out the server API.
async fn server_messages_have_room_of_their_own(store: &dyn Store) {
    for i in 0..LIMITS.size {
        store
            .mailbox_push("gus", from(&format!("u{i}")), data("spam"), LIMITS, false)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .mailbox_push("gus", from("u9"), data("spam"), LIMITS, false)
            .await,
        Err(StoreError::MailboxFull { .. })
    ));
    for _ in 0..LIMITS.server_size {
        store
            .mailbox_push("gus", None, data("invoice"), LIMITS, false)
            .await
            .unwrap();
    }
    let err = store
        .mailbox_push("gus", None, data("invoice"), LIMITS, false)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::MailboxFull {
            quota: MailboxQuota::Server,
            limit: LIMITS.server_size
        }
    );
    assert_eq!(
        pending(store, "gus").await.len(),
        LIMITS.size + LIMITS.server_size
    );
}

async fn mailbox_pages_are_bounded(store: &dyn Store) {
    let limits = MailboxLimits {
        size: 100,
        per_sender: 100,
        ..LIMITS
    };
    let mut sent = Vec::new();
    for i in 0..7 {
        let m = store
            .mailbox_push("hal", sender(), data(&i.to_string()), limits, false)
            .await
            .unwrap();
        sent.push(m.id);
    }
    let three = PageLimit {
        messages: 3,
        bytes: usize::MAX,
    };
    let first = store.mailbox_page("hal", 0, three).await.unwrap();
    assert_eq!(ids(&first.messages), sent[..3]);
    assert!(first.more);
    let second = store.mailbox_page("hal", sent[2], three).await.unwrap();
    assert_eq!(ids(&second.messages), sent[3..6]);
    assert!(second.more);
    let last = store.mailbox_page("hal", sent[5], three).await.unwrap();
    assert_eq!(ids(&last.messages), sent[6..]);
    assert!(!last.more);
    let none = store.mailbox_page("hal", sent[6], three).await.unwrap();
    assert!(none.messages.is_empty() && !none.more);
    // By bytes: each message counts its data ("0".."6", 3 bytes as JSON) and its sender
    // ("alice" + "alice-c1", 13 bytes): two fit in 32 bytes; one always comes.
    let small = PageLimit {
        messages: 100,
        bytes: 32,
    };
    let page = store.mailbox_page("hal", 0, small).await.unwrap();
    assert_eq!(ids(&page.messages), sent[..2]);
    assert!(page.more);
    let tiny = PageLimit {
        messages: 100,
        bytes: 1,
    };
    let page = store.mailbox_page("hal", 0, tiny).await.unwrap();
    assert_eq!(ids(&page.messages), sent[..1]);
}

async fn expired_messages_are_not_pending(store: &dyn Store) {
    let short = MailboxLimits {
        size: 10,
        per_sender: 10,
        ttl: Duration::from_millis(50),
        ..LIMITS
    };
    store
        .mailbox_push("erin", sender(), data("soon gone"), short, false)
        .await
        .unwrap();
    assert_eq!(pending(store, "erin").await.len(), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(pending(store, "erin").await.is_empty());
    store.sweep().await.unwrap();
    // An expired message no longer counts against the size either.
    for i in 0..10 {
        store
            .mailbox_push("erin", sender(), data(&i.to_string()), short, false)
            .await
            .unwrap();
    }
}

async fn channel_positions_continue(store: &dyn Store) {
    let snapshot = store.channel("chat:a", RETENTION, ALL).await.unwrap();
    assert!(!snapshot.epoch.is_empty());
    for offset in snapshot.top + 1..=snapshot.top + 3 {
        store
            .append(
                "chat:a",
                &snapshot.epoch,
                publication(offset, "p"),
                RETENTION,
            )
            .await
            .unwrap();
    }
    // A store either continues the stream (same epoch, offsets kept) or starts a new
    // epoch; it never hands back the same epoch with offsets that went backwards.
    let again = store.channel("chat:a", RETENTION, ALL).await.unwrap();
    if again.epoch == snapshot.epoch {
        assert_eq!(again.top, snapshot.top + 3);
        assert_eq!(again.recent.last().map(|p| p.offset), Some(again.top));
        assert!(again.complete);
    }
    // An append under another epoch than the stored one is refused.
    assert!(matches!(
        store
            .append(
                "chat:a",
                "another",
                publication(again.top + 1, "p"),
                RETENTION
            )
            .await,
        Err(StoreError::Failed(_))
    ));
}

/// Asking about a channel stores nothing: a name nobody published to gets a new epoch
/// each time, and costs no space.
async fn reads_create_nothing(store: &dyn Store) {
    let before = store.usage().bytes;
    for i in 0..50 {
        let name = format!("chat:never-{i}");
        let a = store.channel(&name, RETENTION, ALL).await.unwrap();
        let query = HistoryQuery {
            after: 0,
            before: None,
            limit: 10,
            newest: true,
        };
        assert!(store.history(&name, query).await.unwrap().is_empty());
        let b = store.channel(&name, RETENTION, ALL).await.unwrap();
        assert_eq!((a.top, b.top), (0, 0));
        assert_ne!(a.epoch, b.epoch, "{name}: an epoch was stored by a read");
    }
    assert!(store.usage().bytes <= before, "reads grew the store");
}

async fn history_ranges(store: &dyn Store) {
    let snapshot = store.channel("chat:h", RETENTION, ALL).await.unwrap();
    for offset in 1..=8 {
        store
            .append(
                "chat:h",
                &snapshot.epoch,
                publication(offset, &offset.to_string()),
                RETENTION,
            )
            .await
            .unwrap();
    }
    let offsets = |found: Vec<Arc<Publication>>| found.iter().map(|p| p.offset).collect::<Vec<_>>();
    let query = |after, before, limit, newest| HistoryQuery {
        after,
        before,
        limit,
        newest,
    };
    let read = |q| store.history("chat:h", q);
    assert_eq!(
        offsets(read(query(0, None, 3, false)).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(
        offsets(read(query(0, None, 3, true)).await.unwrap()),
        [6, 7, 8]
    );
    assert_eq!(
        offsets(read(query(5, None, 10, false)).await.unwrap()),
        [6, 7, 8]
    );
    assert_eq!(
        offsets(read(query(0, Some(5), 2, true)).await.unwrap()),
        [3, 4]
    );
    assert_eq!(
        offsets(read(query(2, Some(5), 10, false)).await.unwrap()),
        [3, 4]
    );
    assert!(read(query(8, None, 10, false)).await.unwrap().is_empty());
    assert_eq!(
        read(query(6, None, 1, false)).await.unwrap()[0].data.get(),
        r#""7""#
    );
}

/// The snapshot holds about the byte budget it was given of the newest history, and says
/// when that is not all of it.
async fn snapshot_respects_its_byte_budget(store: &dyn Store) {
    let snapshot = store.channel("chat:big", RETENTION, ALL).await.unwrap();
    let big = "x".repeat(1000);
    for offset in 1..=5 {
        store
            .append(
                "chat:big",
                &snapshot.epoch,
                publication(offset, &big),
                RETENTION,
            )
            .await
            .unwrap();
    }
    let cut = store.channel("chat:big", RETENTION, 2500).await.unwrap();
    assert_eq!(cut.top, 5);
    assert!(!cut.complete);
    assert!(
        !cut.recent.is_empty() && cut.recent.len() < 5,
        "{}",
        cut.recent.len()
    );
    assert_eq!(cut.recent.last().map(|p| p.offset), Some(5));
    let whole = store.channel("chat:big", RETENTION, ALL).await.unwrap();
    assert!(whole.complete);
    assert_eq!(whole.recent.len(), 5);
}

/// With a small budget (the store under test must be made with it: 10 KB for the memory
/// store, a few hundred KB for SQLite, whose empty file takes ~50 KB): messages of 1 KB
/// fill it and are then refused as `Full`, the refusal is counted, so is a publication,
/// and room freed by acknowledgements is usable again.
pub(crate) async fn budget_refuses_then_frees(store: &dyn Store) {
    let limits = MailboxLimits {
        size: 1000,
        per_sender: 1000,
        ..LIMITS
    };
    let big = "y".repeat(1000);
    let mut last = 0;
    let mut refused = None;
    for _ in 0..1000 {
        match store
            .mailbox_push("ivy", sender(), data(&big), limits, false)
            .await
        {
            Ok(m) => last = m.id,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    assert!(matches!(refused, Some(StoreError::Full(_))), "{refused:?}");
    assert!(store.usage().refused >= 1);
    let snapshot = store.channel("chat:full", RETENTION, ALL).await.unwrap();
    assert!(matches!(
        store
            .append(
                "chat:full",
                &snapshot.epoch,
                publication(1, &big),
                RETENTION
            )
            .await,
        Err(StoreError::Full(_))
    ));
    store.mailbox_ack("ivy", last).await.unwrap();
    store.sweep().await.unwrap();
    store
        .append(
            "chat:full",
            &snapshot.epoch,
            publication(1, &big),
            RETENTION,
        )
        .await
        .unwrap();
}
