//! The API key and token secret: from the configuration, or from files in the data
//! directory, generated on first start. There is never a built-in default secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::Config;
use crate::error::{Error, Result};

/// The secrets in force, and which files were just generated. Its `Debug` shows neither
/// secret, so that no log line or panic message can carry one.
#[derive(Clone)]
pub struct Secrets {
    /// The server API key.
    pub api_key: String,
    /// The HS256 token secret.
    pub token_secret: String,
    /// Files created on this start (to tell the operator where they are).
    pub generated: Vec<PathBuf>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("api_key", &"<redacted>")
            .field("token_secret", &"<redacted>")
            .field("generated", &self.generated)
            .finish()
    }
}

/// Name of the API key file in the data directory.
pub const API_KEY_FILE: &str = "api-key";
/// Name of the token secret file in the data directory.
pub const TOKEN_SECRET_FILE: &str = "token-secret";

pub use crate::config::{MIN_API_KEY, MIN_TOKEN_SECRET, SecretKind as Kind, check_secret as check};

/// Loads the secrets, generating missing ones into the data directory (mode 0600).
pub fn load(config: &Config) -> Result<Secrets> {
    let dir = &config.data_dir;
    let mut generated = Vec::new();
    let mut get = |configured: &Option<String>, file: &str, kind: Kind, setting: &str| {
        if let Some(value) = configured {
            check(kind, value, setting)?;
            return Ok(value.clone());
        }
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text.trim();
                check(kind, value, &path.display().to_string())?;
                Ok(value.to_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let value = generate();
                write_private(dir, &path, &value)?;
                generated.push(path);
                Ok(value)
            }
            Err(cause) => Err(Error::DataDir { path, cause }),
        }
    };
    let api_key = get(
        &config.auth.api_key,
        API_KEY_FILE,
        Kind::ApiKey,
        "auth.api_key (configuration file or SWITCHBOARD_API_KEY)",
    )?;
    let token_secret = get(
        &config.auth.token_secret,
        TOKEN_SECRET_FILE,
        Kind::TokenSecret,
        "auth.token_secret (configuration file or SWITCHBOARD_TOKEN_SECRET)",
    )?;
    Ok(Secrets {
        api_key,
        token_secret,
        generated,
    })
}

/// 32 random bytes, URL-safe base64.
fn generate() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Creates `path` readable by its owner only.
fn write_private(dir: &Path, path: &Path, value: &str) -> Result<()> {
    let err = |cause| Error::DataDir {
        path: path.to_owned(),
        cause,
    };
    std::fs::create_dir_all(dir).map_err(|cause| Error::DataDir {
        path: dir.to_owned(),
        cause,
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(err)?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_and_private() {
        let dir = std::env::temp_dir().join(format!("sb-secrets-{}", rand::random::<u64>()));
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let first = load(&config).unwrap();
        assert_eq!(first.generated.len(), 2);
        let second = load(&config).unwrap();
        assert!(second.generated.is_empty());
        assert_eq!(first.api_key, second.api_key);
        assert_ne!(first.api_key, first.token_secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(API_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Issue 10, point 3: an empty or short secret from any source is refused at start-up
    /// with a message naming the source; generated ones always pass.
    #[test]
    fn empty_or_short_secrets_are_refused_naming_their_source() {
        let dir = std::env::temp_dir().join(format!("sb-secrets-{}", rand::random::<u64>()));
        let mut config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        config.auth.api_key = Some(String::new());
        let err = load(&config).unwrap_err().to_string();
        assert!(
            err.contains("API key") && err.contains("auth.api_key") && err.contains("empty"),
            "{err}"
        );
        config.auth.api_key = Some("short".into());
        let err = load(&config).unwrap_err().to_string();
        assert!(
            err.contains("5 bytes long") && err.contains("at least 16"),
            "{err}"
        );
        config.auth.api_key = None;
        config.auth.token_secret = Some("x".repeat(31));
        let err = load(&config).unwrap_err().to_string();
        assert!(
            err.contains("token secret") && err.contains("at least 32"),
            "{err}"
        );
        // From the data directory's files.
        config.auth.token_secret = None;
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(TOKEN_SECRET_FILE), "\n").unwrap();
        let err = load(&config).unwrap_err().to_string();
        assert!(
            err.contains(TOKEN_SECRET_FILE) && err.contains("empty"),
            "{err}"
        );
        std::fs::write(dir.join(TOKEN_SECRET_FILE), "s3cret\n").unwrap();
        let err = load(&config).unwrap_err().to_string();
        assert!(
            err.contains(TOKEN_SECRET_FILE) && err.contains("6 bytes"),
            "{err}"
        );
        std::fs::remove_file(dir.join(TOKEN_SECRET_FILE)).unwrap();
        let generated = load(&config).unwrap();
        assert!(generated.token_secret.len() >= MIN_TOKEN_SECRET);
        assert!(generated.api_key.len() >= MIN_API_KEY);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
