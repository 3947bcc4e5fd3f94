//! The client protocol: JSON text frames, documented in `docs/protocol.md` (and checked
//! against it by `doc_examples`).
//!
//! - `command`: what a client sends ([`Request`], [`Command`]);
//! - `reply`: the one answer each command gets, and the shapes of the results;
//! - `push`: what the server sends on its own ([`Push`]);
//! - `types`: what travels in both (positions, publications, private messages, senders).

mod command;
mod push;
mod reply;
mod types;

pub use command::{Command, Request};
pub use push::Push;
pub use reply::*;
pub use types::*;
