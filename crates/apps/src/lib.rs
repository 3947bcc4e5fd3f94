//! Switchboard's built-in apps: accounts and sign-in, the home page and chat, built on the
//! hub's public extension points only (rpc handlers, server-side publish and send, routes).
//!
//! # Layout
//! - [`error`]: the crate's error.
//! - [`rules`]: what names, passwords, rooms and texts may be.
//! - `limit`: rate limits by key (token buckets with a bounded map).
//! - [`password`]: Argon2id hashes.
//! - [`store`]: the [`Store`](store::Store) trait and its SQLite implementation.

pub mod error;
mod limit;
pub mod password;
pub mod rules;
pub mod store;

pub use error::{Error, Result};
