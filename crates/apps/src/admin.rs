//! What `switchboard user` and `switchboard invite` do: accounts and invites, straight in
//! the store (the server may be running: SQLite's WAL lets both write).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::{Account, NewAccount, Store, StoreError};
use crate::{now_ms, password, rules};

/// Creates an account.
pub fn add_user(store: &dyn Store, name: &str, password: &str, admin: bool) -> Result<Account> {
    rules::check_name(name).map_err(Error::Invalid)?;
    rules::check_password(password).map_err(Error::Invalid)?;
    let hash = password::hash(password)?;
    store
        .create_account(
            &NewAccount {
                name,
                hash: &hash,
                admin,
                invite: None,
            },
            now_ms(),
        )
        .map_err(|err| match err {
            StoreError::NameTaken => Error::Invalid(format!("the name {name:?} is taken")),
            other => other.into(),
        })
}

/// Sets an account's password (and ends its sessions).
pub fn set_password(store: &dyn Store, name: &str, password: &str) -> Result<()> {
    rules::check_password(password).map_err(Error::Invalid)?;
    let hash = password::hash(password)?;
    if store.set_password(&rules::user_id(name), &hash)? {
        Ok(())
    } else {
        Err(Error::NoSuchAccount(name.to_owned()))
    }
}

/// Removes an account and its sessions (its tokens expire within their lifetime).
pub fn remove_user(store: &dyn Store, name: &str) -> Result<()> {
    if store.remove_account(&rules::user_id(name))? {
        Ok(())
    } else {
        Err(Error::NoSuchAccount(name.to_owned()))
    }
}

/// Creates an invite valid for `ttl`; returns its code (shown once, stored hashed).
pub fn create_invite(store: &dyn Store, admin: bool, ttl: Duration) -> Result<String> {
    create_invite_at(store, admin, false, ttl, now_ms())
}

pub(crate) fn create_invite_at(
    store: &dyn Store,
    admin: bool,
    bootstrap: bool,
    ttl: Duration,
    now: i64,
) -> Result<String> {
    let code = crate::auth::random_chars(24);
    let hash = crate::http::hash_secret(code.as_bytes());
    let expires = now.saturating_add(ttl.as_millis() as i64);
    store.create_invite(&hash, admin, bootstrap, expires, now)?;
    Ok(code)
}
