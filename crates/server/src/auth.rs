//! Connection tokens (JWT) and the server API key.
//!
//! A token carries the user id (`sub`), an expiry (`exp`), optional user `info` shown to
//! other users, and optionally the private `channels` the user may subscribe to. HS256 with
//! a shared secret is the default; RS256 and ES256 verify with a configured public key, so
//! the backend that mints tokens keeps the private key to itself.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{AuthConfig, TokenAlgorithm};
use crate::error::{ClientError, Error, Result};

/// The claims Switchboard reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Public information about the user (name, avatar…), shown in presence and pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
    /// Private channels the user may subscribe to (exact names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Roles (`admin`…), for the server's extensions and the `rpc` backend to check; the
    /// hub itself grants nothing by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Channels the token may publish to whatever the namespace allows clients, and
    /// whether or not it may subscribe there: exact names, or a prefix ending in `*`
    /// (`logs:web1:*`). How an agent gets its host's channels and nothing more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id.
    pub user: String,
    /// Public user info.
    pub info: Option<Arc<RawValue>>,
    /// Private channels allowed.
    pub channels: Vec<String>,
    /// Roles, as the token's `roles` claim lists them.
    pub roles: Vec<String>,
    /// Publish scopes, as the token's `publish` claim lists them.
    pub publish: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Verifies connection tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier from the configuration; `secret` is the HS256 secret in force.
    pub fn new(config: &AuthConfig, secret: &str) -> Result<Verifier> {
        let (key, algorithm) = match config.token_algorithm {
            TokenAlgorithm::HS256 => {
                // Never verify with an empty secret: anyone could sign tokens for it.
                crate::secrets::check(
                    crate::secrets::Kind::TokenSecret,
                    secret,
                    "the token secret in force",
                )?;
                (
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                )
            }
            alg @ (TokenAlgorithm::RS256 | TokenAlgorithm::ES256) => {
                let path = config.token_public_key_file.as_ref().ok_or_else(|| {
                    Error::Key(format!("{alg:?} needs auth.token_public_key_file"))
                })?;
                let pem = std::fs::read(path).map_err(|cause| Error::KeyFile {
                    path: path.clone(),
                    cause,
                })?;
                let parsed = if alg == TokenAlgorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem).map(|k| (k, Algorithm::RS256))
                } else {
                    DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256))
                };
                parsed.map_err(|e| Error::Key(format!("{}: {e}", path.display())))?
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        // With an audience configured, a token must name it; without one, `aud` is
        // ignored (many token libraries add one).
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.validate_aud = true;
            }
            None => validation.validate_aud = false,
        }
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        if config.audience.is_some() {
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Verifier { key, validation })
    }

    /// Verifies a token: signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Identity, ClientError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => ClientError::token_expired("the token has expired"),
                ErrorKind::ImmatureSignature => {
                    ClientError::unauthorized("invalid token: not valid yet (nbf)")
                }
                ErrorKind::InvalidAudience => ClientError::unauthorized(
                    "invalid token: its aud claim does not name this server's auth.audience",
                ),
                ErrorKind::InvalidSignature => ClientError::unauthorized(
                    "invalid token: the signature does not match this server's token key \
                     (was the token minted with another secret, from another data directory?)",
                ),
                ErrorKind::InvalidAlgorithm => ClientError::unauthorized(
                    "invalid token: it is signed with another algorithm than this server's \
                     auth.token_algorithm",
                ),
                ErrorKind::InvalidToken => ClientError::unauthorized(
                    "invalid token: not a JWT (three base64url parts separated by dots)",
                ),
                ErrorKind::MissingRequiredClaim(claim) => {
                    ClientError::unauthorized(format!("invalid token: it has no {claim} claim"))
                }
                ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    ClientError::unauthorized(format!(
                        "invalid token: its header or claims cannot be read ({e})"
                    ))
                }
                _ => ClientError::unauthorized(format!("invalid token: {e}")),
            },
        )?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(ClientError::unauthorized("invalid token: empty sub"));
        }
        Ok(Identity {
            user: claims.sub,
            info: claims.info.map(Arc::from),
            channels: claims.channels,
            roles: claims.roles,
            publish: claims.publish,
            exp: claims.exp,
        })
    }
}

impl Identity {
    /// Whether the token's `publish` claim covers `channel`.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish
            .iter()
            .any(|scope| match scope.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => scope == channel,
            })
    }
}

/// Whether `host` may name an agent's host: 1 to 64 ASCII letters, digits, `.`, `_`
/// and `-`, as it becomes part of channel names (`metrics:HOST`, `logs:HOST:NAME`), and
/// names starting with `@` stay free for the server's own (`@hub`).
pub fn valid_host(host: &str) -> bool {
    (1..=64).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The claims of an agent's token for `host`, valid until `exp`: user `agent:HOST`, role
/// `agent`; it publishes its host's samples and logs (`metrics:HOST`, `logs:HOST:*`) and
/// watches `metrics:HOST` (to know whether anyone is looking), and reads nothing else.
pub fn agent_claims(host: &str, exp: u64) -> Result<Claims> {
    if !valid_host(host) {
        return Err(Error::Host(host.to_owned()));
    }
    Ok(Claims {
        sub: format!("agent:{host}"),
        exp,
        info: Some(
            // A valid host needs no escaping in JSON.
            RawValue::from_string(format!(r#"{{"agent":"{host}"}}"#))
                .map_err(|e| Error::Host(format!("{host}: {e}")))?,
        ),
        channels: vec![format!("metrics:{host}")],
        roles: vec!["agent".into()],
        publish: vec![format!("metrics:{host}"), format!("logs:{host}:*")],
    })
}

/// Mints an HS256 token (for `switchboard token`, development and scripts).
pub fn mint(secret: &str, claims: &Claims) -> Result<String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Error::Key(e.to_string()))
}

/// Mints an RS256 or ES256 token with a private key in PEM, the private half of
/// `auth.token_public_key_file` (for `switchboard token --private-key`, development and
/// scripts). RSA keys may be PKCS#1 or PKCS#8; EC keys must be P-256 in PKCS#8
/// (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes them). HS256 tokens come from
/// [`mint`], with the token secret.
pub fn mint_with_key(
    algorithm: TokenAlgorithm,
    private_key_pem: &[u8],
    claims: &Claims,
) -> Result<String> {
    // The library's parse errors are enum names (`InvalidKeyFormat`): say what it needs.
    let (key, algorithm) = match algorithm {
        TokenAlgorithm::HS256 => {
            return Err(Error::Key(
                "HS256 tokens are signed with the token secret, not a private key".into(),
            ));
        }
        TokenAlgorithm::RS256 => (
            EncodingKey::from_rsa_pem(private_key_pem).map_err(|_| {
                Error::Key("RS256 needs an RSA private key in PEM, and this is not one".into())
            })?,
            Algorithm::RS256,
        ),
        TokenAlgorithm::ES256 => (
            EncodingKey::from_ec_pem(private_key_pem).map_err(|_| {
                Error::Key(
                    "ES256 needs a P-256 private key in PKCS#8 PEM (BEGIN PRIVATE KEY), and \
                     this is not one"
                        .into(),
                )
            })?,
            Algorithm::ES256,
        ),
    };
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key)
        .map_err(|e| Error::Key(format!("cannot sign with this key: {e}")))
}

/// Compares an API key in constant time, so response timing does not leak it.
pub fn api_key_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    // An empty key never matches, whatever the configuration said.
    if a.is_empty() || a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Longest time a deadline is set ahead (a token's expiry far in the future is checked
/// again then): an `Instant` that far ahead cannot overflow.
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Time left until a token expiring at `exp` (Unix seconds) has expired, a millisecond
/// late so that a check after waking sees it expired; at most a year. An `exp` so large
/// that it overflows in milliseconds is the far future, never the past.
pub fn expires_in(exp: u64) -> Duration {
    let at = exp.saturating_mul(1000).saturating_add(1);
    Duration::from_millis(at.saturating_sub(crate::protocol::now_ms())).min(FAR)
}

/// Whether a token expiring at `exp` (Unix seconds) has expired.
pub fn is_expired(exp: u64) -> bool {
    exp.saturating_mul(1000) <= crate::protocol::now_ms()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes";

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            info: Some(RawValue::from_string(r#"{"name":"Alice"}"#.into()).unwrap()),
            channels: vec!["chat:secret".into()],
            roles: Vec::new(),
            publish: Vec::new(),
        }
    }

    #[test]
    fn mint_and_verify() {
        let verifier = Verifier::new(&AuthConfig::default(), SECRET).unwrap();
        let token = mint(SECRET, &claims(now_secs() + 60)).unwrap();
        let id = verifier.verify(&token).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.info.unwrap().get(), r#"{"name":"Alice"}"#);
        assert_eq!(id.channels, ["chat:secret"]);
    }

    #[test]
    fn expired_and_forged_tokens_are_refused() {
        let verifier = Verifier::new(&AuthConfig::default(), SECRET).unwrap();
        let expired = mint(SECRET, &claims(now_secs() - 1)).unwrap();
        assert_eq!(verifier.verify(&expired).unwrap_err().code, 109);
        let forged = mint(&"other".repeat(11), &claims(now_secs() + 60)).unwrap();
        let err = verifier.verify(&forged).unwrap_err();
        assert_eq!(err.code, 101);
        // Words, not the JWT library's enum names.
        assert!(
            err.message.contains("signature does not match"),
            "{}",
            err.message
        );
        let err = verifier.verify("not-a-token").unwrap_err();
        assert_eq!(err.code, 101);
        assert!(err.message.contains("not a JWT"), "{}", err.message);
        assert_eq!(verifier.verify("not.a.token").unwrap_err().code, 101);
    }

    /// RS256 and ES256 tokens verify with the configured public key (test keys in
    /// tests/data, made with `openssl genpkey`), and a token signed with the other
    /// algorithm or key is refused.
    #[test]
    fn asymmetric_algorithms_verify_with_the_public_key() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let cases = [
            (TokenAlgorithm::RS256, Algorithm::RS256, "rs256"),
            (TokenAlgorithm::ES256, Algorithm::ES256, "es256"),
        ];
        for (configured, algorithm, name) in cases {
            let config = AuthConfig {
                token_algorithm: configured,
                token_public_key_file: Some(data.join(format!("{name}-public.pem"))),
                ..AuthConfig::default()
            };
            let verifier = Verifier::new(&config, "unused").unwrap();
            let pem = std::fs::read(data.join(format!("{name}-private.pem"))).unwrap();
            let key = match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
                _ => EncodingKey::from_ec_pem(&pem).unwrap(),
            };
            let claims = claims(now_secs() + 60);
            let token = jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().user, "alice", "{name}");
            // An HS256 token made with the public key as secret: the classic confusion.
            let public = std::fs::read(data.join(format!("{name}-public.pem"))).unwrap();
            let forged = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&public),
            )
            .unwrap();
            assert_eq!(verifier.verify(&forged).unwrap_err().code, 101, "{name}");
        }
        let missing = AuthConfig {
            token_algorithm: TokenAlgorithm::RS256,
            ..AuthConfig::default()
        };
        assert!(Verifier::new(&missing, "x").is_err());
    }

    /// `mint_with_key` signs with the configured algorithm, and the server's verifier
    /// accepts the token with the public half; a key of the other kind, or HS256, is an
    /// error that says what is needed.
    #[test]
    fn mint_with_key_signs_rs256_and_es256() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let pem = |name: &str| std::fs::read(data.join(name)).unwrap();
        for (algorithm, name, other) in [
            (TokenAlgorithm::RS256, "rs256", "es256"),
            (TokenAlgorithm::ES256, "es256", "rs256"),
        ] {
            let config = AuthConfig {
                token_algorithm: algorithm,
                token_public_key_file: Some(data.join(format!("{name}-public.pem"))),
                ..AuthConfig::default()
            };
            let verifier = Verifier::new(&config, "").unwrap();
            let key = pem(&format!("{name}-private.pem"));
            let token = mint_with_key(algorithm, &key, &claims(now_secs() + 60)).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().user, "alice", "{name}");
            let wrong = pem(&format!("{other}-private.pem"));
            let err = mint_with_key(algorithm, &wrong, &claims(now_secs() + 60)).unwrap_err();
            assert!(err.to_string().contains("needs"), "{name}: {err}");
        }
        let err = mint_with_key(TokenAlgorithm::HS256, b"", &claims(1)).unwrap_err();
        assert!(err.to_string().contains("token secret"), "{err}");
    }

    /// A token with arbitrary claims, signed with [`SECRET`].
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    /// Issue 10, point 12: `nbf` is checked (no leeway); `aud` is ignored without
    /// `auth.audience` and required to match with it, as docs/protocol.md says.
    #[test]
    fn nbf_and_aud_behave_as_documented() {
        let plain = Verifier::new(&AuthConfig::default(), SECRET).unwrap();
        let exp = now_secs() + 60;
        let later = signed(serde_json::json!({"sub": "a", "exp": exp, "nbf": now_secs() + 30}));
        let err = plain.verify(&later).unwrap_err();
        assert_eq!(err.code, 101);
        assert!(err.message.contains("nbf"), "{}", err.message);
        let now = signed(serde_json::json!({"sub": "a", "exp": exp, "nbf": now_secs() - 1}));
        assert!(plain.verify(&now).is_ok());
        let with_aud = signed(serde_json::json!({"sub": "a", "exp": exp, "aud": "elsewhere"}));
        assert!(
            plain.verify(&with_aud).is_ok(),
            "aud is ignored without auth.audience"
        );

        let config = AuthConfig {
            audience: Some("switchboard".into()),
            ..AuthConfig::default()
        };
        let strict = Verifier::new(&config, SECRET).unwrap();
        let err = strict.verify(&with_aud).unwrap_err();
        assert!(err.message.contains("auth.audience"), "{}", err.message);
        let without = signed(serde_json::json!({"sub": "a", "exp": exp}));
        assert_eq!(strict.verify(&without).unwrap_err().code, 101);
        let right =
            signed(serde_json::json!({"sub": "a", "exp": exp, "aud": ["x", "switchboard"]}));
        assert!(strict.verify(&right).is_ok());
    }

    /// Issue 10, point 13: an `exp` whose milliseconds overflow a u64 is the far future:
    /// accepted, never expired, and its deadline is bounded.
    #[test]
    fn an_exp_too_large_for_milliseconds_is_the_far_future() {
        let verifier = Verifier::new(&AuthConfig::default(), SECRET).unwrap();
        for exp in [18_446_744_073_709_552, u64::MAX] {
            let token = signed(serde_json::json!({"sub": "a", "exp": exp}));
            let identity = verifier.verify(&token).unwrap();
            assert!(!is_expired(identity.exp), "{exp}");
            assert_eq!(expires_in(identity.exp), FAR, "{exp}");
        }
        assert!(is_expired(now_secs() - 1));
        assert!(expires_in(now_secs() + 10) <= Duration::from_millis(10_001));
    }

    #[test]
    fn an_empty_or_short_hs256_secret_is_refused() {
        assert!(Verifier::new(&AuthConfig::default(), "").is_err());
        assert!(Verifier::new(&AuthConfig::default(), "short").is_err());
    }

    #[test]
    fn api_key_comparison() {
        assert!(api_key_matches("abc", "abc"));
        assert!(!api_key_matches("abc", "abd"));
        assert!(!api_key_matches("abc", "ab"));
        assert!(!api_key_matches("", ""), "an empty key never matches");
    }
}
