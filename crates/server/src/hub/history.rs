//! `history`: the latest publications, or those after a position, from the cache and the
//! store.

use std::sync::Arc;
use std::time::Instant;

use super::channel::{Channel, Since, keeps_history};
use super::{Fetched, Hub, READ_ATTEMPTS, store_failed};
use crate::engine::HistoryQuery;
use crate::error::ClientError;
use crate::protocol::{History, Publication, StreamPosition};

impl Hub {
    /// A channel's history: the latest `limit`, (with `since`) what followed a position,
    /// or (with `before`) the newest `limit` below an offset, for paging backwards.
    pub(crate) async fn history(
        self: &Arc<Self>,
        channel: &str,
        limit: Option<usize>,
        since: Option<&StreamPosition>,
        before: Option<u64>,
    ) -> Result<History, ClientError> {
        let opts = self.channel_options(channel)?;
        if !keeps_history(opts) {
            return Err(ClientError::not_available(format!(
                "no history in {channel:?}"
            )));
        }
        let limit = limit.unwrap_or(usize::MAX).min(opts.history_size);
        if let Some(before) = before {
            return self.history_before(channel, opts, before, limit).await;
        }
        let mut fetched: Option<Fetched> = None;
        for attempt in 1..=READ_ATTEMPTS {
            let last_try = attempt == READ_ATTEMPTS;
            let answer = self
                .with_channel(channel, opts, |ch| {
                    ch.cache.trim(opts, Instant::now());
                    let (publications, complete) = match since {
                        Some(pos) if *pos.epoch != *ch.epoch => (Vec::new(), Some(false)),
                        Some(pos) => match Self::since(ch, pos.offset, limit, fetched.as_ref()) {
                            Since::Found(publications) => (publications, Some(true)),
                            Since::Gone => (Vec::new(), Some(false)),
                            Since::AskStore if !last_try => {
                                return Err((pos.offset, false));
                            }
                            Since::AskStore => (Vec::new(), Some(false)),
                        },
                        None => match Self::newest(ch, limit, fetched.as_ref()) {
                            Some(publications) => (publications, None),
                            None if !last_try => return Err((0, true)),
                            None => (ch.cache.newest(limit), None),
                        },
                    };
                    Ok(History {
                        epoch: ch.epoch.to_string(),
                        offset: ch.top,
                        publications,
                        complete,
                    })
                })
                .await?;
            let (after, newest) = match answer {
                Ok(history) => return Ok(history),
                Err(read) => read,
            };
            let query = HistoryQuery {
                after,
                before: None,
                limit,
                newest,
            };
            fetched = Some(Fetched {
                after,
                newest,
                publications: self
                    .store
                    .history(channel, query)
                    .await
                    .map_err(store_failed)?,
            });
        }
        Err(ClientError::internal("history lost"))
    }

    /// The newest `limit` publications below `before`, oldest first: from the cache when
    /// it reaches back far enough, else from the store (which holds every released
    /// publication: they were committed before their release).
    async fn history_before(
        self: &Arc<Self>,
        channel: &str,
        opts: &crate::config::NamespaceOptions,
        before: u64,
        limit: usize,
    ) -> Result<History, ClientError> {
        let (epoch, top, cached) = self
            .with_channel(channel, opts, |ch| {
                ch.cache.trim(opts, Instant::now());
                // Offsets above `top` are not released yet: never shown before they are.
                let before = before.min(ch.top + 1);
                (ch.epoch.to_string(), ch.top, ch.cache.before(before, limit))
            })
            .await?;
        let publications = match cached {
            Some(publications) => publications,
            None => {
                let query = HistoryQuery {
                    after: 0,
                    before: Some(before.min(top + 1)),
                    limit,
                    newest: true,
                };
                self.store
                    .history(channel, query)
                    .await
                    .map_err(store_failed)?
            }
        };
        Ok(History {
            epoch,
            offset: top,
            publications,
            complete: None,
        })
    }

    /// The newest `limit` publications, from the cache, or from what was `fetched` (the
    /// store's newest) and the cache; `None` when the store must be read.
    fn newest(
        ch: &Channel,
        limit: usize,
        fetched: Option<&Fetched>,
    ) -> Option<Vec<Arc<Publication>>> {
        if ch.cache.is_complete() || ch.cache.len() >= limit {
            return Some(ch.cache.newest(limit));
        }
        let fetched = fetched.filter(|f| f.newest)?;
        let mut publications: Vec<_> = fetched
            .publications
            .iter()
            .filter(|p| p.offset <= ch.top)
            .cloned()
            .collect();
        let last = publications.last().map_or(0, |p| p.offset);
        if last < ch.top {
            // Released since the read: the cache must hold them.
            match ch.cache.since(last, ch.top) {
                Since::Found(rest) => publications.extend(rest),
                _ => return None,
            }
        }
        let skip = publications.len().saturating_sub(limit);
        publications.drain(..skip);
        Some(publications)
    }
}
