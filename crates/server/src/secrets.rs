//! The API key and token secret: from the configuration, or from files in the data
//! directory, generated on first start. There is never a built-in default secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::Config;
use crate::error::{Error, Result};

/// The secrets in force, and which files were just generated.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The server API key.
    pub api_key: String,
    /// The HS256 token secret.
    pub token_secret: String,
    /// Files created on this start (to tell the operator where they are).
    pub generated: Vec<PathBuf>,
}

/// Name of the API key file in the data directory.
pub const API_KEY_FILE: &str = "api-key";
/// Name of the token secret file in the data directory.
pub const TOKEN_SECRET_FILE: &str = "token-secret";

/// Loads the secrets, generating missing ones into the data directory (mode 0600).
pub fn load(config: &Config) -> Result<Secrets> {
    let dir = &config.data_dir;
    let mut generated = Vec::new();
    let mut get = |configured: &Option<String>, file: &str| -> Result<String> {
        if let Some(value) = configured {
            return Ok(value.clone());
        }
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Ok(_) => Err(Error::DataDir {
                path,
                source: std::io::Error::other("the file is empty"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let value = generate();
                write_private(dir, &path, &value)?;
                generated.push(path);
                Ok(value)
            }
            Err(source) => Err(Error::DataDir { path, source }),
        }
    };
    let api_key = get(&config.auth.api_key, API_KEY_FILE)?;
    let token_secret = get(&config.auth.token_secret, TOKEN_SECRET_FILE)?;
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
    let err = |source| Error::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
        path: dir.to_owned(),
        source,
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
}
