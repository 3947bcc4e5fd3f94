//! One behaviour suite for every [`Store`]: each engine's tests call [`run_all`] with a
//! fresh store, so the engines cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::{MailboxLimits, Retention, Store, StoreError};
use crate::wire::{ClientInfo, Publication};

const LIMITS: MailboxLimits = MailboxLimits {
    size: 3,
    ttl: Duration::from_secs(60),
};

const RETENTION: Retention = Retention {
    size: 10,
    ttl: Duration::from_secs(60),
};

fn data(text: &str) -> Arc<RawValue> {
    Arc::from(RawValue::from_string(format!("{text:?}")).unwrap())
}

fn sender() -> Option<ClientInfo> {
    Some(ClientInfo {
        user: "alice".into(),
        client: "c1".into(),
        info: None,
    })
}

/// Runs every check against `store` (which must start empty).
pub(crate) async fn run_all(store: &dyn Store) {
    mailbox_keeps_order_until_acked(store).await;
    full_mailbox_refuses(store).await;
    expired_messages_are_not_pending(store).await;
    channel_positions_continue(store).await;
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
    let pending = store.mailbox_pending("bob").await.unwrap();
    let texts: Vec<&str> = pending.iter().map(|m| m.data.get()).collect();
    assert_eq!(texts, [r#""one""#, r#""two""#, r#""three""#]);
    assert_eq!(pending[0].from.as_ref().unwrap().user, "alice");
    store.mailbox_ack("bob", ids[1]).await.unwrap();
    let pending = store.mailbox_pending("bob").await.unwrap();
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[2]]);
    store.mailbox_ack("bob", ids[2]).await.unwrap();
    assert!(store.mailbox_pending("bob").await.unwrap().is_empty());
    // Other users' boxes are separate.
    assert!(store.mailbox_pending("carol").await.unwrap().is_empty());
}

async fn full_mailbox_refuses(store: &dyn Store) {
    for i in 0..LIMITS.size {
        store
            .mailbox_push("dave", None, data(&i.to_string()), LIMITS, false)
            .await
            .unwrap();
    }
    let err = store
        .mailbox_push("dave", None, data("x"), LIMITS, false)
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::MailboxFull(LIMITS.size));
    assert_eq!(
        store.mailbox_pending("dave").await.unwrap().len(),
        LIMITS.size
    );
    // An online user still gets a message (with a fresh id), but it is not kept.
    let pending = store.mailbox_pending("dave").await.unwrap();
    let live = store
        .mailbox_push("dave", None, data("live"), LIMITS, true)
        .await
        .unwrap();
    assert!(pending.iter().all(|m| m.id < live.id));
    let ids = |m: Vec<Arc<crate::wire::PrivateMessage>>| m.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.mailbox_pending("dave").await.unwrap()),
        ids(pending)
    );
}

async fn expired_messages_are_not_pending(store: &dyn Store) {
    let short = MailboxLimits {
        size: 10,
        ttl: Duration::from_millis(50),
    };
    store
        .mailbox_push("erin", None, data("soon gone"), short, false)
        .await
        .unwrap();
    assert_eq!(store.mailbox_pending("erin").await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(store.mailbox_pending("erin").await.unwrap().is_empty());
    store.sweep().await.unwrap();
    // An expired message no longer counts against the size either.
    for i in 0..10 {
        store
            .mailbox_push("erin", None, data(&i.to_string()), short, false)
            .await
            .unwrap();
    }
}

async fn channel_positions_continue(store: &dyn Store) {
    let snapshot = store.channel("chat:a", RETENTION).await.unwrap();
    assert!(!snapshot.epoch.is_empty());
    for offset in snapshot.top + 1..=snapshot.top + 3 {
        let publication = Arc::new(Publication {
            offset,
            data: data("p"),
            info: None,
            time: 0,
        });
        store
            .append("chat:a", &snapshot.epoch, publication, RETENTION)
            .await
            .unwrap();
    }
    // A store either continues the stream (same epoch, offsets kept) or starts a new
    // epoch; it never hands back the same epoch with offsets that went backwards.
    let again = store.channel("chat:a", RETENTION).await.unwrap();
    if again.epoch == snapshot.epoch {
        assert_eq!(again.top, snapshot.top + 3);
        assert_eq!(again.recent.last().map(|p| p.offset), Some(again.top));
    }
}
