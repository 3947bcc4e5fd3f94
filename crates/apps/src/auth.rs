//! `/auth/*`: accounts, guests, sessions and connection tokens.
//!
//! A session is a random 32-byte id in the `sb_session` cookie (`HttpOnly`,
//! `SameSite=Strict`), stored as its SHA-256. The token endpoint turns it into a
//! short-lived connection token; cross-site requests cannot reach it (JSON only, Origin
//! checked, and the cookie is not sent cross-site anyway).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use switchboard_server::auth::Claims;

use crate::http::{
    ApiError, hash_secret, json, new_session_id, over_tls, read_json, session_cookie, set_cookie,
};
use crate::store::{NewAccount, NewSession, SessionOwner, SessionUser, StoreError};
use crate::{Shared, now_ms, password, rules};

/// The user as the endpoints show it.
pub(crate) fn user_json(user: &SessionUser) -> serde_json::Value {
    match user {
        SessionUser::Account(a) => json!({
            "id": a.id,
            "name": a.name,
            "roles": if a.admin { vec!["admin"] } else { vec![] },
            "guest": false,
        }),
        SessionUser::Guest { id, name } => json!({
            "id": id, "name": name, "roles": [], "guest": true,
        }),
    }
}

/// The session the request's cookie names, if live.
async fn current(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
) -> Result<Option<([u8; 32], SessionUser)>, ApiError> {
    let Some(hash) = session_cookie(headers) else {
        return Ok(None);
    };
    let now = now_ms();
    let user = shared.db(move |s| s.session(&hash, now)).await?;
    Ok(user.map(|u| (hash, u)))
}

fn external_only() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "external_tokens",
        "this server takes tokens from the application's backend only; sign in there",
    )
}

/// `GET /auth/me`.
pub(crate) async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.external {
        return json(
            StatusCode::OK,
            json!({"user": null, "signup": false, "guests": false, "external": true}),
        );
    }
    match current(&shared, &headers).await {
        Ok(user) => json(
            StatusCode::OK,
            json!({
                "user": user.map(|(_, u)| user_json(&u)),
                "signup": shared.signup_open,
                "guests": shared.options.guests,
            }),
        ),
        Err(err) => err.into_response(),
    }
}

#[derive(Deserialize)]
struct SignIn {
    name: String,
    password: String,
}

#[derive(Deserialize)]
struct SignUp {
    name: String,
    password: String,
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Deserialize)]
struct Guest {
    name: String,
}

#[derive(Deserialize)]
struct Empty {}

/// Runs a password hash on a blocking thread, at most `hash_concurrency` at once.
async fn hashing<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let busy = || {
        shared.metrics.busy.inc();
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy signing people in; try again in a moment",
            )
        }
    };
    let permit = tokio::time::timeout(Duration::from_secs(10), shared.hashing.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let out = tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?;
    drop(permit);
    Ok(out)
}

/// Starts a session for `owner` and answers `{"user"}` with its cookie.
async fn start_session(
    shared: &Arc<Shared>,
    owner: SessionUser,
    tls: bool,
) -> Result<Response, ApiError> {
    let (value, hash) = new_session_id();
    let limits = &shared.options.limits;
    let ttl = match owner {
        SessionUser::Account(_) => limits.session_ttl,
        SessionUser::Guest { .. } => limits.guest_session_ttl,
    };
    let now = now_ms();
    let expires = now.saturating_add(ttl.as_millis() as i64);
    let max = limits.sessions_per_account;
    let stored = owner.clone();
    shared
        .db(move |s| {
            let user = match &stored {
                SessionUser::Account(a) => SessionOwner::Account(&a.id),
                SessionUser::Guest { id, name } => SessionOwner::Guest { id, name },
            };
            s.create_session(
                &NewSession {
                    hash,
                    user,
                    expires,
                    max_per_account: max,
                },
                now,
            )
        })
        .await?;
    let mut response = json(StatusCode::OK, json!({"user": user_json(&owner)}));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&value, ttl.as_secs(), tls));
    Ok(response)
}

fn ip_limited(
    limiter: &crate::limit::Limiter<IpAddr>,
    ip: IpAddr,
    shared: &Shared,
) -> Result<(), ApiError> {
    if limiter.take(&ip) {
        Ok(())
    } else {
        shared.metrics.rate_limited.inc();
        Err(ApiError::rate_limited(limiter.retry_after(&ip)))
    }
}

/// `POST /auth/signin {name, password}`.
pub(crate) async fn signin(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    result(signin_inner(shared, request).await)
}

async fn signin_inner(shared: Arc<Shared>, request: Request) -> Result<Response, ApiError> {
    if shared.external {
        return Err(external_only());
    }
    let (parts, body): (_, SignIn) = read_json(&shared, request).await?;
    let ip = shared.node.client_ip(&parts);
    ip_limited(&shared.limits.signin_ip, ip, &shared)?;
    let id = rules::user_id(&body.name);
    let failures = &shared.limits.signin_account;
    if !failures.allows(&id) {
        shared.metrics.rate_limited.inc();
        return Err(ApiError::rate_limited(failures.retry_after(&id)));
    }
    let bad = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "the name or the password is wrong",
        )
    };
    // Rules first: a password no account can have needs no hashing.
    if rules::check_name(&body.name).is_err() || rules::check_password(&body.password).is_err() {
        failures.take(&id);
        shared.metrics.signin_failures.inc();
        return Err(bad());
    }
    let lookup = id.clone();
    let found = shared.db(move |s| s.account_with_hash(&lookup)).await?;
    let password = body.password;
    let account = hashing(&shared, move || match found {
        Some((account, phc)) => password::verify(&password, &phc).then_some(account),
        None => {
            password::verify_nothing(&password);
            None
        }
    })
    .await?;
    let Some(account) = account else {
        failures.take(&id);
        shared.metrics.signin_failures.inc();
        return Err(bad());
    };
    shared.metrics.signins.inc();
    start_session(&shared, SessionUser::Account(account), over_tls(&parts)).await
}

/// `POST /auth/signup {name, password, invite?}`.
pub(crate) async fn signup(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    result(signup_inner(shared, request).await)
}

async fn signup_inner(shared: Arc<Shared>, request: Request) -> Result<Response, ApiError> {
    if shared.external {
        return Err(external_only());
    }
    let (parts, body): (_, SignUp) = read_json(&shared, request).await?;
    let invite = body
        .invite
        .as_deref()
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(|code| hash_secret(code.as_bytes()));
    if invite.is_none() && !shared.signup_open {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signup_closed",
            "accounts are by invitation on this server",
        ));
    }
    rules::check_name(&body.name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    rules::check_password(&body.password)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_password", m))?;
    let ip = shared.node.client_ip(&parts);
    ip_limited(&shared.limits.signup_ip, ip, &shared)?;
    let taken = || ApiError::new(StatusCode::CONFLICT, "name_taken", "this name is taken");
    let bad_invite = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_invite",
            "this invite is unknown, used or expired",
        )
    };
    // Cheap checks before the expensive hash.
    let id = rules::user_id(&body.name);
    let now = now_ms();
    let (exists, invite_ok) = shared
        .db(move |s| {
            let exists = s.account(&id)?.is_some();
            let ok = match &invite {
                Some(hash) => s.invite_valid(hash, now)?,
                None => true,
            };
            Ok((exists, ok))
        })
        .await?;
    if exists {
        return Err(taken());
    }
    if !invite_ok {
        return Err(bad_invite());
    }
    let password = body.password;
    let phc = hashing(&shared, move || password::hash(&password))
        .await?
        .map_err(ApiError::internal)?;
    let name = body.name;
    let created = shared
        .db(move |s| {
            s.create_account(
                &NewAccount {
                    name: &name,
                    hash: &phc,
                    admin: false,
                    invite,
                },
                now_ms(),
            )
        })
        .await;
    let account = match created {
        Ok(account) => account,
        Err(StoreError::NameTaken) => return Err(taken()),
        Err(StoreError::InvalidInvite) => return Err(bad_invite()),
        Err(err) => return Err(err.into()),
    };
    tracing::info!(user = %account.id, admin = account.admin, "apps: account created");
    shared.metrics.signups.inc();
    start_session(&shared, SessionUser::Account(account), over_tls(&parts)).await
}

/// `POST /auth/guest {name}`.
pub(crate) async fn guest(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    result(guest_inner(shared, request).await)
}

async fn guest_inner(shared: Arc<Shared>, request: Request) -> Result<Response, ApiError> {
    if shared.external {
        return Err(external_only());
    }
    let (parts, body): (_, Guest) = read_json(&shared, request).await?;
    if !shared.options.guests {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "guests_disabled",
            "this server has no guest access",
        ));
    }
    rules::check_name(&body.name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))?;
    let ip = shared.node.client_ip(&parts);
    ip_limited(&shared.limits.guest_ip, ip, &shared)?;
    // A guest cannot pass for an account holder.
    let id = rules::user_id(&body.name);
    if shared.db(move |s| s.account(&id)).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_taken",
            "an account has this name; choose another",
        ));
    }
    let id = format!("{}{}", rules::GUEST_PREFIX, random_chars(12));
    shared.metrics.guests.inc();
    let owner = SessionUser::Guest {
        id,
        name: body.name,
    };
    start_session(&shared, owner, over_tls(&parts)).await
}

/// `n` random lowercase letters and digits.
pub(crate) fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `POST /auth/signout`: 204, the session deleted, the cookie cleared.
pub(crate) async fn signout(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    result(signout_inner(shared, request).await)
}

async fn signout_inner(shared: Arc<Shared>, request: Request) -> Result<Response, ApiError> {
    let (parts, _): (_, Empty) = read_json(&shared, request).await?;
    if let Some(hash) = session_cookie(&parts.headers) {
        shared.db(move |s| s.delete_session(&hash)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0, over_tls(&parts)));
    Ok(response)
}

/// `POST /auth/token`: `{"token", "expires"}` (seconds since the epoch).
pub(crate) async fn token(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    result(token_inner(shared, request).await)
}

async fn token_inner(shared: Arc<Shared>, request: Request) -> Result<Response, ApiError> {
    if shared.external {
        return Err(external_only());
    }
    let (parts, _): (_, Empty) = read_json(&shared, request).await?;
    let ip = shared.node.client_ip(&parts);
    ip_limited(&shared.limits.token_ip, ip, &shared)?;
    let Some((_, user)) = current(&shared, &parts.headers).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signed_out",
            "no session: sign in first",
        ));
    };
    let (sub, name, guest, roles) = match user {
        SessionUser::Account(a) => {
            let roles = if a.admin {
                vec!["admin".to_owned()]
            } else {
                Vec::new()
            };
            (a.id, a.name, false, roles)
        }
        SessionUser::Guest { id, name } => (id, name, true, Vec::new()),
    };
    let exp = (now_ms() / 1000).max(0) as u64 + shared.options.limits.token_ttl.as_secs();
    let info = serde_json::value::to_raw_value(&json!({"name": name, "guest": guest}))
        .map_err(ApiError::internal)?;
    let claims = Claims {
        sub,
        exp,
        info: Some(info),
        channels: Vec::new(),
        roles,
        publish: Vec::new(),
    };
    let token = shared
        .node
        .mint_token(&claims)
        .map_err(ApiError::internal)?;
    shared.metrics.tokens.inc();
    Ok(json(
        StatusCode::OK,
        json!({"token": token, "expires": exp}),
    ))
}

fn result(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}
