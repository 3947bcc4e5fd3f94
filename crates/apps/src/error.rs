//! The crate's error: what can stop the apps from starting, or a command of the CLI.

use std::path::PathBuf;

use crate::store::StoreError;

/// An error of the apps: at start-up ([`mount`](crate::mount)) or in the account commands
/// of the CLI ([`admin`](crate::admin)). Requests never see it: they get an HTTP error or
/// an rpc error with a code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or set up.
    #[error("the apps database {path}: {cause}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// The store failed or refused.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A name or password breaks the rules.
    #[error("{0}")]
    Invalid(String),
    /// No account has this name.
    #[error("no account is named {0:?}")]
    NoSuchAccount(String),
    /// Hashing a password failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The hub refused what the apps asked of it.
    #[error("{0}")]
    Server(#[from] switchboard_server::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
