//! The bounded queue between what the agent produces (samples, batches of lines) and
//! the connection that publishes it.
//!
//! One queue serves both states: while connected it drains as fast as the send limits
//! allow; while disconnected it fills. It is bounded in bytes (`buffer_bytes`): past the
//! bound the oldest publications are dropped, the newest kept, because a reader of a
//! dashboard or a log wants the present first. Drops are counted, by kind, and reported
//! once the connection can carry the report (`{"type":"dropped"}` on `metrics:HOST`, and
//! `"dropped": N` on the next batch of the log that lost lines).
//!
//! Producers never wait: `push` takes a short `std::sync::Mutex` section (never held
//! across an `.await`) and wakes the connection through a [`Notify`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use tokio::sync::Notify;

/// What one publication carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A sample: its JSON object, serialised when it was taken.
    Sample(String),
    /// A batch of a log's lines, each already `{"time":MS,"text":"…"}`.
    Lines {
        /// The lines' JSON objects, in order.
        lines: Vec<String>,
        /// `"rotated"`, `"truncated"` or `"started"`, before the lines.
        event: Option<&'static str>,
    },
}

/// A publication waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where to: `metrics:HOST` or `logs:HOST:NAME`.
    pub channel: Arc<str>,
    /// What.
    pub payload: Payload,
    /// Whether it waited for a connection (a sample is then marked `"late": true`).
    pub late: bool,
    /// Its size in the buffer (the JSON text it becomes, near enough).
    pub bytes: usize,
    /// Lines of its log dropped before it (set when it leaves the queue).
    pub dropped: u64,
}

impl Item {
    /// A sample for `channel`.
    pub fn sample(channel: Arc<str>, json: String) -> Item {
        Item {
            bytes: json.len() + channel.len(),
            channel,
            payload: Payload::Sample(json),
            late: false,
            dropped: 0,
        }
    }

    /// A batch of lines for `channel`.
    pub fn lines(channel: Arc<str>, lines: Vec<String>, event: Option<&'static str>) -> Item {
        let bytes = channel.len() + 32 + lines.iter().map(|l| l.len() + 1).sum::<usize>();
        Item {
            bytes,
            channel,
            payload: Payload::Lines { lines, event },
            late: false,
            dropped: 0,
        }
    }

    /// How many log lines it carries.
    pub fn line_count(&self) -> usize {
        match &self.payload {
            Payload::Lines { lines, .. } => lines.len(),
            Payload::Sample(_) => 0,
        }
    }

    /// The `data` to publish: a late sample says so, a batch that follows lost lines
    /// says how many.
    pub fn data(&self) -> String {
        let dropped = self.dropped;
        match &self.payload {
            Payload::Sample(json) if self.late => match json.strip_suffix('}') {
                // `"late"` added to the object without parsing it again.
                Some(head) if head.len() > 1 => format!("{head},\"late\":true}}"),
                _ => json.clone(),
            },
            Payload::Sample(json) => json.clone(),
            Payload::Lines { lines, event } => {
                let mut out = String::with_capacity(self.bytes + 32);
                out.push_str("{\"lines\":[");
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(line);
                }
                out.push(']');
                if let Some(event) = event {
                    out.push_str(&format!(",\"event\":{}", json!(event)));
                }
                if dropped > 0 {
                    out.push_str(&format!(",\"dropped\":{dropped}"));
                }
                out.push('}');
                out
            }
        }
    }
}

/// What was dropped since the last report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Samples.
    pub samples: u64,
    /// Log lines (in whole batches).
    pub lines: u64,
}

/// The queue; shared by the producers and the connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the connection when something is pushed.
    ready: Notify,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    /// The sum of the items' `bytes`.
    bytes: usize,
    /// The bound on `bytes`.
    limit: usize,
    /// Whether a connection is up; items pushed while not are late.
    connected: bool,
    /// Not yet reported on `metrics:HOST`.
    dropped: Dropped,
    /// Lines lost per log channel, for that log's next batch.
    lines_dropped: HashMap<Arc<str>, u64>,
}

impl Outbox {
    /// An empty queue bounded at `limit` bytes.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                limit,
                connected: false,
                dropped: Dropped::default(),
                lines_dropped: HashMap::new(),
            }),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an item, dropping the oldest ones if it does not fit.
    pub fn push(&self, mut item: Item) {
        {
            let mut state = self.state();
            item.late = !state.connected;
            state.bytes += item.bytes;
            state.items.push_back(item);
            while state.bytes > state.limit && state.items.len() > 1 {
                if let Some(old) = state.items.pop_front() {
                    state.forget(old);
                }
            }
        }
        self.ready.notify_one();
    }

    /// The oldest item, if any, with the count of its log's lines dropped before it.
    pub fn pop(&self) -> Option<Item> {
        let mut state = self.state();
        let mut item = state.items.pop_front()?;
        state.bytes -= item.bytes;
        if matches!(item.payload, Payload::Lines { .. }) {
            item.dropped += state.lines_dropped.remove(&item.channel).unwrap_or(0);
        }
        Some(item)
    }

    /// The size of the oldest item, if any (to check the send limits before popping).
    pub fn front_bytes(&self) -> Option<usize> {
        self.state().items.front().map(|i| i.bytes)
    }

    /// Puts items that were sent but not stored back at the front, in order (the
    /// connection broke before the server said it had stored them, or it asked to slow
    /// down).
    pub fn requeue(&self, items: Vec<Item>) {
        let mut state = self.state();
        for item in items.into_iter().rev() {
            state.bytes += item.bytes;
            state.items.push_front(item);
        }
        while state.bytes > state.limit && state.items.len() > 1 {
            if let Some(old) = state.items.pop_front() {
                state.forget(old);
            }
        }
    }

    /// Marks the connection up or down.
    pub fn set_connected(&self, connected: bool) {
        self.state().connected = connected;
    }

    /// Drops not yet reported, and resets the count.
    pub fn take_dropped(&self) -> Dropped {
        std::mem::take(&mut self.state().dropped)
    }

    /// The number of items and their bytes.
    pub fn queued(&self) -> (usize, usize) {
        let state = self.state();
        (state.items.len(), state.bytes)
    }

    /// Waits until something is pushed (returns at once if something was pushed since
    /// the last wait).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }
}

impl State {
    fn forget(&mut self, old: Item) {
        self.bytes -= old.bytes;
        match old.payload {
            Payload::Sample(_) => self.dropped.samples += 1,
            Payload::Lines { lines, .. } => {
                let n = lines.len() as u64;
                self.dropped.lines += n;
                *self.lines_dropped.entry(old.channel).or_default() += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u32) -> Item {
        Item::sample(
            "metrics:h".into(),
            format!("{{\"type\":\"sample\",\"n\":{n}}}"),
        )
    }

    #[test]
    fn the_oldest_are_dropped_and_counted() {
        let one = sample(0).bytes;
        let outbox = Outbox::new(one * 3);
        for n in 0..5 {
            outbox.push(sample(n));
        }
        outbox.push(Item::lines("logs:h:a".into(), vec!["{}".into()], None));
        let kept: Vec<_> = std::iter::from_fn(|| outbox.pop()).collect();
        // Room for three samples: two went for the fourth and fifth, two more for the
        // batch of lines, a little larger than a sample.
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0], {
            let mut s = sample(4);
            s.late = true;
            s
        });
        assert_eq!(
            outbox.take_dropped(),
            Dropped {
                samples: 4,
                lines: 0
            }
        );
        assert_eq!(outbox.take_dropped(), Dropped::default());
        assert_eq!(outbox.queued(), (0, 0));
    }

    #[test]
    fn dropped_lines_are_told_to_their_log() {
        let batch = Item::lines("logs:h:a".into(), vec!["{}".into(); 10], None);
        let outbox = Outbox::new(batch.bytes + 1);
        outbox.push(batch.clone());
        outbox.push(batch.clone());
        assert_eq!(outbox.pop().unwrap().dropped, 10);
        outbox.push(batch.clone());
        assert_eq!(outbox.pop().unwrap().dropped, 0);
        assert_eq!(outbox.take_dropped().lines, 10);
    }

    #[test]
    fn late_samples_say_so_and_batches_carry_their_events() {
        let mut s = sample(1);
        assert_eq!(s.data(), r#"{"type":"sample","n":1}"#);
        s.late = true;
        assert_eq!(s.data(), r#"{"type":"sample","n":1,"late":true}"#);
        let mut batch = Item::lines(
            "logs:h:a".into(),
            vec![r#"{"time":1,"text":"a"}"#.into()],
            Some("rotated"),
        );
        batch.dropped = 2;
        assert_eq!(
            batch.data(),
            r#"{"lines":[{"time":1,"text":"a"}],"event":"rotated","dropped":2}"#
        );
        let empty = Item::lines("logs:h:a".into(), vec![], Some("truncated"));
        assert_eq!(empty.data(), r#"{"lines":[],"event":"truncated"}"#);
    }

    #[test]
    fn items_pushed_while_connected_are_not_late() {
        let outbox = Outbox::new(1 << 20);
        outbox.set_connected(true);
        outbox.push(sample(1));
        assert!(!outbox.pop().unwrap().late);
        outbox.push(sample(4));
        let late = |n| {
            let mut s = sample(n);
            s.late = true;
            s
        };
        outbox.requeue(vec![late(2), sample(3)]);
        let back: Vec<_> = std::iter::from_fn(|| outbox.pop()).collect();
        assert_eq!(back, [late(2), sample(3), sample(4)]);
        assert_eq!(back[0].data(), r#"{"type":"sample","n":2,"late":true}"#);
    }
}
