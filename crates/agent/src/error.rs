//! The crate's one error type.
//!
//! Only set-up can fail for good (a configuration that cannot be read or is wrong, a
//! host name that cannot be a channel). Once running, the agent never stops on an error:
//! a file it cannot read, a command that dies, a server that goes away are logged and
//! retried (see the Layout section of the crate).

use std::path::PathBuf;

/// What can stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not.
        cause: std::io::Error,
    },
    /// The configuration is not valid TOML, or has a key or value it may not have.
    #[error("{origin}: {message}")]
    Config {
        /// The file, or "the configuration" when it came from elsewhere.
        origin: String,
        /// What is wrong, with the line where the parser knows it.
        message: String,
    },
    /// A host name that cannot be part of a channel name.
    #[error("invalid host {0:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'")]
    Host(String),
    /// Talking to the server failed (the URL, the socket, a refusal): the connection
    /// loop says so and connects again.
    #[error("{0}")]
    Client(#[from] switchboard_client::Error),
    /// The server did not answer in time.
    #[error("no answer from the server for {0:?}")]
    Timeout(std::time::Duration),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
