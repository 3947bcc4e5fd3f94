//! The apps' counters, in the Prometheus text format beside the server's (`/metrics`
//! renders the server's; [`AppsMetrics::render`] gives these for whoever serves them).

use std::fmt::Write;

use switchboard_server::metrics::Counter;

macro_rules! counters {
    ($(#[doc = $doc:literal] $name:ident;)*) => {
        /// Every counter the apps keep.
        #[derive(Debug, Default)]
        pub struct AppsMetrics {
            $(#[doc = $doc] pub $name: Counter,)*
        }

        impl AppsMetrics {
            /// The counters as Prometheus text, `switchboard_apps_NAME_total`.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let help = $doc.trim();
                    let _ = writeln!(out, "# HELP switchboard_apps_{}_total {help}", stringify!($name));
                    let _ = writeln!(out, "# TYPE switchboard_apps_{}_total counter", stringify!($name));
                    let _ = writeln!(out, "switchboard_apps_{}_total {}", stringify!($name), self.$name.get());
                )*
                out
            }
        }
    };
}

counters! {
    /// Successful sign-ins.
    signins;
    /// Sign-ins refused for a wrong name or password.
    signin_failures;
    /// Sign-ins, sign-ups, guest sign-ins and token requests refused for a rate limit.
    rate_limited;
    /// Accounts created.
    signups;
    /// Guest sign-ins.
    guests;
    /// Connection tokens minted.
    tokens;
    /// Requests refused for a missing JSON type, a foreign Origin, a bad or large body.
    bad_requests;
    /// Requests refused because password hashing was saturated.
    busy;
    /// Room messages posted.
    posts;
    /// Posts (messages, topics, direct messages) refused for the post rate.
    posts_limited;
    /// Typing notices dropped for coming sooner than `typing_interval` after the last.
    typing_dropped;
    /// Rooms created.
    rooms_created;
    /// Room creations refused for the room limits.
    rooms_refused;
    /// Direct messages sent.
    dms;
    /// Direct messages that waited for an offline recipient.
    dms_stored;
    /// Votes cast or changed.
    votes;
    /// Tally pushes sent to polls' watchers (coalesced: at most 4 per second per poll).
    tally_pushes;
    /// Publications on metrics: the monitor did not track because its queue was full.
    monitor_dropped;
    /// Publications of a new host the monitor did not track (past max_hosts).
    monitor_hosts_refused;
    /// Monitor events (thresholds crossed, hosts stale or back) published on metrics:@events.
    monitor_events;
    /// Webhook calls that succeeded (a 2xx answer).
    monitor_webhook_calls;
    /// Webhook calls that failed (no connection, a timeout, an answer other than 2xx).
    monitor_webhook_failures;
    /// Events not given to the webhook because its queue was full.
    monitor_webhook_dropped;
    /// Samples taken by POST /api/ingest.
    monitor_ingested;
    /// Requests to POST /api/ingest refused (a wrong key, a bad body).
    monitor_ingest_refused;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_its_help() {
        let metrics = AppsMetrics::default();
        metrics.posts.add(3);
        let text = metrics.render();
        assert!(text.contains("switchboard_apps_posts_total 3\n"), "{text}");
        assert!(
            text.contains("# HELP switchboard_apps_posts_total Room messages posted."),
            "{text}"
        );
    }
}
